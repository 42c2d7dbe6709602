//! Autobahn conformance (cases 1-13, compression included) against `--app ws-echo`,
//! driven by `kosoku -m fuzzingclient`; the report is compared with
//! `tests/autobahn/expected.json` and any regression fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{repo_root, scratch_dir, Server};

/// Worse is larger: a case regresses when its rank rises above the expected one.
fn rank(behavior: &str) -> u8 {
    match behavior {
        "OK" => 0,
        "NON-STRICT" => 1,
        "INFORMATIONAL" => 1,
        "UNIMPLEMENTED" => 3,
        _ => 4,
    }
}

#[test]
fn autobahn_ws_echo_matches_expected() {
    assert!(
        common::have("kosoku", &["--help"]),
        "kosoku not found: pip install -r tests/clients/requirements.txt"
    );
    let expected: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/autobahn/expected.json")).unwrap(),
    )
    .unwrap();
    let server = Server::start("ws-echo", &[]);
    let out = scratch_dir("autobahn");
    let status = Command::new("kosoku")
        .args(["-m", "fuzzingclient", "-p", "2", "-o"])
        .arg(&out)
        .arg(format!("127.0.0.1:{}", server.port))
        .status()
        .expect("run kosoku");
    drop(server);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let agents = index.as_object().unwrap();
    assert_eq!(agents.len(), 1, "one agent in the report");
    let cases = agents.values().next().unwrap().as_object().unwrap();
    let mut problems = Vec::new();
    for (case, want) in &expected {
        match cases.get(case) {
            None => problems.push(format!("{case}: missing from the report")),
            Some(got) => {
                let behavior = got["behavior"].as_str().unwrap_or("?");
                let close = got["behaviorClose"].as_str().unwrap_or("?");
                if rank(behavior) > rank(want) || rank(behavior) > 1 {
                    problems.push(format!("{case}: {behavior} (expected {want})"));
                }
                if rank(close) > 1 {
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
    assert!(
        problems.is_empty(),
        "Autobahn regressions:\n{}",
        problems.join("\n")
    );
    assert!(status.success(), "kosoku exited with {status}");
    std::fs::remove_dir_all(&out).ok();
}
