//! wss://: TLS termination as a layer between a connection's TCP byte stream and any
//! [`App`] (the gateway, ws-echo), the same on both drivers.
//!
//! [`Tls`] wraps the application. A connection accepted on a port of `[[listen.tls]]` gets
//! a rustls [`UnbufferedServerConnection`] for the handshake, driven sans-IO from the
//! worker; once the handshake is complete, rustls hands over the traffic keys and the
//! [`record`] layer protects the records in place: received records are decrypted where
//! they lie and the application reads them there; what it writes is sealed into the
//! transport's own send buffer (docs/decisions/0010-tls-rustls-handshake-own-records.md
//! says why). Connections on other ports pass straight through. The application sees
//! plaintext only: [`App::receive`] gets decrypted bytes and a [`Tx`] that seals what it
//! writes.
//!
//! Limits: the handshake shares the application's handshake deadline
//! (`limits.handshake_timeout_ms` counts from accept, so a TLS handshake that never ends is
//! dropped like a slow HTTP upgrade); while the application does not read, the layer keeps
//! what the current receive handed it and takes no more TCP bytes (TCP flow control holds
//! the peer); outgoing records wait in the connection only while the transport is full,
//! and the application is offered no room until they have gone. Every failure is counted
//! (`sluice_tls_handshakes_total`, `sluice_tls_errors_total`) and answered with its alert,
//! then the connection is closed; other connections never notice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ::tcp::Instant;
use bytes::Bytes;
use rustls::server::UnbufferedServerConnection;
use rustls::server::{ServerConfig, ServerSessionMemoryCache};
use rustls::unbuffered::ConnectionState;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{App, ConnId, Refusal, TcpView, Tx};
use record::{Alert, Fault, Opened, Records};

mod record;
use crate::config::{Config, TlsListener, TlsVersion};
use crate::metrics::{Tls as Outcome, TlsMetrics, WorkerStats};

/// TLS sessions a worker remembers for TLS 1.2 session-ID resumption (TLS 1.3 resumes with
/// stateless tickets, which any worker can open).
const SESSION_CACHE: usize = 1024;

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
    // The record layer takes the traffic keys at the end of the handshake (record.rs).
    cfg.enable_secret_extraction = true;
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

/// Where a TLS connection is.
enum Phase {
    /// rustls runs the handshake.
    Handshake(Box<UnbufferedServerConnection>),
    /// Established: records are protected here ([`Records`]).
    Traffic(Box<Records>),
    /// Failed (its alert is queued) or the record layer could not start: nothing more is
    /// read or written but what `pending` holds.
    Over,
}

/// Records the transport had no room for (sent before anything else): handshake flights,
/// a chunk that must go whole, alerts.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    at: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.at >= self.buf.len()
    }

    /// Writes what waits into the transport; true when nothing is left.
    fn drain<T: Tx>(&mut self, tx: &mut T) -> bool {
        if self.is_empty() {
            return true;
        }
        self.at += tx.write(self.buf.get(self.at..).unwrap_or_default());
        if self.is_empty() {
            self.buf.clear();
            self.at = 0;
            return true;
        }
        false
    }

    /// Room for a record of `len` bytes at the end; seals it there with `seal` (which
    /// returns its length).
    fn seal(
        &mut self,
        len: usize,
        seal: impl FnOnce(&mut [u8]) -> Result<usize, Alert>,
    ) -> Result<(), Alert> {
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        let n = self.buf.get_mut(start..).map_or(Ok(0), seal);
        self.buf.truncate(start + *n.as_ref().unwrap_or(&0));
        n.map(|_| ())
    }
}

/// Seals one record with `seal` straight into the transport's send buffer when the
/// transport has `len` bytes of room and nothing waits before it, else into `pending`.
fn seal_out<T: Tx>(
    tx: &mut T,
    pending: &mut Pending,
    len: usize,
    seal: impl FnOnce(&mut [u8]) -> Result<usize, Alert>,
) -> Result<(), Alert> {
    let mut seal = Some(seal);
    let mut failed = None;
    if pending.is_empty() {
        let n = tx.write_with(len, |buf| match seal.take().map(|s| s(buf)) {
            Some(Ok(n)) => n,
            Some(Err(a)) => {
                failed = Some(a);
                0
            }
            None => 0,
        });
        if let Some(a) = failed {
            return Err(a);
        }
        if n > 0 {
            return Ok(());
        }
    }
    match seal {
        Some(s) => pending.seal(len, s),
        None => Err(Alert::InternalError),
    }
}

/// One TLS connection.
struct Conn {
    phase: Phase,
    /// Received bytes not processed yet: the handshake's, a record that spans two
    /// receives, or records the application did not read yet (from `rx_at` on).
    rx: Vec<u8>,
    rx_at: usize,
    /// Plaintext rustls decrypted itself: application data that came with the client's
    /// Finished, before the record layer took over (delivered first).
    early: Vec<u8>,
    pending: Pending,
    /// A fatal TLS error: its alert is written, the connection closes, nothing more is read.
    failed: bool,
    /// close_notify queued (the application finished).
    close_sent: bool,
    /// The peer's close_notify came: nothing more is read.
    close_received: bool,
    /// The application was told the peer closed.
    eof_told: bool,
    /// TCP FIN from the peer, not yet passed on (received bytes still wait).
    fin: bool,
    /// Received bytes wait for the application to read again.
    stalled: bool,
    /// The first bytes were looked at ([`screen_hello`]).
    hello_checked: bool,
}

