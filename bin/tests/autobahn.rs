//! Autobahn conformance (cases 1-13, compression included) against `--app ws-echo`,
//! driven by `kosoku -m fuzzingclient`, on both backends: the kernel backend on loopback,
//! and (root) the AF_XDP backend in a lab, kosoku in the peer namespace. Each report is
//! compared with the one expectations file, `tests/autobahn/expected.json`; any regression
//! fails the test. The same cases also run over wss:// on the kernel backend: kosoku has
//! no TLS, so `socat` relays its plain connections into TLS (verifying the server against
//! a throwaway test CA), and the report must match the same expectations.
//!
//! The server binary is `$SLUICE_BIN` when set (deploy/test.sh points it at the release
//! build, so the two runs do not each pay for the slower test-profile build), else the
//! test-profile `sluice` cargo built for this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{repo_root, scratch_dir, Server};
use lab::{Lab, STACK_IP};

/// The ws-echo port in the AF_XDP lab.
const LAB_PORT: u16 = 9001;

/// Whether a case's `behavior` of `got` is acceptable where `want` is expected.
///
/// The order is partial: OK is better than both NON-STRICT and INFORMATIONAL, so OK is
/// accepted where either is expected; NON-STRICT and INFORMATIONAL are not comparable, so
/// neither is accepted where the other is expected. NON-STRICT where INFORMATIONAL is
/// expected means the server now breaks a SHOULD it used to keep (a regression);
/// INFORMATIONAL where NON-STRICT is expected fails too: the case changed its nature, and
/// the change is reviewed and written into expected.json rather than passing unseen.
/// UNIMPLEMENTED, FAILED and anything unknown are never accepted.
fn acceptable(got: &str, want: &str) -> bool {
    got == "OK" || (got == want && matches!(got, "NON-STRICT" | "INFORMATIONAL"))
}

/// Whether a case's `behaviorClose` passes: OK, NON-STRICT or INFORMATIONAL (a clean close
/// that differed only in a detail Autobahn reports); UNCLEAN, WRONG CODE, FAILED and the
/// rest fail.
fn close_acceptable(close: &str) -> bool {
    matches!(close, "OK" | "NON-STRICT" | "INFORMATIONAL")
}

/// The expectations: case id -> behaviour.
fn expected() -> BTreeMap<String, String> {
    serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/autobahn/expected.json")).unwrap(),
    )
    .unwrap()
}

/// The problems of the kosoku report in `out` against `expected` (empty when it matches).
fn report_problems(out: &Path, expected: &BTreeMap<String, String>) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let agents = index.as_object().unwrap();
    assert_eq!(agents.len(), 1, "one agent in the report");
    let cases = agents.values().next().unwrap().as_object().unwrap();
    let mut problems = Vec::new();
    for (case, want) in expected {
        match cases.get(case) {
            None => problems.push(format!("{case}: missing from the report")),
            Some(got) => {
                let behavior = got["behavior"].as_str().unwrap_or("?");
                let close = got["behaviorClose"].as_str().unwrap_or("?");
                if !acceptable(behavior, want) {
                    problems.push(format!("{case}: {behavior} (expected {want})"));
                }
                if !close_acceptable(close) {
                    problems.push(format!("{case}: close behaviour {close}"));
                }
            }
        }
    }
    for case in cases.keys() {
        if !expected.contains_key(case) {
            problems.push(format!("{case}: not in expected.json"));
        }
    }
    problems
}

/// The server binary: `$SLUICE_BIN`, else the test-profile build.
fn sluice_bin() -> PathBuf {
    match std::env::var_os("SLUICE_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
    }
}

