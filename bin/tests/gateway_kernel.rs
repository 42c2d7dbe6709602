//! The gateway on the kernel backend with real clients (Python `websockets`): fan-out with
//! per-topic order, slow consumers, graceful shutdown, proxy to a real upstream, `/metrics`
//! and `sluice stat`.
//! Everything started here is killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gateway.rs"]
mod gw;

use std::process::Command;

use gw::{check_exposition, http, python, repo, Proc};

/// A running gateway: its WebSocket port and control address.
struct Gateway {
    proc: Proc,
    port: u16,
    control: String,
}

impl Gateway {
    fn start(config: &str) -> Gateway {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("sluice-gw-{}-{nanos}.toml", std::process::id()));
        std::fs::write(&path, config).unwrap();
        let mut proc = Proc::spawn(Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "run",
            "--backend",
            "kernel",
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--control",
            "127.0.0.1:0",
            "--app",
            "gateway",
            "--log-level",
            "warn",
            "--config",
            path.to_str().unwrap(),
        ]));
        let line = proc.line();
        let _ = std::fs::remove_file(&path);
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        Gateway {
            port: field("port=").parse().unwrap(),
            control: field("control="),
            proc,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    fn publish(&self, topic: &str, body: &str) -> String {
        let (status, body) = http(&self.control, "POST", &format!("/publish/{topic}"), body);
        assert_eq!(status, 200, "publish {topic}: {body}");
        body
    }

    fn get(&self, path: &str) -> String {
        let (status, body) = http(&self.control, "GET", path, "");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        self.get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    fn rss_kib(&self) -> u64 {
        gw::rss_kib(self.pid())
    }
}

const PUBSUB: &str = r#"
[[route]]
path = "/ws"
kind = "pubsub"
max_queued_bytes = 8388608
[[route]]
path = "/drop"
kind = "pubsub"
compression = false
slow_consumer = "drop-newest"
max_queued_bytes = 1048576
[[route]]
path = "/strict"
kind = "pubsub"
compression = false
slow_consumer = "close"
slow_close_code = 1013
max_queued_bytes = 1048576
"#;

/// Publishes `per_topic` messages to each of `topics` topics, interleaved, with `pad`
/// bytes of filler; returns the total.
fn publish_all(gw: &Gateway, topics: usize, per_topic: usize, pad: usize) -> usize {
    let filler = "x".repeat(pad);
    for k in 0..per_topic {
        for t in 0..topics {
            let data = if pad == 0 {
                format!("t{t}:{k}")
            } else {
                format!("t{t}:{k}|{filler}")
            };
            gw.publish(&format!("t{t}"), &data);
        }
    }
    topics * per_topic
}

/// Waits (bounded by attempts, not time) until `/stat` shows `n` connections subscribed
/// to at least one topic.
fn wait_subscribed(gw: &Gateway, n: usize) {
    for _ in 0..200 {
        let stat: serde_json::Value = serde_json::from_str(&gw.get("/stat")).unwrap();
        let subscribed = stat["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["topics"].as_u64().unwrap_or(0) > 0)
            .count();
        if subscribed >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("subscriptions did not show up in /stat");
}

#[test]
fn gateway_pubsub_clients_receive_their_topics_in_order() {
    let gw = Gateway::start(PUBSUB);
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [gw.port.to_string(), "/ws".into()]
            .into_iter()
            .chain(["50", "5", "40"].map(String::from))
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut plain = python("subscribers.py", &args(&[]));
    assert_eq!(plain.line().trim(), "ready");
    let mut deflate = python("subscribers.py", &args(&["--compress"]));
    assert_eq!(deflate.line().trim(), "ready");
    let sent = publish_all(&gw, 5, 40, 100);
    // Each client has 2 topics x 40 messages.
    assert!(plain.wait_ok().contains("ok clients=50 received=4000"));
    assert!(deflate.wait_ok().contains("ok clients=50 received=4000"));

    // /metrics: strict line check of both formats, and the counters match what was sent.
    check_exposition(&gw.get("/metrics"), false);
    let (status, om) = gw::http_accept(
        &gw.control,
        "/metrics",
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
    );
    assert_eq!(status, 200);
    check_exposition(&om, true);
    assert!(om.contains("sluice_published_total"), "{om}");
    assert_eq!(gw.metric("sluice_published_total"), sent as f64);
    // 100 clients x (2 subscribe replies + 80 deliveries).
    assert_eq!(
        gw.metric("sluice_messages_out_total{route=\"/ws\"}"),
        100.0 * 82.0
    );
    assert_eq!(gw.metric("sluice_messages_in_total{route=\"/ws\"}"), 200.0);
    assert_eq!(gw.metric("sluice_handshakes_total{result=\"ok\"}"), 100.0);
}

fn slow_consumer_case(path: &str, reason: &str) {
    let gw = Gateway::start(PUBSUB);
    let mut slow = python(
        "slow_client.py",
        &[gw.port.to_string(), path.to_string(), "t0".to_string()],
    );
    assert_eq!(slow.line().trim(), "ready");
    wait_subscribed(&gw, 1);
    // The others read the same topic on the roomier `/ws` route, so a CPU-starved test
    // machine cannot push them over the slow route's 1 MiB bound too.
    let mut fast = python(
        "subscribers.py",
        &[gw.port.to_string(), "/ws".to_string()]
            .into_iter()
            .chain(["4", "1", "1000"].map(String::from))
            .collect::<Vec<_>>(),
    );
    assert_eq!(fast.line().trim(), "ready");
    let rss_before = gw.rss_kib();
    // 1000 x ~16 KiB = ~16 MiB to a client that reads nothing; its bound is 1 MiB.
    publish_all(&gw, 1, 1000, 16 * 1024);
    assert!(fast.wait_ok().contains("ok clients=4 received=4000"));
    assert!(
        gw.metric(&format!("sluice_drops_total{{reason=\"{reason}\"}}")) >= 1.0,
        "{}",
        gw.get("/metrics")
    );
    let rss_after = gw.rss_kib();
    eprintln!("{path}: gateway RSS before {rss_before} KiB, after {rss_after} KiB");
    // Bounded: far below what was published to the slow client.
    assert!(
        rss_after < rss_before + 8 * 1024,
        "{rss_before} -> {rss_after}"
    );
}

#[test]
fn gateway_slow_consumer_drop_newest_others_continue() {
    slow_consumer_case("/drop", "slow_consumer_dropped");
}

#[test]
fn gateway_slow_consumer_close_others_continue() {
    slow_consumer_case("/strict", "slow_consumer_closed");
}

#[test]
fn gateway_sigterm_flushes_then_closes_1001() {
    let gw = Gateway::start(PUBSUB);
    let mut subs = python(
        "subscribers.py",
        &[gw.port.to_string(), "/ws".to_string()]
            .into_iter()
            .chain(["20", "2", "200", "--expect-close", "1001"].map(String::from))
            .collect::<Vec<_>>(),
    );
    assert_eq!(subs.line().trim(), "ready");
    // Every publish below was acknowledged (queued to all subscribers) before SIGTERM.
    publish_all(&gw, 2, 200, 1000);
    let pid = gw.pid().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    assert!(subs.wait_ok().contains("ok clients=20 received=8000"));
    let mut gw = gw;
    let exit = gw.proc.child.wait().unwrap();
    assert!(exit.success(), "gateway exit: {exit}");
}

#[test]
fn gateway_stat_prints_connections() {
    let gw = Gateway::start(PUBSUB);
    let mut slow = python(
        "slow_client.py",
        &[gw.port.to_string(), "/ws".to_string(), "news".to_string()],
    );
    assert_eq!(slow.line().trim(), "ready");
    wait_subscribed(&gw, 1);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["stat", "--control", &gw.control])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("connections: 1"), "{text}");
    assert!(text.contains("/ws"), "{text}");
    assert!(
        text.contains("sluice_handshakes_total{result=\"ok\"} 1"),
        "{text}"
    );
}

#[test]
fn gateway_check_config_names_bad_key() {
    let dir = std::env::temp_dir().join(format!("sluice-gw-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[route]]\npath = \"/p\"\nkind = \"proxy\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("route[0].upstream"), "{err}");
    let good = repo().join("deploy/sluice.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gateway_proxy_python_upstream_echoes_every_message() {
    let mut upstream = python("echo_upstream.py", &[]);
    let line = upstream.line();
    let up_port = line.trim().strip_prefix("port=").expect("port line");
    let gw = Gateway::start(&format!(
        "[[route]]\npath = \"/p\"\nkind = \"proxy\"\nupstream = \"ws://127.0.0.1:{up_port}/\"\n"
    ));
    let mut client = python(
        "proxy_client.py",
        &[gw.port.to_string(), "/p".to_string(), "300".to_string()],
    );
    assert!(client.wait_ok().contains("ok 300"));
    assert_eq!(gw.metric("sluice_messages_in_total{route=\"/p\"}"), 300.0);
    assert_eq!(gw.metric("sluice_messages_out_total{route=\"/p\"}"), 300.0);
}

#[test]
fn gateway_proxy_unreachable_upstream_closes_1014() {
    // Bind and drop a listener to get a port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&format!(
        "[[route]]\npath = \"/p\"\nkind = \"proxy\"\nupstream = \"ws://{dead}/\"\n"
    ));
    let mut client = python(
        "proxy_client.py",
        &[gw.port.to_string(), "/p".to_string(), "1".to_string()],
    );
    let out = client.rest();
    let status = client.child.wait().unwrap();
    assert!(!status.success(), "{out}");
    assert!(out.contains("closed 1014"), "{out}");
    assert_eq!(
        gw.metric("sluice_drops_total{reason=\"upstream_failed\"}"),
        1.0
    );
}

#[test]
fn ws_echo_kernel_healthz_503_names_stalled_event_loop() {
    // Test-only fault injection: the event loop stops polling 3 s after it starts.
    let mut proc = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env("SLUICE_TEST_WORKER_FAULT", "stall:0:3000")
            .args([
                "run",
                "--backend",
                "kernel",
                "--ip",
                "127.0.0.1",
                "--port",
                "0",
                "--control",
                "127.0.0.1:0",
                "--app",
                "ws-echo",
                "--log-level",
                "error",
            ]),
    );
    let line = proc.line();
    let started = std::time::Instant::now();
    let control = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("control="))
        .unwrap_or_else(|| panic!("no control= in {line:?}"))
        .to_string();
    let (status, body) = http(&control, "GET", "/healthz", "");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the 200 check came too late to mean anything"
    );
    let deadline = started + std::time::Duration::from_secs(30);
    let body = loop {
        let (status, body) = http(&control, "GET", "/healthz", "");
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(std::time::Instant::now() < deadline, "/healthz still 200");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Stalled at 3 s, reported once silent past the 2 s threshold.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "{body}"
    );
    assert!(
        body.contains("worker 0 (kernel event loop): stalled: last poll loop"),
        "{body}"
    );
    // SIGTERM ends the stall and the process exits cleanly.
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Behind a load balancer: a PROXY v2 header (from a trusted source) and a trusted
/// proxy's `X-Forwarded-For` name the client that `/stat` shows; a trusted source without
/// the header is closed and counted. (Every source is trusted here, on loopback; the
/// untrusted cases are in the worker's unit tests.)
#[test]
fn gateway_proxy_protocol_v2_and_forwarded_for_name_the_real_client() {
    use std::io::Write as _;
    let gw = Gateway::start(
        "[listen]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n\
         [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\n",
    );
    let addr = format!("127.0.0.1:{}", gw.port);
    let client: std::net::SocketAddr = "203.0.113.7:41000".parse().unwrap();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, addr.parse::<std::net::SocketAddr>().unwrap()),
    )
    .build()
    .unwrap();
    s.write_all(&header).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws"), s).unwrap();
    // The second one: a LOCAL header, then a trusted proxy's X-Forwarded-For.
    let mut s2 = std::net::TcpStream::connect(&addr).unwrap();
    let local = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::Protocol::Unspecified,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    s2.write_all(&local).unwrap();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/ws"))
            .unwrap();
    req.headers_mut()
        .insert("X-Forwarded-For", "6.6.6.6, 198.51.100.9".parse().unwrap());
    let (mut ws2, _) = tungstenite::client(req, s2).unwrap();
    let stat: serde_json::Value = serde_json::from_str(&gw.get("/stat")).unwrap();
    let mut peers: Vec<String> = stat["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["peer"].as_str().unwrap().to_string())
        .collect();
    peers.sort();
    assert_eq!(peers, ["198.51.100.9:0", "203.0.113.7:41000"]);
    // Garbage where the header belongs: closed without an answer, counted.
    let mut s3 = std::net::TcpStream::connect(&addr).unwrap();
    s3.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s3.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s3, &mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(
        gw.metric("sluice_handshakes_total{result=\"bad_proxy_header\"}"),
        1.0
    );
    let _ = ws.close(None);
    let _ = ws2.close(None);
}

