//! Property-based fuzzing of what the network reaches in the gateway (no root, in CI as a
//! smoke of `PROPTEST_CASES` cases, default 64 each; a long run sets it high, see
//! docs/TESTING.md, "Fuzzing the gateway"):
//!
//! - `fuzz_worker_bytes`: arbitrary bytes, split at arbitrary points, into a worker with
//!   every route kind (pubsub, echo, an `auth = "jwt"` route, PROXY protocol from a trusted
//!   source, an Origin allowlist): upgrade requests mutated from valid ones, then WebSocket frames carrying
//!   JSON-protocol requests mutated from valid ones. No panic; every connection's queued
//!   output stays within its route's bound plus one reply; the worker's counts add up.
//! - `fuzz_protocol_json`: the JSON protocol parser on arbitrary and on mutated valid
//!   requests: an answer or an error, never a panic.
//! - `fuzz_jwt_verify`: the token verifier on arbitrary strings and on mutated valid
//!   tokens: a valid token only when it is the unmodified one.
//! - `fuzz_control_http`: the control plane's HTTP server (a real socket) on arbitrary and
//!   mutated requests: it answers or closes, and still serves `/healthz` afterwards.
//!
//! `FUZZ_DEBUG=1` prints each worker case's handshake, auth, message and drop counters
//! (to see which paths a run reaches).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use sluice::app::{App, BufTx};
use sluice::config::Config;
use sluice::gateway::worker::Worker;
use sluice::metrics::Metrics;
use tcp::Instant;

const SECRET: &str = "a-fuzzing-secret-of-at-least-32-bytes";

