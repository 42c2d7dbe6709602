//! Per-worker metrics: one [`WorkerStats`] block per worker, written only by that worker
//! and read by the control thread when `/metrics` is scraped ([`WorkerSet`] merges the
//! blocks into the usual series).
//!
//! A [`Cell`] is written by one thread only: a relaxed load and a relaxed store (plain
//! `mov`s on x86; no lock prefix, no read-modify-write), so the packet path takes no lock
//! and writes no cache line another worker writes. Each block is its own allocation,
//! aligned to 128 bytes (two cache lines: the adjacent-line prefetcher pairs them), so two
//! workers' blocks never share a line. A scrape reads each cell once; a value may be one
//! update behind, never torn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{ReasonLabel, ResultLabel, RouteLabel, WorkerLabel, WorkerStateLabel};

/// A counter or gauge only one thread writes.
#[derive(Debug, Default)]
pub struct Cell(AtomicU64);

impl Cell {
    /// Adds `n` (single writer: load, add, store).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts `n` (a gauge going down).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The value as last written.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Handshake results (`sluice_handshakes_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Upgraded.
    Ok,
    /// No route for the path (404).
    NotFound,
    /// Origin not allowed (403).
    Origin,
    /// Not a valid upgrade request (400).
    BadRequest,
    /// No complete request within `limits.handshake_timeout_ms`.
    Timeout,
    /// A trusted proxy's connection without a valid PROXY protocol v2 header.
    BadProxyHeader,
    /// No valid token on an `auth = "jwt"` route (401; why: `sluice_auth_total`).
    Unauthorized,
}

impl Handshake {
    const ALL: [(Handshake, &'static str); 7] = [
        (Handshake::Ok, "ok"),
        (Handshake::NotFound, "not_found"),
        (Handshake::Origin, "origin"),
        (Handshake::BadRequest, "bad_request"),
        (Handshake::Timeout, "timeout"),
        (Handshake::BadProxyHeader, "bad_proxy_header"),
        (Handshake::Unauthorized, "unauthorized"),
    ];
}

/// Connection-token outcomes (`sluice_auth_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A valid token: upgraded.
    Ok,
    /// No token on an `auth = "jwt"` route (401).
    Missing,
    /// Not a JWT, a bad signature, another algorithm, a missing `exp` (401).
    Invalid,
    /// `exp` passed (401).
    Expired,
    /// `nbf` not reached (401).
    NotYetValid,
    /// `aud` is not `auth.audience` (401).
    WrongAudience,
    /// `iss` is not `auth.issuer` (401).
    WrongIssuer,
    /// A subscribe the token's claims do not allow (error reply).
    DeniedSubscribe,
    /// A publish the token's claims or the route do not allow (error reply).
    DeniedPublish,
    /// An open connection whose token expired (closed 1008).
    ExpiredOpen,
}

impl Auth {
    /// Every result and its label.
    pub const ALL: [(Auth, &'static str); 10] = [
        (Auth::Ok, "ok"),
        (Auth::Missing, "missing"),
        (Auth::Invalid, "invalid"),
        (Auth::Expired, "expired"),
        (Auth::NotYetValid, "not_yet_valid"),
        (Auth::WrongAudience, "wrong_audience"),
        (Auth::WrongIssuer, "wrong_issuer"),
        (Auth::DeniedSubscribe, "denied_subscribe"),
        (Auth::DeniedPublish, "denied_publish"),
        (Auth::ExpiredOpen, "expired_while_open"),
    ];
}

/// TLS outcomes on wss:// ports: handshakes (`sluice_tls_handshakes_total{result}`) and
/// errors on established connections (`sluice_tls_errors_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// A full handshake completed.
    Ok,
    /// A resumed handshake (session ticket or ID) completed.
    Resumed,
    /// Not TLS, or a malformed record or message (e.g. garbage instead of a ClientHello,
    /// a record larger than allowed).
    BadMessage,
    /// The client offers no version we accept (e.g. TLS 1.1: alert protocol_version).
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedParameters,
    /// The client offers ALPN without `http/1.1`.
    NoApplicationProtocol,
    /// The peer sent a fatal alert.
    AlertReceived,
    /// A record failed to decrypt or authenticate.
    DecryptError,
    /// The handshake did not complete within `limits.handshake_timeout_ms`.
    Timeout,
    /// Any other protocol error (the peer misbehaved, an unexpected message...).
    Other,
}

