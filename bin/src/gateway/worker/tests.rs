#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tcp::Instant;

use bytes::Bytes;
use ws::{ClientHandshake, CloseCode, Connection, DeflateConfig, Event, MessageKind, Role};

use super::*;
use crate::config::Config;
use crate::gateway::Publication;
use crate::metrics::Metrics;

const CONFIG: &str = r#"
[limits]
max_connections_per_ip = 2
allowed_origins = []
[[route]]
path = "/ws"
kind = "pubsub"
max_queued_bytes = 200
[[route]]
path = "/live"
kind = "pubsub"
slow_consumer = "close"
slow_close_code = 1013
max_queued_bytes = 200
[[route]]
path = "/echo"
kind = "echo"
"#;

fn worker_with(text: &str) -> (Worker, Arc<Metrics>) {
    let config = Arc::new(Config::parse(text).unwrap());
    let metrics = Arc::new(Metrics::new());
    (Worker::new(0, config, Arc::clone(&metrics), None), metrics)
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A transport with no room: everything the worker answers stays queued on the session
/// (so the tests see the slow-consumer bounds), until [`drain`] flushes it.
struct NoRoom;

impl Tx for NoRoom {
    fn write_with(&mut self, _: usize, _: impl FnOnce(&mut [u8]) -> usize) -> usize {
        0
    }
    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        Err(chunk)
    }
}

/// Everything the worker queued for `id`, as the transport would write it.
fn drain(w: &mut Worker, id: ConnId) -> Vec<u8> {
    let mut all = Vec::new();
    w.flush(id, &mut crate::app::BufTx::new(&mut all, usize::MAX));
    all
}

/// Opens a WebSocket on `path` and returns the client engine.
fn open(w: &mut Worker, id: ConnId, path: &str, now: Instant) -> Connection {
    w.accept(id, peer(1000 + id as u16), now).unwrap();
    let hs = ClientHandshake::new(
        [7; 16],
        Vec::new(),
        DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        },
    );
    let mut req = hs.request("gw", path);
    w.receive(id, &mut req, &mut NoRoom, now);
    let out = drain(w, id);
    let acc = hs.parse_response(&out).unwrap().expect("complete response");
    let mut client = Connection::new(
        Role::Client,
        ws::Config {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        },
        acc.deflate,
        1,
    );
    let mut rest = out[acc.head_len..].to_vec();
    client.read(&mut rest);
    client
}

fn send(w: &mut Worker, id: ConnId, client: &mut Connection, text: &str, now: Instant) {
    client.send(MessageKind::Text, text.as_bytes()).unwrap();
    let mut bytes = client.pending_output().to_vec();
    let n = bytes.len();
    client.consume_output(n);
    w.receive(id, &mut bytes, &mut NoRoom, now);
}

/// Feeds the worker's output for `id` into `client` and returns its events.
fn events(w: &mut Worker, id: ConnId, client: &mut Connection) -> Vec<Event> {
    let mut out = drain(w, id);
    let mut pos = 0;
    let mut evs = Vec::new();
    loop {
        pos += client.read(&mut out[pos..]);
        while let Some(e) = client.poll_event() {
            evs.push(e);
        }
        if pos >= out.len() || !client.is_reading() {
            return evs;
        }
    }
}

