//! wss://: TLS termination as a layer between a connection's TCP byte stream and any
//! [`App`] (the gateway, ws-echo), the same on both drivers.
//!
//! [`Tls`] wraps the application. A connection accepted on a port of `[[listen.tls]]` gets
//! a rustls [`ServerConnection`], driven sans-IO from the worker with rustls' buffered API
//! (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`;
//! docs/decisions/0010-tls-rustls-buffered.md says why). Connections on other ports pass
//! straight through. The application sees plaintext only: [`App::receive`] gets decrypted
//! bytes and a [`Tx`] that encrypts what it writes into the connection's transport.
//!
//! Limits: the handshake shares the application's handshake deadline
//! (`limits.handshake_timeout_ms` counts from accept, so a TLS handshake that never ends is
//! dropped like a slow HTTP upgrade); rustls keeps at most 16 KiB of received plaintext
//! the application has not read (beyond it the layer stops taking TCP bytes, so TCP flow
//! control holds the peer); outgoing ciphertext waits in rustls only while the transport
//! is full, and the application is offered no room until it has drained. Every failure is
//! counted (`sluice_tls_handshakes_total`, `sluice_tls_errors_total`) and answered with the
//! alert rustls chooses, then the connection is closed; other connections never notice.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ::tcp::Instant;
use bytes::Bytes;
use rustls::server::{ServerConfig, ServerSessionMemoryCache};
use rustls::ServerConnection;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{App, ConnId, Refusal, TcpView, Tx};
use crate::config::{Config, TlsListener, TlsVersion};
use crate::metrics::{Tls as Outcome, TlsMetrics, WorkerStats};

/// TLS sessions a worker remembers for TLS 1.2 session-ID resumption (TLS 1.3 resumes with
/// stateless tickets, which any worker can open).
const SESSION_CACHE: usize = 1024;

/// Largest plaintext the application is lent at once by [`Tx::write_with`].
const LEND: usize = 16 * 1024;

/// The TLS settings of one listening port, as rustls takes them.
///
/// Errors name the key that is wrong (`cert` or `key`) and why.
pub fn server_config(t: &TlsListener) -> Result<ServerConfig, (&'static str, String)> {
    server_config_at(t, unix_now()).map(|(cfg, _)| cfg)
}

/// When one loaded certificate expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The TLS port.
    pub port: u16,
    /// `default`, or the SNI name it is served for.
    pub name: String,
    /// Its notAfter, Unix seconds.
    pub not_after: i64,
}

impl Expiry {
    fn labelled(self) -> (u16, String, i64) {
        (self.port, self.name, self.not_after)
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// [`server_config`] with the certificates judged valid at `now` (Unix seconds), and
/// when each of them expires.
pub fn server_config_at(
    t: &TlsListener,
    now: i64,
) -> Result<(ServerConfig, Vec<Expiry>), (&'static str, String)> {
    // ring, as the NATS client already builds it (no cmake at build time); rustls marks it
    // deprecated for lacking post-quantum key exchange (docs/decisions/0010).
    // The key-exchange group follows the client's order of preference (rustls), so the
    // order of ring's list here does not matter.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (default, not_after) = certified_key(&t.cert, &t.key, &provider, now)?;
    let mut expiries = vec![Expiry {
        port: t.port,
        name: "default".to_string(),
        not_after,
    }];
    let mut by_name = Vec::new();
    for s in &t.sni {
        let (ck, not_after) =
            certified_key(&s.cert, &s.key, &provider, now).map_err(|(_, m)| ("sni", m))?;
        expiries.push(Expiry {
            port: t.port,
            name: s.name.to_ascii_lowercase(),
            not_after,
        });
        // The certificate must be valid for the name (rustls checks as it would at SNI).
        rustls::server::ResolvesServerCertUsingSni::new()
            .add(&s.name, ck.clone())
            .map_err(|e| {
                (
                    "sni",
                    format!("{}: not valid for `{}`: {e}", s.cert, s.name),
                )
            })?;
        by_name.push((s.name.to_ascii_lowercase(), Arc::new(ck)));
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version {
        TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ("min_version", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni {
            by_name,
            default: Arc::new(default),
        }));
    // WebSocket upgrades are HTTP/1.1 requests (RFC 6455 4.1).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if t.resumption {
        cfg.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| ("cert", e.to_string()))?;
    } else {
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
    }
    Ok((cfg, expiries))
}

/// A certificate chain and its key from PEM files, and the leaf's notAfter (Unix
/// seconds): the key must match the leaf, and the leaf must be valid at `now`.
fn certified_key(
    cert: &str,
    key: &str,
    provider: &rustls::crypto::CryptoProvider,
    now: i64,
) -> Result<(rustls::sign::CertifiedKey, i64), (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("cert", format!("{cert}: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert", format!("{cert}: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(("cert", format!("{cert}: no PEM certificate in it")));
    };
    let not_after = validity(leaf, now).map_err(|m| ("cert", format!("{cert}: {m}")))?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| ("key", format!("{key}: {e}")))?;
    let ck = rustls::sign::CertifiedKey::from_der(certs, der, provider)
        .map_err(|e| ("key", format!("{key}: {e}")))?;
    Ok((ck, not_after))
}

/// The leaf certificate's notAfter (Unix seconds), or why it is not valid at `now`.
fn validity(leaf: &CertificateDer<'_>, now: i64) -> Result<i64, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let v = parsed.validity();
    if now < v.not_before.timestamp() {
        return Err(format!("not valid before {} (notBefore)", v.not_before));
    }
    if now > v.not_after.timestamp() {
        return Err(format!("expired on {} (notAfter)", v.not_after));
    }
    Ok(v.not_after.timestamp())
}

/// A Unix time as `YYYY-MM-DD` (UTC), for messages.
pub fn utc_date(unix: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .map_or_else(|_| unix.to_string(), |t| t.to_datetime().date().to_string())
}

/// The certificate for the client's SNI name, else the port's default one.
#[derive(Debug)]
struct BySni {
    by_name: Vec<(String, Arc<rustls::sign::CertifiedKey>)>,
    default: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| {
            self.by_name
                .iter()
                .find_map(|(n, ck)| n.eq_ignore_ascii_case(name).then_some(ck))
        });
        Some(Arc::clone(chosen.unwrap_or(&self.default)))
    }
}