/// Runs `kosoku` (through `ip netns exec NS` when `netns` is given) against `target`,
/// checks the report against expected.json and prints how long the cases took.
fn run_kosoku(label: &str, netns: Option<&str>, target: &str) {
    assert!(
        common::have("kosoku", &["--help"]),
        "kosoku not found: pip install -r tests/clients/requirements.txt"
    );
    let expected = expected();
    let out = scratch_dir("autobahn");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "kosoku"]);
            c
        }
        None => Command::new("kosoku"),
    };
    let started = Instant::now();
    let status = cmd
        .args(["-m", "fuzzingclient", "-p", "2", "-o"])
        .arg(&out)
        .arg(target)
        .status()
        .expect("run kosoku");
    println!(
        "autobahn {label}: {} cases in {:.0} s with {}",
        expected.len(),
        started.elapsed().as_secs_f64(),
        sluice_bin().display()
    );
    let problems = report_problems(&out, &expected);
    assert!(
        problems.is_empty(),
        "Autobahn regressions ({label}):\n{}\nreport: {}",
        problems.join("\n"),
        out.display()
    );
    assert!(status.success(), "kosoku exited with {status}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn autobahn_ws_echo_matches_expected() {
    let server = Server::start_bin(&sluice_bin(), "ws-echo", &[]);
    run_kosoku("kernel", None, &format!("127.0.0.1:{}", server.port));
    drop(server);
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn autobahn_wss_ws_echo_through_a_tls_relay_matches_expected() {
    assert!(
        common::have("socat", &["-V"]),
        "socat not found: deploy/setup.sh installs it"
    );
    let pki = tls::TestPki::new(&["127.0.0.1"]);
    let tls_port = tls::free_port();
    let server = Server::start_bin(
        &sluice_bin(),
        "ws-echo",
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert",
            &tls::TestPki::arg(&pki.cert),
            "--tls-key",
            &tls::TestPki::arg(&pki.key),
        ],
    );
    let relay_port = tls::free_port();
    let relay = Killed(
        // No Nagle on either side (small frames would wait for delayed ACKs), 64 KiB
        // transfers.
        Command::new("socat")
            .args(["-b", "65536"])
            .arg(format!(
                "TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr,fork,nodelay"
            ))
            .arg(format!(
                "OPENSSL:127.0.0.1:{tls_port},cafile={},commonname=sluice.test,verify=1,nodelay",
                tls::TestPki::arg(&pki.ca)
            ))
            .spawn()
            .expect("run socat"),
    );
    // Until the relay listens.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", relay_port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run_kosoku(
        "kernel, wss via socat",
        None,
        &format!("127.0.0.1:{relay_port}"),
    );
    drop(relay);
    drop(server);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn autobahn_afxdp_ws_echo_matches_expected() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let bin = sluice_bin();
    let sluice = lab.sluice_bin(bin.to_str().unwrap(), "ws-echo", &[LAB_PORT], &[]);
    assert!(
        sluice.listening.contains("app=ws-echo"),
        "{}",
        sluice.listening
    );
    run_kosoku(
        "afxdp",
        Some(&lab.peer_ns),
        &format!("{STACK_IP}:{LAB_PORT}"),
    );
    // A clean stop after the whole suite: the worker survived every case.
    sluice.stop();
}

/// ws-echo on the DPDK backend (`net_af_packet` on the lab's veth): the same expected
/// report. `$SLUICE_BIN` must then be a build with the `dpdk` feature (deploy/test.sh builds
/// one); without it the test-profile build is used.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn autobahn_dpdk_ws_echo_matches_expected() {
    let _serial = lab::serial();
    let lab = Lab::up_dpdk(1);
    let bin = sluice_bin();
    let sluice = lab.sluice_bin(bin.to_str().unwrap(), "ws-echo", &[LAB_PORT], &[]);
    assert!(
        sluice.listening.contains("app=ws-echo") && sluice.listening.contains("backend=dpdk"),
        "{}",
        sluice.listening
    );
    run_kosoku(
        "dpdk",
        Some(&lab.peer_ns),
        &format!("{STACK_IP}:{LAB_PORT}"),
    );
    let log = sluice.stop();
    assert!(log.contains("every mbuf returned"), "{log}");
}

#[test]
fn ranking_informational_and_non_strict_not_interchangeable() {
    // OK is better than both.
    assert!(acceptable("OK", "OK"));
    assert!(acceptable("OK", "NON-STRICT"));
    assert!(acceptable("OK", "INFORMATIONAL"));
    // Each matches itself.
    assert!(acceptable("NON-STRICT", "NON-STRICT"));
    assert!(acceptable("INFORMATIONAL", "INFORMATIONAL"));
    // Worse than OK fails.
    assert!(!acceptable("NON-STRICT", "OK"));
    assert!(!acceptable("INFORMATIONAL", "OK"));
    // Neither stands in for the other, in either direction.
    assert!(!acceptable("NON-STRICT", "INFORMATIONAL"));
    assert!(!acceptable("INFORMATIONAL", "NON-STRICT"));
    // Never accepted, whatever is expected.
    for bad in ["UNIMPLEMENTED", "FAILED", "?"] {
        for want in [
            "OK",
            "NON-STRICT",
            "INFORMATIONAL",
            "UNIMPLEMENTED",
            "FAILED",
        ] {
            assert!(!acceptable(bad, want), "{bad} accepted for {want}");
        }
    }
    assert!(close_acceptable("OK") && close_acceptable("INFORMATIONAL"));
    assert!(!close_acceptable("FAILED") && !close_acceptable("UNCLEAN"));
    assert!(!close_acceptable("WRONG CODE"));
}