fn texts(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(String::from_utf8(data.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

fn publication(topic: &str, data: &str) -> Publication {
    let text = crate::gateway::protocol::Reply::Message { topic, data }.to_json();
    Publication::new(Arc::from(topic), Bytes::from(text), 1)
}

#[test]
fn pubsub_subscribe_then_deliver_in_order() {
    let (mut w, metrics) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"subscribe","topic":"a","id":1}"#,
        now,
    );
    assert_eq!(
        texts(&events(&mut w, 0, &mut c)),
        vec![r#"{"op":"subscribed","topic":"a","id":1}"#]
    );
    w.deliver(&publication("a", "1"), None, now);
    w.deliver(&publication("b", "x"), None, now);
    w.deliver(&publication("a", "2"), None, now);
    assert_eq!(
        texts(&events(&mut w, 0, &mut c)),
        vec![
            r#"{"op":"message","topic":"a","data":"1"}"#,
            r#"{"op":"message","topic":"a","data":"2"}"#
        ]
    );
    let text = metrics.render();
    assert!(
        text.contains("sluice_messages_out_total{route=\"/ws\"} 3"),
        "{text}"
    );
}

#[test]
fn pubsub_unsubscribe_stops_delivery() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    send(&mut w, 0, &mut c, r#"{"op":"subscribe","topic":"a"}"#, now);
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"unsubscribe","topic":"a"}"#,
        now,
    );
    w.deliver(&publication("a", "1"), None, now);
    assert_eq!(
        texts(&events(&mut w, 0, &mut c)),
        vec![
            r#"{"op":"subscribed","topic":"a"}"#,
            r#"{"op":"unsubscribed","topic":"a"}"#
        ]
    );
}

#[test]
fn pubsub_bad_request_error_reply() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    send(&mut w, 0, &mut c, r#"{"op":"dance"}"#, now);
    let got = texts(&events(&mut w, 0, &mut c));
    assert!(
        got[0].starts_with(r#"{"op":"error","error":"bad request"#),
        "{got:?}"
    );
}

#[test]
fn pubsub_publish_without_broker_error_reply() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"publish","topic":"a","data":"x"}"#,
        now,
    );
    let got = texts(&events(&mut w, 0, &mut c));
    assert!(got[0].contains("publish queue full"), "{got:?}");
}

#[test]
fn slow_consumer_drop_newest_counted_others_continue() {
    let (mut w, metrics) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut slow = open(&mut w, 0, "/ws", now);
    let mut fast = open(&mut w, 1, "/ws", now);
    for (id, c) in [(0, &mut slow), (1, &mut fast)] {
        send(&mut w, id, c, r#"{"op":"subscribe","topic":"a"}"#, now);
        events(&mut w, id, c);
    }
    // Each frame is ~45 bytes; the bound is 200. The fast client drains after each one.
    let mut fast_got = Vec::new();
    for i in 0..10 {
        w.deliver(&publication("a", &i.to_string()), None, now);
        fast_got.extend(texts(&events(&mut w, 1, &mut fast)));
    }
    assert_eq!(fast_got.len(), 10);
    let slow_got = texts(&events(&mut w, 0, &mut slow));
    assert!(slow_got.len() < 10 && !slow_got.is_empty(), "{slow_got:?}");
    // The oldest ones were kept, in order.
    for (i, m) in slow_got.iter().enumerate() {
        assert!(m.ends_with(&format!("\"data\":\"{i}\"}}")), "{m}");
    }
    let text = metrics.render();
    let dropped = 10 - slow_got.len();
    assert!(
        text.contains(&format!(
            "sluice_drops_total{{reason=\"slow_consumer_dropped\"}} {dropped}"
        )),
        "{text}"
    );
}

#[test]
fn slow_consumer_close_policy_sends_1013() {
    let (mut w, metrics) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/live", now);
    send(&mut w, 0, &mut c, r#"{"op":"subscribe","topic":"a"}"#, now);
    events(&mut w, 0, &mut c);
    for i in 0..10 {
        w.deliver(&publication("a", &i.to_string()), None, now);
    }
    let evs = events(&mut w, 0, &mut c);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::Close {
                code: Some(CloseCode(1013)),
                ..
            }
        )),
        "{evs:?}"
    );
    assert!(metrics
        .render()
        .contains("sluice_drops_total{reason=\"slow_consumer_closed\"} 1"));
}

#[test]
fn echo_message_sent_back() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/echo", now);
    send(&mut w, 0, &mut c, "ping me", now);
    assert_eq!(texts(&events(&mut w, 0, &mut c)), vec!["ping me"]);
}