impl Conn {
    /// Received plaintext, or a whole record, waits here for the application (a
    /// record's first part alone waits for the transport, not for it).
    fn waiting(&self) -> bool {
        let held = self.rx.get(self.rx_at..).unwrap_or_default();
        !self.early.is_empty()
            || match &self.phase {
                Phase::Traffic(r) => {
                    matches!(r.record_len(held), Some(Ok(n)) if n <= held.len())
                }
                _ => false,
            }
    }
}

/// TLS termination around an application `A` (see the module docs).
pub struct Tls<A> {
    inner: A,
    listeners: Listeners,
    conns: Vec<Option<Conn>>,
    /// The application's [`Tx::write_with`] space when it asks for more than one record.
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

/// How a connection's TLS went wrong (counted, then closed).
enum Failure {
    /// rustls refused the handshake (its alert is queued).
    Handshake(rustls::Error),
    /// The record layer: our alert was sent, or the peer's came.
    Record(Fault),
}

impl<A: App> Tls<A> {
    /// `inner` behind TLS on the ports of `listeners` (a worker's copy); outcomes are
    /// counted in `stats` when given.
    pub fn new(inner: A, listeners: Listeners, stats: Option<Arc<WorkerStats>>) -> Tls<A> {
        Tls {
            inner,
            listeners,
            conns: Vec::new(),
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

    /// Takes received ciphertext `data` (mutable: records are decrypted where they lie):
    /// the handshake's bytes go to rustls; records of an established connection are
    /// opened in place and their plaintext handed to the application while it reads;
    /// what it does not read now, and a record's first part, wait in the connection.
    fn pump<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
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
        let mut failure = None;
        let mut handshake_done = None;
        let mut data = data;
        if let Phase::Handshake(hs) = &mut c.phase {
            c.rx.extend_from_slice(data);
            data = &mut [];
            match handshake(hs, &mut c.rx, &mut c.early, &mut c.pending) {
                Ok(Progress::Blocked) => {}
                Ok(Progress::Done { peer_closed }) => {
                    c.close_received |= peer_closed;
                    handshake_done = Some(matches!(
                        hs.handshake_kind(),
                        Some(rustls::HandshakeKind::Resumed)
                    ));
                    let Phase::Handshake(hs) = std::mem::replace(&mut c.phase, Phase::Over) else {
                        return;
                    };
                    match hs
                        .dangerous_into_kernel_connection()
                        .map_err(|_| Alert::InternalError)
                        .and_then(|(secrets, kernel)| Records::new(secrets, kernel))
                    {
                        Ok(r) => c.phase = Phase::Traffic(Box::new(r)),
                        Err(_) => {
                            tracing::warn!(conn = id, "TLS record layer could not start");
                            failure = Some(Failure::Record(Fault::Send(Alert::InternalError)));
                            c.failed = true;
                        }
                    }
                }
                Err(e) => {
                    c.failed = true;
                    c.phase = Phase::Over;
                    failure = Some(Failure::Handshake(e));
                }
            }
            let _ = c.pending.drain(tx);
            if handshake_done.is_some() && !c.failed {
                // A server-first application may write now.
                if let Phase::Traffic(r) = &mut c.phase {
                    let mut out = TlsTx::new(r, &mut c.pending, tx, &mut self.lend);
                    self.inner.flush(id, &mut out);
                    if let Some(f) = out.fault {
                        failure = Some(Failure::Record(f));
                    }
                }
            }
        }
        if failure.is_none() && matches!(c.phase, Phase::Traffic(_)) {
            if let Err(f) = read(&mut self.inner, id, c, data, tx, &mut self.lend, now) {
                failure = Some(Failure::Record(f));
            }
        }
        if let Some(Failure::Record(f)) = &failure {
            fail(c, *f, tx);
        }
        let stall = !c.failed && c.waiting();
        if stall && !c.stalled {
            c.stalled = true;
            self.stalled.push(id);
        }
        let closed = (c.fin || c.close_received) && !c.waiting();
        if closed && !c.eof_told && !c.failed && self.inner.wants_read(id) {
            c.eof_told = true;
            self.inner.peer_closed(id);
        }
        let _ = c.pending.drain(tx);
        if let Some(resumed) = handshake_done {
            self.count(
                true,
                if resumed {
                    Outcome::Resumed
                } else {
                    Outcome::Ok
                },
            );
        }
        match failure {
            None => {}
            Some(Failure::Handshake(e)) => {
                tracing::debug!(conn = id, error = %e, "TLS handshake failure");
                self.count(true, classify(&e));
            }
            Some(Failure::Record(f)) => {
                tracing::debug!(conn = id, fault = ?f, "TLS failure");
                self.count(
                    false,
                    match f {
                        Fault::Received(_) => Outcome::AlertReceived,
                        Fault::Send(Alert::BadRecordMac) => Outcome::DecryptError,
                        Fault::Send(Alert::RecordOverflow | Alert::DecodeError) => {
                            Outcome::BadMessage
                        }
                        Fault::Send(_) | Fault::Exhausted => Outcome::Other,
                    },
                );
            }
        }
    }
}

/// Ends an established connection at a record-layer fault: our alert (when the peer did
/// not send one), then nothing more.
fn fail<T: Tx>(c: &mut Conn, fault: Fault, tx: &mut T) {
    if let Phase::Traffic(r) = &mut c.phase {
        let len = r.overhead() + 2;
        let _ = match fault {
            Fault::Send(alert) => seal_out(tx, &mut c.pending, len, |buf| r.alert(alert, buf)),
            Fault::Exhausted => seal_out(tx, &mut c.pending, len, |buf| r.close_notify(buf)),
            Fault::Received(_) => Ok(()),
        };
    }
    c.failed = true;
    c.phase = Phase::Over;
    c.rx = Vec::new();
    c.rx_at = 0;
    c.early = Vec::new();
}

/// Where a handshake stands after the bytes received so far.
enum Progress {
    /// rustls waits for more bytes.
    Blocked,
    /// Complete: the record layer takes over (`peer_closed`: a close_notify came with it).
    Done { peer_closed: bool },
}

/// Runs rustls' unbuffered handshake over the bytes in `rx` (consumed as rustls takes
/// them); its records go to `pending`, application data decrypted by rustls (with the
/// client's Finished) to `early`.
fn handshake(
    hs: &mut UnbufferedServerConnection,
    rx: &mut Vec<u8>,
    early: &mut Vec<u8>,
    pending: &mut Pending,
) -> Result<Progress, rustls::Error> {
    let mut failure: Option<rustls::Error> = None;
    let mut peer_closed = false;
    // Bounded: each round consumes input or emits a record; after a failure, a few rounds
    // collect the alert rustls queued.
    for _ in 0..64 {
        // Once the handshake is complete, no more input: the rest is the record layer's.
        let end = if hs.is_handshaking() && failure.is_none() {
            rx.len()
        } else {
            0
        };
        let status = hs.process_tls_records(rx.get_mut(..end).unwrap_or_default());
        let discard = status.discard;
        let mut stop = None;
        match status.state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                let mut room = 2048;
                loop {
                    let start = pending.buf.len();
                    pending.buf.resize(start + room, 0);
                    let r = e.encode(pending.buf.get_mut(start..).unwrap_or_default());
                    match r {
                        Ok(n) => {
                            pending.buf.truncate(start + n);
                            break;
                        }
                        Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => {
                            pending.buf.truncate(start);
                            room = s.required_size;
                        }
                        Err(rustls::unbuffered::EncodeError::AlreadyEncoded) => {
                            pending.buf.truncate(start);
                            break;
                        }
                    }
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(Ok(rec)) = r.next_record() {
                    early.extend_from_slice(rec.payload);
                }
            }
            Ok(ConnectionState::PeerClosed) => peer_closed = true,
            Ok(ConnectionState::WriteTraffic(_)) => {
                stop = Some(match failure.take() {
                    Some(e) => Err(e),
                    None => Ok(Progress::Done { peer_closed }),
                });
            }
            Ok(ConnectionState::BlockedHandshake | ConnectionState::Closed) => {
                stop = Some(match failure.take() {
                    Some(e) => Err(e),
                    None => Ok(Progress::Blocked),
                });
            }
            Ok(_) => {
                // Early data is not enabled: nothing else can come.
                stop = Some(Err(failure
                    .take()
                    .unwrap_or(rustls::Error::General("unexpected TLS state".into()))));
            }
            Err(e) => match failure {
                // The second error: the alert, if any, is out.
                Some(_) => stop = Some(Err(e)),
                None => failure = Some(e),
            },
        }
        rx.drain(..discard.min(rx.len()));
        if let Some(s) = stop {
            return s;
        }
    }
    Err(failure.unwrap_or(rustls::Error::General(
        "TLS handshake made no progress".into(),
    )))
}

/// Opens the records received (those waiting in the connection first, then `data` in
/// place) while the application reads, and hands it their plaintext.
fn read<A: App, T: Tx>(
    inner: &mut A,
    id: ConnId,
    c: &mut Conn,
    data: &mut [u8],
    tx: &mut T,
    lend: &mut Vec<u8>,
    now: Instant,
) -> Result<(), Fault> {
    let reading = |c: &Conn, inner: &A| !c.failed && !c.close_received && inner.wants_read(id);
    if !c.early.is_empty() && inner.wants_read(id) {
        let mut early = std::mem::take(&mut c.early);
        deliver(inner, id, c, &mut early, tx, lend, now)?;
    }
    let mut at = 0;
    let mut rx = std::mem::take(&mut c.rx);
    let mut rx_at = c.rx_at;
    let result = (|| {
        // What waits here first, topped up from `data` to a whole record.
        while rx_at < rx.len() && c.early.is_empty() && reading(c, inner) {
            let Phase::Traffic(r) = &c.phase else { break };
            let held = rx.get(rx_at..).unwrap_or_default();
            let want = match r.record_len(held) {
                None => record::HEADER,
                Some(Ok(n)) => n,
                Some(Err(a)) => return Err(Fault::Send(a)),
            };
            if held.len() < want {
                let take = (want - held.len()).min(data.len() - at);
                rx.extend_from_slice(data.get(at..at + take).unwrap_or_default());
                at += take;
                if rx.len() - rx_at < want {
                    break;
                }
                continue;
            }
            let rec = rx.get_mut(rx_at..rx_at + want).unwrap_or_default();
            rx_at += want;
            open(inner, id, c, rec, tx, lend, now)?;
        }
        if rx_at >= rx.len() {
            rx.clear();
            rx_at = 0;
            // Then the records of `data`, each decrypted where it lies.
            while at < data.len() && c.early.is_empty() && reading(c, inner) {
                let Phase::Traffic(r) = &c.phase else { break };
                let rest = data.get(at..).unwrap_or_default();
                let n = match r.record_len(rest) {
                    Some(Ok(n)) if n <= rest.len() => n,
                    Some(Err(a)) => return Err(Fault::Send(a)),
                    _ => break,
                };
                let rec = data.get_mut(at..at + n).unwrap_or_default();
                at += n;
                open(inner, id, c, rec, tx, lend, now)?;
            }
        }
        Ok(())
    })();
    // A record's first part, and what the application did not read, wait here.
    if !c.close_received {
        rx.extend_from_slice(data.get(at..).unwrap_or_default());
    }
    c.rx = rx;
    c.rx_at = rx_at;
    result
}

/// Opens one whole record in place and acts on it.
fn open<A: App, T: Tx>(
    inner: &mut A,
    id: ConnId,
    c: &mut Conn,
    rec: &mut [u8],
    tx: &mut T,
    lend: &mut Vec<u8>,
    now: Instant,
) -> Result<(), Fault> {
    let Phase::Traffic(r) = &mut c.phase else {
        return Ok(());
    };
    match r.open(rec)? {
        Opened::Data(range) => {
            if let Some(plain) = rec.get_mut(range) {
                if !plain.is_empty() {
                    deliver(inner, id, c, plain, tx, lend, now)?;
                }
            }
        }
        Opened::Closed => c.close_received = true,
        Opened::Nothing => {}
        Opened::Renegotiation => {
            let len = r.overhead() + 2;
            seal_out(tx, &mut c.pending, len, |buf| r.no_renegotiation(buf))
                .map_err(Fault::Send)?;
        }
    }
    Ok(())
}

/// Hands decrypted bytes to the application with a [`Tx`] that seals what it writes.
fn deliver<A: App, T: Tx>(
    inner: &mut A,
    id: ConnId,
    c: &mut Conn,
    plain: &mut [u8],
    tx: &mut T,
    lend: &mut Vec<u8>,
    now: Instant,
) -> Result<(), Fault> {
    let Phase::Traffic(r) = &mut c.phase else {
        return Ok(());
    };
    let mut out = TlsTx::new(r, &mut c.pending, tx, lend);
    inner.receive(id, plain, &mut out, now);
    out.fault.map_or(Ok(()), Err)
}

/// What the first bytes of a connection say.
enum Hello {
    /// Fewer than the 11 bytes needed (kept in the connection).
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
    let mut first = c.rx.iter().chain(data);
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
    if c.rx.len() + data.len() < HEAD {
        c.rx.extend_from_slice(data);
        return Hello::Wait;
    }
    c.hello_checked = true;
    let mut head = [0u8; HEAD];
    for (h, b) in head.iter_mut().zip(c.rx.iter().chain(data)) {
        *h = *b;
    }
    let handshake_record = head[0] == 22;
    let client_hello = head[5] == 1;
    if handshake_record && client_hello && u16::from_be_bytes([head[9], head[10]]) < 0x0303 {
        // A fatal (2) protocol_version (70) alert in the client's record version.
        let _ = tx.write(&[21, head[1], head[2], 0, 2, 2, 70]);
        c.failed = true;
        c.phase = Phase::Over;
        c.rx = Vec::new();
        return Hello::Refused;
    }
    Hello::Pass
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

/// The application's [`Tx`] on an established TLS connection: what it writes becomes
/// records sealed in place in the transport's send buffer. Room is offered only when no
/// record waits in `pending`, so what waits there is bounded by one write.
struct TlsTx<'a, T> {
    records: &'a mut Records,
    pending: &'a mut Pending,
    out: &'a mut T,
    lend: &'a mut Vec<u8>,
    /// Sealing failed, or the key is used up (TLS 1.2): the connection ends.
    fault: Option<Fault>,
}

impl<'a, T: Tx> TlsTx<'a, T> {
    /// The application's `Tx` over `out` for the connection of `records` and `pending`.
    fn new(
        records: &'a mut Records,
        pending: &'a mut Pending,
        out: &'a mut T,
        lend: &'a mut Vec<u8>,
    ) -> TlsTx<'a, T> {
        TlsTx {
            records,
            pending,
            out,
            lend,
            fault: None,
        }
    }