impl Tls {
    /// Every result and its label.
    pub const ALL: [(Tls, &'static str); 10] = [
        (Tls::Ok, "ok"),
        (Tls::Resumed, "resumed"),
        (Tls::BadMessage, "bad_message"),
        (Tls::ProtocolVersion, "protocol_version"),
        (Tls::NoSharedParameters, "no_shared_parameters"),
        (Tls::NoApplicationProtocol, "no_application_protocol"),
        (Tls::AlertReceived, "alert_received"),
        (Tls::DecryptError, "decrypt_error"),
        (Tls::Timeout, "timeout"),
        (Tls::Other, "other"),
    ];
}

/// Refusals at accept (`sluice_connections_refused_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    MaxConnections,
    /// `limits.max_connections_per_ip`.
    MaxPerIp,
    /// `limits.allow_sources` / `limits.deny_sources`.
    SourceDenied,
    /// `limits.new_connections_per_ip_per_s`.
    ConnectionRate,
}

impl Refused {
    const ALL: [(Refused, &'static str); 4] = [
        (Refused::MaxConnections, "max_connections"),
        (Refused::MaxPerIp, "max_connections_per_ip"),
        (Refused::SourceDenied, "source_denied"),
        (Refused::ConnectionRate, "connection_rate"),
    ];
}

/// Drops and policy closes (`sluice_drops_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// A closing connection did not finish within `limits.close_timeout_ms`.
    CloseTimeout,
    /// No bytes from the client within `limits.idle_timeout_ms`.
    IdleTimeout,
    /// A client's publish found the broker's queue full.
    PublishQueueFull,
    /// A publication not queued to a slow subscriber (`drop_newest`).
    SlowConsumerDropped,
    /// A slow subscriber closed (`close`).
    SlowConsumerClosed,
    /// A proxy route's upstream failed (client closed with 1014).
    UpstreamFailed,
    /// An ingest publish not acknowledged within `control.publish_timeout_ms`.
    PublishTimeout,
    /// A publication not delivered to one worker because that worker's queue was full
    /// (the broker never waits for a slow worker; docs/GATEWAY.md).
    WorkerQueueFull,
    /// A client sent messages faster than `limits.max_messages_per_s` (closed 1008).
    MessageRate,
}

impl Drop {
    const ALL: [(Drop, &'static str); 9] = [
        (Drop::CloseTimeout, "close_timeout"),
        (Drop::IdleTimeout, "idle_timeout"),
        (Drop::PublishQueueFull, "publish_queue_full"),
        (Drop::SlowConsumerDropped, "slow_consumer_dropped"),
        (Drop::SlowConsumerClosed, "slow_consumer_closed"),
        (Drop::UpstreamFailed, "upstream_failed"),
        (Drop::PublishTimeout, "publish_timeout"),
        (Drop::WorkerQueueFull, "worker_queue_full"),
        (Drop::MessageRate, "message_rate"),
    ];
}

/// One route's counters in one worker.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Messages received from clients.
    pub msgs_in: Cell,
    /// Messages queued to clients.
    pub msgs_out: Cell,
    /// Bytes received (TCP payload).
    pub bytes_in: Cell,
    /// Bytes handed to the transport.
    pub bytes_out: Cell,
}

/// Upper bounds of the processing-time histogram, in seconds (1 us x 4^i).
pub const PROCESSING_BOUNDS: [f64; 10] = [
    1e-6, 4e-6, 1.6e-5, 6.4e-5, 2.56e-4, 1.024e-3, 4.096e-3, 1.6384e-2, 6.5536e-2, 0.262144,
];

/// TCP states by name, in `tcp::conn::State` order (for `sluice_tcp_connections`).
pub const TCP_STATES: usize = 11;