#[test]
fn handshake_unknown_path_404() {
    let (mut w, metrics) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    w.accept(0, peer(1), now).unwrap();
    let hs = ClientHandshake::new([1; 16], Vec::new(), DeflateConfig::default());
    let mut req = hs.request("gw", "/nope");
    w.receive(0, &mut req, &mut NoRoom, now);
    let out = drain(&mut w, 0);
    assert!(
        out.starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(w.is_finished(0));
    assert!(metrics
        .render()
        .contains("sluice_handshakes_total{result=\"not_found\"} 1"));
}

#[test]
fn handshake_origin_not_allowed_403() {
    let (mut w, _) = worker_with(
        "[limits]\nallowed_origins = [\"https://ok.example\"]\n[[route]]\npath = \"/ws\"\n",
    );
    let now = Instant::from_millis(1_000);
    w.accept(0, peer(1), now).unwrap();
    let mut req = b"GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Origin: https://evil.example\r\n\r\n"
        .to_vec();
    w.receive(0, &mut req, &mut NoRoom, now);
    assert!(drain(&mut w, 0).starts_with(b"HTTP/1.1 403"));
}

#[test]
fn accept_per_ip_limit_refused() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    w.accept(0, peer(1), now).unwrap();
    w.accept(1, peer(2), now).unwrap();
    assert_eq!(w.accept(2, peer(3), now), Err(Refusal::MaxPerIp));
    w.remove(0);
    assert_eq!(w.accept(2, peer(3), now), Ok(()));
}

#[test]
fn handshake_deadline_expires() {
    let (mut w, metrics) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    w.accept(0, peer(1), now).unwrap();
    w.receive(0, &mut b"GET /ws HTTP/1.1\r\n".to_vec(), &mut NoRoom, now);
    assert!(w.handle_timeout(now + Duration::from_secs(1)).is_empty());
    assert_eq!(w.handle_timeout(now + Duration::from_secs(11)), vec![0]);
    assert!(metrics
        .render()
        .contains("sluice_handshakes_total{result=\"timeout\"} 1"));
}

#[test]
fn deadlines_on_timer_wheel_traffic_moves_ping_later_poll_timeout_says_when() {
    use crate::app::App;
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    // Armed for the ping (30 s after the last bytes): the wheel wakes no later.
    let at = App::poll_timeout(&w).expect("armed");
    assert!(at > now && at <= now + Duration::from_secs(30), "{at:?}");
    // Bytes at +20 s (a Pong the client volunteers): the ping moves to +50 s.
    let later = now + Duration::from_secs(20);
    c.pong(b"x").unwrap();
    let mut pong = c.pending_output().to_vec();
    c.consume_output(pong.len());
    w.receive(0, &mut pong, &mut NoRoom, later);
    w.handle_timeout(now + Duration::from_secs(31));
    let evs = events(&mut w, 0, &mut c);
    assert!(evs.is_empty(), "no ping 11 s after traffic: {evs:?}");
    let at = App::poll_timeout(&w).expect("re-armed for the moved ping");
    assert!(at <= later + Duration::from_secs(30), "{at:?}");
    w.handle_timeout(later + Duration::from_secs(30));
    let evs = events(&mut w, 0, &mut c);
    assert!(matches!(evs.as_slice(), [Event::Ping(_)]), "{evs:?}");
    // Removed: nothing armed any more.
    w.remove(0);
    assert_eq!(App::poll_timeout(&w), None);
}

#[test]
fn idle_connection_pinged_then_closed() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    w.handle_timeout(now + Duration::from_secs(31));
    let evs = events(&mut w, 0, &mut c);
    assert!(matches!(evs.as_slice(), [Event::Ping(_)]), "{evs:?}");
    w.handle_timeout(now + Duration::from_secs(121));
    let evs = events(&mut w, 0, &mut c);
    assert!(
        matches!(
            evs.as_slice(),
            [Event::Close {
                code: Some(CloseCode::GOING_AWAY),
                ..
            }]
        ),
        "{evs:?}"
    );
}

