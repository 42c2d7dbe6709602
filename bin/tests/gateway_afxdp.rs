//! Root lab tests: the WebSocket gateway (and ws-echo) on the AF_XDP backend over a 2-queue
//! veth, with real clients in the peer namespace (tungstenite threads, Python `websockets`,
//! also over wss:// with Node `ws`, and `openssl s_client`) and the control plane on the stack
//! namespace's loopback. The lab and every process are
//! removed on drop, even when an assertion fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/tls.rs"]
mod tls;

use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gw::{check_exposition, http, metric_value, node_in, python_in};
use lab::{Lab, Sluice, STACK_IP};

/// The gateway's WebSocket port.
const PORT: u16 = 8080;
/// The control plane, on the stack namespace's loopback.
const CONTROL: &str = "127.0.0.1:9100";

/// Writes `config` to a temporary file and starts the gateway on both queues.
fn start(lab: &Lab, config: &str) -> Sluice {
    let path = std::env::temp_dir().join(format!(
        "sluice-gwx-{}-{}.toml",
        std::process::id(),
        lab.prefix
    ));
    std::fs::write(&path, config).unwrap();
    let sluice = lab.sluice(
        "gateway",
        &[PORT],
        &[
            "--queues",
            "2",
            "--config",
            path.to_str().unwrap(),
            "--control",
            CONTROL,
        ],
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        sluice.listening.contains("app=gateway") && sluice.listening.contains("queues=0,1"),
        "{}",
        sluice.listening
    );
    sluice
}