/// One worker's metrics.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    index: usize,
    /// Per route, in configuration order; the last entry is `-` (bytes before routing).
    routes: Vec<(String, RouteStats)>,
    accepted: Cell,
    open: Cell,
    refused: [Cell; Refused::ALL.len()],
    handshakes: [Cell; Handshake::ALL.len()],
    auth: [Cell; Auth::ALL.len()],
    tls_handshakes: [Cell; Tls::ALL.len()],
    tls_errors: [Cell; Tls::ALL.len()],
    drops: [Cell; Drop::ALL.len()],
    /// Processing time per batch: counts per bucket (the last is +Inf), sum in ns.
    processing: [Cell; 11],
    processing_sum_ns: Cell,
    processing_count: Cell,
    /// Busy ratio (f64 bits); `u64::MAX`: never set.
    busy: Cell,
    /// Stack drivers: connections by TCP state (names in `tcp_state_names`), retransmits.
    tcp_states: [Cell; TCP_STATES],
    tcp_state_names: Mutex<[Option<String>; TCP_STATES]>,
    retransmits: Cell,
    /// Stack drivers: the engine's attack-related totals (see [`TcpTotals`]).
    syn_cookies_sent: Cell,
    syn_cookies_validated: Cell,
    challenge_acks: Cell,
    table_full_drops: Cell,
    segments_in: Cell,
    header_predicted: Cell,
    acks_coalesced: Cell,
    stack: Cell,
}

/// A stack driver's engine totals recorded every tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTotals {
    /// Segments retransmitted.
    pub retransmits: u64,
    /// SYN cookies sent (the SYN backlog was full: a flood, RFC 4987).
    pub syn_cookies_sent: u64,
    /// Cookie ACKs that became connections.
    pub syn_cookies_validated: u64,
    /// Challenge ACKs sent for in-window RST/SYN or unacceptable ACKs (RFC 5961).
    pub challenge_acks: u64,
    /// SYNs dropped because the connection table was full.
    pub table_full_drops: u64,
    /// TCP segments received.
    pub segments_in: u64,
    /// Of those, segments taken by header prediction (the receive fast path).
    pub header_predicted: u64,
    /// Pure ACKs taken by ACK coalescing (processed once per connection and burst).
    pub acks_coalesced: u64,
}

impl WorkerStats {
    /// The block of worker `index` with `routes` (paths in configuration order).
    pub fn new(index: usize, routes: &[String]) -> WorkerStats {
        let mut r: Vec<(String, RouteStats)> = routes
            .iter()
            .map(|p| (p.clone(), RouteStats::default()))
            .collect();
        r.push(("-".to_string(), RouteStats::default()));
        WorkerStats {
            index,
            routes: r,
            accepted: Cell::default(),
            open: Cell::default(),
            refused: Default::default(),
            handshakes: Default::default(),
            auth: Default::default(),
            tls_handshakes: Default::default(),
            tls_errors: Default::default(),
            drops: Default::default(),
            processing: Default::default(),
            processing_sum_ns: Cell::default(),
            processing_count: Cell::default(),
            busy: Cell(AtomicU64::new(u64::MAX)),
            tcp_states: Default::default(),
            tcp_state_names: Mutex::new(Default::default()),
            retransmits: Cell::default(),
            syn_cookies_sent: Cell::default(),
            syn_cookies_validated: Cell::default(),
            challenge_acks: Cell::default(),
            table_full_drops: Cell::default(),
            segments_in: Cell::default(),
            header_predicted: Cell::default(),
            acks_coalesced: Cell::default(),
            stack: Cell::default(),
        }
    }

    /// Route `index`'s counters (`None`: not routed yet, the `-` entry).
    #[inline]
    pub fn route(&self, index: Option<usize>) -> &RouteStats {
        let last = self.routes.len() - 1;
        let i = index.map_or(last, |i| i.min(last));
        &self.routes[i].1
    }

    /// A connection was accepted (and is open until [`WorkerStats::closed`]).
    #[inline]
    pub fn accepted(&self) {
        self.accepted.add(1);
        self.open.add(1);
    }

    /// An accepted connection is gone.
    #[inline]
    pub fn closed(&self) {
        self.open.sub(1);
    }