#[test]
fn shutdown_queued_messages_then_1001() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/ws", now);
    send(&mut w, 0, &mut c, r#"{"op":"subscribe","topic":"a"}"#, now);
    events(&mut w, 0, &mut c);
    w.deliver(&publication("a", "last"), None, now);
    w.shutdown(now, now + Duration::from_secs(5));
    let evs = events(&mut w, 0, &mut c);
    assert_eq!(
        texts(&evs),
        vec![r#"{"op":"message","topic":"a","data":"last"}"#]
    );
    assert!(matches!(
        evs.last(),
        Some(Event::Close {
            code: Some(CloseCode::GOING_AWAY),
            ..
        })
    ));
    // The transport keeps reading to receive the client's answering Close.
    assert!(w.wants_read(0));
    assert!(!w.is_finished(0));
    // The client answers the Close; the connection is then finished.
    let mut answer = c.pending_output().to_vec();
    w.receive(0, &mut answer, &mut NoRoom, now);
    drain(&mut w, 0);
    assert!(w.is_finished(0));
    assert!(!w.wants_read(0));
    assert_eq!(w.accept(1, peer(9), now), Err(Refusal::MaxConnections));
}

#[test]
fn deliver_ack_counts_subscribers() {
    let (mut w, _) = worker_with(CONFIG);
    let now = Instant::from_millis(1_000);
    for id in 0..2 {
        let mut c = open(&mut w, id, "/ws", now);
        send(&mut w, id, &mut c, r#"{"op":"subscribe","topic":"a"}"#, now);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let ack = crate::gateway::Ack::new(1, tx);
    w.deliver(&publication("a", "x"), Some(&ack), now);
    assert_eq!(rx.try_recv(), Ok(2));
}

#[test]
fn proxy_upstream_close_reflected_to_client() {
    let (mut w, _) = worker_with(
        "[[route]]\npath = \"/p\"\nkind = \"proxy\"\nupstream = \"ws://127.0.0.1:9/u\"\n",
    );
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/p", now);
    assert_eq!(
        w.take_upstream_requests(),
        vec![(0, "127.0.0.1:9".to_string())]
    );
    // A client message before the upstream is open waits for it.
    send(&mut w, 0, &mut c, "early", now);
    w.upstream_connected(0);
    let mut req = Vec::new();
    loop {
        let out = w.upstream_output(0).to_vec();
        if out.is_empty() {
            break;
        }
        w.upstream_consume(0, out.len());
        req.extend_from_slice(&out);
    }
    // Play the upstream server with a sans-IO engine.
    let parsed = ws::handshake::parse_request(&req, &ws::ServerConfig::default())
        .unwrap()
        .unwrap();
    assert_eq!(parsed.path, "/u");
    let acc = parsed.accept(&ws::ServerConfig::default());
    let mut server = Connection::new(
        Role::Server,
        ws::Config {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        },
        acc.deflate,
        0,
    );
    server.send(MessageKind::Text, b"hello").unwrap();
    server.close(CloseCode(4000), "bye").unwrap();
    let mut reply = acc.response.clone();
    reply.extend_from_slice(server.pending_output());
    w.upstream_receive(0, &mut reply, now);
    let evs = events(&mut w, 0, &mut c);
    assert_eq!(texts(&evs), vec!["hello"]);
    assert!(
        matches!(
            evs.last(),
            Some(Event::Close {
                code: Some(CloseCode(4000)),
                ..
            })
        ),
        "{evs:?}"
    );
}

#[test]
fn settled_only_when_nothing_is_left_for_the_driver() {
    use crate::app::App;
    let (mut w, _) = worker_with(
        "[[route]]\npath = \"/e\"\nkind = \"echo\"\n[[route]]\npath = \"/p\"\nkind = \"proxy\"\nupstream = \"ws://127.0.0.1:9/u\"\n",
    );
    let now = Instant::from_millis(1_000);
    // Echo: an answer that found no room is queued, so the driver must flush.
    let mut c = open(&mut w, 0, "/e", now);
    send(&mut w, 0, &mut c, "queued", now);
    assert!(!App::settled(&w, 0));
    drain(&mut w, 0);
    assert!(App::settled(&w, 0));
    // Written in place (room in the transport): nothing left.
    c.send(MessageKind::Text, b"in place").unwrap();
    let mut bytes = c.pending_output().to_vec();
    c.consume_output(bytes.len());
    let mut out = Vec::new();
    w.receive(
        0,
        &mut bytes,
        &mut crate::app::BufTx::new(&mut out, usize::MAX),
        now,
    );
    assert!(!out.is_empty());
    assert!(App::settled(&w, 0));
    // A ping's pong is queued in the engine: not settled until flushed.
    c.ping(b"p").unwrap();
    let mut bytes = c.pending_output().to_vec();
    c.consume_output(bytes.len());
    w.receive(0, &mut bytes, &mut NoRoom, now);
    assert!(!App::settled(&w, 0));
    drain(&mut w, 0);
    assert!(App::settled(&w, 0));
    // Proxy: the client's message waits in the upstream's queue for the driver.
    let mut p = open(&mut w, 1, "/p", now);
    w.upstream_connected(1);
    send(&mut w, 1, &mut p, "to the upstream", now);
    assert!(!App::settled(&w, 1));
    // Not open (the handshake is pending): never settled.
    w.accept(2, peer(3000), now).unwrap();
    assert!(!App::settled(&w, 2));
}

const BEHIND_LB: &str = r#"
[listen]
proxy_protocol = true
trusted_proxies = ["127.0.0.0/8"]
[limits]
max_connections_per_ip = 1
[[route]]
path = "/ws"
kind = "pubsub"
"#;

fn proxy_v2(client: SocketAddr, proxy: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, proxy),
    )
    .write_tlv(ppp::v2::Type::NoOp, b"pad")
    .unwrap()
    .build()
    .unwrap()
}

fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[test]
fn proxy_v2_header_names_the_peer_split_across_reads_and_limits_it_per_ip() {
    let (mut w, metrics) = worker_with(BEHIND_LB);
    let now = Instant::from_millis(1_000);
    let real: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    // The load balancer's connections are not limited by its own address.
    for id in 0..3 {
        w.accept(id, peer(1), now).unwrap();
    }
    let mut bytes = proxy_v2(real, peer(8080));
    bytes.extend(upgrade_request("/ws", ""));
    // Byte by byte through the header and into the request.
    for b in bytes.clone() {
        w.receive(0, &mut [b], &mut NoRoom, now);
    }
    assert!(drain(&mut w, 0).starts_with(b"HTTP/1.1 101"));
    let rows = w.snapshot(now);
    assert_eq!(rows[0].peer, "203.0.113.7:40000");
    // A second connection of the same real client is over its limit of 1.
    w.receive(1, &mut bytes.clone(), &mut NoRoom, now);
    assert!(drain(&mut w, 1).starts_with(b"HTTP/1.1 503"));
    assert!(w.is_finished(1));
    assert!(metrics
        .render()
        .contains("sluice_connections_refused_total{reason=\"max_connections_per_ip\"} 1"));
    // Garbage instead of the header: closed without an HTTP answer, counted.
    w.receive(2, &mut upgrade_request("/ws", ""), &mut NoRoom, now);
    assert!(drain(&mut w, 2).is_empty());
    assert!(w.is_finished(2));
    assert!(metrics
        .render()
        .contains("sluice_handshakes_total{result=\"bad_proxy_header\"} 1"));
    // The count follows the real client: when it leaves, it may come back.
    w.remove(0);
    w.remove(1);
    w.accept(3, peer(1), now).unwrap();
    w.receive(3, &mut bytes, &mut NoRoom, now);
    assert!(drain(&mut w, 3).starts_with(b"HTTP/1.1 101"));
}

#[test]
fn proxy_v2_header_only_from_trusted_sources_and_local_keeps_the_proxy() {
    let (mut w, _) = worker_with(BEHIND_LB);
    let now = Instant::from_millis(1_000);
    // An untrusted source is a direct client: a PROXY header from it is not HTTP (400).
    let stranger: SocketAddr = "198.18.0.9:5000".parse().unwrap();
    w.accept(0, stranger, now).unwrap();
    let mut bytes = proxy_v2("203.0.113.7:1".parse().unwrap(), peer(8080));
    bytes.extend(upgrade_request("/ws", ""));
    w.receive(0, &mut bytes, &mut NoRoom, now);
    assert!(drain(&mut w, 0).starts_with(b"HTTP/1.1 400"));
    // LOCAL (the balancer's own health check): the peer stays the proxy.
    w.accept(1, peer(2), now).unwrap();
    let mut local = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    local.extend(upgrade_request("/ws", ""));
    w.receive(1, &mut local, &mut NoRoom, now);
    assert!(drain(&mut w, 1).starts_with(b"HTTP/1.1 101"));
    assert_eq!(w.snapshot(now)[1].peer, peer(2).to_string());
}

#[test]
fn forwarded_for_believed_from_trusted_proxies_only() {
    let (mut w, _) =
        worker_with("[listen]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[[route]]\npath = \"/ws\"\n");
    let now = Instant::from_millis(1_000);
    let xff = "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n";
    w.accept(0, peer(1), now).unwrap();
    w.receive(0, &mut upgrade_request("/ws", xff), &mut NoRoom, now);
    assert!(drain(&mut w, 0).starts_with(b"HTTP/1.1 101"));
    let stranger: SocketAddr = "198.18.0.9:5000".parse().unwrap();
    w.accept(1, stranger, now).unwrap();
    w.receive(1, &mut upgrade_request("/ws", xff), &mut NoRoom, now);
    assert!(drain(&mut w, 1).starts_with(b"HTTP/1.1 101"));
    let rows = w.snapshot(now);
    assert_eq!(
        rows[0].peer, "203.0.113.7:0",
        "the rightmost untrusted entry"
    );
    assert_eq!(
        rows[1].peer,
        stranger.to_string(),
        "not a trusted proxy: ignored"
    );
}

#[test]
fn config_proxy_protocol_needs_trusted_proxies() {
    let err = Config::parse("[listen]\nproxy_protocol = true\n").unwrap_err();
    assert!(err.to_string().contains("listen.proxy_protocol"), "{err}");
    assert!(Config::parse("[listen]\ntrusted_proxies = [\"not-a-cidr\"]\n").is_err());
}

const JWT_ROUTES: &str = r#"
[auth]
secret = "a-test-secret-of-at-least-32-bytes!!"
leeway_s = 0
[[route]]
path = "/secure"
kind = "pubsub"
auth = "jwt"
compression = false
[[route]]
path = "/readonly"
kind = "pubsub"
client_publish = false
compression = false
"#;

/// Opens `/secure` with `extra` header lines; returns the response head and, on 101, the
/// client engine.
fn open_jwt(
    w: &mut Worker,
    id: ConnId,
    target: &str,
    extra: &str,
    now: Instant,
) -> (String, Option<Connection>) {
    w.accept(id, peer(2000 + id as u16), now).unwrap();
    let mut req = upgrade_request(target, extra);
    w.receive(id, &mut req, &mut NoRoom, now);
    let out = drain(w, id);
    let head_len = out
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&out[..head_len]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return (head, None);
    }
    let mut client = Connection::new(
        Role::Client,
        ws::Config {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        },
        None,
        1,
    );
    let mut rest = out[head_len..].to_vec();
    client.read(&mut rest);
    (head, Some(client))
}