fn config() -> Arc<Config> {
    Arc::new(
        Config::parse(&format!(
            r#"
[listen]
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
[limits]
max_subscriptions = 8
max_frame_size = 4096
max_message_size = 8192
max_header_bytes = 2048
max_messages_per_s = 50
allowed_origins = ["https://ok.example"]
[auth]
secret = "{SECRET}"
[[route]]
path = "/ws"
kind = "pubsub"
max_queued_bytes = 4096
[[route]]
path = "/echo"
kind = "echo"
compression = false
max_queued_bytes = 4096
[[route]]
path = "/jwt"
kind = "pubsub"
auth = "jwt"
compression = false
max_queued_bytes = 4096
"#
        ))
        .unwrap(),
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn valid_token() -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"exp": now_s() + 3600, "subscribe": ["a*"], "publish": ["a"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A masked client frame (`opcode`, `payload`), as a browser sends it.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0x80 | (opcode & 0x0f)];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn upgrade(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn requests() -> Vec<Vec<u8>> {
    vec![
        br#"{"op":"subscribe","topic":"a"}"#.to_vec(),
        br#"{"op":"subscribe","topic":"ab","id":[1,{"x":null}]}"#.to_vec(),
        br#"{"op":"unsubscribe","topic":"a"}"#.to_vec(),
        br#"{"op":"publish","topic":"a","data":"hello"}"#.to_vec(),
        br#"{"op":"publish","topic":"zz","data":"\u00e9\ud83d\ude00"}"#.to_vec(),
    ]
}

/// Flips, inserts or deletes bytes of `base` at positions drawn from `edits`.
fn mutate(base: &[u8], edits: &[(u16, u8, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(pos, kind, byte) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = usize::from(pos) % v.len();
        match kind % 4 {
            0 => v[i] ^= byte,
            1 => v.insert(i, byte),
            2 => {
                v.remove(i);
            }
            _ => v[i] = byte,
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<(u16, u8, u8)>> {
    proptest::collection::vec(any::<(u16, u8, u8)>(), 0..6)
}

/// One client's bytes: an upgrade (maybe behind a PROXY header), then frames.
fn session_bytes() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let path = prop_oneof![Just("/ws"), Just("/echo"), Just("/jwt"), Just("/nope")];
    let auth = prop_oneof![
        Just(0u8), // none
        Just(1u8), // header
        Just(2u8), // subprotocol
        Just(3u8), // query
        Just(4u8), // a broken token
    ];
    let origin = prop_oneof![
        4 => Just("Origin: https://ok.example\r\n"),
        1 => Just("Origin: https://evil.example\r\n"),
        1 => Just(""),
    ];
    (
        (any::<bool>(), origin),
        path,
        auth,
        edits(),
        proptest::collection::vec((0u8..=10, any::<usize>(), edits(), any::<[u8; 4]>()), 0..8),
        any::<bool>(),
    )
        .prop_map(
            |((proxied, origin), path, auth, head_edits, frames, garbage)| {
                let token = valid_token();
                let (target, extra) = match auth {
                    1 => (
                        path.to_string(),
                        format!("Authorization: Bearer {token}\r\n"),
                    ),
                    2 => (
                        path.to_string(),
                        format!("Sec-WebSocket-Protocol: sluice.jwt, {token}\r\n"),
                    ),
                    3 => (format!("{path}?token={token}"), String::new()),
                    4 => (
                        path.to_string(),
                        format!("Authorization: Bearer {}x\r\n", &token[..token.len() - 3]),
                    ),
                    _ => (path.to_string(), String::new()),
                };
                let mut bytes = Vec::new();
                if proxied {
                    let header = ppp::v2::Builder::with_addresses(
                        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                        ppp::v2::Protocol::Stream,
                        (
                            "203.0.113.9:5000".parse::<SocketAddr>().unwrap(),
                            "10.0.0.2:8080".parse::<SocketAddr>().unwrap(),
                        ),
                    )
                    .build()
                    .unwrap();
                    bytes.extend(if garbage {
                        mutate(&header, &head_edits)
                    } else {
                        header
                    });
                }
                let head = upgrade(&target, &format!("{origin}{extra}"));
                bytes.extend(if garbage && !proxied {
                    mutate(&head, &head_edits)
                } else {
                    head
                });
                let reqs = requests();
                for (op, which, e, mask) in frames {
                    let payload = mutate(&reqs[which % reqs.len()], &e);
                    let opcode = match op {
                        0..=6 => 1, // text
                        7 => 2,     // binary
                        8 => 9,     // ping
                        9 => 8,     // close
                        _ => 0,     // a stray continuation
                    };
                    bytes.extend(client_frame(opcode, &payload, mask));
                }
                (proxied, bytes)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_worker_bytes(
        sessions in proptest::collection::vec((session_bytes(), proptest::collection::vec(1usize..64, 1..8)), 1..5),
        deliveries in proptest::collection::vec(0u8..3, 0..6),
    ) {
        let config = config();
        let metrics = Arc::new(Metrics::new());
        let mut w = Worker::new(0, Arc::clone(&config), Arc::clone(&metrics), None);
        let mut now = Instant::from_millis(1_000);
        let mut accepted = Vec::new();
        for (id, ((proxied, bytes), cuts)) in sessions.iter().enumerate() {
            let peer: SocketAddr = if *proxied { "10.0.0.1:40000" } else { "198.18.0.1:40000" }
                .parse()
                .unwrap();
            if w.accept(id, peer, now).is_err() {
                continue;
            }
            accepted.push(id);
            // The bytes in reads of the drawn sizes, cycling.
            let mut pos = 0;
            let mut k = 0;
            while pos < bytes.len() {
                let n = cuts[k % cuts.len()].min(bytes.len() - pos);
                let mut chunk = bytes[pos..pos + n].to_vec();
                let mut out = Vec::new();
                // A transport with little room, so output queues.
                w.receive(id, &mut chunk, &mut BufTx::new(&mut out, 512), now);
                pos += n;
                k += 1;
                now += Duration::from_millis(3);
            }
            for d in &deliveries {
                let topic = ["a", "ab", "zz"][usize::from(*d)];
                let text = sluice::gateway::protocol::Reply::Message { topic, data: "d" }.to_json();
                let p = sluice::gateway::Publication::new(Arc::from(topic), bytes::Bytes::from(text), 1);
                w.deliver(&p, None, now);
            }
            let _ = w.handle_timeout(now + Duration::from_secs(60));
        }
        // Every connection's output drains into an unbounded transport, and is bounded.
        for &id in &accepted {
            let mut out = Vec::new();
            App::flush(&mut w, id, &mut BufTx::new(&mut out, usize::MAX));
            prop_assert!(out.len() <= 64 * 1024, "connection {id} queued {} bytes", out.len());
        }
        for &id in &accepted {
            App::remove(&mut w, id);
        }
        prop_assert_eq!(App::live(&w), 0);
        let text = metrics.render();
        prop_assert!(text.contains("sluice_connections_open 0"), "{}", text);
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            for l in text.lines().filter(|l| l.starts_with("sluice_handshakes_total") || l.starts_with("sluice_auth_total") || l.starts_with("sluice_messages_in_total") || l.starts_with("sluice_drops_total")) {
                eprintln!("M {l}");
            }
        }
    }

    #[test]
    fn fuzz_protocol_json(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        which in any::<usize>(),
        e in edits(),
    ) {
        let _ = sluice::gateway::protocol::Request::parse(&raw);
        let reqs = requests();
        let _ = sluice::gateway::protocol::Request::parse(&mutate(&reqs[which % reqs.len()], &e));
    }

    #[test]
    fn fuzz_jwt_verify(raw in "\\PC{0,200}", e in edits()) {
        let cfg = config();
        let v = sluice::gateway::auth::Verifier::new(&cfg.auth).unwrap();
        prop_assert!(v.verify(Some(&raw), SystemTime::now()).is_err());
        let token = valid_token();
        let mutated = mutate(token.as_bytes(), &e);
        let result = String::from_utf8(mutated.clone())
            .map(|t| v.verify(Some(&t), SystemTime::now()));
        if mutated == token.as_bytes() {
            prop_assert!(matches!(result, Ok(Ok(_))));
        } else if let Ok(Ok(_)) = result {
            // A mutation may keep the token valid only if it decodes to the same claims
            // and signature (base64 padding bits): the signature still verified.
            let t = String::from_utf8(mutated).unwrap();
            prop_assert_eq!(t.split('.').count(), 3);
        }
    }

    #[test]
    fn fuzz_control_http(
        raw in proptest::collection::vec(any::<u8>(), 0..600),
        which in 0usize..4,
        e in edits(),
    ) {
        let addr = control_plane();
        let valid = [
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "POST /publish/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_string(),
            "POST /publish/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\nContent-Length: 3\r\n\r\nabc".to_string(),
            "GET /stat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n".to_string(),
        ];
        for bytes in [raw, mutate(valid[which].as_bytes(), &e)] {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        // Still serving.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        prop_assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "{}", answer);
    }
}

/// One control plane for the whole run (its own broker, no workers, a token).
fn control_plane() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let mut c =
            Config::parse("[control]\naddr = \"127.0.0.1:0\"\ntoken = \"fuzz-token\"\n").unwrap();
        c.control.publish_timeout_ms = 200;
        let config = Arc::new(c);
        let metrics = Arc::new(Metrics::new());
        let publisher =
            sluice::gateway::broker::spawn(Vec::new(), 64, Arc::clone(&metrics)).unwrap();
        let clock = dataplane::Clock::new();
        let health =
            sluice::control::health::Health::new(Vec::new(), clock, Duration::from_secs(2));
        let ctx = sluice::control::Context {
            metrics,
            publisher,
            workers: Vec::new(),
            config: Arc::clone(&config),
            health,
            cluster: None,
        };
        sluice::control::spawn(config.control.addr, ctx).unwrap()
    })
}
