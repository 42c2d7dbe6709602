//! Drives the wss layer (`sluice::app::tls::Tls`) around a plain echo application in
//! memory, against a rustls client, for instruction counting of the server's TLS work
//! alone: every call into the server goes through the out-of-line `serve`, so callgrind
//! collects exactly it (the client's encryption and decryption are not counted).
//!
//! ```text
//! cargo build --release -p sluice-bench --example tls_echo_count
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*serve*' \
//!     target/release/examples/tls_echo_count 64 2000
//! callgrind_annotate callgrind.out.<pid> | grep 'PROGRAM TOTALS'
//! ```
//!
//! `SIZE N [buftx]`: N rounds of one SIZE-byte message (one TLS 1.3 record, AES-128-GCM,
//! up to 16384 bytes) sent by the client in one receive, echoed by the server and read
//! back by the client before the next. With `buftx`, the transport is the kernel driver's
//! write buffer (`sluice::app::BufTx`) instead of a send buffer lent in place. The handshake is counted too: run twice (N and 2N) and
//! divide the difference by N. `bench/callgrind/tls.sh` does that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sluice::app::tls::{Listeners, Tls};
use sluice::app::{App, BufTx, ConnId, Refusal, Tx};
use sluice::config::{Config, TlsListener, TlsVersion};
use tcp::Instant;

const PORT: u16 = 8443;

/// Echoes what it receives, written through the layer's `Tx` in place.
struct Echo;

impl App for Echo {
    type Message = ();
    fn accept(&mut self, _: ConnId, _: SocketAddr, _: Instant) -> Result<(), Refusal> {
        Ok(())
    }
    fn remove(&mut self, _: ConnId) {}
    fn receive<T: Tx>(&mut self, _: ConnId, data: &mut [u8], tx: &mut T, _: Instant) {
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            let n = tx.write_with(rest.len().min(16384), |buf| {
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            });
            assert!(n > 0, "transport full");
            done += n;
        }
    }
    fn peer_closed(&mut self, _: ConnId) {}
    fn flush<T: Tx>(&mut self, _: ConnId, _: &mut T) {}
    fn wants_read(&self, _: ConnId) -> bool {
        true
    }
    fn is_finished(&self, _: ConnId) -> bool {
        false
    }
    fn take_dirty(&mut self, _: &mut Vec<ConnId>) {}
    fn handle_timeout(&mut self, _: Instant, _: &mut Vec<ConnId>) {}
    fn shutdown(&mut self, _: Instant, _: Instant) {}
    fn live(&self) -> usize {
        1
    }
}

/// The transport: a send buffer allocated and zeroed once, lent in place (as the stack
/// driver lends the TCP send ring's tail), so the count holds no transport cost beyond
/// the lend itself.
struct Wire {
    buf: Vec<u8>,
    len: usize,
}

impl Wire {
    fn sent(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Tx for Wire {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let room = &mut self.buf[self.len..];
        if room.len() < min_len.max(1) {
            return 0;
        }
        let n = fill(room).min(room.len());
        self.len += n;
        n
    }

    fn write_chunk(&mut self, chunk: tcp::Bytes) -> Result<(), tcp::Bytes> {
        if self.write(&chunk) == chunk.len() {
            Ok(())
        } else {
            Err(chunk)
        }
    }
}

/// The server's whole share of one exchange: the received bytes in, its answer out.
#[inline(never)]
fn serve(server: &mut Tls<Echo>, wire: &mut [u8], out: &mut Wire, kernel: &mut Option<Vec<u8>>) {
    out.len = 0;
    if let Some(buf) = kernel {
        // The kernel driver's write buffer, emptied by its socket write each time.
        buf.clear();
        let mut tx = BufTx::new(buf, 256 * 1024);
        if !wire.is_empty() {
            server.receive(0, wire, &mut tx, Instant::ZERO);
        }
        server.flush(0, &mut tx);
        let n = buf.len();
        out.buf[..n].copy_from_slice(buf);
        out.len = n;
        return;
    }
    if !wire.is_empty() {
        server.receive(0, wire, out, Instant::ZERO);
    }
    server.flush(0, out);
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let size: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|&n| (1..=16384).contains(&n))
        .ok_or("usage: tls_echo_count SIZE(1..16384) ROUNDS")?;
    let rounds: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("ROUNDS: a number")?;
    let mut kernel = (args.next().as_deref() == Some("buftx")).then(Vec::new);

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-tls-count-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut config = Config::default();
    config.listen.ports = vec![PORT];
    config.listen.tls = vec![TlsListener {
        port: PORT,
        cert: cert.to_str().unwrap().to_string(),
        key: key.to_str().unwrap().to_string(),
        min_version: TlsVersion::V12,
        resumption: true,
        sni: Vec::new(),
    }];
    config.validate().map_err(|e| e.to_string())?;
    let listeners = Listeners::from_config(&config).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = Tls::new(Echo, listeners.for_worker(), None);
    let peer: SocketAddr = "198.18.0.2:40000".parse().unwrap();
    server
        .accept_on(0, PORT, peer, Instant::ZERO)
        .map_err(|e| format!("{e:?}"))?;

    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client =
        ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap();

    let mut wire = Vec::new();
    let mut out = Wire {
        buf: vec![0; 1 << 20],
        len: 0,
    };
    let mut plain = vec![0u8; 16384];
    // The handshake.
    for _ in 0..20 {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        serve(&mut server, &mut wire, &mut out, &mut kernel);
        let mut rd = out.sent();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if !client.is_handshaking() && wire.is_empty() && out.len == 0 {
            break;
        }
    }
    if client.is_handshaking() {
        return Err("no handshake".to_string());
    }
    let message: Vec<u8> = (0..size).map(|i| i as u8).collect();
    for round in 0..rounds {
        client.writer().write_all(&message).unwrap();
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        serve(&mut server, &mut wire, &mut out, &mut kernel);
        let mut rd = out.sent();
        let mut got = 0;
        while got < size {
            if !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
            }
            match client.reader().read(&mut plain) {
                Ok(n) if n > 0 => {
                    assert_eq!(plain[..n], message[got..got + n], "round {round}");
                    got += n;
                }
                _ if rd.is_empty() => return Err(format!("round {round}: {got} of {size}")),
                _ => {}
            }
        }
    }
    println!("{rounds} messages of {size} bytes echoed over TLS 1.3");
    Ok(())
}