#[test]
fn jwt_route_refuses_missing_and_bad_tokens_with_401_counted() {
    use crate::gateway::auth::tests::{now_s, token};
    let (mut w, metrics) = worker_with(JWT_ROUTES);
    let now = Instant::from_millis(1_000);
    let (head, c) = open_jwt(&mut w, 0, "/secure", "", now);
    assert!(
        head.starts_with("HTTP/1.1 401") && head.contains("WWW-Authenticate: Bearer"),
        "{head}"
    );
    assert!(c.is_none() && w.is_finished(0));
    let expired = token(&serde_json::json!({"exp": now_s() - 5, "subscribe": ["*"]}));
    let (head, _) = open_jwt(
        &mut w,
        1,
        "/secure",
        &format!("Authorization: Bearer {expired}\r\n"),
        now,
    );
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = open_jwt(&mut w, 2, "/secure?token=garbage", "", now);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let text = metrics.render();
    for line in [
        "sluice_auth_total{result=\"missing\"} 1",
        "sluice_auth_total{result=\"expired\"} 1",
        "sluice_auth_total{result=\"invalid\"} 1",
        "sluice_handshakes_total{result=\"unauthorized\"} 3",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[test]
fn jwt_claims_scope_subscribe_and_publish_each_refusal_answered_and_counted() {
    use crate::gateway::auth::tests::{now_s, token};
    let (mut w, metrics) = worker_with(JWT_ROUTES);
    let now = Instant::from_millis(1_000);
    let t = token(&serde_json::json!({
        "exp": now_s() + 600, "subscribe": ["news.*"], "publish": ["chat"]
    }));
    // The browser way: the token as a subprotocol beside sluice.jwt, which is selected.
    let (head, c) = open_jwt(
        &mut w,
        0,
        "/secure",
        &format!("Sec-WebSocket-Protocol: sluice.jwt, {t}\r\n"),
        now,
    );
    assert!(
        head.contains("Sec-WebSocket-Protocol: sluice.jwt\r\n"),
        "{head}"
    );
    assert!(!head.contains(&t), "the token is never echoed");
    let mut c = c.unwrap();
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"subscribe","topic":"news.a","id":1}"#,
        now,
    );
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"subscribe","topic":"secret","id":2}"#,
        now,
    );
    send(
        &mut w,
        0,
        &mut c,
        r#"{"op":"publish","topic":"news.a","data":"x","id":3}"#,
        now,
    );
    let replies = texts(&events(&mut w, 0, &mut c));
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert!(replies[0].contains("\"subscribed\""), "{replies:?}");
    assert!(
        replies[1].contains("forbidden: the token does not allow this topic")
            && replies[1].contains("\"id\":2")
    );
    assert!(
        replies[2].contains("forbidden: the token does not allow publishing"),
        "{replies:?}"
    );
    // The allowed subscription gets deliveries; the refused one does not exist.
    w.deliver(&publication("news.a", "ok"), None, now);
    w.deliver(&publication("secret", "no"), None, now);
    assert_eq!(texts(&events(&mut w, 0, &mut c)).len(), 1);
    let text = metrics.render();
    assert!(
        text.contains("sluice_auth_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_auth_total{result=\"denied_subscribe\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_auth_total{result=\"denied_publish\"} 1"),
        "{text}"
    );
}

