//! Root lab tests: connection close variants seen from the Linux peer, graceful stop,
//! kill -9 and restart, and one-line startup errors (including no privileges) of `sluice --backend afxdp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use lab::{Lab, STACK_IP};

/// `ss -tan` lines in the peer namespace towards the stack's `port`.
fn peer_states(lab: &Lab, port: u16) -> String {
    let out = lab.peer_ok(&["ss", "-tan"]);
    out.lines()
        .filter(|l| l.contains(&format!("{STACK_IP}:{port}")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_sluice_closes_first_on_sigterm_peer_close_wait_sluice_time_wait_exit_zero() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let mut sluice = lab.sluice("tcp-echo", &[7], &[]);
    let mut conn = lab.connect(7).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    conn.read_exact(&mut b).unwrap();

    sluice.signal("TERM");
    // Sluice's FIN arrives: end of stream, and the peer sits in CLOSE-WAIT.
    assert_eq!(conn.read(&mut b).unwrap(), 0);
    let states = peer_states(&lab, 7);
    assert!(states.contains("CLOSE-WAIT"), "{states}");
    drop(conn);
    let status = sluice
        .wait_exit(Duration::from_secs(15))
        .expect("sluice did not stop on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // Sluice closed first, so Sluice holds TIME_WAIT (its worker logs the count at exit).
    let log = sluice.log_text();
    assert_eq!(lab::Sluice::log_sum(&log, "time_wait"), 1, "{log}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_peer_closes_first_peer_holds_time_wait() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let _sluice = lab.sluice("tcp-echo", &[7], &[]);
    let mut conn = lab.connect(7).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"bye").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"bye");
    drop(conn);
    let states = peer_states(&lab, 7);
    assert!(states.contains("TIME-WAIT"), "{states}");
}

/// The first `packets N` of `nft list chain inet sc CHAIN` in the peer namespace: the
/// FIN counter of that chain.
fn fin_counter(lab: &Lab, chain: &str) -> u64 {
    let out = lab.peer_ok(&["nft", "list", "chain", "inet", "sc", chain]);
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_simultaneous_close_fins_cross_both_hold_time_wait() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    // Long enough a drain for the held FINs to be retransmitted and acknowledged.
    let mut sluice = lab.sluice("tcp-echo", &[7], &["--stop-grace-ms", "30000"]);
    let mut conn = lab.connect(7).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    conn.read_exact(&mut b).unwrap();
    // Let the delayed ACKs of the exchange go out first.
    std::thread::sleep(Duration::from_millis(300));

    // In the peer namespace, hold everything of this connection in both directions, and
    // count the FINs: each side's FIN is then sent before the other's can arrive.
    lab.peer_ok(&["nft", "add", "table", "inet", "sc"]);
    for (chain, m) in [
        ("input", format!("ip saddr {STACK_IP} tcp sport 7")),
        ("output", format!("ip daddr {STACK_IP} tcp dport 7")),
    ] {
        lab.peer_ok(&[
            "nft",
            &format!("add chain inet sc {chain} {{ type filter hook {chain} priority 0; }}"),
        ]);
        lab.peer_ok(&[
            "nft",
            &format!("add rule inet sc {chain} {m} tcp flags & fin == fin counter drop"),
        ]);
        lab.peer_ok(&["nft", &format!("add rule inet sc {chain} {m} drop")]);
    }

    // Sluice closes (SIGTERM drains in order): its FIN is held at the peer's input.
    sluice.signal("TERM");
    assert!(
        wait_for(10, || fin_counter(&lab, "input") >= 1),
        "Sluice sent no FIN"
    );
    // The peer closes too, not having seen Sluice's FIN: held at its output.
    conn.shutdown(Shutdown::Write).unwrap();
    assert!(
        wait_for(10, || fin_counter(&lab, "output") >= 1),
        "the peer sent no FIN"
    );
    let states = peer_states(&lab, 7);
    assert!(states.contains("FIN-WAIT-1"), "{states}");

    // Release: the retransmitted FINs cross. Whichever arrives first, each side has sent
    // its FIN before receiving the other's, so both end in TIME_WAIT (RFC 9293 3.6,
    // simultaneous close); in an ordinary close only the side that closed first does.
    lab.peer_ok(&["nft", "delete", "table", "inet", "sc"]);
    assert_eq!(conn.read(&mut b).unwrap(), 0, "no FIN from Sluice");
    assert!(
        wait_for(15, || peer_states(&lab, 7).contains("TIME-WAIT")),
        "peer not in TIME-WAIT: {}",
        peer_states(&lab, 7)
    );
    let status = sluice
        .wait_exit(Duration::from_secs(40))
        .expect("sluice did not finish draining");
    assert!(status.success(), "exit status {status:?}");
    let log = sluice.log_text();
    assert_eq!(lab::Sluice::log_sum(&log, "time_wait"), 1, "{log}");
    drop(conn);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_half_close_data_keeps_flowing_back() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let _sluice = lab.sluice("tcp-echo", &[7], &[]);
    let (sent, got, states) = {
        let lab_states = |l: &Lab| peer_states(l, 7);
        let c = lab.connect(7).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = c.try_clone().unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 31 % 253) as u8).collect();
        let expect = data.clone();
        let rd = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        let mut w = c;
        w.write_all(&data).unwrap();
        // Our side is closed; the echo keeps sending the rest of the data back.
        w.shutdown(Shutdown::Write).unwrap();
        let states = lab_states(&lab);
        let got = rd.join().unwrap();
        (expect, got, states)
    };
    assert!(
        states.contains("FIN-WAIT") || states.contains("TIME-WAIT"),
        "{states}"
    );
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "echo after half-close differs");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_peer_reset_mid_transfer_then_next_connection_served() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let _sluice = lab.sluice("tcp-source", &[19], &[]);
    let mut conn = lab.connect(19).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 100_000];
    conn.read_exact(&mut buf).unwrap();
    // Closing with unread data makes the kernel send RST (RFC 2525 2.17).
    std::thread::sleep(Duration::from_millis(100));
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    let states = peer_states(&lab, 19);
    assert!(!states.contains("ESTAB"), "{states}");

    let mut conn = lab.connect(19).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_exact(&mut buf[..1000]).unwrap();
    for (i, &b) in buf[..1000].iter().enumerate() {
        assert_eq!(b, (i % 251) as u8);
    }
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_kill_9_mid_transfer_next_start_attaches() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let sluice = lab.sluice("tcp-source", &[19], &[]);
    let mut conn = lab.connect(19).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    conn.read_exact(&mut buf).unwrap();
    sluice.signal("KILL");
    drop(sluice);
    drop(conn);

    // The bpf_link died with the process: no program is left on the interface.
    let link = Command::new("ip")
        .args(["-n", &lab.stack_ns, "link", "show", &lab.stack_if])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "stale XDP program: {link}");

    let _again = lab.sluice("tcp-source", &[19], &[]);
    let mut conn = lab.connect(19).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_exact(&mut buf[..1000]).unwrap();
    assert_eq!(buf[250], 250);
}