    /// A connection refused at accept.
    #[inline]
    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].add(1);
    }

    /// A handshake ended with `result`.
    #[inline]
    pub fn handshake(&self, result: Handshake) {
        self.handshakes[result as usize].add(1);
    }

    /// A connection-token outcome.
    #[inline]
    pub fn auth(&self, result: Auth) {
        self.auth[result as usize].add(1);
    }

    /// A TLS handshake ended with `result`.
    #[inline]
    pub fn tls_handshake(&self, result: Tls) {
        self.tls_handshakes[result as usize].add(1);
    }

    /// TLS handshakes (`handshake`) or established-connection errors counted as `result`.
    pub fn tls_count(&self, handshake: bool, result: Tls) -> u64 {
        if handshake {
            self.tls_handshakes[result as usize].get()
        } else {
            self.tls_errors[result as usize].get()
        }
    }

    /// A TLS error on an established connection (the connection is closed).
    #[inline]
    pub fn tls_error(&self, result: Tls) {
        self.tls_errors[result as usize].add(1);
    }

    /// A drop (or policy close) for `reason`.
    #[inline]
    pub fn dropped(&self, reason: Drop) {
        self.drops[reason as usize].add(1);
    }

    /// One batch's processing time.
    #[inline]
    pub fn processing(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = PROCESSING_BOUNDS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(PROCESSING_BOUNDS.len());
        self.processing[i].add(1);
        self.processing_sum_ns
            .add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.processing_count.add(1);
    }

    /// The busy ratio over the last tick.
    pub fn set_busy(&self, ratio: f64) {
        self.busy.set(ratio.to_bits());
    }

    /// A stack driver's connections by state (`counts[i]` for state `i`, named by
    /// `name(i)` the first time it is non-zero) and engine totals.
    pub fn set_tcp(
        &self,
        counts: &[u64; TCP_STATES],
        name: impl Fn(usize) -> String,
        totals: TcpTotals,
    ) {
        for (i, &n) in counts.iter().enumerate() {
            if n > 0 && self.tcp_states[i].get() == 0 {
                // First time (or again) non-zero: make sure it has a name. Not on the
                // packet path (once per tick), and only the control thread contends.
                if let Ok(mut names) = self.tcp_state_names.lock() {
                    if names[i].is_none() {
                        names[i] = Some(name(i));
                    }
                }
            }
            self.tcp_states[i].set(n);
        }
        self.retransmits.set(totals.retransmits);
        self.syn_cookies_sent.set(totals.syn_cookies_sent);
        self.syn_cookies_validated.set(totals.syn_cookies_validated);
        self.challenge_acks.set(totals.challenge_acks);
        self.table_full_drops.set(totals.table_full_drops);
        self.segments_in.set(totals.segments_in);
        self.header_predicted.set(totals.header_predicted);
        self.acks_coalesced.set(totals.acks_coalesced);
        self.stack.set(1);
    }
}

/// Process-wide drop counts written by threads that are not workers (control, broker):
/// several writers, so real atomic adds (never on the packet path).
#[derive(Debug, Default)]
struct ProcessDrops([AtomicU64; Drop::ALL.len()]);

/// Every worker's block, merged on scrape into the per-worker series of `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerSet {
    blocks: Mutex<Vec<Arc<WorkerStats>>>,
    process_drops: ProcessDrops,
}

impl WorkerSet {
    /// Registers worker `index`'s block (at startup) and returns it.
    pub fn add(&self, index: usize, routes: &[String]) -> Arc<WorkerStats> {
        let block = Arc::new(WorkerStats::new(index, routes));
        if let Ok(mut b) = self.blocks.lock() {
            b.push(Arc::clone(&block));
        }
        block
    }