/// Connection tokens and the control-plane token through a real client (tungstenite) and
/// real HTTP: 401 without, scoped topics with, `sluice stat --token`.
#[test]
fn gateway_jwt_route_and_control_token() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "an-integration-test-secret-32-bytes!";
    let gw = Gateway::start(&format!(
        "[control]\ntoken = \"ctl-secret\"\n\
         [auth]\nsecret = \"{SECRET}\"\n\
         [[route]]\npath = \"/secure\"\nkind = \"pubsub\"\nauth = \"jwt\"\n"
    ));
    // The control plane: ingest and /stat need the token, metrics and health do not.
    let (status, _) = http(&gw.control, "POST", "/publish/news", "x");
    assert_eq!(status, 401);
    let (status, _) = http(&gw.control, "GET", "/stat", "");
    assert_eq!(status, 401);
    assert_eq!(http(&gw.control, "GET", "/healthz", "").0, 200);
    assert_eq!(http(&gw.control, "GET", "/metrics", "").0, 200);
    let publish = |data: &str| {
        let mut s = std::net::TcpStream::connect(&gw.control).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!(
                "POST /publish/news.a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ctl-secret\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{data}",
                data.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    // No token: 401 before any WebSocket.
    let url = format!("ws://127.0.0.1:{}/secure", gw.port);
    match tungstenite::connect(&url) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = encode(
        &Header::default(),
        &serde_json::json!({"exp": exp, "subscribe": ["news.*"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let mut ask = |text: &str| {
        ws.send(tungstenite::Message::text(text)).unwrap();
        let reply = ws.read().unwrap();
        serde_json::from_str::<serde_json::Value>(reply.to_text().unwrap()).unwrap()
    };
    assert_eq!(
        ask(r#"{"op":"subscribe","topic":"news.a"}"#)["op"],
        "subscribed"
    );
    let denied = ask(r#"{"op":"subscribe","topic":"admin"}"#);
    assert_eq!(denied["op"], "error", "{denied}");
    let denied = ask(r#"{"op":"publish","topic":"news.a","data":"x"}"#);
    assert_eq!(denied["op"], "error", "{denied}");
    let answer = publish("hello");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let msg = ws.read().unwrap();
    assert!(
        msg.to_text().unwrap().contains("\"data\":\"hello\""),
        "{msg}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["stat", "--control", &gw.control, "--token", "ctl-secret"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("sluice_auth_total{result=\"denied_subscribe\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sluice_auth_total{result=\"denied_publish\"} 1"),
        "{text}"
    );
    assert!(text.contains("connections: 1"), "{text}");
    let _ = ws.close(None);
}

/// `check-config` refuses a control plane off loopback without a token, and warns about
/// pubsub routes open to anyone on a non-loopback listen address.
#[test]
fn gateway_check_config_control_token_rule_and_open_publish_warning() {
    let dir = std::env::temp_dir().join(format!("sluice-gw-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check-config", path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check("open.toml", "[control]\naddr = \"198.18.0.3:9100\"\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("control.token"),
        "{err}"
    );
    let out = check(
        "warn.toml",
        "[listen]\nip = \"0.0.0.0\"\n[[route]]\npath = \"/ws\"\nkind = \"pubsub\"\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("warning: route /ws: any client"), "{text}");
    let out = check(
        "quiet.toml",
        "[listen]\nip = \"0.0.0.0\"\n[[route]]\npath = \"/ws\"\nkind = \"pubsub\"\nclient_publish = false\n",
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));
    let _ = std::fs::remove_dir_all(&dir);
}