#[test]
fn jwt_expiry_closes_open_connection_1008_and_client_publish_off_refused() {
    use crate::gateway::auth::tests::{now_s, token};
    let (mut w, metrics) = worker_with(JWT_ROUTES);
    let now = Instant::from_millis(1_000);
    let t = token(&serde_json::json!({"exp": now_s() + 3, "subscribe": ["*"]}));
    let (_, c) = open_jwt(
        &mut w,
        0,
        "/secure",
        &format!("Authorization: Bearer {t}\r\n"),
        now,
    );
    let mut c = c.unwrap();
    // The deadline is the token's expiry (at most 3 s away), not the idle timeout.
    let at = w.next_timeout().unwrap();
    assert!(at <= now + Duration::from_secs(3), "{at:?}");
    let later = now + Duration::from_secs(4);
    assert!(w.handle_timeout(later).is_empty());
    let evs = events(&mut w, 0, &mut c);
    assert!(
        evs.iter().any(|e| matches!(e, Event::Close { code: Some(CloseCode(1008)), reason } if reason == "token expired")),
        "{evs:?}"
    );
    assert!(metrics
        .render()
        .contains("sluice_auth_total{result=\"expired_while_open\"} 1"));
    // A route without auth but with client_publish = false.
    let mut r = open(&mut w, 1, "/readonly", now);
    send(
        &mut w,
        1,
        &mut r,
        r#"{"op":"publish","topic":"t","data":"x"}"#,
        now,
    );
    let replies = texts(&events(&mut w, 1, &mut r));
    assert!(
        replies[0].contains("publishing is not allowed on this route"),
        "{replies:?}"
    );
}