/// The TLS ports of one process, built from the configuration (files read and checked
/// then, and again at each [`Listeners::reload`]) and shared by its workers; each worker
/// takes its own copy ([`Listeners::for_worker`]) and follows reloads at its next accept.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    by_port: Vec<(u16, Arc<ServerConfig>)>,
    /// The process-wide state (`None`: no TLS port).
    shared: Option<Arc<Loaded>>,
    /// The generation `by_port` was taken from.
    seen: u64,
}

/// What every worker's [`Listeners`] shares: the current configurations, bumped by a
/// reload.
#[derive(Debug)]
struct Loaded {
    /// Incremented by each successful reload (workers compare it at accept).
    generation: AtomicU64,
    current: Mutex<Current>,
    /// The entries the configurations are built from (files re-read on reload).
    sources: Vec<TlsListener>,
}

#[derive(Debug)]
struct Current {
    by_port: Vec<(u16, Arc<ServerConfig>)>,
    expiries: Vec<Expiry>,
}

impl Listeners {
    /// Every `[[listen.tls]]` port of `config` (empty when there is none).
    pub fn from_config(config: &Config) -> anyhow::Result<Listeners> {
        let (by_port, expiries) = build(&config.listen.tls, None)?;
        if by_port.is_empty() {
            return Ok(Listeners::default());
        }
        let shared = Arc::new(Loaded {
            generation: AtomicU64::new(0),
            current: Mutex::new(Current {
                by_port: by_port.clone(),
                expiries,
            }),
            sources: config.listen.tls.clone(),
        });
        Ok(Listeners {
            by_port,
            shared: Some(shared),
            seen: 0,
        })
    }

    /// Whether no port serves TLS.
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    /// When each loaded certificate expires (the default one and the SNI ones per port).
    pub fn expiries(&self) -> Vec<Expiry> {
        self.shared
            .as_ref()
            .map(|s| lock(&s.current).expiries.clone())
            .unwrap_or_default()
    }

    /// Reads every certificate and key file again (the same ports and SNI names) and
    /// publishes the new configurations to the workers: new handshakes use them, live
    /// connections keep theirs. The ticket keys and TLS 1.2 session caches carry over, so
    /// sessions resume across a reload. On any error nothing changes. Returns the new
    /// expiries.
    pub fn reload(&self) -> anyhow::Result<Vec<Expiry>> {
        let Some(shared) = &self.shared else {
            return Ok(Vec::new());
        };
        let mut current = lock(&shared.current);
        let (by_port, expiries) = build(&shared.sources, Some(&current.by_port))?;
        *current = Current {
            by_port,
            expiries: expiries.clone(),
        };
        shared.generation.fetch_add(1, Ordering::Release);
        Ok(expiries)
    }

