//! Root lab tests: `sluice-load bypass` (the load generator on Sluice's own stack over
//! AF_XDP in the peer namespace) against the real `sluice` binary on AF_XDP in the stack
//! namespace, WebSocket and TCP; and the floor (`sluice-load floor` -> `sluice-load
//! reflect`). The generator checks every echoed byte and exits 1 on any mismatch; no
//! figure is asserted.
//!
//! The server is `$SLUICE_BIN` (deploy/test.sh exports its release build), else
//! `target/release/sluice` beside this workspace. Each test makes its own lab
//! (`deploy/lab.sh`, a unique prefix) and removes it, and kills what it started, on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

/// Busy-polling servers and clients: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const STACK_IP: &str = "198.18.0.2";
const BYPASS_IP: &str = "198.18.0.5";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The server binary under test.
fn sluice_bin() -> PathBuf {
    let bin = match std::env::var_os("SLUICE_BIN") {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo().join("target"), PathBuf::from);
            target.join("release/sluice")
        }
    };
    assert!(
        bin.is_file(),
        "no sluice binary at {} (set SLUICE_BIN, or `cargo build --release -p sluice`)",
        bin.display()
    );
    bin
}

struct Lab {
    prefix: String,
    stack_ns: String,
    peer_ns: String,
    stack_if: String,
    peer_if: String,
    stack_mac: String,
}

impl Lab {
    fn up() -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "sbp{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("bash")
            .arg(repo().join("deploy/lab.sh"))
            .args(["up", "--prefix", &prefix, "--queues", "1"])
            .output()
            .expect("run deploy/lab.sh");
        // The guard first: a half-made lab is still removed.
        let mut lab = Lab {
            prefix,
            stack_ns: String::new(),
            peer_ns: String::new(),
            stack_if: String::new(),
            peer_if: String::new(),
            stack_mac: String::new(),
        };
        assert!(
            out.status.success(),
            "lab.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| -> String {
            env.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("lab.sh up printed no {key}: {env}"))
                .to_string()
        };
        lab.stack_ns = value("STACK_NS");
        lab.peer_ns = value("PEER_NS");
        lab.stack_if = value("STACK_IF");
        lab.peer_if = value("PEER_IF");
        lab.stack_mac = value("STACK_MAC");
        assert_eq!(value("STACK_IP"), STACK_IP);
        lab
    }

    /// Starts `program args` in the stack namespace and waits for its `listening` line.
    fn serve(&self, program: &std::path::Path, args: &[&str]) -> Server {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.stack_ns])
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let server = Server { child };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            // Keep the pipe drained; the log goes to the test's output on failure.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.starts_with("listening") => return server,
                Ok(_) => {}
                Err(e) => panic!("no listening line from {}: {e}", program.display()),
            }
        }
    }

    /// Runs `sluice-load ARGS` in the peer namespace.
    fn load(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.peer_ns])
            .arg(env!("CARGO_BIN_EXE_sluice-load"))
            .args(args)
            .output()
            .expect("run sluice-load")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("deploy/lab.sh"))
            .args(["down", "--prefix", &self.prefix])
            .output();
    }
}

/// A server process, ended (SIGTERM, then SIGKILL) on drop.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load, requires a clean exit, and returns the JSON report.
fn run_load(lab: &Lab, args: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!("{}-{}.json", lab.prefix, args[0]));
    let mut all: Vec<&str> = args.to_vec();
    let path = json.to_string_lossy().into_owned();
    all.extend(["--warmup", "0.3", "-d", "2", "--json", &path]);
    let out = lab.load(&all);
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert!(
        out.status.success(),
        "sluice-load {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("the JSON report")
}

/// Every message answered and checked, none failed.
fn assert_clean(r: &Value, connections: u64) {
    assert_eq!(r["error_total"], 0, "{r}");
    assert_eq!(r["connected"], connections, "{r}");
    assert!(r["messages"].as_u64().unwrap() > 1_000, "{r}");
    assert_eq!(r["sent"], r["replies"], "{r}");
    assert_eq!(r["unanswered"], 0, "{r}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn bypass_client_against_sluice_afxdp_ws_and_tcp_every_echo_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = Lab::up();
    let bin = sluice_bin();
    // Messages over several segments, several in flight on each connection.
    let r = serve_and_load(
        &lab,
        &bin,
        "ws-echo",
        9001,
        &["--compression", "off"],
        "ws",
        "8",
        "3000",
        "4",
    );
    assert_clean(&r, 8);
    assert_eq!(r["kind"], "bypass");
    assert_eq!(r["client_wait"], "spin");
    let r = serve_and_load(&lab, &bin, "tcp-echo", 9002, &[], "tcp", "16", "64", "16");
    assert_clean(&r, 16);
}

/// Serves `app` with Sluice on AF_XDP on the stack side (port `port`, `extra` flags) and
/// runs `sluice-load bypass` against it from the peer side: `proto`, `conns` connections
/// of `size`-byte messages, `in_flight` each. Returns the report; the server is stopped.
#[allow(clippy::too_many_arguments)]
fn serve_and_load(
    lab: &Lab,
    bin: &Path,
    app: &str,
    port: u16,
    extra: &[&str],
    proto: &str,
    conns: &str,
    size: &str,
    in_flight: &str,
) -> Value {
    let ip = format!("{STACK_IP}/24");
    let port_text = port.to_string();
    let mut args = vec![
        "run",
        "--backend",
        "afxdp",
        "--iface",
        &lab.stack_if,
        "--ip",
        &ip,
        "--port",
        &port_text,
        "--app",
        app,
        "--log-level",
        "warn",
    ];
    args.extend_from_slice(extra);
    let _server = lab.serve(bin, &args);
    let target = format!("{STACK_IP}:{port}");
    let client_ip = format!("{BYPASS_IP}/24");
    run_load(
        lab,
        &[
            "bypass",
            &target,
            "--iface",
            &lab.peer_if,
            "--ip",
            &client_ip,
            "--proto",
            proto,
            "-c",
            conns,
            "-s",
            size,
            "-k",
            in_flight,
        ],
    )
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn floor_frames_reflected_between_two_afxdp_sockets_payload_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = Lab::up();
    let addr = format!("{STACK_IP}:9009");
    let _reflector = lab.serve(
        std::path::Path::new(env!("CARGO_BIN_EXE_sluice-load")),
        &["reflect", "--iface", &lab.stack_if, "--addr", &addr],
    );
    let r = run_load(
        &lab,
        &[
            "floor",
            &addr,
            "--iface",
            &lab.peer_if,
            "--ip",
            "198.18.0.6",
            "--dst-mac",
            &lab.stack_mac,
            "-s",
            "70",
            "-k",
            "4",
        ],
    );
    assert_clean(&r, 1);
    assert_eq!(r["kind"], "floor");
}
