//! sluice-load against the reference servers and the loopback responder, on 127.0.0.1 only.
//! Runs are short (a few hundred ms) and nothing here asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use serde_json::Value;
use sluice_bench::responder::{bind_and_serve, ResponderConfig};
use sluice_bench::{ErrorKind, Mode, Proto, Settings};

/// A reference server process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &str) -> Self {
        Self::start_args(bin, &[])
    }

    fn start_args(bin: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("{bin} printed no listening line within 60 s")
            });
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process loopback responder, stopped when dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(proto: Proto, corrupt: bool) -> Self {
        let mut cfg = ResponderConfig::new(proto);
        cfg.corrupt = corrupt;
        Self::start_with(cfg)
    }

    fn start_with(cfg: ResponderConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            bind_and_serve(([127, 0, 0, 1], 0).into(), &cfg, &stop2, |a| {
                tx.send(a).unwrap();
            })
            .unwrap();
        });
        let addr = rx.recv().unwrap();
        Self {
            stop,
            addr,
            handle: Some(handle),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn json_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{name}-{}.json", std::process::id()))
}

/// Runs the sluice-load binary; returns (exit code, stdout, parsed JSON report).
fn load(name: &str, args: &[&str]) -> (i32, String, Value) {
    let json = json_path(name);
    let _ = std::fs::remove_file(&json);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-load"))
        .args(args)
        .args([
            "--warmup",
            "0.05",
            "--duration",
            "0.2",
            "--drain-timeout",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run sluice-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no JSON; stdout {stdout} stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        stdout,
        serde_json::from_str(&text).unwrap(),
    )
}

fn assert_clean(code: i32, stdout: &str, v: &Value, connections: u64) {
    assert_eq!(code, 0, "stdout: {stdout}");
    assert_eq!(v["error_total"], 0, "{stdout}");
    assert_eq!(v["connected"], connections);
    assert_eq!(v["settings"]["connections"], connections);
    assert_eq!(v["unanswered"], 0);
    assert!(v["messages"].as_u64().unwrap() > 0, "{stdout}");
    assert!(v["sent"].as_u64().unwrap() >= v["replies"].as_u64().unwrap());
    let l = &v["latency_us"];
    let p50 = l["p50"].as_f64().unwrap();
    assert!(p50 > 0.0);
    assert!(l["p99"].as_f64().unwrap() >= p50);
    assert!(l["max"].as_f64().unwrap() >= l["p999"].as_f64().unwrap());
    assert!(!v["percentiles"].as_array().unwrap().is_empty());
    assert!(stdout.contains("p99.9 us"));
}

fn run_against(bin: &str, proto: &str, extra: &[&str], name: &str) {
    let server = Server::start(bin);
    let target = server.addr.to_string();
    let mut args = vec![target.as_str(), "--proto", proto, "-c", "4"];
    args.extend_from_slice(extra);
    let (code, stdout, v) = load(name, &args);
    assert_clean(code, &stdout, &v, 4);
    assert_eq!(v["settings"]["proto"], proto);
}

const TCP: &str = env!("CARGO_BIN_EXE_ref-tcp-echo");
const TUNG: &str = env!("CARGO_BIN_EXE_ref-tungstenite");
const FWS: &str = env!("CARGO_BIN_EXE_ref-fastwebsockets");
const WS_ECHO: &str = env!("CARGO_BIN_EXE_ref-ws-echo");

/// `ref-ws-echo` (blocking, or busy-polling with `--spin`) echoes every pipelined message
/// byte for byte, and the report carries the CPU busy of the measurement window.
#[test]
fn ws_echo_reference_blocking_and_spinning_match() {
    for (name, extra) in [
        ("ws-echo-block", &[][..]),
        ("ws-echo-spin", &["--spin"][..]),
    ] {
        let server = Server::start_args(WS_ECHO, extra);
        let target = server.addr.to_string();
        let (code, stdout, v) = load(
            name,
            &[
                &target, "--proto", "ws", "-c", "4", "-k", "8", "-t", "2", "--pin", "0",
            ],
        );
        assert_clean(code, &stdout, &v, 4);
        let cpus = v["cpu_busy"].as_array().unwrap();
        assert!(!cpus.is_empty(), "{v}");
        for c in cpus {
            let b = c["busy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&b), "{c}");
        }
        assert!(
            stdout.contains("cpu busy during the measurement: cpu0"),
            "{stdout}"
        );
    }
}

/// Binds two listeners on consecutive loopback ports (retrying until a free pair is found).
fn consecutive_listeners() -> (std::net::TcpListener, std::net::TcpListener) {
    for _ in 0..200 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p == u16::MAX {
            continue;
        }
        if let Ok(b) = std::net::TcpListener::bind(("127.0.0.1", p + 1)) {
            return (a, b);
        }
    }
    panic!("no two consecutive free ports");
}

/// `--ports 2`: every other connection goes to the next port. There a TCP echo answers the
/// upgrade with its own request, so exactly those connections fail the handshake.
#[test]
fn ports_spread_connections_over_consecutive_ports() {
    let (ws_l, tcp_l) = consecutive_listeners();
    let target = ws_l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (l, proto) in [(ws_l, Proto::Ws), (tcp_l, Proto::Tcp)] {
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            sluice_bench::responder::serve(l, &ResponderConfig::new(proto), &stop).unwrap();
        }));
    }
    let (code, stdout, v) = load(
        "ports",
        &[
            &target, "--proto", "ws", "-c", "6", "-t", "2", "--ports", "2",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(v["connected"], 3, "{stdout}");
    assert_eq!(v["errors"]["handshake_rejected"], 3, "{stdout}");
    assert_eq!(v["settings"]["ports"], 2);
}

#[test]
fn tcp_echo_closed_loop_pipelined_matches() {
    run_against(
        TCP,
        "tcp",
        &["--pipeline", "4", "-t", "2", "--pin", "0"],
        "tcp-closed",
    );
}

#[test]
fn tcp_echo_open_loop_matches() {
    run_against(
        TCP,
        "tcp",
        &["--mode", "open", "--rate", "2000", "-k", "8"],
        "tcp-open",
    );
}

#[test]
fn tungstenite_closed_loop_matches() {
    run_against(TUNG, "ws", &["--pipeline", "2"], "tung-closed");
}

#[test]
fn tungstenite_open_loop_matches() {
    run_against(
        TUNG,
        "ws",
        &["--mode", "open", "--rate", "2000", "-k", "8"],
        "tung-open",
    );
}

#[test]
fn tungstenite_large_messages_match() {
    run_against(TUNG, "ws", &["-s", "70000"], "tung-large");
}

#[test]
fn fastwebsockets_closed_loop_matches() {
    run_against(FWS, "ws", &["--pipeline", "2", "-t", "2"], "fws-closed");
}

#[test]
fn fastwebsockets_open_loop_matches() {
    run_against(
        FWS,
        "ws",
        &["--mode", "open", "--rate", "2000", "-k", "8"],
        "fws-open",
    );
}

#[test]
fn fastwebsockets_medium_messages_match() {
    run_against(FWS, "ws", &["-s", "1000", "--spin"], "fws-medium");
}

#[test]
fn closed_port_reports_refused_and_fails() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("127.0.0.1:{port}");
    let (code, stdout, v) = load("refused", &[&target, "--proto", "tcp", "-c", "3"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(v["errors"]["connect_refused"], 3);
    assert_eq!(v["connected"], 0);
    assert!(stdout.contains("connect_refused"));
}

#[test]
fn ws_against_tcp_echo_handshake_rejected() {
    let server = Server::start(TCP);
    let target = server.addr.to_string();
    let (code, stdout, v) = load("rejected", &[&target, "--proto", "ws", "-c", "2"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(v["errors"]["handshake_rejected"], 2);
}

#[test]
fn corrupting_tcp_server_fails_binary() {
    let r = Responder::start(Proto::Tcp, true);
    let target = r.addr.to_string();
    let (code, stdout, v) = load("corrupt-tcp", &[&target, "--proto", "tcp", "-c", "2"]);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(v["errors"]["echo_mismatch"], 2);
}

#[test]
fn corrupting_ws_server_counts_mismatch() {
    let r = Responder::start(Proto::Ws, true);
    let mut s = Settings::new(r.addr);
    s.proto = Proto::Ws;
    s.connections = 3;
    s.warmup_s = 0.0;
    s.duration_s = 0.1;
    let report = sluice_bench::run(&s).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.errors.get(ErrorKind::EchoMismatch.name()), Some(&3));
}

#[test]
fn honest_responder_every_reply_checked() {
    for proto in [Proto::Tcp, Proto::Ws] {
        let r = Responder::start(proto, false);
        let mut s = Settings::new(r.addr);
        s.proto = proto;
        s.connections = 5;
        s.pipeline = 3;
        s.threads = 2;
        s.message_size = 5;
        s.warmup_s = 0.0;
        s.duration_s = 0.1;
        let report = sluice_bench::run(&s).unwrap();
        assert!(report.is_ok(), "{}", report.human());
        assert_eq!(report.sent, report.replies);
        assert_eq!(report.unanswered, 0);
    }
}

#[test]
fn open_loop_in_process_records_from_schedule() {
    let r = Responder::start(Proto::Ws, false);
    let mut s = Settings::new(r.addr);
    s.connections = 4;
    s.mode = Mode::Open;
    s.rate = Some(4000.0);
    s.pipeline = 4;
    s.warmup_s = 0.0;
    s.duration_s = 0.2;
    let report = sluice_bench::run(&s).unwrap();
    assert!(report.is_ok(), "{}", report.human());
    // Every message due in the window was sent and answered (the responder keeps up):
    // the schedule has 4000 * 0.2 = 800 slots.
    assert_eq!(report.messages + report.unsent, 800);
}

#[test]
fn ceiling_subcommand_runs_both_protocols() {
    for proto in ["tcp", "ws"] {
        let (code, stdout, v) = load(
            &format!("ceiling-{proto}"),
            &[
                "ceiling",
                "--proto",
                proto,
                "-c",
                "4",
                "-k",
                "4",
                "--pin",
                "0",
                "--responder-pin",
                "0",
            ],
        );
        assert_clean(code, &stdout, &v, 4);
        assert_eq!(v["kind"], "ceiling");
    }
}

#[test]
fn open_loop_stalled_server_shows_in_tail() {
    // The responder blocks for 200 ms after ~50 messages. Every slot of the schedule in the
    // first 100 ms of the stall cannot be answered before it ends, so with intended-time
    // stamping at least ~100 of the 500 samples are >= 100 ms: p90 must be >= 100 ms.
    // (A lower bound that holds however slow the machine is; nothing here is timed.)
    let mut cfg = ResponderConfig::new(Proto::Tcp);
    cfg.stall_after = Some((50 * 64, std::time::Duration::from_millis(200)));
    let r = Responder::start_with(cfg);
    let mut s = Settings::new(r.addr);
    s.proto = Proto::Tcp;
    s.connections = 2;
    s.mode = Mode::Open;
    s.rate = Some(1000.0);
    s.pipeline = 8;
    s.warmup_s = 0.0;
    s.duration_s = 0.5;
    let report = sluice_bench::run(&s).unwrap();
    assert!(report.is_ok(), "{}", report.human());
    assert!(report.latency_us.p90 >= 100_000.0, "{}", report.human());
}

#[test]
fn open_loop_without_rate_exits_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-load"))
        .args(["127.0.0.1:1", "--mode", "open"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate"));
}