    /// Records the certificates' expiries in `metrics`, and from a thread of its own
    /// reloads them ([`Listeners::reload`]) on every SIGHUP (`systemctl reload`), counting
    /// each reload and logging the outcome. Installed even without TLS ports, so a stray
    /// SIGHUP never ends the gateway.
    pub fn reload_on_sighup(&self, metrics: Arc<TlsMetrics>) -> anyhow::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
            .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler: {e}"))?;
        metrics.loaded(self.expiries().into_iter().map(Expiry::labelled));
        let me = self.clone();
        std::thread::Builder::new()
            .name("sluice-reload".to_string())
            .spawn(move || {
                for _ in signals.forever() {
                    if me.shared.is_none() {
                        tracing::info!("SIGHUP: no TLS port, nothing to reload");
                        continue;
                    }
                    match me.reload() {
                        Ok(expiries) => {
                            metrics.reloaded(true);
                            let first = expiries.iter().map(|e| e.not_after).min();
                            metrics.loaded(expiries.into_iter().map(Expiry::labelled));
                            tracing::info!(
                                earliest_expiry = first.map(utc_date).unwrap_or_default(),
                                "SIGHUP: TLS certificates reloaded"
                            );
                        }
                        Err(e) => {
                            metrics.reloaded(false);
                            tracing::error!(
                                "SIGHUP: TLS reload failed, certificates unchanged: {e:#}"
                            );
                        }
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("starting the reload thread: {e}"))?;
        Ok(())
    }

    /// One worker's copy: the same certificates and ticket keys (a ticket any worker
    /// issued resumes on every worker), and its own TLS 1.2 session cache, so handshakes
    /// on different workers share no lock but the ticket keys' read lock.
    pub fn for_worker(&self) -> Listeners {
        let Some(shared) = &self.shared else {
            return Listeners::default();
        };
        let mut own = Listeners {
            by_port: Vec::new(),
            shared: Some(Arc::clone(shared)),
            seen: 0,
        };
        own.refresh();
        own
    }

    /// Takes the current configurations, keeping this worker's session caches.
    fn refresh(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let current = lock(&shared.current);
        self.seen = shared.generation.load(Ordering::Acquire);
        let by_port = current
            .by_port
            .iter()
            .map(|(port, cfg)| {
                let mut own = ServerConfig::clone(cfg);
                if cfg.send_tls13_tickets > 0 || cfg.ticketer.enabled() {
                    own.session_storage = self.by_port.iter().find(|(p, _)| p == port).map_or_else(
                        || -> Arc<dyn rustls::server::StoresServerSessions> {
                            ServerSessionMemoryCache::new(SESSION_CACHE)
                        },
                        |(_, old)| Arc::clone(&old.session_storage),
                    );
                }
                (*port, Arc::new(own))
            })
            .collect();
        drop(current);
        self.by_port = by_port;
    }

    fn get(&mut self, port: u16) -> Option<Arc<ServerConfig>> {
        if let Some(shared) = &self.shared {
            if shared.generation.load(Ordering::Acquire) != self.seen {
                self.refresh();
            }
        }
        self.by_port
            .iter()
            .find_map(|(p, c)| (*p == port).then(|| Arc::clone(c)))
    }
}

/// The configurations of `entries`; with `previous`, each port keeps its ticket keys and
/// session store.
#[allow(clippy::type_complexity)]
fn build(
    entries: &[TlsListener],
    previous: Option<&[(u16, Arc<ServerConfig>)]>,
) -> anyhow::Result<(Vec<(u16, Arc<ServerConfig>)>, Vec<Expiry>)> {
    let now = unix_now();
    let mut by_port = Vec::new();
    let mut expiries = Vec::new();
    for (i, t) in entries.iter().enumerate() {
        let (mut cfg, exp) = server_config_at(t, now)
            .map_err(|(k, m)| anyhow::anyhow!("listen.tls[{i}].{k}: {m}"))?;
        if let Some(old) = previous.and_then(|p| p.iter().find(|(port, _)| *port == t.port)) {
            cfg.ticketer = Arc::clone(&old.1.ticketer);
            cfg.session_storage = Arc::clone(&old.1.session_storage);
        }
        by_port.push((t.port, Arc::new(cfg)));
        expiries.extend(exp);
    }
    Ok((by_port, expiries))
}

/// The lock's content, also after a panic elsewhere (the data is replaced whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One TLS connection.
struct Conn {
    tls: ServerConnection,
    /// Ciphertext taken from the transport that rustls could not hold yet (its received
    /// plaintext was full because the application was not reading): fed first.
    backlog: Vec<u8>,
    /// The handshake completed (and was counted).
    established: bool,
    /// A fatal TLS error: its alert is written, the connection closes, nothing more is read.
    failed: bool,
    /// close_notify queued (the application finished).
    close_sent: bool,
    /// The application was told the peer closed.
    eof_told: bool,
    /// TCP FIN from the peer, not yet passed on (plaintext still waits).
    fin: bool,
    /// Plaintext or backlog waits for the application to read again.
    stalled: bool,
    /// The first bytes were looked at ([`screen_hello`]).
    hello_checked: bool,
}

/// TLS termination around an application `A` (see the module docs).
pub struct Tls<A> {
    inner: A,
    listeners: Listeners,
    conns: Vec<Option<Conn>>,
    /// Decrypted bytes handed to the application (rustls copies them out of its buffer).
    plain: Vec<u8>,
    /// The application's [`Tx::write_with`] space.
    lend: Vec<u8>,
    /// Connections whose reading stalled (see [`Conn::stalled`]).
    stalled: Vec<ConnId>,
    stats: Option<Arc<WorkerStats>>,
    now: Instant,
}

impl<A> std::fmt::Debug for Tls<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ports", &self.listeners.by_port.len())
            .field("conns", &self.conns.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

impl<A: App> Tls<A> {
    /// `inner` behind TLS on the ports of `listeners` (a worker's copy); outcomes are
    /// counted in `stats` when given.
    pub fn new(inner: A, listeners: Listeners, stats: Option<Arc<WorkerStats>>) -> Tls<A> {
        Tls {
            inner,
            listeners,
            conns: Vec::new(),
            plain: vec![0; LEND],
            lend: Vec::new(),
            stalled: Vec::new(),
            stats,
            now: Instant::ZERO,
        }
    }

    /// The wrapped application.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The wrapped application, mutably.
    pub fn inner_mut(&mut self) -> &mut A {
        &mut self.inner
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id).and_then(Option::as_mut)
    }

    fn count(&self, handshake: bool, outcome: Outcome) {
        if let Some(s) = &self.stats {
            if handshake {
                s.tls_handshake(outcome);
            } else {
                s.tls_error(outcome);
            }
        }
    }

    /// Feeds ciphertext (the backlog first, then `data`) to rustls and the plaintext to the
    /// application while it reads; keeps what rustls cannot take yet; writes rustls' output.
    fn pump<T: Tx>(&mut self, id: ConnId, data: &[u8], tx: &mut T, now: Instant) {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        if !c.hello_checked {
            match screen_hello(c, data, tx) {
                Hello::Wait => return,
                Hello::Refused => return self.count(true, Outcome::ProtocolVersion),
                Hello::Pass => {}
            }
        }
        let mut backlog = std::mem::take(&mut c.backlog);
        let mut failure = None;
        let mut from_backlog = 0;
        let mut from_data = 0;
        let inner = &mut self.inner;
        let plain = &mut self.plain;
        let lend = &mut self.lend;
        loop {
            // Plaintext first: rustls refuses more ciphertext while 16 KiB of it wait.
            if !deliver(inner, id, c, plain, lend, tx, now) {
                break;
            }
            let input = if from_backlog < backlog.len() {
                backlog.get(from_backlog..).unwrap_or_default()
            } else if from_data < data.len() {
                data.get(from_data..).unwrap_or_default()
            } else {
                break;
            };
            let mut rd = input;
            match c.tls.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(n) => {
                    if from_backlog < backlog.len() {
                        from_backlog += n;
                    } else {
                        from_data += n;
                    }
                }
                // Received plaintext full: the application must read first.
                Err(_) => break,
            }
            if let Err(e) = c.tls.process_new_packets() {
                failure = Some(e);
                break;
            }
        }
        let handshake_done = !c.established && !c.tls.is_handshaking() && failure.is_none();
        if handshake_done {
            c.established = true;
        }
        // What rustls did not take waits, in order, for the application to read again.
        let mut rest = backlog.split_off(from_backlog.min(backlog.len()));
        rest.extend_from_slice(data.get(from_data..).unwrap_or_default());
        c.backlog = rest;
        if failure.is_some() {
            c.failed = true;
            c.backlog = Vec::new();
        }
        let stall = !c.failed && (!c.backlog.is_empty() || !inner.wants_read(id));
        if stall && !c.stalled {
            c.stalled = true;
            self.stalled.push(id);
        }
        let fin_now = c.fin && c.backlog.is_empty() && !c.eof_told && !c.failed;
        if fin_now && inner.wants_read(id) {
            c.eof_told = true;
            inner.peer_closed(id);
        }
        // The alert of a failure, handshake messages, session tickets.
        drain(&mut c.tls, tx);
        let was_established = c.established;
        let resumed = matches!(c.tls.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        if handshake_done {
            self.count(
                true,
                if resumed {
                    Outcome::Resumed
                } else {
                    Outcome::Ok
                },
            );
        }
        if let Some(e) = failure {
            tracing::debug!(conn = id, error = %e, "TLS failure");
            self.count(!was_established, classify(&e));
        }
    }
}

/// What the first bytes of a connection say.
enum Hello {
    /// Fewer than the 11 bytes needed (kept in the backlog).
    Wait,
    /// A ClientHello of a version older than TLS 1.2: answered, connection failed.
    Refused,
    /// Anything else: rustls judges it.
    Pass,
}

/// RFC 5246 E.1 and RFC 8446 D: a client whose ClientHello offers only versions older
/// than the server accepts gets a protocol_version alert. rustls answers such a hello
/// (TLS 1.1 has no signature_algorithms extension) with handshake_failure, from the
/// certificate choice it makes first; the record header and the hello's
/// `legacy_version` (bytes 9-10: TLS 1.2 and 1.3 clients both send 3.3) decide it here.
fn screen_hello<T: Tx>(c: &mut Conn, data: &[u8], tx: &mut T) -> Hello {
    const HEAD: usize = 11;
    let mut first = c.backlog.iter().chain(data);
    let (kind, len) = (first.next(), first.nth(2).zip(first.next()));
    let plausible_hello = match (kind, len) {
        (Some(&22), Some((&hi, &lo))) => u16::from_be_bytes([hi, lo]) <= 1 << 14,
        (Some(&22), None) => true,
        _ => false,
    };
    if !plausible_hello {
        c.hello_checked = true;
        return Hello::Pass;
    }
    if c.backlog.len() + data.len() < HEAD {
        c.backlog.extend_from_slice(data);
        return Hello::Wait;
    }
    c.hello_checked = true;
    let mut head = [0u8; HEAD];
    for (h, b) in head.iter_mut().zip(c.backlog.iter().chain(data)) {
        *h = *b;
    }
    let handshake_record = head[0] == 22;
    let client_hello = head[5] == 1;
    if handshake_record && client_hello && u16::from_be_bytes([head[9], head[10]]) < 0x0303 {
        // A fatal (2) protocol_version (70) alert in the client's record version.
        let _ = tx.write(&[21, head[1], head[2], 0, 2, 2, 70]);
        c.failed = true;
        c.backlog = Vec::new();
        return Hello::Refused;
    }
    Hello::Pass
}

/// Hands rustls' plaintext to the application while it reads; false when it stopped
/// reading (or the peer's close_notify came).
fn deliver<A: App, T: Tx>(
    inner: &mut A,
    id: ConnId,
    c: &mut Conn,
    plain: &mut [u8],
    lend: &mut Vec<u8>,
    tx: &mut T,
    now: Instant,
) -> bool {
    loop {
        if c.failed || c.eof_told {
            return false;
        }
        if !inner.wants_read(id) {
            return false;
        }
        match c.tls.reader().read(plain) {
            Ok(0) => {
                // close_notify: every byte the peer sent was read.
                c.eof_told = true;
                inner.peer_closed(id);
                return false;
            }
            Ok(n) => {
                let mut out = TlsTx {
                    tls: &mut c.tls,
                    out: tx,
                    lend,
                };
                if let Some(data) = plain.get_mut(..n) {
                    inner.receive(id, data, &mut out, now);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            // The peer closed TCP without close_notify: the FIN path tells the application.
            Err(_) => return true,
        }
    }
}

/// Writes rustls' pending ciphertext into the transport; true when nothing is left.
fn drain<T: Tx>(tls: &mut ServerConnection, out: &mut T) -> bool {
    while tls.wants_write() {
        match tls.write_tls(&mut TxWriter(out)) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// Which counter a rustls error goes to.
fn classify(e: &rustls::Error) -> Outcome {
    use rustls::{Error, PeerIncompatible};
    match e {
        Error::InvalidMessage(_) => Outcome::BadMessage,
        Error::PeerIncompatible(p) => match p {
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic
            | PeerIncompatible::SupportedVersionsExtensionRequired => Outcome::ProtocolVersion,
            PeerIncompatible::NoCipherSuitesInCommon
            | PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::NoSignatureSchemesInCommon => Outcome::NoSharedParameters,
            _ => Outcome::Other,
        },
        Error::NoApplicationProtocol => Outcome::NoApplicationProtocol,
        Error::AlertReceived(_) => Outcome::AlertReceived,
        Error::DecryptError => Outcome::DecryptError,
        _ => Outcome::Other,
    }
}

/// The transport's [`Tx`] as the `io::Write` rustls writes ciphertext to.
struct TxWriter<'a, T>(&'a mut T);

impl<T: Tx> Write for TxWriter<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.write(buf) {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The application's [`Tx`] on a TLS connection: plaintext in, records out. Room is offered
/// only when rustls holds no ciphertext the transport has not taken, so what waits in
/// rustls is bounded by one write.
struct TlsTx<'a, T> {
    tls: &'a mut ServerConnection,
    out: &'a mut T,
    lend: &'a mut Vec<u8>,
}

impl<T: Tx> TlsTx<'_, T> {
    fn send(&mut self, plain: &[u8]) {
        // Unbounded inside rustls (`set_buffer_limit(None)`): the whole write is taken.
        let _ = self.tls.writer().write_all(plain);
        drain(self.tls, self.out);
    }
}

impl<T: Tx> Tx for TlsTx<'_, T> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        if !drain(self.tls, self.out) {
            return 0;
        }
        let len = min_len.max(1).max(LEND);
        self.lend.clear();
        self.lend.resize(len, 0);
        let n = fill(self.lend.as_mut_slice()).min(len);
        if n > 0 {
            let lend = std::mem::take(self.lend);
            self.send(lend.get(..n).unwrap_or_default());
            *self.lend = lend;
        }
        n
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if data.is_empty() || !drain(self.tls, self.out) {
            return 0;
        }
        let n = data.len().min(4 * LEND);
        self.send(data.get(..n).unwrap_or_default());
        n
    }

    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        if !drain(self.tls, self.out) {
            return Err(chunk);
        }
        self.send(&chunk);
        Ok(())
    }
}