    /// False (and the connection ends) when nothing may be sent any more; a TLS 1.3 key
    /// update goes out first when due.
    fn ready(&mut self) -> bool {
        if self.fault.is_some() {
            return false;
        }
        match self.records.needs_key_update() {
            Ok(false) => true,
            Ok(true) => {
                let len = self.records.overhead() + 5;
                let r = &mut *self.records;
                match seal_out(self.out, self.pending, len, |buf| r.key_update(buf)) {
                    Ok(()) => true,
                    Err(a) => {
                        self.fault = Some(Fault::Send(a));
                        false
                    }
                }
            }
            Err(f) => {
                self.fault = Some(f);
                false
            }
        }
    }

    /// Seals `plain` whole, record by record, straight into the transport while it has
    /// room, the rest into `pending`.
    fn send_all(&mut self, plain: &[u8]) {
        for part in plain.chunks(record::MAX_FRAGMENT) {
            if !self.ready() {
                return;
            }
            let (p, len) = (self.records.prefix(), part.len() + self.records.overhead());
            let r = &mut *self.records;
            let sealed = seal_out(self.out, self.pending, len, |buf| {
                buf.get_mut(p..p + part.len())
                    .ok_or(Alert::InternalError)?
                    .copy_from_slice(part);
                r.seal(record::APPLICATION_DATA, buf, part.len())
            });
            if let Err(a) = sealed {
                self.fault = Some(Fault::Send(a));
                return;
            }
        }
    }
}