/// `GET path` on the control plane; asserts 200.
fn get(lab: &Lab, path: &'static str) -> String {
    let (status, body) = lab.in_stack(move || http(CONTROL, "GET", path, ""));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Publishes `per_topic` messages `t{t}:{k}[|pad]` to each of `topics` topics, one
/// publisher thread per topic (each in order); returns the `delivered` counts.
fn publish(lab: &Lab, topics: usize, per_topic: usize, pad: usize) -> Vec<u64> {
    let filler = "x".repeat(pad);
    lab.in_stack(move || {
        let threads: Vec<_> = (0..topics)
            .map(|t| {
                let filler = filler.clone();
                std::thread::spawn(move || {
                    let mut delivered = Vec::with_capacity(per_topic);
                    for k in 0..per_topic {
                        let data = if filler.is_empty() {
                            format!("t{t}:{k}")
                        } else {
                            format!("t{t}:{k}|{filler}")
                        };
                        let (status, body) =
                            http(CONTROL, "POST", &format!("/publish/t{t}"), &data);
                        assert_eq!(status, 200, "publish t{t}:{k}: {body}");
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        delivered.push(v["delivered"].as_u64().unwrap());
                    }
                    delivered
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("publisher panicked"))
            .collect()
    })
}

/// Waits until `/stat` lists `n` connections subscribed to a topic; returns the rows.
fn wait_subscribed(lab: &Lab, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stat: serde_json::Value = serde_json::from_str(&get(lab, "/stat")).unwrap();
        let rows = stat["connections"].as_array().unwrap().clone();
        let subscribed = rows
            .iter()
            .filter(|c| c["topics"].as_u64().unwrap_or(0) > 0)
            .count();
        if subscribed >= n {
            return rows;
        }
        eprintln!("{} connections, {subscribed} subscribed", rows.len());
        assert!(
            Instant::now() < deadline,
            "only {subscribed} of {n} subscribed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One subscriber: connects, subscribes to `topic`, counts itself ready, then expects
/// `t{topic}:{k}` for k = 0..per_topic in order.
fn subscriber(topic: usize, per_topic: usize, ready: &AtomicUsize) -> Result<usize, String> {
    let addr = SocketAddrV4::new(STACK_IP, PORT).into();
    let mut stream = None;
    for _ in 0..5 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    let stream = stream.ok_or("connect failed")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(format!("ws://{STACK_IP}:{PORT}/ws"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    let sub = format!(r#"{{"op":"subscribe","topic":"t{topic}"}}"#);
    ws.send(tungstenite::Message::text(sub))
        .map_err(|e| format!("send: {e}"))?;
    let reply = ws.read().map_err(|e| format!("reply: {e}"))?;
    let reply: serde_json::Value =
        serde_json::from_str(reply.to_text().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if reply["op"] != "subscribed" {
        return Err(format!("reply {reply}"));
    }
    ready.fetch_add(1, Ordering::SeqCst);
    for k in 0..per_topic {
        let msg = ws
            .read()
            .map_err(|e| format!("t{topic} message {k}: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(msg.to_text().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let want = format!("t{topic}:{k}");
        if v["op"] != "message" || v["topic"] != format!("t{topic}") || v["data"] != want {
            return Err(format!("expected {want}, got {v}"));
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(per_topic)
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_afxdp_two_thousand_clients_ten_topics_in_order() {
    // SLUICE_GW_n_clients (a multiple of 10) shrinks the run when debugging by hand.
    let n_clients: usize = std::env::var("SLUICE_GW_n_clients")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    const TOPICS: usize = 10;
    const PER_TOPIC: usize = 1_000;
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let sluice = start(
        &lab,
        // Every client comes from the peer's one address.
        "[limits]\nmax_connections_per_ip = 10000\n\n\
         [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\ncompression = false\n",
    );
    // 2,000 sockets here plus the test's own files.
    rlimit::increase_nofile_limit(8_192).unwrap();
    let ready = Arc::new(AtomicUsize::new(0));
    let ready_c = Arc::clone(&ready);
    let clients = lab.spawn_in_peer(move || {
        // Threads started here inherit the peer namespace.
        let threads: Vec<_> = (0..n_clients)
            .map(|i| {
                let ready = Arc::clone(&ready_c);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || subscriber(i % TOPICS, PER_TOPIC, &ready))
                    .expect("spawn client thread")
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect::<Vec<_>>()
    });
    let rows = wait_subscribed(&lab, n_clients);
    assert_eq!(ready.load(Ordering::SeqCst), n_clients);
    // Both workers carry connections, and AF_XDP rows carry the TCP engine's view.
    let per_worker = |w: u64| rows.iter().filter(|r| r["worker"] == w).count();
    let (w0, w1) = (per_worker(0), per_worker(1));
    println!("connections per worker: {w0} {w1}");
    assert_eq!(w0 + w1, n_clients);
    assert!(w0 > 0 && w1 > 0, "one worker idle: {w0} {w1}");
    assert!(
        rows.iter().all(|r| r["tcp"]["state"] == "Established"),
        "{:?}",
        rows.first()
    );

    let started = Instant::now();
    let delivered = publish(&lab, TOPICS, PER_TOPIC, 0);
    let results = clients.join().expect("clients panicked");
    let elapsed = started.elapsed();
    // Every publish reached all 200 subscribers of its topic.
    assert_eq!(delivered.len(), TOPICS * PER_TOPIC);
    assert!(
        delivered.iter().all(|&d| d == (n_clients / TOPICS) as u64),
        "{:?}",
        delivered
            .iter()
            .find(|&&d| d != (n_clients / TOPICS) as u64)
    );
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} clients failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let received: usize = results.iter().map(|r| *r.as_ref().unwrap()).sum();
    assert_eq!(received, n_clients * PER_TOPIC);
    println!(
        "{} messages published, {received} delivered in order in {elapsed:?}",
        TOPICS * PER_TOPIC
    );

    // XDP counters are folded into the metrics every ~0.5 s.
    std::thread::sleep(Duration::from_secs(1));
    let text = get(&lab, "/metrics");
    check_exposition(&text, false);
    assert_eq!(
        metric_value(&text, "sluice_published_total"),
        (TOPICS * PER_TOPIC) as f64
    );
    assert_eq!(
        metric_value(&text, "sluice_messages_out_total{route=\"/ws\"}"),
        (n_clients + received) as f64
    );
    assert!(metric_value(&text, "sluice_xdp_packets_total{action=\"redirected\"}") > 0.0);
    for w in ["0", "1"] {
        assert!(
            text.contains(&format!("sluice_worker_busy_ratio{{worker=\"{w}\"}}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("sluice_tcp_retransmits_total{{worker=\"{w}\"}}")),
            "{text}"
        );
    }
    println!(
        "retransmits: {} + {}",
        metric_value(&text, "sluice_tcp_retransmits_total{worker=\"0\"}"),
        metric_value(&text, "sluice_tcp_retransmits_total{worker=\"1\"}")
    );
    // Header prediction took part of the Linux clients' segments (their ACKs of the
    // deliveries and their in-order frames), and never more than were received.
    let (received, predicted): (f64, f64) = ["0", "1"]
        .iter()
        .map(|w| {
            (
                metric_value(
                    &text,
                    &format!("sluice_tcp_segments_received_total{{worker=\"{w}\"}}"),
                ),
                metric_value(
                    &text,
                    &format!("sluice_tcp_header_predicted_total{{worker=\"{w}\"}}"),
                ),
            )
        })
        .fold((0.0, 0.0), |(r, p), (a, b)| (r + a, p + b));
    assert!(
        predicted > 0.0 && predicted <= received,
        "{predicted} of {received}"
    );
    println!("segments received {received}, predicted {predicted}");
    // ACK coalescing's series (a coalesced ACK is a predicted one).
    let coalesced: f64 = ["0", "1"]
        .iter()
        .map(|w| {
            metric_value(
                &text,
                &format!("sluice_tcp_acks_coalesced_total{{worker=\"{w}\"}}"),
            )
        })
        .sum();
    assert!(
        text.contains("sluice_tcp_acks_coalesced_total{worker=\"0\"}"),
        "{text}"
    );
    assert!(coalesced <= predicted, "{coalesced} of {predicted}");
    println!("ACKs coalesced {coalesced}");
    sluice.stop();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_afxdp_proxy_python_upstream_echoes_every_message() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    // The upstream is a kernel socket on the stack namespace's loopback.
    let mut upstream = python_in(Some(&lab.stack_ns), None, "echo_upstream.py", &[]);
    let line = upstream.line();
    let up_port = line.trim().strip_prefix("port=").expect("port line");
    let sluice = start(
        &lab,
        &format!(
            "[[route]]\npath = \"/p\"\nkind = \"proxy\"\nupstream = \"ws://127.0.0.1:{up_port}/\"\n"
        ),
    );
    let mut client = python_in(
        Some(&lab.peer_ns),
        Some(&STACK_IP.to_string()),
        "proxy_client.py",
        &[PORT.to_string(), "/p".into(), "300".into()],
    );
    assert!(client.wait_ok().contains("ok 300"));
    let text = get(&lab, "/metrics");
    assert_eq!(
        metric_value(&text, "sluice_messages_in_total{route=\"/p\"}"),
        300.0
    );
    assert_eq!(
        metric_value(&text, "sluice_messages_out_total{route=\"/p\"}"),
        300.0
    );
    sluice.stop();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_afxdp_wss_python_and_node_subscribers_and_openssl_tls13() {
    const TLS_PORT: u16 = 8443;
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let pki = tls::TestPki::new(&[&STACK_IP.to_string()]);
    let path = std::env::temp_dir().join(format!(
        "sluice-gwx-tls-{}-{}.toml",
        std::process::id(),
        lab.prefix
    ));
    std::fs::write(
        &path,
        format!(
            "[[listen.tls]]\nport = {TLS_PORT}\ncert = {:?}\nkey = {:?}\n\
             [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\n",
            tls::TestPki::arg(&pki.cert),
            tls::TestPki::arg(&pki.key),
        ),
    )
    .unwrap();
    let sluice = lab.sluice(
        "gateway",
        &[PORT, TLS_PORT],
        &[
            "--queues",
            "2",
            "--config",
            path.to_str().unwrap(),
            "--control",
            CONTROL,
        ],
    );
    let _ = std::fs::remove_file(&path);
    // 20 Python `websockets` and 20 Node `ws` subscribers at once, each trusting the CA.
    let args = [TLS_PORT.to_string(), "/ws".into()]
        .into_iter()
        .chain(["20", "4", "50", "--ca"].map(String::from))
        .chain([tls::TestPki::arg(&pki.ca)])
        .collect::<Vec<_>>();
    let host = STACK_IP.to_string();
    let mut subs = python_in(Some(&lab.peer_ns), Some(&host), "subscribers.py", &args);
    assert_eq!(subs.line().trim(), "ready");
    let mut node = node_in(
        Some(&lab.peer_ns),
        Some(&host),
        "node_subscribers.js",
        &args,
    );
    assert_eq!(node.line().trim(), "ready");
    let delivered = publish(&lab, 4, 50, 200);
    assert!(delivered.iter().all(|&d| d == 20), "{delivered:?}");
    let out = subs.wait_ok();
    assert!(out.contains("ok clients=20 received=2000"), "{out}");
    let out = node.wait_ok();
    assert!(out.contains("ok clients=20 received=2000"), "{out}");

    // openssl s_client from the peer namespace: TLS 1.3, ALPN http/1.1, the certificate
    // verified against the test CA.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.peer_ns,
            "openssl",
            "s_client",
            "-connect",
        ])
        .arg(format!("{STACK_IP}:{TLS_PORT}"))
        .args(["-servername", "sluice.test", "-alpn", "http/1.1", "-CAfile"])
        .arg(&pki.ca)
        .arg("-verify_return_error")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("New, TLSv1.3,"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    let metrics = get(&lab, "/metrics");
    let ok = metric_value(&metrics, "sluice_tls_handshakes_total{result=\"ok\"}")
        + metric_value(&metrics, "sluice_tls_handshakes_total{result=\"resumed\"}");
    assert!(ok >= 41.0, "{metrics}");
    sluice.stop();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_afxdp_sigterm_flushes_then_closes_1001() {
    let _serial = lab::serial();
    sigterm_flushes_then_closes_1001(&Lab::up(2));
}

/// The gateway's pub/sub smoke on the DPDK backend (`net_af_packet`, two queue pairs):
/// Python subscribers get every acknowledged publication, then 1001 at SIGTERM; the port's
/// counters are in `/metrics`.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_dpdk_python_pubsub_sigterm_closes_1001_port_metrics() {
    let _serial = lab::serial();
    sigterm_flushes_then_closes_1001(&Lab::up_dpdk(2));
}

/// 20 Python subscribers on two topics, 400 acknowledged publications, SIGTERM while they
/// are delivered: every client gets all 400, then close 1001; exit 0.
fn sigterm_flushes_then_closes_1001(lab: &Lab) {
    let mut sluice = start(
        lab,
        "[[route]]\npath = \"/ws\"\nkind = \"pubsub\"\nmax_queued_bytes = 8388608\n",
    );
    let mut subs = python_in(
        Some(&lab.peer_ns),
        Some(&STACK_IP.to_string()),
        "subscribers.py",
        &[PORT.to_string(), "/ws".into()]
            .into_iter()
            .chain(["20", "2", "200", "--expect-close", "1001"].map(String::from))
            .collect::<Vec<_>>(),
    );
    assert_eq!(subs.line().trim(), "ready");
    // Every publish is acknowledged (queued to all subscribers) before the signal; the
    // signal comes while they are still being delivered.
    let delivered = publish(lab, 2, 200, 1000);
    assert!(delivered.iter().all(|&d| d == 20), "{delivered:?}");
    if lab.backend == "dpdk" {
        // The main thread copies the port's counters into /metrics every half second.
        std::thread::sleep(Duration::from_millis(700));
        let metrics = get(lab, "/metrics");
        assert!(
            metric_value(&metrics, "sluice_dpdk_port_total{stat=\"ipackets\"}") > 0.0,
            "{metrics}"
        );
    }
    sluice.signal("TERM");
    assert!(subs.wait_ok().contains("ok clients=20 received=8000"));
    let status = sluice.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        sluice.log_text()
    );
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn gateway_afxdp_slow_consumer_dropped_others_continue_memory_bounded() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let sluice = start(
        &lab,
        "[[route]]\npath = \"/drop\"\nkind = \"pubsub\"\ncompression = false\n\
         slow_consumer = \"drop-newest\"\nmax_queued_bytes = 1048576\n\
         [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\ncompression = false\n\
         max_queued_bytes = 33554432\n",
    );
    let host = STACK_IP.to_string();
    let mut slow = python_in(
        Some(&lab.peer_ns),
        Some(&host),
        "slow_client.py",
        &[PORT.to_string(), "/drop".into(), "t0".into()],
    );
    assert_eq!(slow.line().trim(), "ready");
    wait_subscribed(&lab, 1);
    // The others read the same topic on a roomier route (a starved test machine must not
    // push them over the slow route's bound too).
    let mut fast = python_in(
        Some(&lab.peer_ns),
        Some(&host),
        "subscribers.py",
        &[PORT.to_string(), "/ws".into()]
            .into_iter()
            .chain(["4", "1", "1000"].map(String::from))
            .collect::<Vec<_>>(),
    );
    assert_eq!(fast.line().trim(), "ready");
    let rss_before = gw::rss_kib(sluice.pid());
    // 1000 x ~16 KiB = ~16 MiB to a client that reads nothing; its bound is 1 MiB.
    publish(&lab, 1, 1000, 16 * 1024);
    assert!(fast.wait_ok().contains("ok clients=4 received=4000"));
    let rss_after = gw::rss_kib(sluice.pid());
    println!("gateway RSS before {rss_before} KiB, after {rss_after} KiB");
    let text = get(&lab, "/metrics");
    let dropped = metric_value(
        &text,
        "sluice_drops_total{reason=\"slow_consumer_dropped\"}",
    );
    assert!(dropped >= 1.0, "{text}");
    println!("dropped for the slow consumer: {dropped}");
    // Bounded: far below the ~16 MiB published to the slow client.
    assert!(
        rss_after < rss_before + 8 * 1024,
        "{rss_before} -> {rss_after}"
    );
    drop(slow);
    sluice.stop();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn ws_echo_afxdp_python_websockets_echo_exact() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let sluice = lab.sluice("ws-echo", &[PORT], &["--queues", "2"]);
    assert!(
        sluice.listening.contains("app=ws-echo"),
        "{}",
        sluice.listening
    );
    for compression in ["on", "off"] {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &lab.peer_ns, "python3"])
            .arg(gw::repo().join("tests/clients/py_client.py"))
            .args([&PORT.to_string(), compression])
            .env("SLUICE_HOST", STACK_IP.to_string());
        let mut client = gw::Proc::spawn(&mut cmd);
        client.wait_ok();
    }
    sluice.stop();
}

// The headless Chromium page test on this backend is bin/tests/chromium_gateway.rs.

/// Polls `GET /healthz` until it answers 503 (at most `within`); returns the body.
fn healthz_until_unhealthy(lab: &Lab, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = lab.in_stack(|| http(CONTROL, "GET", "/healthz", ""));
        if status == 503 {
            return body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/healthz still 200 after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn ws_echo_afxdp_healthz_503_names_stalled_or_dead_worker() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    // Test-only fault injection: queue 1's worker stops polling 4 s after it starts.
    let sluice = lab.sluice_with_env(
        "ws-echo",
        &[PORT],
        &["--queues", "2", "--control", CONTROL],
        &["SLUICE_TEST_WORKER_FAULT=stall:1:4000"],
    );
    let started = Instant::now();
    let (status, body) = lab.in_stack(|| http(CONTROL, "GET", "/healthz", ""));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 200 check came too late to mean anything"
    );
    let body = healthz_until_unhealthy(&lab, Duration::from_secs(30));
    // Stalled at 4 s, reported once silent past the 2 s threshold.
    assert!(started.elapsed() >= Duration::from_secs(5), "{body}");
    assert!(body.starts_with("unhealthy: 1 of 2 worker(s)"), "{body}");
    assert!(
        body.contains("worker 1 (sluice-q1): stalled: last poll loop"),
        "{body}"
    );
    assert!(body.contains("unix time"), "{body}");
    assert!(!body.contains("worker 0"), "{body}");
    // The main thread logs the change (it looks every 0.5 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sluice.log_text().contains("workers unhealthy") {
        assert!(Instant::now() < deadline, "{}", sluice.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The stalled worker still takes the stop: the process ends cleanly.
    sluice.stop();

    // Worker 0's loop ends (as on a device error) 3 s after it starts.
    let _sluice = lab.sluice_with_env(
        "ws-echo",
        &[PORT],
        &["--queues", "2", "--control", CONTROL],
        &["SLUICE_TEST_WORKER_FAULT=exit:0:3000"],
    );
    let started = Instant::now();
    let (status, body) = lab.in_stack(|| http(CONTROL, "GET", "/healthz", ""));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(started.elapsed() < Duration::from_secs(3));
    let body = healthz_until_unhealthy(&lab, Duration::from_secs(30));
    assert!(
        body.contains("worker 0 (sluice-q0): exited: its poll loop ended"),
        "{body}"
    );
    assert!(!body.contains("worker 1"), "{body}");
}