/// Runs `sluice run --backend afxdp` with `args` in the lab's stack namespace and expects a
/// quick failure: returns (exit code, stderr).
fn start_fails(lab: &Lab, args: &[&str]) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.stack_ns, env!("CARGO_BIN_EXE_sluice")])
        .args([
            "run",
            "--backend",
            "afxdp",
            "--app",
            "tcp-echo",
            "--port",
            "7",
        ])
        .args(["--log-level", "error"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_startup_errors_one_line_nonzero_exit() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let ip = format!("{STACK_IP}/24");

    let (code, err) = start_fails(&lab, &["--iface", "nosuchif0", "--ip", &ip]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no such interface"), "{err}");

    let (code, err) = start_fails(
        &lab,
        &["--iface", &lab.stack_if, "--ip", &ip, "--queues", "0,5"],
    );
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("out of range"), "{err}");

    // Without privileges (uid 65534, no capabilities).
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.stack_ns])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["--inh-caps=-all", "--bounding-set=-all"])
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            "--backend",
            "afxdp",
            "--app",
            "tcp-echo",
            "--port",
            "7",
        ])
        .args([
            "--log-level",
            "error",
            "--iface",
            &lab.stack_if,
            "--ip",
            &ip,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // What is really required: root. The code refuses every other uid, so the message
    // must not suggest that granting capabilities would do.
    assert!(err.contains("not permitted"), "{err}");
    assert!(err.contains("must run as root (effective uid 0)"), "{err}");
    assert!(!err.contains("grant"), "{err}");

    // A tuning value out of range: one line naming the flag, before anything is attached.
    let (code, err) = start_fails(
        &lab,
        &["--iface", &lab.stack_if, "--ip", &ip, "--ring-size", "1000"],
    );
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--ring-size") && err.contains("power of two"),
        "{err}"
    );

    // A second instance on the same interface finds Sluice's program attached.
    let _first = lab.sluice("tcp-echo", &[7], &[]);
    let (code, err) = start_fails(&lab, &["--iface", &lab.stack_if, "--ip", &ip]);
    assert_ne!(code, 0);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("attached"), "{err}");

    // The first one still serves.
    lab.in_peer(|| {
        let mut c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"ok").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
    });
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_tuning_flags_small_rings_and_4k_frames_serve() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let sluice = lab.sluice(
        "tcp-echo",
        &[7],
        &[
            "--ring-size",
            "64",
            "--umem-frames",
            "128",
            "--frame-size",
            "4096",
            "--idle-spin",
            "0",
            "--idle-yield",
            "0",
            "--idle-poll-timeout-us",
            "500",
            "--stop-grace-ms",
            "500",
        ],
    );
    // 1 MiB through 64-entry rings and 128 frames each way: buffers recycle many times.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let expect = data.clone();
    let got = lab.in_peer(move || {
        let c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = c.try_clone().unwrap();
        let rd = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let mut w = c;
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        rd.join().unwrap()
    });
    assert!(
        got == expect,
        "echo differs ({} of {} bytes)",
        got.len(),
        expect.len()
    );
    sluice.stop();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_tcp_app_dead_worker_logged_unhealthy() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    // Test-only fault injection: the only worker's loop ends 500 ms after it starts, as
    // on a device error. tcp-echo has no control plane; the main thread still notices.
    let sluice = lab.sluice_with_env(
        "tcp-echo",
        &[7],
        &[],
        &["SLUICE_TEST_WORKER_FAULT=exit:0:500"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = sluice.log_text();
        if log.contains("workers unhealthy") {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        log.contains("worker 0 (sluice-q0): exited: its poll loop ended"),
        "{log}"
    );
}
