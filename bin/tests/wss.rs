//! wss:// on the kernel backend with real TLS clients: Python `websockets` (an `ssl`
//! context trusting a throwaway test CA) and Node `ws` (the same CA) subscribing and
//! receiving published messages in order; `openssl s_client` negotiating TLS 1.3 with ALPN http/1.1 and the certificate
//! for its SNI name, and a TLS 1.1 client refused with a protocol_version alert; bad input
//! (garbage instead of a ClientHello, a truncated handshake, a handshake that never ends,
//! an oversized record) answered with an alert or a close, counted, while other
//! connections carry on; OpenSSL's client against the record layer after the handshake
//! (TLS 1.3 KeyUpdates, the TLS 1.2 suites, a refused renegotiation); SIGHUP reloading the certificates while subscribers stay
//! connected (and a failed reload changing nothing). Everything started here is killed on
//! drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use gw::{http, node_in, python, Proc};
use tls::{free_port, TestPki};

struct Gateway {
    proc: Proc,
    tls_port: u16,
    control: String,
    pki: TestPki,
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
            proc,
            tls_port,
            pki,
            ca,
        }
    }

    /// 20 Python wss subscribers on topics t0..t3 (trusting the test CA), subscribed.
    fn subscribers(&self) -> Proc {
        self.subscribers_with(python, "subscribers.py")
    }

    /// 20 wss subscribers of `script` (run by `run`) on topics t0..t3, subscribed.
    fn subscribers_with(&self, run: fn(&str, &[String]) -> Proc, script: &str) -> Proc {
        let args: Vec<String> = [
            self.tls_port.to_string(),
            "/ws".into(),
            "20".into(),
            "4".into(),
            "25".into(),
            "--ca".into(),
            self.ca.clone(),
        ]
        .into();
        let mut subs = run(script, &args);
        assert_eq!(subs.line().trim(), "ready");
        subs
    }

    /// Publishes 25 messages on each of t0..t3 and checks that every one of `subs`
    /// received all of its topics' messages, in order.
    fn publish_to(&self, mut subs: Proc) {
        for k in 0..25 {
            for t in 0..4 {
                let (status, body) = http(
                    &self.control,
                    "POST",
                    &format!("/publish/t{t}"),
                    &format!("t{t}:{k}"),
                );
                assert_eq!(status, 200, "{body}");
            }
        }
        let out = subs.wait_ok();
        assert!(out.contains("ok clients=20 received=1000"), "{out}");
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
    let subs = gw.subscribers();
    gw.publish_to(subs);
    assert!(gw.metric("sluice_tls_handshakes_total{result=\"ok\"}") >= 20.0);
}