    /// A drop counted outside the workers (control thread, broker).
    pub fn dropped(&self, reason: Drop) {
        self.process_drops.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn blocks(&self) -> Vec<Arc<WorkerStats>> {
        self.blocks.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// Encodes a counter family from `(labels, value)` pairs (skipping zero values unless
/// `keep_zero`).
fn counter_family<S: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(S, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for WorkerSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let blocks = self.blocks();
        let sum = |f: &dyn Fn(&WorkerStats) -> u64| blocks.iter().map(|b| f(b)).sum::<u64>();

        let accepted = sum(&|b| b.accepted.get());
        ConstCounter::new(accepted).encode(encoder.encode_descriptor(
            "connections_accepted",
            "Client connections accepted",
            None,
            MetricType::Counter,
        )?)?;
        let refused: Vec<(ReasonLabel, u64)> = Refused::ALL
            .iter()
            .map(|(r, name)| {
                let reason = name.to_string();
                (
                    ReasonLabel { reason },
                    sum(&|b| b.refused[*r as usize].get()),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        counter_family(
            &mut encoder,
            "connections_refused",
            "Client connections refused at accept, by reason",
            &refused,
        )?;
        let open = blocks
            .iter()
            .map(|b| b.open.get() as i64)
            .fold(0i64, i64::wrapping_add);
        ConstGauge::new(open).encode(encoder.encode_descriptor(
            "connections_open",
            "Client connections currently open",
            None,
            MetricType::Gauge,
        )?)?;
        let handshakes: Vec<(ResultLabel, u64)> = Handshake::ALL
            .iter()
            .map(|(h, name)| {
                let result = name.to_string();
                (
                    ResultLabel { result },
                    sum(&|b| b.handshakes[*h as usize].get()),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        counter_family(
            &mut encoder,
            "handshakes",
            "WebSocket upgrade handshakes by result",
            &handshakes,
        )?;
        for (name, help, pick) in [
            (
                "tls_handshakes",
                "TLS handshakes on wss:// ports by result",
                (|b: &WorkerStats, i: usize| b.tls_handshakes[i].get())
                    as fn(&WorkerStats, usize) -> u64,
            ),
            (
                "tls_errors",
                "TLS errors that closed established wss:// connections, by result",
                |b: &WorkerStats, i: usize| b.tls_errors[i].get(),
            ),
        ] {
            let rows: Vec<(ResultLabel, u64)> = Tls::ALL
                .iter()
                .map(|(t, label)| {
                    let result = label.to_string();
                    (ResultLabel { result }, sum(&|b| pick(b, *t as usize)))
                })
                .filter(|(_, v)| *v > 0)
                .collect();
            counter_family(&mut encoder, name, help, &rows)?;
        }
        let auth: Vec<(ResultLabel, u64)> = Auth::ALL
            .iter()
            .map(|(a, name)| {
                let result = name.to_string();
                (ResultLabel { result }, sum(&|b| b.auth[*a as usize].get()))
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        counter_family(
            &mut encoder,
            "auth",
            "Connection tokens and what they allowed, by result",
            &auth,
        )?;
        // Routes: merged by path across workers (every worker has the same routes).
        let mut paths: Vec<String> = Vec::new();
        for b in &blocks {
            for (p, _) in &b.routes {
                if !paths.contains(p) {
                    paths.push(p.clone());
                }
            }
        }
        let route_sum = |p: &str, f: &dyn Fn(&RouteStats) -> u64| -> u64 {
            blocks
                .iter()
                .flat_map(|b| b.routes.iter())
                .filter(|(q, _)| q == p)
                .map(|(_, r)| f(r))
                .sum()
        };
        type Field = fn(&RouteStats) -> u64;
        let families: [(&str, &str, Field); 4] = [
            (
                "messages_in",
                "WebSocket messages received from clients",
                |r| r.msgs_in.get(),
            ),
            (
                "messages_out",
                "WebSocket messages queued to clients",
                |r| r.msgs_out.get(),
            ),
            ("bytes_in", "Bytes received from clients", |r| {
                r.bytes_in.get()
            }),
            ("bytes_out", "Bytes sent to clients", |r| r.bytes_out.get()),
        ];
        for (name, help, field) in families {
            let rows: Vec<(RouteLabel, u64)> = paths
                .iter()
                .map(|p| (RouteLabel { route: p.clone() }, route_sum(p, &field)))
                .filter(|(l, v)| l.route != "-" || *v > 0)
                .collect();
            counter_family(&mut encoder, name, help, &rows)?;
        }
        let drops: Vec<(ReasonLabel, u64)> = Drop::ALL
            .iter()
            .map(|(d, name)| {
                let i = *d as usize;
                let v =
                    sum(&|b| b.drops[i].get()) + self.process_drops.0[i].load(Ordering::Relaxed);
                let reason = name.to_string();
                (ReasonLabel { reason }, v)
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        counter_family(
            &mut encoder,
            "drops",
            "Messages dropped or connections closed by policy, by reason",
            &drops,
        )?;
        let mut buckets: Vec<(f64, u64)> = PROCESSING_BOUNDS
            .iter()
            .chain(std::iter::once(&f64::MAX))
            .enumerate()
            .map(|(i, &b)| (b, sum(&|w| w.processing[i].get())))
            .collect();
        buckets.truncate(PROCESSING_BOUNDS.len() + 1);
        let count = sum(&|b| b.processing_count.get());
        let total = sum(&|b| b.processing_sum_ns.get()) as f64 / 1e9;
        encoder
            .encode_descriptor(
                "processing_seconds",
                "Gateway processing time per received batch",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                total, count, &buckets, None,
            )?;
        let stacks: Vec<&Arc<WorkerStats>> = blocks.iter().filter(|b| b.stack.get() == 1).collect();
        if !stacks.is_empty() {
            let mut m = encoder.encode_descriptor(
                "tcp_connections",
                "TCP connections of the AF_XDP stacks by worker and state",
                None,
                MetricType::Gauge,
            )?;
            for b in &stacks {
                let names = b
                    .tcp_state_names
                    .lock()
                    .map(|n| n.clone())
                    .unwrap_or_default();
                for (i, name) in names.iter().enumerate() {
                    if let Some(state) = name {
                        let labels = WorkerStateLabel {
                            worker: b.index.to_string(),
                            state: state.clone(),
                        };
                        let v = i64::try_from(b.tcp_states[i].get()).unwrap_or(i64::MAX);
                        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
            type Pick = fn(&WorkerStats) -> u64;
            let series: [(&str, &str, Pick); 8] = [
                (
                    "tcp_retransmits",
                    "TCP segments retransmitted by the AF_XDP stacks",
                    |b| b.retransmits.get(),
                ),
                (
                    "tcp_syn_cookies_sent",
                    "SYN cookies sent (SYN backlog full: a SYN flood, RFC 4987)",
                    |b| b.syn_cookies_sent.get(),
                ),
                (
                    "tcp_syn_cookies_validated",
                    "Cookie ACKs that became connections",
                    |b| b.syn_cookies_validated.get(),
                ),
                (
                    "tcp_challenge_acks",
                    "Challenge ACKs for in-window RST/SYN or unacceptable ACKs (RFC 5961)",
                    |b| b.challenge_acks.get(),
                ),
                (
                    "tcp_table_full_drops",
                    "SYNs dropped because the connection table was full",
                    |b| b.table_full_drops.get(),
                ),
                (
                    "tcp_segments_received",
                    "TCP segments received by the AF_XDP stacks",
                    |b| b.segments_in.get(),
                ),
                (
                    "tcp_header_predicted",
                    "Of the segments received, those taken by header prediction (the receive fast path)",
                    |b| b.header_predicted.get(),
                ),
                (
                    "tcp_acks_coalesced",
                    "Pure ACKs taken by ACK coalescing: processed once per connection and receive burst, with the last of them",
                    |b| b.acks_coalesced.get(),
                ),
            ];
            for (name, help, pick) in series {
                let rows: Vec<(WorkerLabel, u64)> = stacks
                    .iter()
                    .map(|b| {
                        (
                            WorkerLabel {
                                worker: b.index.to_string(),
                            },
                            pick(b),
                        )
                    })
                    .collect();
                counter_family(&mut encoder, name, help, &rows)?;
            }
        }
        let busy: Vec<(WorkerLabel, f64)> = blocks
            .iter()
            .filter(|b| b.busy.get() != u64::MAX)
            .map(|b| {
                let worker = b.index.to_string();
                (WorkerLabel { worker }, f64::from_bits(b.busy.get()))
            })
            .collect();
        if !busy.is_empty() {
            let mut m = encoder.encode_descriptor(
                "worker_busy_ratio",
                "Fraction of a worker's loop that did work (last ~100 ms)",
                None,
                MetricType::Gauge,
            )?;
            for (labels, v) in &busy {
                ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
