//! Helpers shared by the gateway tests on both backends: child processes killed on drop,
//! the Python clients in `tests/gateway/`, one-shot HTTP against the control plane, and a
//! strict check of the metrics exposition.
//!
//! Include with `#[path = "common/gateway.rs"] mod gw;`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long a client child may stay silent on stdout before the test gives up on it (the
/// clients bound each of their own reads well below this; this catches anything else).
pub const CLIENT_SILENCE_LIMIT: Duration = Duration::from_secs(300);

/// How long a one-shot HTTP exchange with the control plane may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed (and reaped) on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its stdout, line by line (newline kept), from a reader thread.
    lines: Receiver<String>,
}

impl Proc {
    /// Spawns `cmd` with piped stdin/stdout (stderr inherited).
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 && tx.send(line).is_ok() => {}
                    _ => break,
                }
            }
        });
        Proc { child, lines }
    }

    /// The next stdout line; panics when the client closed stdout or printed nothing for
    /// [`CLIENT_SILENCE_LIMIT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(CLIENT_SILENCE_LIMIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "client printed no line within {} s",
                CLIENT_SILENCE_LIMIT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => String::new(),
        }
    }

    /// Everything left on stdout (until it closes); panics when the client stays silent
    /// for [`CLIENT_SILENCE_LIMIT`] without closing it.
    pub fn rest(&mut self) -> String {
        let mut s = String::new();
        loop {
            match self.lines.recv_timeout(CLIENT_SILENCE_LIMIT) {
                Ok(line) => s.push_str(&line),
                Err(RecvTimeoutError::Disconnected) => return s,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "client hung: silent for {} s without exiting; its output so far:\n{s}",
                    CLIENT_SILENCE_LIMIT.as_secs()
                ),
            }
        }
    }

    /// The rest of stdout; asserts a zero exit.
    pub fn wait_ok(&mut self) -> String {
        let out = self.rest();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "client failed ({status}):\n{out}");
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `tests/gateway/SCRIPT ARGS` with `python3`, in network namespace `netns` when
/// given, with `SLUICE_HOST=host` when given (the scripts default to 127.0.0.1).
pub fn python_in(netns: Option<&str>, host: Option<&str>, script: &str, args: &[String]) -> Proc {
    let path = repo().join("tests/gateway").join(script);
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    cmd.arg(path).args(args);
    if let Some(h) = host {
        cmd.env("SLUICE_HOST", h);
    }
    Proc::spawn(&mut cmd)
}

/// Runs `tests/clients/SCRIPT ARGS` with `node` (inside `netns` when given), with
/// `SLUICE_HOST=host` when given.
#[allow(dead_code)]
pub fn node_in(netns: Option<&str>, host: Option<&str>, script: &str, args: &[String]) -> Proc {
    let path = repo().join("tests/clients").join(script);
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "node"]);
            c
        }
        None => Command::new("node"),
    };
    cmd.arg(path).args(args);
    if let Some(h) = host {
        cmd.env("SLUICE_HOST", h);
    }
    Proc::spawn(&mut cmd)
}

/// Runs `tests/gateway/SCRIPT ARGS` with `python3` here.
pub fn python(script: &str, args: &[String]) -> Proc {
    python_in(None, None, script, args)
}

/// A one-shot HTTP/1.1 request; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = http_connect(addr);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_response(&mut s)
}

/// `GET path` with an `Accept` header; returns (status, body).
pub fn http_accept(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut s = http_connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s)
}

/// A connection to the control plane whose reads and writes time out after
/// `HTTP_TIMEOUT`.
fn http_connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s
}

/// Reads a whole HTTP/1.1 response (`Connection: close`), undoing chunked encoding.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("HTTP response not read: {e} (after: {raw:?})"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return (status, body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, out);
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

/// The value of one sample line (`name{labels}`) in a metrics text, 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Strict check of a metrics text: every line is a comment (`# HELP|TYPE|UNIT`), `# EOF`
/// (last, required when `openmetrics`), or `name{labels} value`.
pub fn check_exposition(text: &str, openmetrics: bool) {
    let mut lines: Vec<&str> = text.lines().collect();
    if openmetrics {
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        lines.pop();
    } else {
        assert!(!text.contains("# EOF"), "0.0.4 text has no # EOF: {text}");
        assert!(!text.contains("# UNIT"), "0.0.4 text has no # UNIT: {text}");
    }
    for line in &lines {
        if let Some(c) = line.strip_prefix("# ") {
            assert!(
                c.starts_with("HELP ") || c.starts_with("TYPE ") || c.starts_with("UNIT "),
                "bad comment: {line}"
            );
            if let Some(t) = c.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap_or("");
                let allowed: &[&str] = if openmetrics {
                    &[
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ]
                } else {
                    &["counter", "gauge", "histogram", "summary", "untyped"]
                };
                assert!(allowed.contains(&kind), "bad type: {line}");
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "bad value: {line}"
        );
        let name = name_labels.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = name_labels.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
    }
}