#[test]
fn wss_node_subscribers_receive_published_messages_in_order() {
    let gw = Gateway::start(true);
    let subs = gw.subscribers_with(|s, a| node_in(None, None, s, a), "node_subscribers.js");
    gw.publish_to(subs);
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

/// A masked WebSocket text frame (client to server).
fn ws_text(text: &str) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// `openssl s_client ARGS` on the TLS port as a WebSocket client driven line by line:
/// the upgrade to `/ws`, then for each of `commands` a subscribe frame, the command (an
/// s_client command letter on a line of its own: `K` is a KeyUpdate asking for ours, `k`
/// one that does not, `R` a TLS 1.2 renegotiation), and a last subscribe frame. Returns
/// (stdout from the 101 on, stderr).
fn s_client_ws(gw: &Gateway, args: &[&str], commands: &[&str]) -> (String, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", gw.tls_port))
        .args([
            "-servername",
            "sluice.test",
            "-CAfile",
            &gw.ca,
            "-verify_return_error",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pause = || std::thread::sleep(Duration::from_millis(400));
    let _ = stdin.write_all(
        b"GET /ws HTTP/1.1\r\nHost: sluice.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    pause();
    for (i, c) in commands.iter().enumerate() {
        let _ = stdin.write_all(&ws_text(&format!(r#"{{"op":"subscribe","topic":"k{i}"}}"#)));
        pause();
        let _ = stdin.write_all(format!("{c}\n").as_bytes());
        pause();
    }
    let _ = stdin.write_all(&ws_text(r#"{"op":"subscribe","topic":"last"}"#));
    pause();
    pause();
    let _ = child.kill();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let from = stdout.find("HTTP/1.1 101").unwrap_or(0);
    (
        stdout[from..].to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn wss_openssl_key_updates_tls12_suites_and_renegotiation_refused() {
    // The record layer after the handshake is Sluice's own (decision 0010): OpenSSL, an
    // implementation other than rustls, checks it. TLS 1.3 with each suite: KeyUpdates
    // both kinds, every frame before and after answered.
    let gw = Gateway::start(true);
    for suite in [
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ] {
        let (out, err) = s_client_ws(&gw, &["-tls1_3", "-ciphersuites", suite], &["K", "k", "K"]);
        assert_eq!(err.matches("KEYUPDATE").count(), 3, "{suite}: {err}");
        for topic in ["k0", "k1", "k2", "last"] {
            assert!(
                out.contains(&format!(r#""op":"subscribed","topic":"{topic}""#)),
                "{suite}: no reply for {topic} in {out:?} {err}"
            );
        }
    }
    // TLS 1.2 with each suite; a renegotiation is refused with a no_renegotiation warning
    // (OpenSSL then gives up the connection itself), and nothing else breaks.
    for suite in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        let (out, err) = s_client_ws(&gw, &["-tls1_2", "-cipher", suite], &["R"]);
        assert!(
            out.contains(r#""op":"subscribed","topic":"k0""#),
            "{suite}: {out:?} {err}"
        );
        assert!(err.contains("RENEGOTIATING"), "{suite}: {err}");
        assert!(err.contains("no renegotiation"), "{suite}: {err}");
    }
    // The gateway still serves.
    let subs = gw.subscribers();
    gw.publish_to(subs);
    assert_eq!(
        gw.metric("sluice_tls_errors_total{result=\"decrypt_error\"}"),
        0.0
    );
}

/// The subject's CN line `openssl s_client` printed for the certificate it got.
fn served_cn(out: &str) -> &str {
    out.lines()
        .find_map(|l| {
            l.strip_prefix("subject=CN = ")
                .or_else(|| l.strip_prefix("subject=CN="))
        })
        .unwrap_or_else(|| panic!("no subject in {out}"))
}

#[test]
fn wss_sighup_reloads_certificates_without_dropping_connections() {
    let gw = Gateway::start(false);
    let pid = gw.proc.child.id().to_string();
    let s_client = |gw: &Gateway| gw.s_client(&["-servername", "sluice.test", "-alpn", "http/1.1"]);
    assert_eq!(served_cn(&s_client(&gw)), "sluice.test");
    let expiry = format!(
        "sluice_tls_certificate_expiry_timestamp_seconds{{port=\"{}\",name=\"default\"}}",
        gw.tls_port
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(gw.metric(&expiry) > now, "expiry gauge");

    // 20 wss subscribers connected with the first certificate.
    let subs = gw.subscribers();

    // The default certificate's files now hold other.test's; SIGHUP.
    std::fs::copy(&gw.pki.other_cert, &gw.pki.cert).unwrap();
    std::fs::copy(&gw.pki.other_key, &gw.pki.key).unwrap();
    let hup = |pid: &str| {
        let st = Command::new("kill").args(["-HUP", pid]).status().unwrap();
        assert!(st.success());
    };
    let wait_for = |gw: &Gateway, sample: &str, value: f64| {
        for _ in 0..200 {
            if gw.metric(sample) >= value {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{sample} never reached {value}");
    };
    hup(&pid);
    wait_for(&gw, "sluice_tls_reloads_total{result=\"ok\"}", 1.0);
    // New handshakes get the new certificate...
    assert_eq!(served_cn(&s_client(&gw)), "other.test");
    // ...and the subscribers connected before the reload get every publication.
    gw.publish_to(subs);

    // A reload that fails (not a certificate) changes nothing and is counted.
    std::fs::write(&gw.pki.cert, "not a certificate\n").unwrap();
    hup(&pid);
    wait_for(&gw, "sluice_tls_reloads_total{result=\"failed\"}", 1.0);
    assert_eq!(served_cn(&s_client(&gw)), "other.test");
    assert_eq!(gw.metric("sluice_tls_reloads_total{result=\"ok\"}"), 1.0);
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

/// `sluice check-config FILE` on a configuration whose `[[listen.tls]]` entry uses `cert`
/// and `key`: (success, stdout, stderr).
fn check_config(
    dir: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (bool, String, String) {
    let path = dir.join("check.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\nports = [8443]\n[[listen.tls]]\nport = 8443\ncert = {:?}\nkey = {:?}\n{PUBSUB}",
            TestPki::arg(cert),
            TestPki::arg(key)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wss_check_config_validates_the_certificates_and_reports_expiry() {
    let pki = TestPki::new(&[]);
    let ok = check_config(&pki.dir, &pki.cert, &pki.key);
    assert!(ok.0, "{ok:?}");
    assert!(
        ok.1.contains("; wss on port 8443 (1 certificate(s), earliest expiry 4096-01-01))"),
        "{ok:?}"
    );
    assert!(!ok.1.contains("expires on"), "{ok:?}");

    // A self-signed certificate valid until `not_after` (seconds after the epoch).
    let self_signed = |name: &str, not_after: u64| {
        let mut p = rcgen::CertificateParams::new(vec!["sluice.test".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
        let k = rcgen::KeyPair::generate().unwrap();
        let c = p.self_signed(&k).unwrap();
        let (cert, key) = (
            pki.dir.join(format!("{name}.pem")),
            pki.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.pem()).unwrap();
        std::fs::write(&key, k.serialize_pem()).unwrap();
        (cert, key)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (cert, key) = self_signed("soon", now + 10 * 86_400 + 3_600);
    let soon = check_config(&pki.dir, &cert, &key);
    assert!(soon.0, "{soon:?}");
    assert!(
        soon.1
            .contains("warning: listen.tls[0] (default on port 8443): the certificate expires on")
            && soon.1.contains("(10 day(s) left)"),
        "{soon:?}"
    );

    // 2021-01-01: expired; the error names the key and the date.
    let (cert, key) = self_signed("old", 1_609_459_200);
    let expired = check_config(&pki.dir, &cert, &key);
    assert!(!expired.0, "{expired:?}");
    assert!(
        expired.2.contains("listen.tls[0].cert: ")
            && expired.2.contains("expired on")
            && expired.2.contains("2021"),
        "{expired:?}"
    );

    // The key of another certificate.
    let mismatch = check_config(&pki.dir, &pki.cert, &pki.other_key);
    assert!(!mismatch.0, "{mismatch:?}");
    assert!(mismatch.2.contains("listen.tls[0].key: "), "{mismatch:?}");

    // A file that is not there.
    let missing = check_config(&pki.dir, &pki.dir.join("nope.pem"), &pki.key);
    assert!(!missing.0, "{missing:?}");
    assert!(
        missing.2.contains("listen.tls[0].cert: ") && missing.2.contains("nope.pem"),
        "{missing:?}"
    );
}
