//! Real WebSocket clients against `--app ws-echo`: Python `websockets`, Node `ws` and
//! headless Chromium (playwright-core). Each script in `tests/clients/` sends text and
//! binary messages of 1 B .. 1 MiB and asserts byte-exact echoes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{repo_root, Server};

/// Runs `program script PORT args...` and returns its stdout; fails the test on non-zero exit.
fn run_client(program: &str, script: &str, port: u16, args: &[&str]) -> String {
    let path = repo_root().join("tests/clients").join(script);
    let out = Command::new(program)
        .arg(&path)
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn python_websockets_compressed_echo_exact() {
    let server = Server::start("ws-echo", &[]);
    let out = run_client("python3", "py_client.py", server.port, &["on"]);
    assert!(
        out.contains("24 messages echoed, compression=True"),
        "{out}"
    );
}

#[test]
fn python_websockets_uncompressed_echo_exact() {
    let server = Server::start("ws-echo", &[]);
    let out = run_client("python3", "py_client.py", server.port, &["off"]);
    assert!(
        out.contains("24 messages echoed, compression=False"),
        "{out}"
    );
}

#[test]
fn node_ws_compressed_echo_exact() {
    let server = Server::start("ws-echo", &[]);
    let out = run_client("node", "node_client.js", server.port, &["on"]);
    assert!(
        out.contains("24 messages echoed, compression=true"),
        "{out}"
    );
}

#[test]
fn node_ws_uncompressed_echo_exact() {
    let server = Server::start("ws-echo", &[]);
    let out = run_client("node", "node_client.js", server.port, &["off"]);
    assert!(
        out.contains("24 messages echoed, compression=false"),
        "{out}"
    );
}

#[test]
fn chromium_compressed_echo_exact() {
    let server = Server::start("ws-echo", &[]);
    let out = run_client("node", "chromium_client.js", server.port, &[]);
    assert!(out.contains("12 messages echoed"), "{out}");
    assert!(out.contains("permessage-deflate"), "{out}");
}

#[test]
fn chromium_uncompressed_echo_exact() {
    let server = Server::start("ws-echo", &["--compression", "off"]);
    let out = run_client("node", "chromium_client.js", server.port, &[]);
    assert!(out.contains("12 messages echoed, extensions=\"\""), "{out}");
}