impl<A: App> App for Tls<A> {
    type Message = A::Message;

    fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        self.now = now;
        self.inner.accept(id, peer, now)
    }

    fn accept_on(
        &mut self,
        id: ConnId,
        local_port: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.now = now;
        let Some(cfg) = self.listeners.get(local_port) else {
            return self.inner.accept_on(id, local_port, peer, now);
        };
        self.inner.accept_on(id, local_port, peer, now)?;
        let mut tls = match ServerConnection::new(cfg) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "TLS connection setup failed");
                self.inner.remove(id);
                return Err(Refusal::MaxConnections);
            }
        };
        // Bounded by this layer instead (see `TlsTx`).
        tls.set_buffer_limit(None);
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        if let Some(slot) = self.conns.get_mut(id) {
            *slot = Some(Conn {
                tls,
                backlog: Vec::new(),
                established: false,
                failed: false,
                close_sent: false,
                eof_told: false,
                fin: false,
                stalled: false,
                hello_checked: false,
            });
        }
        Ok(())
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(slot) = self.conns.get_mut(id) {
            *slot = None;
        }
        self.inner.remove(id);
    }

    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        self.now = now;
        match self.conn(id) {
            None => self.inner.receive(id, data, tx, now),
            Some(c) if c.failed => {}
            Some(_) => self.pump(id, data, tx, now),
        }
    }

    fn peer_closed(&mut self, id: ConnId) {
        let inner_reads = self.inner.wants_read(id);
        match self.conn(id) {
            None => self.inner.peer_closed(id),
            Some(c) => {
                if c.failed || c.eof_told {
                    return;
                }
                c.fin = true;
                if c.backlog.is_empty() && inner_reads {
                    c.eof_told = true;
                    self.inner.peer_closed(id);
                }
            }
        }
    }

    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        let now = self.now;
        let Some(c) = self.conn(id) else {
            return self.inner.flush(id, tx);
        };
        if !drain(&mut c.tls, tx) || c.failed {
            return;
        }
        if c.stalled && !c.eof_told {
            c.stalled = false;
            self.pump(id, &[], tx, now);
        }
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        if c.failed {
            return;
        }
        let mut out = TlsTx {
            tls: &mut c.tls,
            out: tx,
            lend: &mut self.lend,
        };
        self.inner.flush(id, &mut out);
        if !c.close_sent && self.inner.is_finished(id) {
            // RFC 8446 6.1: close_notify before closing the write side.
            c.close_sent = true;
            c.tls.send_close_notify();
        }
        drain(&mut c.tls, tx);
    }

    fn wants_read(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.wants_read(id),
            Some(c) => {
                !c.failed
                    && (c.backlog.is_empty() || !c.hello_checked)
                    && (c.tls.is_handshaking() || self.inner.wants_read(id))
            }
        }
    }

    fn is_finished(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.is_finished(id),
            Some(c) => {
                (c.failed || (c.close_sent && self.inner.is_finished(id))) && !c.tls.wants_write()
            }
        }
    }

    fn settled(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.settled(id),
            Some(c) => !c.failed && !c.stalled && !c.tls.wants_write() && self.inner.settled(id),
        }
    }

    fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        self.inner.take_dirty(out);
        if self.stalled.is_empty() {
            return;
        }
        let mut stalled = std::mem::take(&mut self.stalled);
        stalled.retain(|&id| {
            let Some(c) = self.conns.get(id).and_then(Option::as_ref) else {
                return false;
            };
            if !c.stalled {
                return false;
            }
            if self.inner.wants_read(id) {
                // Read again: the driver's flush feeds what waits.
                out.push(id);
            }
            true
        });
        self.stalled = stalled;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        self.now = now;
        let before = expired.len();
        self.inner.handle_timeout(now, expired);
        for i in before..expired.len() {
            let Some(&id) = expired.get(i) else { continue };
            let handshaking = self
                .conns
                .get(id)
                .and_then(Option::as_ref)
                .is_some_and(|c| !c.failed && c.tls.is_handshaking());
            if handshaking {
                self.count(true, Outcome::Timeout);
            }
        }
    }

    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        self.now = now;
        self.inner.shutdown(now, deadline);
    }

    fn live(&self) -> usize {
        self.inner.live()
    }

    fn handle_message(&mut self, msg: Self::Message, now: Instant, tcp: TcpView<'_>) {
        self.now = now;
        self.inner.handle_message(msg, now, tcp);
    }

    fn take_upstream_requests(&mut self) -> Vec<(ConnId, String)> {
        self.inner.take_upstream_requests()
    }

    fn upstream_connected(&mut self, id: ConnId) {
        self.inner.upstream_connected(id);
    }

    fn upstream_output(&self, id: ConnId) -> &[u8] {
        self.inner.upstream_output(id)
    }

    fn upstream_consume(&mut self, id: ConnId, n: usize) {
        self.inner.upstream_consume(id, n);
    }

    fn wants_upstream_read(&self, id: ConnId) -> bool {
        self.inner.wants_upstream_read(id)
    }

    fn upstream_finished(&self, id: ConnId) -> bool {
        self.inner.upstream_finished(id)
    }

    fn upstream_receive(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        self.now = now;
        self.inner.upstream_receive(id, data, now);
    }

    fn upstream_lost(&mut self, id: ConnId, now: Instant) {
        self.now = now;
        self.inner.upstream_lost(id, now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::app::BufTx;
    use crate::config::TlsListener;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    const PORT: u16 = 8443;

    /// An echo application that can stop reading.
    #[derive(Default)]
    struct Echo {
        reading: bool,
        eof: Vec<ConnId>,
        received: Vec<u8>,
    }

    impl App for Echo {
        type Message = ();
        fn accept(&mut self, _: ConnId, _: SocketAddr, _: Instant) -> Result<(), Refusal> {
            Ok(())
        }
        fn remove(&mut self, _: ConnId) {}
        fn receive<T: Tx>(&mut self, _: ConnId, data: &mut [u8], tx: &mut T, _: Instant) {
            self.received.extend_from_slice(data);
            assert_eq!(tx.write(data), data.len());
        }
        fn peer_closed(&mut self, id: ConnId) {
            self.eof.push(id);
        }
        fn flush<T: Tx>(&mut self, _: ConnId, _: &mut T) {}
        fn wants_read(&self, _: ConnId) -> bool {
            self.reading
        }
        fn is_finished(&self, id: ConnId) -> bool {
            self.eof.contains(&id)
        }
        fn take_dirty(&mut self, _: &mut Vec<ConnId>) {}
        fn handle_timeout(&mut self, _: Instant, _: &mut Vec<ConnId>) {}
        fn shutdown(&mut self, _: Instant, _: Instant) {}
        fn live(&self) -> usize {
            0
        }
    }

    struct World {
        server: Tls<Echo>,
        stats: Arc<WorkerStats>,
        client_cfg: Arc<ClientConfig>,
        listeners: Listeners,
        /// The certificate loaded at start.
        first: CertificateDer<'static>,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        _dir: std::path::PathBuf,
    }

    /// A client configuration (with its own session cache) that trusts only `cert`.
    fn trusting(cert: &CertificateDer<'static>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_cfg = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(client_cfg)
    }

    fn world() -> World {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "sluice-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let mut config = Config::default();
        config.listen.ports = vec![PORT, 80];
        config.listen.tls = vec![TlsListener {
            port: PORT,
            cert: cert.to_str().unwrap().to_string(),
            key: key.to_str().unwrap().to_string(),
            min_version: TlsVersion::V12,
            resumption: true,
            sni: Vec::new(),
        }];
        config.validate().unwrap();
        let listeners = Listeners::from_config(&config).unwrap();
        let stats = Arc::new(WorkerStats::new(0, &[]));
        let server = Tls::new(
            Echo {
                reading: true,
                ..Echo::default()
            },
            listeners.for_worker(),
            Some(Arc::clone(&stats)),
        );
        World {
            server,
            stats,
            client_cfg: trusting(ck.cert.der()),
            first: ck.cert.der().clone(),
            listeners,
            cert,
            key,
            _dir: dir,
        }
    }

    fn peer() -> SocketAddr {
        "198.18.0.2:40000".parse().unwrap()
    }

    impl World {
        fn client(&mut self, id: ConnId) -> ClientConnection {
            let cfg = Arc::clone(&self.client_cfg);
            self.client_with(id, cfg)
        }

        fn client_with(&mut self, id: ConnId, cfg: Arc<ClientConfig>) -> ClientConnection {
            self.server
                .accept_on(id, PORT, peer(), Instant::ZERO)
                .unwrap();
            ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap()
        }

        /// Moves bytes both ways until neither side has anything to say; returns the
        /// plaintext the client read.
        fn run(&mut self, id: ConnId, client: &mut ClientConnection) -> Vec<u8> {
            let mut got = Vec::new();
            for _ in 0..50 {
                let mut wire = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut wire).unwrap();
                }
                let mut back = Vec::new();
                if !wire.is_empty() && self.server.wants_read(id) {
                    self.server.receive(
                        id,
                        &mut wire,
                        &mut BufTx::new(&mut back, 1 << 20),
                        Instant::ZERO,
                    );
                }
                let mut dirty = Vec::new();
                self.server.take_dirty(&mut dirty);
                self.server.flush(id, &mut BufTx::new(&mut back, 1 << 20));
                if back.is_empty() && wire.is_empty() {
                    break;
                }
                let mut rd = back.as_slice();
                while !rd.is_empty() {
                    if client.read_tls(&mut rd).unwrap() == 0 {
                        break;
                    }
                    client.process_new_packets().unwrap();
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = client.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
            }
            got
        }
    }

    #[test]
    fn tls_handshake_then_echo_in_order_alpn_http11() {
        let mut w = world();
        let mut c = w.client(0);
        c.writer().write_all(b"hello ").unwrap();
        c.writer().write_all(b"world").unwrap();
        let got = w.run(0, &mut c);
        assert_eq!(got, b"hello world");
        assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(w.server.inner().received, b"hello world");
        assert_eq!(w.stats.tls_count(true, Outcome::Ok), 1);
    }

    #[test]
    fn tls_second_connection_resumes_with_a_ticket() {
        let mut w = world();
        let mut c = w.client(0);
        c.writer().write_all(b"a").unwrap();
        assert_eq!(w.run(0, &mut c), b"a");
        let mut c2 = w.client(1);
        c2.writer().write_all(b"b").unwrap();
        assert_eq!(w.run(1, &mut c2), b"b");
        assert_eq!(w.stats.tls_count(true, Outcome::Ok), 1);
        assert_eq!(w.stats.tls_count(true, Outcome::Resumed), 1);
    }

    #[test]
    fn tls_garbage_instead_of_client_hello_alert_counted_closed() {
        let mut w = world();
        w.server.accept_on(0, PORT, peer(), Instant::ZERO).unwrap();
        let mut out = Vec::new();
        let mut garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        w.server.receive(
            0,
            &mut garbage,
            &mut BufTx::new(&mut out, 1 << 20),
            Instant::ZERO,
        );
        // A TLS alert record (content type 21), then the connection is done.
        assert_eq!(out.first(), Some(&21), "{out:?}");
        assert!(!w.server.wants_read(0));
        assert!(w.server.is_finished(0));
        assert_eq!(w.stats.tls_count(true, Outcome::BadMessage), 1);
        assert!(w.server.inner().received.is_empty());
        // Another connection is unaffected.
        let mut c = w.client(1);
        c.writer().write_all(b"still fine").unwrap();
        assert_eq!(w.run(1, &mut c), b"still fine");
    }

    #[test]
    fn tls_close_notify_tells_the_app_then_close_notify_back() {
        let mut w = world();
        let mut c = w.client(0);
        c.writer().write_all(b"x").unwrap();
        assert_eq!(w.run(0, &mut c), b"x");
        c.send_close_notify();
        w.run(0, &mut c);
        assert_eq!(w.server.inner().eof, vec![0]);
        assert!(w.server.is_finished(0));
        // The client saw our close_notify: its reader reports a clean end.
        let mut buf = [0u8; 8];
        assert_eq!(c.reader().read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn tls_app_not_reading_holds_bytes_then_delivers_them_in_order() {
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        assert!(!c.is_handshaking());
        w.server.inner_mut().reading = false;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        c.set_buffer_limit(None);
        c.writer().write_all(&sent).unwrap();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        // The transport hands it all over once; the layer keeps what the app cannot take.
        let mut out = Vec::new();
        w.server.receive(
            0,
            &mut wire,
            &mut BufTx::new(&mut out, 1 << 20),
            Instant::ZERO,
        );
        assert!(!w.server.wants_read(0));
        assert!(w.server.inner().received.is_empty());
        w.server.inner_mut().reading = true;
        let mut dirty = Vec::new();
        w.server.take_dirty(&mut dirty);
        assert_eq!(dirty, vec![0]);
        w.server.flush(0, &mut BufTx::new(&mut out, 1 << 20));
        assert_eq!(w.server.inner().received, sent);
        assert!(w.server.wants_read(0));
    }

    #[test]
    fn tls_port_without_tls_passes_bytes_through() {
        let mut w = world();
        w.server.accept_on(0, 80, peer(), Instant::ZERO).unwrap();
        let mut out = Vec::new();
        let mut data = b"plain".to_vec();
        w.server.receive(
            0,
            &mut data,
            &mut BufTx::new(&mut out, 1 << 20),
            Instant::ZERO,
        );
        assert_eq!(out, b"plain");
    }

    #[test]
    fn tls_config_rejects_a_key_of_another_certificate() {
        let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-tls-mismatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("a.pem");
        let key = dir.join("b.key");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let t = TlsListener {
            port: 1,
            cert: cert.to_str().unwrap().to_string(),
            key: key.to_str().unwrap().to_string(),
            min_version: TlsVersion::V12,
            resumption: true,
            sni: Vec::new(),
        };
        let (k, m) = server_config(&t).unwrap_err();
        assert_eq!(k, "key");
        assert!(m.contains("b.key"), "{m}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tls_reload_new_certificate_for_new_handshakes_live_connection_and_tickets_kept() {
        let mut w = world();
        let mut live = w.client(0);
        live.writer().write_all(b"before").unwrap();
        assert_eq!(w.run(0, &mut live), b"before");

        // The files now hold another certificate for the same name.
        let new = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&w.cert, new.cert.pem()).unwrap();
        std::fs::write(&w.key, new.signing_key.serialize_pem()).unwrap();
        let expiries = w.listeners.reload().unwrap();
        assert_eq!(expiries.len(), 1);
        assert_eq!(expiries[0].name, "default");

        // The live connection goes on with its session.
        live.writer().write_all(b" after").unwrap();
        assert_eq!(w.run(0, &mut live), b" after");
        // A client that had the old certificate's session resumes (the ticket key is kept).
        let mut resumed = w.client(1);
        resumed.writer().write_all(b"r").unwrap();
        assert_eq!(w.run(1, &mut resumed), b"r");
        assert_eq!(w.stats.tls_count(true, Outcome::Resumed), 1);
        // A new client trusting only the new certificate completes a full handshake...
        let mut fresh = w.client_with(2, trusting(new.cert.der()));
        fresh.writer().write_all(b"new").unwrap();
        assert_eq!(w.run(2, &mut fresh), b"new");
        assert_eq!(w.stats.tls_count(true, Outcome::Ok), 2);
        // ...and one trusting only the old certificate (no session) no longer does.
        let old_only = trusting(&w.first);
        let mut refused = w.client_with(3, old_only);
        refused.writer().write_all(b"x").unwrap();
        let mut wire = Vec::new();
        refused.write_tls(&mut wire).unwrap();
        let mut back = Vec::new();
        w.server.receive(
            3,
            &mut wire,
            &mut BufTx::new(&mut back, 1 << 20),
            Instant::ZERO,
        );
        let mut rd = back.as_slice();
        refused.read_tls(&mut rd).unwrap();
        assert!(refused.process_new_packets().is_err());
    }

    #[test]
    fn tls_failed_reload_changes_nothing() {
        let mut w = world();
        std::fs::write(&w.cert, "not a certificate").unwrap();
        let e = w.listeners.reload().unwrap_err().to_string();
        assert!(e.starts_with("listen.tls[0].cert: "), "{e}");
        // New handshakes still get the certificate loaded before.
        let mut c = w.client(0);
        c.writer().write_all(b"same").unwrap();
        assert_eq!(w.run(0, &mut c), b"same");
        assert_eq!(w.stats.tls_count(true, Outcome::Ok), 1);
    }

    #[test]
    fn tls_certificate_outside_its_validity_is_refused_with_the_date() {
        let w = world();
        let t = TlsListener {
            port: PORT,
            cert: w.cert.to_str().unwrap().to_string(),
            key: w.key.to_str().unwrap().to_string(),
            min_version: TlsVersion::V12,
            resumption: true,
            sni: Vec::new(),
        };
        // rcgen's default validity: 1975-01-01 to 4096-01-01.
        let (_, expiries) = server_config_at(&t, unix_now()).unwrap();
        assert_eq!(utc_date(expiries[0].not_after), "4096-01-01");
        let year_5000 = 95_617_584_000;
        let (k, m) = server_config_at(&t, year_5000).unwrap_err();
        assert_eq!(k, "cert");
        assert!(m.contains("expired on") && m.contains("4096"), "{m}");
        let (k, m) = server_config_at(&t, 0).unwrap_err();
        assert_eq!(k, "cert");
        assert!(m.contains("not valid before") && m.contains("1975"), "{m}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_798_761_599), "2026-12-31");
    }
}