#[test]
fn sources_denied_allowed_and_rate_limited_at_accept_counted() {
    let (mut w, metrics) = worker_with(
        "[limits]\nallow_sources = [\"127.0.0.0/8\", \"198.18.0.0/15\"]\n\
         deny_sources = [\"127.0.0.66/32\"]\nnew_connections_per_ip_per_s = 2\n\
         [[route]]\npath = \"/ws\"\n",
    );
    let now = Instant::from_millis(1_000);
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 4000);
    assert_eq!(
        w.accept(0, at("127.0.0.66"), now),
        Err(Refusal::SourceDenied)
    );
    assert_eq!(
        w.accept(0, at("203.0.113.1"), now),
        Err(Refusal::SourceDenied)
    );
    assert_eq!(w.accept(0, at("198.18.0.1"), now), Ok(()));
    assert_eq!(w.accept(1, at("198.18.0.1"), now), Ok(()));
    assert_eq!(
        w.accept(2, at("198.18.0.1"), now),
        Err(Refusal::ConnectionRate)
    );
    assert_eq!(w.accept(2, at("198.18.0.2"), now), Ok(()), "per source");
    let later = now + Duration::from_millis(600);
    assert_eq!(w.accept(3, at("198.18.0.1"), later), Ok(()), "refilled");
    let text = metrics.render();
    assert!(
        text.contains("sluice_connections_refused_total{reason=\"source_denied\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("sluice_connections_refused_total{reason=\"connection_rate\"} 1"),
        "{text}"
    );
}

