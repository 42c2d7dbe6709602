//! Real WebSocket clients against `--app ws-echo`: Python `websockets`, Node `ws` and
//! headless Chromium (playwright-core). Each script in `tests/clients/` sends text and
//! binary messages of 1 B .. 1 MiB and asserts byte-exact echoes, over ws:// and over
//! wss:// (`--tls-port`, a throwaway test CA: Python and Node trust it, Chromium pins the
//! server key with `--ignore-certificate-errors-spki-list`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::process::Command;

use common::{repo_root, Server};

/// Runs `program script PORT args...` and returns its stdout; fails the test on non-zero exit.
fn run_client(program: &str, script: &str, port: u16, args: &[&str]) -> String {
    run_client_env(program, script, port, args, &[])
}

/// [`run_client`] with extra environment variables.
fn run_client_env(
    program: &str,
    script: &str,
    port: u16,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> String {
    let path = repo_root().join("tests/clients").join(script);
    let out = Command::new(program)
        .arg(&path)
        .arg(port.to_string())
        .args(args)
        .envs(env.iter().copied())
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

/// ws-echo with a wss:// port (flags) and the PKI its clients use; returns the TLS port.
fn start_wss(extra: &[&str]) -> (Server, tls::TestPki, u16) {
    let pki = tls::TestPki::new(&["127.0.0.1"]);
    let port = tls::free_port();
    let mut args: Vec<String> = vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert".into(),
        tls::TestPki::arg(&pki.cert),
        "--tls-key".into(),
        tls::TestPki::arg(&pki.key),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Server::start("ws-echo", &args), pki, port)
}

#[test]
fn wss_python_websockets_compressed_echo_exact() {
    let (_server, pki, port) = start_wss(&[]);
    let out = run_client_env(
        "python3",
        "py_client.py",
        port,
        &["on"],
        &[("SLUICE_CA", &pki.ca)],
    );
    assert!(
        out.contains("24 messages echoed, compression=True, tls=TLSv1.3"),
        "{out}"
    );
}

#[test]
fn wss_node_ws_echo_exact() {
    let (_server, pki, port) = start_wss(&[]);
    let out = run_client_env(
        "node",
        "node_client.js",
        port,
        &["on"],
        &[("SLUICE_CA", &pki.ca)],
    );
    assert!(
        out.contains("24 messages echoed, compression=true, tls=TLSv1.3"),
        "{out}"
    );
}

#[test]
fn wss_chromium_echo_exact() {
    let (_server, pki, port) = start_wss(&[]);
    let out = run_client_env(
        "node",
        "chromium_client.js",
        port,
        &[],
        &[("SLUICE_CERT", &pki.cert)],
    );
    assert!(out.contains("12 messages echoed"), "{out}");
    assert!(out.contains("over wss"), "{out}");
}
