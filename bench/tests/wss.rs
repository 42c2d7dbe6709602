//! sluice-load over TLS (wss) against an in-process rustls + tungstenite echo server and
//! against `ref-tungstenite --tls-cert`, with rcgen test certificates, on 127.0.0.1 only.
//! Runs are short and nothing here asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sluice_bench::tls::TlsOptions;
use sluice_bench::{ErrorKind, Report, Settings};
use tungstenite::Message;

/// A self-signed test certificate for `localhost` and 127.0.0.1, as PEM files in a fresh
/// directory, and the server configuration made from it.
struct TestCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    config: Arc<rustls::ServerConfig>,
}

impl TestCert {
    fn new(tag: &str) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-wss-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let der: CertificateDer<'static> = ck.cert.der().clone();
        let key_der =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(sluice_bench::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key_der)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        Self {
            dir,
            cert,
            key,
            config: Arc::new(config),
        }
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking rustls + tungstenite echo server, a thread per connection; runs until the
/// test process ends.
fn start_echo(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let tls = rustls::StreamOwned::new(conn, stream);
                let Ok(mut ws) = tungstenite::accept(tls) else {
                    return;
                };
                loop {
                    match ws.read() {
                        Ok(m @ (Message::Binary(_) | Message::Text(_))) => {
                            if ws.send(m).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    addr
}

fn tls_settings(addr: SocketAddr, host: &str, ca: &Path) -> Settings {
    let mut s = Settings::new(addr);
    s.host = host.to_string();
    s.connections = 4;
    s.pipeline = 2;
    s.message_size = 300;
    s.warmup_s = 0.1;
    s.duration_s = 0.4;
    s.tls = Some(TlsOptions {
        ca: Some(ca.to_path_buf()),
        ..TlsOptions::default()
    });
    s
}

fn assert_clean(r: &Report) {
    assert!(r.is_ok(), "errors: {:?} {:?}", r.errors, r.error_samples);
    assert_eq!(r.error_total, 0);
}

#[test]
fn wss_echo_with_ca_completes_without_errors() {
    let tc = TestCert::new("ca");
    let addr = start_echo(Arc::clone(&tc.config));
    // By IP (checked against the IP SAN) and by name (SNI localhost).
    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let r = sluice_bench::run(&tls_settings(addr, &host, &tc.cert)).unwrap();
        assert_clean(&r);
        assert!(r.messages > 10, "only {} messages", r.messages);
        assert_eq!(r.replies, r.sent);
        assert_eq!(r.tls_full, 4);
    }
}

#[test]
fn wss_insecure_large_messages_complete() {
    let tc = TestCert::new("insecure");
    let addr = start_echo(Arc::clone(&tc.config));
    let mut s = tls_settings(addr, &addr.to_string(), &tc.cert);
    s.tls = Some(TlsOptions {
        insecure: true,
        sni: Some("anything.invalid".into()),
        ..TlsOptions::default()
    });
    s.message_size = 70_000;
    s.pipeline = 1;
    let r = sluice_bench::run(&s).unwrap();
    assert_clean(&r);
    assert!(r.messages > 0);
}

#[test]
fn wss_wrong_ca_counted_tls_error() {
    let tc = TestCert::new("server");
    let other = TestCert::new("other");
    let addr = start_echo(Arc::clone(&tc.config));
    let mut s = tls_settings(addr, &addr.to_string(), &other.cert);
    s.connect_timeout_s = 2.0;
    let r = sluice_bench::run(&s).unwrap();
    assert!(!r.is_ok());
    assert_eq!(r.connected, 0);
    assert_eq!(
        r.errors.get(ErrorKind::Tls.name()),
        Some(&4),
        "{:?}",
        r.errors
    );
}

#[test]
fn handshakes_full_and_resumed_counted() {
    let tc = TestCert::new("hs");
    let addr = start_echo(Arc::clone(&tc.config));
    let mut s = tls_settings(addr, &addr.to_string(), &tc.cert);
    s.connections = 2;
    let full = sluice_bench::handshakes::handshakes(&s).unwrap();
    assert_clean(&full);
    assert!(full.messages > 5, "only {} handshakes", full.messages);
    assert_eq!(full.tls_full, full.messages);
    assert_eq!(full.tls_resumed, 0);
    if let Some(t) = s.tls.as_mut() {
        t.resume = true;
    }
    let resumed = sluice_bench::handshakes::handshakes(&s).unwrap();
    assert_clean(&resumed);
    assert!(resumed.messages > 5);
    // Only the first handshake of the run (per slot, at most) is full.
    assert!(
        resumed.tls_resumed + 2 >= resumed.messages && resumed.tls_resumed > 0,
        "{} resumed of {}",
        resumed.tls_resumed,
        resumed.messages
    );
}

/// `ref-tungstenite --tls-cert/--tls-key`, killed when dropped.
struct RefServer(Child, SocketAddr);

impl Drop for RefServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ref_tungstenite_serves_wss_and_resumes() {
    let tc = TestCert::new("ref");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ref-tungstenite"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&tc.cert)
        .arg("--tls-key")
        .arg(&tc.key)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    let server = RefServer(child, addr);
    let host = format!("localhost:{}", server.1.port());
    let r = sluice_bench::run(&tls_settings(server.1, &host, &tc.cert)).unwrap();
    assert_clean(&r);
    assert!(r.messages > 10);
    let mut s = tls_settings(server.1, &host, &tc.cert);
    s.connections = 2;
    if let Some(t) = s.tls.as_mut() {
        t.resume = true;
    }
    let hs = sluice_bench::handshakes::handshakes(&s).unwrap();
    assert_clean(&hs);
    assert!(hs.tls_resumed > 0 && hs.tls_resumed + 2 >= hs.messages);
}