#[test]
fn message_rate_over_budget_closes_1008_counted() {
    let (mut w, metrics) = worker_with(
        "[limits]\nmax_messages_per_s = 5\n[[route]]\npath = \"/echo\"\nkind = \"echo\"\ncompression = false\n",
    );
    let now = Instant::from_millis(1_000);
    let mut c = open(&mut w, 0, "/echo", now);
    for i in 0..5 {
        send(&mut w, 0, &mut c, &format!("m{i}"), now);
    }
    let evs = events(&mut w, 0, &mut c);
    assert_eq!(texts(&evs).len(), 5, "the burst is answered");
    assert!(!evs.iter().any(|e| matches!(e, Event::Close { .. })));
    // A second later the budget is back; then a burst of 6 at once goes over it.
    let later = now + Duration::from_secs(1);
    for i in 0..6 {
        c.send(MessageKind::Text, format!("n{i}").as_bytes())
            .unwrap();
    }
    let mut bytes = c.pending_output().to_vec();
    let n = bytes.len();
    c.consume_output(n);
    w.receive(0, &mut bytes, &mut NoRoom, later);
    let evs = events(&mut w, 0, &mut c);
    assert!(
        evs.iter().any(|e| matches!(e, Event::Close { code: Some(CloseCode(1008)), reason } if reason == "message rate limit")),
        "{evs:?}"
    );
    assert!(metrics
        .render()
        .contains("sluice_drops_total{reason=\"message_rate\"} 1"));
}
