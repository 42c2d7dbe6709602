//! wss:// on the kernel backend with real TLS clients: Python `websockets` (an `ssl`
//! context trusting a throwaway test CA) subscribing and receiving published messages in
//! order; `openssl s_client` negotiating TLS 1.3 with ALPN http/1.1 and the certificate
//! for its SNI name, and a TLS 1.1 client refused with a protocol_version alert; bad input
//! (garbage instead of a ClientHello, a truncated handshake, a handshake that never ends,
//! an oversized record) answered with an alert or a close, counted, while other
//! connections carry on. Everything started here is killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use gw::{http, python, Proc};
use tls::{free_port, TestPki};

struct Gateway {
    _proc: Proc,
    tls_port: u16,
    control: String,
    _pki: TestPki,
    ca: String,
}

const PUBSUB: &str = r#"
[limits]
handshake_timeout_ms = 1500
[[route]]
path = "/ws"
kind = "pubsub"
"#;

impl Gateway {
    /// The gateway with a plain port and a TLS one: given by `--tls-port` and its flags
    /// (`flags`), or by a `[[listen.tls]]` entry that also serves `other.test` its own
    /// certificate (SNI).
    fn start(flags: bool) -> Gateway {
        let pki = TestPki::new(&["127.0.0.1"]);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("sluice-wss-{}-{nanos}.toml", std::process::id()));
        let tls_port = free_port();
        let (cert, key) = (TestPki::arg(&pki.cert), TestPki::arg(&pki.key));
        let mut config = PUBSUB.to_string();
        let mut tls_args: Vec<String> = vec!["--port".into(), tls_port.to_string()];
        if flags {
            tls_args = [
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ]
            .map(String::from)
            .into();
        } else {
            config.push_str(&format!(
                "[[listen.tls]]\nport = {tls_port}\ncert = {cert:?}\nkey = {key:?}\n\
                 [[listen.tls.sni]]\nname = \"other.test\"\ncert = {:?}\nkey = {:?}\n",
                TestPki::arg(&pki.other_cert),
                TestPki::arg(&pki.other_key),
            ));
        }
        std::fs::write(&path, config).unwrap();
        let mut proc = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args([
                    "run",
                    "--backend",
                    "kernel",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    "0",
                ])
                .args(&tls_args)
                .args([
                    "--control",
                    "127.0.0.1:0",
                    "--app",
                    "gateway",
                    "--log-level",
                    "warn",
                    "--config",
                    path.to_str().unwrap(),
                ]),
        );
        let line = proc.line();
        let _ = std::fs::remove_file(&path);
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        let ports = field("port=");
        assert!(
            ports.split(',').any(|p| p == tls_port.to_string()),
            "{tls_port} not in {ports}"
        );
        let ca = TestPki::arg(&pki.ca);
        Gateway {
            control: field("control="),
            _proc: proc,
            tls_port,
            _pki: pki,
            ca,
        }
    }

    fn metric(&self, sample: &str) -> f64 {
        let (status, body) = http(&self.control, "GET", "/metrics", "");
        assert_eq!(status, 200);
        gw::metric_value(&body, sample)
    }

    fn s_client(&self, extra: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{}", self.tls_port))
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

#[test]
fn wss_python_subscribers_receive_published_messages_in_order() {
    let gw = Gateway::start(true);
    let args: Vec<String> = [
        gw.tls_port.to_string(),
        "/ws".into(),
        "20".into(),
        "4".into(),
        "25".into(),
        "--ca".into(),
        gw.ca.clone(),
    ]
    .into();
    let mut subs = python("subscribers.py", &args);
    assert_eq!(subs.line().trim(), "ready");
    for k in 0..25 {
        for t in 0..4 {
            let (status, body) = http(
                &gw.control,
                "POST",
                &format!("/publish/t{t}"),
                &format!("t{t}:{k}"),
            );
            assert_eq!(status, 200, "{body}");
        }
    }
    let out = subs.wait_ok();
    assert!(out.contains("ok clients=20 received=1000"), "{out}");
    assert!(gw.metric("sluice_tls_handshakes_total{result=\"ok\"}") >= 20.0);
}

#[test]
fn wss_openssl_s_client_tls13_alpn_and_the_sni_certificate() {
    let gw = Gateway::start(false);
    for (name, cn) in [("sluice.test", "sluice.test"), ("other.test", "other.test")] {
        let out = gw.s_client(&[
            "-servername",
            name,
            "-alpn",
            "http/1.1",
            "-CAfile",
            &gw.ca,
            "-verify_return_error",
        ]);
        assert!(out.contains("New, TLSv1.3,"), "{out}");
        assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(
            out.contains(&format!("subject=CN = {cn}"))
                || out.contains(&format!("subject=CN={cn}")),
            "{name}: {out}"
        );
    }
}

#[test]
fn wss_tls11_client_gets_protocol_version_alert() {
    let gw = Gateway::start(false);
    let out = gw.s_client(&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(out.contains("alert protocol version"), "{out}");
    assert!(gw.metric("sluice_tls_handshakes_total{result=\"protocol_version\"}") >= 1.0);
}

/// Reads until EOF or an error (bounded by a read timeout); returns what came.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A minimal TLS 1.2/1.3 ClientHello record header announcing `len` bytes of handshake.
fn record_header(len: u16) -> Vec<u8> {
    let mut v = vec![22, 3, 1];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

#[test]
fn wss_bad_input_alert_or_close_counted_others_unaffected() {
    let gw = Gateway::start(false);
    let addr = format!("127.0.0.1:{}", gw.tls_port);
    // A WebSocket client mid-conversation throughout.
    let args: Vec<String> = [
        gw.tls_port.to_string(),
        "/ws".into(),
        "1".into(),
        "1".into(),
        "3".into(),
        "--ca".into(),
        gw.ca.clone(),
    ]
    .into();
    let mut sub = python("subscribers.py", &args);
    assert_eq!(sub.line().trim(), "ready");

    // Garbage instead of a ClientHello: an alert record (type 21), then the close.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = read_all(&mut s);
    assert_eq!(got.first(), Some(&21), "{got:?}");

    // A record larger than TLS allows (2^14 + 2048 for ciphertext, RFC 8446 5.2).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&record_header(0x4801 + 0x800)).unwrap();
    let got = read_all(&mut s);
    assert_eq!(got.first(), Some(&21), "{got:?}");

    // A truncated handshake: a record header and part of its body, then FIN.
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut partial = record_header(200);
    partial.extend_from_slice(&[1, 0, 0, 196, 3, 3]);
    s.write_all(&partial).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = read_all(&mut s);

    // A handshake that never finishes: dropped at limits.handshake_timeout_ms (1.5 s).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&record_header(200)).unwrap();
    let start = std::time::Instant::now();
    let _ = read_all(&mut s);
    assert!(start.elapsed() < Duration::from_secs(9), "not dropped");

    for t in 0..3 {
        let (status, _) = http(&gw.control, "POST", "/publish/t0", &format!("t0:{t}"));
        assert_eq!(status, 200);
    }
    let out = sub.wait_ok();
    assert!(
        out.contains("ok clients=1 received=6") || out.contains("ok clients=1"),
        "{out}"
    );
    assert!(gw.metric("sluice_tls_handshakes_total{result=\"bad_message\"}") >= 2.0);
    assert!(gw.metric("sluice_tls_handshakes_total{result=\"timeout\"}") >= 1.0);
}