impl<T: Tx> Tx for TlsTx<'_, T> {
    fn write_with(&mut self, min_len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
        if !self.pending.drain(self.out) || !self.ready() {
            return 0;
        }
        let min_len = min_len.max(1);
        if min_len > record::MAX_FRAGMENT {
            // More than one record: written aside, then sealed record by record.
            self.lend.clear();
            self.lend.resize(min_len, 0);
            let n = fill(self.lend.as_mut_slice()).min(min_len);
            let lend = std::mem::take(self.lend);
            self.send_all(lend.get(..n).unwrap_or_default());
            *self.lend = lend;
            return n;
        }
        let (p, over) = (self.records.prefix(), self.records.overhead());
        let r = &mut *self.records;
        let mut taken = 0;
        let mut failed = None;
        self.out.write_with(min_len + over, |buf| {
            let room = buf.len().saturating_sub(over).min(record::MAX_FRAGMENT);
            let n = buf.get_mut(p..p + room).map_or(0, fill).min(room);
            if n == 0 {
                return 0;
            }
            match r.seal(record::APPLICATION_DATA, buf, n) {
                Ok(len) => {
                    taken = n;
                    len
                }
                Err(a) => {
                    failed = Some(a);
                    0
                }
            }
        });
        if let Some(a) = failed {
            self.fault = Some(Fault::Send(a));
            return 0;
        }
        taken
    }

    fn write(&mut self, data: &[u8]) -> usize {
        if data.is_empty() || !self.pending.drain(self.out) {
            return 0;
        }
        let mut done = 0;
        // Whole records while they fit; then smaller ones down to 64 bytes (a transport
        // lends exactly what is asked for).
        let mut want = data.len().min(record::MAX_FRAGMENT);
        while done < data.len() && self.ready() {
            let rest = data.get(done..).unwrap_or_default();
            want = want.min(rest.len());
            let n = self.write_with(want, |buf| {
                let n = buf.len().min(rest.len());
                if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
                    to.copy_from_slice(from);
                }
                n
            });
            if n == 0 {
                if want <= 64 || self.fault.is_some() {
                    break;
                }
                want /= 2;
                continue;
            }
            done += n;
        }
        done
    }

    fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
        if !self.pending.drain(self.out) || self.fault.is_some() {
            return Err(chunk);
        }
        self.send_all(&chunk);
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
        let hs = match UnbufferedServerConnection::new(cfg) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "TLS connection setup failed");
                self.inner.remove(id);
                return Err(Refusal::MaxConnections);
            }
        };
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        if let Some(slot) = self.conns.get_mut(id) {
            *slot = Some(Conn {
                phase: Phase::Handshake(Box::new(hs)),
                rx: Vec::new(),
                rx_at: 0,
                early: Vec::new(),
                pending: Pending::default(),
                failed: false,
                close_sent: false,
                close_received: false,
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
                if !c.waiting() && inner_reads {
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
        if !c.pending.drain(tx) || c.failed {
            return;
        }
        if c.stalled && !c.eof_told {
            c.stalled = false;
            self.pump(id, &mut [], tx, now);
        }
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        let Phase::Traffic(r) = &mut c.phase else {
            return;
        };
        let mut out = TlsTx::new(r, &mut c.pending, tx, &mut self.lend);
        self.inner.flush(id, &mut out);
        if let Some(f) = out.fault {
            fail(c, f, tx);
            self.count(false, Outcome::Other);
            return;
        }
        if !c.close_sent && self.inner.is_finished(id) {
            // RFC 8446 6.1: close_notify before closing the write side.
            c.close_sent = true;
            let len = r.overhead() + 2;
            let _ = seal_out(tx, &mut c.pending, len, |buf| r.close_notify(buf));
        }
    }

    fn wants_read(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.wants_read(id),
            Some(c) => match c.phase {
                Phase::Over => false,
                Phase::Handshake(_) => true,
                Phase::Traffic(_) => !c.close_received && !c.stalled && self.inner.wants_read(id),
            },
        }
    }

    fn is_finished(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.is_finished(id),
            Some(c) => {
                (c.failed || (c.close_sent && self.inner.is_finished(id))) && c.pending.is_empty()
            }
        }
    }

    fn settled(&self, id: ConnId) -> bool {
        match self.conns.get(id).and_then(Option::as_ref) {
            None => self.inner.settled(id),
            Some(c) => !c.failed && !c.stalled && c.pending.is_empty() && self.inner.settled(id),
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
                .is_some_and(|c| matches!(c.phase, Phase::Handshake(_)));
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
    use std::io::{Read, Write};

    const PORT: u16 = 8443;

    /// An echo application that can stop reading.
    #[derive(Default)]
    struct Echo {
        reading: bool,
        eof: Vec<ConnId>,
        received: Vec<u8>,
        /// Where each received slice lay (start address, length).
        at: Vec<(usize, usize)>,
    }

    impl App for Echo {
        type Message = ();
        fn accept(&mut self, _: ConnId, _: SocketAddr, _: Instant) -> Result<(), Refusal> {
            Ok(())
        }
        fn remove(&mut self, _: ConnId) {}
        fn receive<T: Tx>(&mut self, _: ConnId, data: &mut [u8], tx: &mut T, _: Instant) {
            self.received.extend_from_slice(data);
            self.at.push((data.as_ptr() as usize, data.len()));
            // Short only once the connection failed (the tests check what arrives).
            let _ = tx.write(data);
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
            self.run_split(id, client, usize::MAX)
        }

        /// [`World::run`] with the client's bytes handed over in receives of at most
        /// `piece` bytes (TCP segments cut records anywhere).
        fn run_split(
            &mut self,
            id: ConnId,
            client: &mut ClientConnection,
            piece: usize,
        ) -> Vec<u8> {
            let mut got = Vec::new();
            for _ in 0..50 {
                let mut wire = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut wire).unwrap();
                }
                let mut back = Vec::new();
                for part in wire.chunks_mut(piece.max(1)) {
                    if self.server.wants_read(id) {
                        self.server.receive(
                            id,
                            part,
                            &mut BufTx::new(&mut back, 1 << 20),
                            Instant::ZERO,
                        );
                    }
                }
                let mut dirty = Vec::new();
                self.server.take_dirty(&mut dirty);
                self.server.flush(id, &mut BufTx::new(&mut back, 1 << 20));
                if back.is_empty() && wire.is_empty() {
                    break;
                }
                got.extend(client_reads(client, &back));
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

    /// Feeds `bytes` to the client, reading its plaintext as it goes (its buffer is 16 KiB).
    fn client_reads(c: &mut ClientConnection, bytes: &[u8]) -> Vec<u8> {
        let mut rd = bytes;
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if rd.is_empty() || c.read_tls(&mut rd).unwrap() == 0 {
                return got;
            }
            c.process_new_packets().unwrap();
        }
    }

    impl Tls<Echo> {
        fn records(&self, id: ConnId) -> &Records {
            match self.conns.get(id) {
                Some(Some(Conn {
                    phase: Phase::Traffic(r),
                    ..
                })) => r,
                _ => panic!("{id} not established"),
            }
        }
    }

    /// A client that offers only `version` and `suite`.
    fn client_only(
        cert: &CertificateDer<'static>,
        version: &'static rustls::SupportedProtocolVersion,
        suite: rustls::SupportedCipherSuite,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// The established connection `id` with `client`: messages of several sizes, whole and
    /// cut into small receives, echoed byte-exact.
    fn echo_sizes(w: &mut World, id: ConnId, c: &mut ClientConnection) {
        w.run(id, c);
        assert!(!c.is_handshaking());
        let mut expect = Vec::new();
        for (i, len) in [1usize, 64, 1000, 16_384, 16_385, 40_000]
            .into_iter()
            .enumerate()
        {
            let msg: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            c.writer().write_all(&msg).unwrap();
            let got = w.run_split(id, c, [usize::MAX, 1, 5, 1448][i % 4]);
            assert_eq!(got, msg, "message {i} ({len} bytes)");
            expect.extend_from_slice(&msg);
        }
        assert_eq!(w.server.inner().received, expect);
    }

    #[test]
    fn tls_records_every_suite_both_versions_echo_byte_exact_in_any_cut() {
        use rustls::crypto::ring::cipher_suite as cs;
        let cases = [
            (&rustls::version::TLS13, cs::TLS13_AES_128_GCM_SHA256),
            (&rustls::version::TLS13, cs::TLS13_AES_256_GCM_SHA384),
            (&rustls::version::TLS13, cs::TLS13_CHACHA20_POLY1305_SHA256),
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ];
        for (i, (version, suite)) in cases.into_iter().enumerate() {
            let mut w = world();
            let cfg = client_only(&w.first, version, suite);
            let mut c = w.client_with(i, cfg);
            echo_sizes(&mut w, i, &mut c);
            assert_eq!(c.negotiated_cipher_suite(), Some(suite));
            // A close_notify each way ends it cleanly.
            c.send_close_notify();
            w.run(i, &mut c);
            assert_eq!(w.server.inner().eof, vec![i], "{suite:?}");
            assert!(w.server.is_finished(i));
        }
    }

    #[test]
    fn tls_records_in_one_receive_are_decrypted_where_they_lie() {
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        c.writer().write_all(b"first record").unwrap();
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        c.writer().write_all(b"second").unwrap();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let mut out = Vec::new();
        w.server.inner_mut().at.clear();
        w.server.receive(
            0,
            &mut wire,
            &mut BufTx::new(&mut out, 1 << 20),
            Instant::ZERO,
        );
        let at = &w.server.inner().at;
        assert_eq!(at.len(), 2);
        for &(start, len) in at {
            // The plaintext the application read lies inside the received buffer.
            assert!(range.contains(&start) && range.contains(&(start + len - 1)));
        }
        assert_eq!(w.server.inner().received, b"first recordsecond");
    }

    #[test]
    fn tls_key_update_from_the_client_asking_ours_both_directions_renewed() {
        let mut w = world();
        let mut c = w.client(0);
        c.writer().write_all(b"before").unwrap();
        assert_eq!(w.run(0, &mut c), b"before");
        for round in 0..3u8 {
            // rustls' client sends KeyUpdate(update_requested): we renew ours too.
            c.refresh_traffic_keys().unwrap();
            let msg = vec![round; 3000];
            c.writer().write_all(&msg).unwrap();
            assert_eq!(w.run(0, &mut c), msg, "round {round}");
        }
        assert_eq!(w.server.records(0).key_updates(), (3, 3));
        assert_eq!(w.stats.tls_count(false, Outcome::Other), 0);
    }

    #[test]
    fn tls_sending_key_renewed_before_its_limit() {
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        if let Some(Some(Conn {
            phase: Phase::Traffic(r),
            ..
        })) = w.server.conns.get_mut(0)
        {
            r.set_limit_for_test(3);
        } else {
            panic!("not established");
        }
        let mut expect = Vec::new();
        for i in 0..10u8 {
            c.writer().write_all(&[i; 100]).unwrap();
            expect.extend_from_slice(&[i; 100]);
        }
        // Each message is a record; a KeyUpdate goes out every 3: the client follows.
        assert_eq!(w.run(0, &mut c), expect);
        assert_eq!(w.server.records(0).key_updates(), (0, 3));
    }

    #[test]
    fn tls12_sending_key_at_its_limit_close_notify_and_closed() {
        use rustls::crypto::ring::cipher_suite as cs;
        let mut w = world();
        let cfg = client_only(
            &w.first,
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        );
        let mut c = w.client_with(0, cfg);
        w.run(0, &mut c);
        let Some(Some(Conn {
            phase: Phase::Traffic(r),
            ..
        })) = w.server.conns.get_mut(0)
        else {
            panic!("not established")
        };
        r.set_limit_for_test(3);
        c.writer().write_all(b"one").unwrap();
        assert_eq!(w.run(0, &mut c), b"one");
        c.writer().write_all(b"two").unwrap();
        assert_eq!(w.run(0, &mut c), b"two");
        c.writer().write_all(b"three").unwrap();
        // Records 0 (Finished), 1 and 2 were sent with this key; a fourth would pass the
        // limit: a close_notify instead, then closed.
        assert_eq!(w.run(0, &mut c), b"");
        assert!(w.server.is_finished(0));
        let mut buf = [0u8; 8];
        assert_eq!(c.reader().read(&mut buf).unwrap(), 0);
        assert_eq!(w.stats.tls_count(false, Outcome::Other), 1);
    }

    #[test]
    fn tls_bad_records_fatal_alert_counted_others_unaffected() {
        // A flipped ciphertext byte: bad_record_mac. An oversized length: record_overflow.
        // A plaintext handshake record after the handshake: unexpected_message.
        type Spoil = fn(&mut Vec<u8>);
        let cases: [(Spoil, u8, Outcome); 3] = [
            (|w| *w.last_mut().unwrap() ^= 1, 20, Outcome::DecryptError),
            (
                |w| w.splice(3..5, [0x50, 0x00]).for_each(drop),
                22,
                Outcome::BadMessage,
            ),
            (|w| w[0] = 22, 10, Outcome::Other),
        ];
        for (i, (spoil, alert, outcome)) in cases.into_iter().enumerate() {
            let mut w = world();
            let mut c = w.client(0);
            w.run(0, &mut c);
            c.writer().write_all(b"spoilt").unwrap();
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            spoil(&mut wire);
            let mut out = Vec::new();
            w.server.receive(
                0,
                &mut wire,
                &mut BufTx::new(&mut out, 1 << 20),
                Instant::ZERO,
            );
            assert!(w.server.inner().received.is_empty(), "case {i}");
            assert!(
                !w.server.wants_read(0) && w.server.is_finished(0),
                "case {i}"
            );
            assert_eq!(w.stats.tls_count(false, outcome), 1, "case {i}");
            // The client reads our alert.
            let mut rd = out.as_slice();
            c.read_tls(&mut rd).unwrap();
            let err = c.process_new_packets().unwrap_err();
            assert_eq!(
                err,
                rustls::Error::AlertReceived(rustls::AlertDescription::from(alert)),
                "case {i}"
            );
            // Another connection is unaffected.
            let mut c2 = w.client(1);
            c2.writer().write_all(b"fine").unwrap();
            assert_eq!(w.run(1, &mut c2), b"fine", "case {i}");
        }
    }

    #[test]
    fn tls_published_chunk_sealed_straight_into_the_transport() {
        /// Counts how the layer writes into the transport.
        struct Probe<'a> {
            inner: BufTx<'a>,
            write_with: usize,
            write: usize,
        }
        impl Tx for Probe<'_> {
            fn write_with(&mut self, min: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
                self.write_with += 1;
                self.inner.write_with(min, fill)
            }
            fn write(&mut self, data: &[u8]) -> usize {
                self.write += 1;
                self.inner.write(data)
            }
            fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
                self.inner.write_chunk(chunk)
            }
        }
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        let Some(Some(conn)) = w.server.conns.get_mut(0) else {
            panic!()
        };
        let Phase::Traffic(r) = &mut conn.phase else {
            panic!()
        };
        let mut out = Vec::new();
        let mut probe = Probe {
            inner: BufTx::new(&mut out, 1 << 20),
            write_with: 0,
            write: 0,
        };
        let mut lend = Vec::new();
        let mut tx = TlsTx::new(r, &mut conn.pending, &mut probe, &mut lend);
        tx.write_chunk(Bytes::from_static(&[7; 64])).unwrap();
        assert!(tx.fault.is_none());
        // One record sealed in the transport's own space: no write of a copy, no lend.
        assert_eq!((probe.write_with, probe.write), (1, 0));
        assert!(conn.pending.is_empty() && lend.capacity() == 0);
        assert_eq!(out.len(), 64 + 22);
        let mut rd = out.as_slice();
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
        let mut got = [0u8; 64];
        c.reader().read_exact(&mut got).unwrap();
        assert_eq!(got, [7; 64]);
    }

    #[test]
    fn tls_write_to_an_exactly_lending_transport_makes_whole_records() {
        /// Lends exactly what is asked for, as the stack's `send_with` does.
        struct Exact<'a>(&'a mut Vec<u8>, usize);
        impl Tx for Exact<'_> {
            fn write_with(&mut self, min: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> usize {
                let min = min.max(1);
                if self.1 - self.0.len() < min {
                    return 0;
                }
                let start = self.0.len();
                self.0.resize(start + min, 0);
                let n = fill(&mut self.0[start..]).min(min);
                self.0.truncate(start + n);
                n
            }
            fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Bytes> {
                Err(chunk)
            }
        }
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        let Some(Some(conn)) = w.server.conns.get_mut(0) else {
            panic!()
        };
        let Phase::Traffic(r) = &mut conn.phase else {
            panic!()
        };
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
        let mut out = Vec::new();
        let mut lend = Vec::new();
        // Room for two whole records and a part: 16384 + 16384 + what is left.
        let mut exact = Exact(&mut out, 2 * (16_384 + 22) + 1_000);
        let mut tx = TlsTx::new(r, &mut conn.pending, &mut exact, &mut lend);
        let n = tx.write(&data);
        // Then smaller records into the last 1,000 bytes, down to 64-byte halvings.
        assert!(n > 2 * 16_384 && n < 2 * 16_384 + 1_000, "{n}");
        let mut lens = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = u16::from_be_bytes([out[at + 3], out[at + 4]]) as usize;
            lens.push(len - 17);
            at += 5 + len;
        }
        assert_eq!(lens[..2], [16_384, 16_384]);
        assert_eq!(lens.iter().sum::<usize>(), n);
        assert_eq!(client_reads(&mut c, &out), data[..n]);
    }

    #[test]
    fn tls_full_transport_keeps_a_chunk_whole_then_sends_it_in_order() {
        let mut w = world();
        let mut c = w.client(0);
        w.run(0, &mut c);
        let Some(Some(conn)) = w.server.conns.get_mut(0) else {
            panic!()
        };
        let Phase::Traffic(r) = &mut conn.phase else {
            panic!()
        };
        let mut out = Vec::new();
        let mut lend = Vec::new();
        let chunk: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        {
            // Room for one record only: the rest waits, sealed, and no more is offered.
            let mut small = BufTx::new(&mut out, 20_000);
            let mut tx = TlsTx::new(r, &mut conn.pending, &mut small, &mut lend);
            tx.write_chunk(Bytes::from(chunk.clone())).unwrap();
            assert!(tx.write_chunk(Bytes::from_static(b"later")).is_err());
            assert_eq!(tx.write(b"later"), 0);
        }
        assert!(!conn.pending.is_empty());
        assert!(conn.pending.drain(&mut BufTx::new(&mut out, 1 << 20)));
        assert_eq!(client_reads(&mut c, &out), chunk);
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
