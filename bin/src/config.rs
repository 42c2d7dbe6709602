//! The TOML configuration file (`--config FILE`, `sluice check-config FILE`).
//!
//! Every key has a safe default; unknown keys are errors, so a typo never silently falls
//! back to a default. `docs/CONFIG.md` documents each key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the WebSocket gateway listens.
    pub listen: Listen,
    /// The control plane (metrics, health, ingest, stat).
    pub control: Control,
    /// Global limits.
    pub limits: Limits,
    /// Routes by request path; the first exact match wins.
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
    /// AF_XDP backend tuning: idle backoff, stop grace, UMEM and ring sizes.
    pub dataplane: Dataplane,
    /// DPDK backend (`--backend dpdk`, cargo feature `dpdk`): EAL arguments, port, pool
    /// and ring sizes.
    pub dpdk: Dpdk,
    /// Pub/sub across several gateway nodes over NATS (off by default).
    pub cluster: Cluster,
    /// How `auth = "jwt"` routes verify connection tokens.
    pub auth: Auth,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Listen::default(),
            control: Control::default(),
            limits: Limits::default(),
            routes: vec![Route {
                path: "/".to_string(),
                ..Route::default()
            }],
            dataplane: Dataplane::default(),
            dpdk: Dpdk::default(),
            cluster: Cluster::default(),
            auth: Auth::default(),
        }
    }
}

/// A JWT signature algorithm `[auth]` accepts.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, with an RSA public key.
    RS256,
    /// ECDSA P-256 with SHA-256, with an EC public key.
    ES256,
}

/// Where a connection token may come from.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN`.
    Header,
    /// `Sec-WebSocket-Protocol: sluice.jwt, TOKEN` (browsers cannot set headers).
    Protocol,
    /// `?token=TOKEN` in the request target (`auth.query_param`).
    Query,
}

/// `[auth]`: connection tokens (JWT) for routes with `auth = "jwt"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// The one algorithm accepted (a token signed otherwise is refused).
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret (or `secret_file`).
    pub secret: Option<String>,
    /// HS256: a file holding the shared secret (trailing newline ignored).
    pub secret_file: Option<String>,
    /// RS256 / ES256: the PEM public key.
    pub public_key_file: Option<String>,
    /// Required `aud` (none: not checked).
    pub audience: Option<String>,
    /// Required `iss` (none: not checked).
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Where tokens are looked for, in order.
    pub token_from: Vec<TokenSource>,
    /// The query parameter of `token_from = ["query"]`.
    pub query_param: String,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            algorithm: JwtAlgorithm::HS256,
            secret: None,
            secret_file: None,
            public_key_file: None,
            audience: None,
            issuer: None,
            leeway_s: 30,
            token_from: vec![
                TokenSource::Header,
                TokenSource::Protocol,
                TokenSource::Query,
            ],
            query_param: "token".to_string(),
        }
    }
}

/// Who may open a route.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// Anyone who reaches it.
    #[default]
    None,
    /// A valid JWT (`[auth]`); its claims scope the topics.
    Jwt,
}

/// `[cluster]`: pub/sub across gateway nodes over NATS core (docs/OPERATIONS.md,
/// "Running a cluster"). Off unless `enabled = true`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// Whether this node joins a cluster.
    pub enabled: bool,
    /// NATS server URLs (`nats://host:port`), tried in order; more are learned from the
    /// server.
    pub servers: Vec<String>,
    /// Subjects are `<subject_prefix>.<topic>` (the topic escaped, [`crate::cluster::subject`]).
    pub subject_prefix: String,
    /// This node's name, carried in every message it publishes (so it never takes its own
    /// messages back) and in the NATS connection name. Empty: the host name and a random
    /// suffix. Must be unique in the cluster.
    pub node: String,
    /// How long a NATS subscription outlives the topic's last local subscriber (ms), so a
    /// client that resubscribes at once does not churn subscriptions.
    pub unsubscribe_linger_ms: u64,
    /// Local publications waiting to be handed to the NATS client; beyond it they are
    /// dropped for the other nodes (counted).
    pub outbound_queue: usize,
    /// Longest wait between two reconnect attempts (ms); attempts back off up to it.
    pub reconnect_max_delay_ms: u64,
    /// Token authentication.
    pub token: Option<String>,
    /// User and password authentication (both or neither).
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<String>,
    /// A PEM file of CA certificates: the connection to NATS must then be TLS.
    pub tls_ca_file: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            enabled: false,
            servers: vec!["nats://127.0.0.1:4222".to_string()],
            subject_prefix: "sluice".to_string(),
            node: String::new(),
            unsubscribe_linger_ms: 1000,
            outbound_queue: 8192,
            reconnect_max_delay_ms: 2000,
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            tls_ca_file: None,
        }
    }
}

impl Cluster {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.servers.is_empty() {
            return Err(invalid("cluster.servers", "needs at least one NATS URL"));
        }
        for s in &self.servers {
            let rest = s
                .strip_prefix("nats://")
                .or_else(|| s.strip_prefix("tls://"))
                .unwrap_or(s);
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(invalid(
                    "cluster.servers",
                    format!("`{s}` is not a NATS URL (nats://host:port)"),
                ));
            }
        }
        if !crate::cluster::subject::valid_prefix(&self.subject_prefix) {
            return Err(invalid(
                "cluster.subject_prefix",
                "must be NATS subject tokens: non-empty, separated by dots, no spaces, `*` or `>`",
            ));
        }
        if self
            .node
            .contains(|c: char| c.is_whitespace() || c.is_control())
            || self.node.len() > 128
        {
            return Err(invalid(
                "cluster.node",
                "at most 128 bytes, no whitespace or control characters",
            ));
        }
        if self.outbound_queue == 0 {
            return Err(invalid("cluster.outbound_queue", "must be at least 1"));
        }
        if self.reconnect_max_delay_ms == 0 {
            return Err(invalid(
                "cluster.reconnect_max_delay_ms",
                "must be at least 1",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid(
                "cluster.user",
                "cluster.user and cluster.password go together",
            ));
        }
        let methods = usize::from(self.token.is_some())
            + usize::from(self.user.is_some())
            + usize::from(self.credentials_file.is_some());
        if methods > 1 {
            return Err(invalid(
                "cluster.token",
                "choose one of token, user/password and credentials_file",
            ));
        }
        for (key, file) in [
            ("cluster.credentials_file", &self.credentials_file),
            ("cluster.tls_ca_file", &self.tls_ca_file),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::metadata(f) {
                    return Err(invalid(key, format!("cannot read `{f}`: {e}")));
                }
            }
        }
        Ok(())
    }
}

/// `[listen]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Address to serve on (`--ip` overrides).
    pub ip: IpAddr,
    /// Ports to serve on (`--port` overrides).
    pub ports: Vec<u16>,
    /// Connections from `trusted_proxies` start with a PROXY protocol v2 header naming
    /// the real client (a load balancer's `send-proxy-v2`); others are served as direct.
    pub proxy_protocol: bool,
    /// Proxies (CIDRs) whose PROXY header and `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `[[listen.tls]]`: ports served as wss:// (TLS), one entry per port.
    pub tls: Vec<TlsListener>,
}

/// `[[listen.tls]]`: one TLS listening port (one of `listen.ports`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// The port (must be one of `listen.ports`).
    pub port: u16,
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Oldest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Session resumption (TLS 1.3 tickets, TLS 1.2 session IDs); on by default.
    #[serde(default = "yes")]
    pub resumption: bool,
    /// Further certificates, each served to clients that ask for its name (SNI); the
    /// others get `cert`.
    #[serde(default)]
    pub sni: Vec<SniCert>,
}

/// `[[listen.tls.sni]]`: a certificate served for one SNI name.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// The DNS name (the certificate must be valid for it).
    pub name: String,
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of the leaf.
    pub key: String,
}

fn yes() -> bool {
    true
}

/// A TLS protocol version (`min_version`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V12,
    /// TLS 1.3 (RFC 8446) only.
    #[serde(rename = "1.3")]
    V13,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: vec![8080],
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tls: Vec::new(),
        }
    }
}

impl Listen {
    /// Whether `ip` is one of `trusted_proxies`.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        in_any(&self.trusted_proxies, ip)
    }
}

/// Whether `ip` (an IPv4-mapped IPv6 address taken as its IPv4 address, as a dual-stack
/// socket reports IPv4 peers) lies in one of `nets`.
fn in_any(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// `[dataplane]`: AF_XDP backend tuning (`sluice run --backend afxdp`). Each key has a
/// `sluice run` flag that overrides it (see [`dataplane_for_run`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// Idle loop iterations that only spin before yielding (`--idle-spin`).
    pub idle_spin: u32,
    /// Further idle iterations that yield the CPU before sleeping (`--idle-yield`).
    pub idle_yield: u32,
    /// Longest sleep in `poll()` once spinning and yielding are exhausted, in
    /// microseconds (`--idle-poll-timeout-us`; rounded up to whole milliseconds).
    pub idle_poll_timeout_us: u64,
    /// How long workers drain their connections after SIGINT/SIGTERM (`--stop-grace-ms`).
    pub stop_grace_ms: u64,
    /// UMEM frames per queue and direction (`--umem-frames`): as many for receiving and
    /// again for transmitting.
    pub umem_frames: u32,
    /// UMEM frame size in bytes (`--frame-size`): 2048 or 4096.
    pub frame_size: u32,
    /// Entries of each AF_XDP ring: RX, TX, fill, completion (`--ring-size`).
    pub ring_size: u32,
    /// Which TCP ports of the stack's address the XDP program takes
    /// (`--redirect-all-tcp`): all of them (Sluice answers RST on closed ports), only
    /// Sluice's listening ports and active-open range (the kernel keeps the rest), or
    /// `auto` (the default): all unless the kernel owns the address itself.
    pub redirect_all_tcp: RedirectAllTcp,
}

/// `[dataplane] redirect_all_tcp` / `--redirect-all-tcp`: the XDP program's TCP policy.
///
/// RFC 9293 3.10.7.1: a segment to a port nobody listens on MUST get an RST. When Sluice
/// alone owns the address, only Sluice can send it, so `auto` then redirects every port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RedirectAllTcp {
    /// Decided once at start: `true` unless the kernel has the stack's address on one of
    /// its interfaces (in Sluice's network namespace), then `false`.
    #[default]
    Auto,
    /// Every TCP port of the address goes to Sluice; closed ports get its RST.
    #[value(name = "true")]
    All,
    /// Only the listening ports and the active-open range go to Sluice; the kernel keeps
    /// every other port.
    #[value(name = "false")]
    Ports,
}

impl RedirectAllTcp {
    /// Whether every port is redirected, given whether the kernel owns the address
    /// (consulted for `Auto` only).
    pub fn redirects_all(self, kernel_owns_address: impl FnOnce() -> bool) -> bool {
        match self {
            RedirectAllTcp::All => true,
            RedirectAllTcp::Ports => false,
            RedirectAllTcp::Auto => !kernel_owns_address(),
        }
    }
}

impl<'de> Deserialize<'de> for RedirectAllTcp {
    /// `true`, `false` or `"auto"`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(RedirectAllTcp::All),
            Raw::Bool(false) => Ok(RedirectAllTcp::Ports),
            Raw::Text(t) if t == "auto" => Ok(RedirectAllTcp::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "expected true, false or \"auto\", found \"{t}\""
            ))),
        }
    }
}

/// Ranges accepted for the `[dataplane]` keys.
pub mod dataplane_limits {
    /// `idle_spin` and `idle_yield`.
    pub const IDLE_ITERATIONS_MAX: u32 = 100_000_000;
    /// `idle_poll_timeout_us`.
    pub const POLL_TIMEOUT_US: std::ops::RangeInclusive<u64> = 1..=1_000_000;
    /// `stop_grace_ms`.
    pub const STOP_GRACE_MS_MAX: u64 = 600_000;
    /// `umem_frames`.
    pub const UMEM_FRAMES: std::ops::RangeInclusive<u32> = 64..=262_144;
    /// `frame_size`.
    pub const FRAME_SIZES: [u32; 2] = [2048, 4096];
    /// `ring_size` (also a power of two).
    pub const RING_SIZE: std::ops::RangeInclusive<u32> = 64..=32_768;
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            idle_spin: 2_000,
            idle_yield: 200,
            idle_poll_timeout_us: 1_000,
            stop_grace_ms: 2_000,
            umem_frames: 2_048,
            frame_size: 2_048,
            ring_size: 2_048,
            redirect_all_tcp: RedirectAllTcp::Auto,
        }
    }
}

impl Dataplane {
    /// Checks every key's range; the error names the key and its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use dataplane_limits as lim;
        let key = |k: &str, flag: &str| format!("dataplane.{k} (--{flag})");
        for (k, flag, v) in [
            ("idle_spin", "idle-spin", self.idle_spin),
            ("idle_yield", "idle-yield", self.idle_yield),
        ] {
            if v > lim::IDLE_ITERATIONS_MAX {
                return Err(invalid(
                    key(k, flag),
                    format!("must be at most {}", lim::IDLE_ITERATIONS_MAX),
                ));
            }
        }
        if !lim::POLL_TIMEOUT_US.contains(&self.idle_poll_timeout_us) {
            return Err(invalid(
                key("idle_poll_timeout_us", "idle-poll-timeout-us"),
                format!(
                    "must be in {}..={} (microseconds)",
                    lim::POLL_TIMEOUT_US.start(),
                    lim::POLL_TIMEOUT_US.end()
                ),
            ));
        }
        if self.stop_grace_ms > lim::STOP_GRACE_MS_MAX {
            return Err(invalid(
                key("stop_grace_ms", "stop-grace-ms"),
                format!("must be at most {} (milliseconds)", lim::STOP_GRACE_MS_MAX),
            ));
        }
        if !lim::UMEM_FRAMES.contains(&self.umem_frames) {
            return Err(invalid(
                key("umem_frames", "umem-frames"),
                format!(
                    "must be in {}..={}",
                    lim::UMEM_FRAMES.start(),
                    lim::UMEM_FRAMES.end()
                ),
            ));
        }
        if !lim::FRAME_SIZES.contains(&self.frame_size) {
            return Err(invalid(
                key("frame_size", "frame-size"),
                "must be 2048 or 4096 (bytes)",
            ));
        }
        if !lim::RING_SIZE.contains(&self.ring_size) || !self.ring_size.is_power_of_two() {
            return Err(invalid(
                key("ring_size", "ring-size"),
                format!(
                    "must be a power of two in {}..={}",
                    lim::RING_SIZE.start(),
                    lim::RING_SIZE.end()
                ),
            ));
        }
        Ok(())
    }

    /// The worker's idle backoff.
    pub fn backoff(&self) -> dataplane::Backoff {
        dataplane::Backoff {
            spin: self.idle_spin,
            yields: self.idle_yield,
            sleep: Duration::from_micros(self.idle_poll_timeout_us),
        }
    }

    /// How long workers may drain after a stop.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }
}

/// The `[dataplane]` settings for `sluice run --backend afxdp`: the `--config` file's
/// section (or the defaults) with the tuning flags given on the command line on top,
/// validated.
pub fn dataplane_for_run(args: &crate::cli::RunArgs) -> anyhow::Result<Dataplane> {
    let mut d = match &args.config {
        Some(path) => {
            Config::load(path)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
                .dataplane
        }
        None => Dataplane::default(),
    };
    let t = &args.tuning;
    if let Some(v) = t.idle_spin {
        d.idle_spin = v;
    }
    if let Some(v) = t.idle_yield {
        d.idle_yield = v;
    }
    if let Some(v) = t.idle_poll_timeout_us {
        d.idle_poll_timeout_us = v;
    }
    if let Some(v) = t.stop_grace_ms {
        d.stop_grace_ms = v;
    }
    if let Some(v) = t.umem_frames {
        d.umem_frames = v;
    }
    if let Some(v) = t.frame_size {
        d.frame_size = v;
    }
    if let Some(v) = t.ring_size {
        d.ring_size = v;
    }
    if let Some(v) = t.redirect_all_tcp {
        d.redirect_all_tcp = v;
    }
    d.validate().map_err(anyhow::Error::new)?;
    Ok(d)
}

/// `[dpdk]`: the DPDK backend (`--backend dpdk`, built with the cargo feature `dpdk`).
/// Each key has a `sluice run` flag that overrides it (see [`dpdk_for_run`]); the idle
/// backoff and stop grace come from `[dataplane]` as for AF_XDP.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Dpdk {
    /// Arguments for DPDK's environment (EAL), before those Sluice adds (`--eal-args`,
    /// split at whitespace). Default `["--in-memory"]`: hugepages, no runtime files, so
    /// several processes never share state. Sluice adds `-a ADDR` for a PCI `port`, or
    /// `--vdev SPEC` for a virtual one, and `-l CPU` (the EAL's own main lcore, not a
    /// worker core) unless the arguments choose cores (`-l`, `-c`, `--lcores`).
    pub eal_args: Vec<String>,
    /// The port (`--dpdk-port`): a PCI address (`0000:3b:00.0`; its NIC bound to vfio-pci)
    /// or a virtual device spec (`net_af_packet0,iface=eth1`, `net_af_xdp0,iface=eth1`).
    pub port: Option<String>,
    /// Queue pairs, one worker each (`--queues N`, which overrides it). Default 1.
    pub queues: u16,
    /// The workers' cores, one per queue pair in order, e.g. `"2,3"` or `"2-5"` (`--cores`,
    /// which overrides it). Default: queue i on core i mod (available cores). The workers
    /// are Sluice's threads registered with the EAL (docs/decisions/0011), not EAL-launched
    /// lcores; `eal_args` choose only the EAL's own main lcore.
    pub lcores: Option<String>,
    /// Mbufs in the pool (`--mbufs`); 0 sizes it from the queues and rings:
    /// queues x (rx_ring + 2 x tx_ring) + queues x 256 (per-core caches) + 1024, at least 4095.
    pub mbufs: u32,
    /// Receive descriptors per queue (`--rx-ring`), adjusted to the driver's limits.
    pub rx_ring: u16,
    /// Transmit descriptors per queue (`--tx-ring`), adjusted to the driver's limits; also
    /// the most frames a worker queues between two bursts.
    pub tx_ring: u16,
    /// Receive frames for every destination MAC (needed when --mac is not the port's own;
    /// set automatically then).
    pub promiscuous: bool,
}

impl Default for Dpdk {
    fn default() -> Self {
        Dpdk {
            eal_args: vec!["--in-memory".to_string()],
            port: None,
            queues: 1,
            lcores: None,
            mbufs: 0,
            rx_ring: 1024,
            tx_ring: 1024,
            promiscuous: false,
        }
    }
}

impl Dpdk {
    /// Checks every key's range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("dpdk.rx_ring", self.rx_ring),
            ("dpdk.tx_ring", self.tx_ring),
        ] {
            if !(32..=16_384).contains(&v) {
                return Err(invalid(k, format!("{v} is outside 32..=16384")));
            }
        }
        if !(1..=128).contains(&self.queues) {
            return Err(invalid(
                "dpdk.queues (--queues)",
                format!("{} is outside 1..=128", self.queues),
            ));
        }
        if self.mbufs != 0 && !(1_024..=16_777_215).contains(&self.mbufs) {
            return Err(invalid(
                "dpdk.mbufs",
                format!(
                    "{} is outside 1024..=16777215 (or 0: sized from the rings)",
                    self.mbufs
                ),
            ));
        }
        if let Some(p) = &self.port {
            if p.trim().is_empty() || p.contains(char::is_whitespace) {
                return Err(invalid("dpdk.port", format!("invalid port `{p}`")));
            }
        }
        Ok(())
    }

    /// The pool size for `queues` workers: `mbufs`, or sized from the rings when 0.
    pub fn pool_size(&self, queues: u32) -> u32 {
        if self.mbufs != 0 {
            return self.mbufs;
        }
        let per_queue = u32::from(self.rx_ring) + 2 * u32::from(self.tx_ring) + 256;
        (queues * per_queue + 1_024).max(4_095)
    }
}

/// The `[dpdk]` section of `--config` (when given) with `sluice run`'s DPDK flags applied.
pub fn dpdk_for_run(args: &crate::cli::RunArgs) -> anyhow::Result<Dpdk> {
    let mut d = match &args.config {
        Some(path) => {
            Config::load(path)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
                .dpdk
        }
        None => Dpdk::default(),
    };
    let f = &args.dpdk;
    if let Some(p) = &f.dpdk_port {
        d.port = Some(p.clone());
    }
    if let Some(a) = &f.eal_args {
        d.eal_args = a.split_whitespace().map(str::to_string).collect();
    }
    if let Some(v) = f.mbufs {
        d.mbufs = v;
    }
    if let Some(v) = f.rx_ring {
        d.rx_ring = v;
    }
    if let Some(v) = f.tx_ring {
        d.tx_ring = v;
    }
    // `--queues` and `--cores` are shared with AF_XDP; for DPDK they are `queues` (a count)
    // and `lcores`.
    if let Some(q) = &args.queues {
        d.queues = q.trim().parse().map_err(|_| {
            anyhow::anyhow!("--backend dpdk: --queues takes a count, 1..=128 (got `{q}`)")
        })?;
    }
    if let Some(c) = &args.cores {
        d.lcores = Some(c.clone());
    }
    d.validate().map_err(anyhow::Error::new)?;
    Ok(d)
}

/// `[control]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// Address of the control-plane HTTP server (`--control` overrides).
    pub addr: SocketAddr,
    /// Whether the control plane runs at all.
    pub enabled: bool,
    /// How long `POST /publish/{topic}` waits for the message to be queued, in ms.
    pub publish_timeout_ms: u64,
    /// Largest ingest body accepted, in bytes (413 beyond it).
    pub max_publish_bytes: usize,
    /// A worker whose poll loop has not run for longer than this (ms) is stalled, and
    /// `/healthz` answers 503.
    pub worker_stall_ms: u64,
    /// Bearer token required by `POST /publish` and `GET /stat` (`Authorization: Bearer
    /// TOKEN`); required when `addr` is not a loopback address.
    pub token: Option<String>,
    /// A file holding that token (trailing newline ignored).
    pub token_file: Option<String>,
}

impl Control {
    /// The bearer token, from `token` or `token_file`.
    pub fn bearer(&self) -> Result<Option<String>, ConfigError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(invalid(
                "control.token",
                "set token or token_file, not both",
            )),
            (Some(t), None) => Ok(Some(t.clone())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| invalid("control.token_file", format!("cannot read `{f}`: {e}"))),
            (None, None) => Ok(None),
        }
    }
}

impl Control {
    /// `worker_stall_ms` as a duration.
    pub fn worker_stall(&self) -> Duration {
        Duration::from_millis(self.worker_stall_ms)
    }
}

/// `control.worker_stall_ms`.
pub const WORKER_STALL_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

impl Default for Control {
    fn default() -> Self {
        Control {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9100),
            enabled: true,
            publish_timeout_ms: 5000,
            max_publish_bytes: 1 << 20,
            worker_stall_ms: 2000,
            token: None,
            token_file: None,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most concurrent client connections (further ones are closed at accept).
    pub max_connections: usize,
    /// Most concurrent client connections from one source IP.
    pub max_connections_per_ip: usize,
    /// Time a client has to complete the upgrade handshake, in ms (slowloris guard).
    pub handshake_timeout_ms: u64,
    /// A connection silent for this long gets a server Ping, in ms (0 = never).
    pub ping_interval_ms: u64,
    /// A connection silent for this long is closed with 1001, in ms (0 = never).
    pub idle_timeout_ms: u64,
    /// Largest frame payload accepted from a client, in bytes (1009 beyond it).
    pub max_frame_size: usize,
    /// Largest message accepted from a client after decompression, in bytes (1009).
    pub max_message_size: usize,
    /// Largest upgrade request head, in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Allowed `Origin` values; empty allows any (and requests without Origin).
    pub allowed_origins: Vec<String>,
    /// How long graceful shutdown flushes queued messages before exiting, in ms.
    pub shutdown_timeout_ms: u64,
    /// How long a connection we closed may take to drain before it is dropped, in ms.
    pub close_timeout_ms: u64,
    /// Capacity (messages) of each worker's inbound fan-out queue.
    pub worker_queue: usize,
    /// Capacity (messages) of the publish queue into the broker.
    pub publish_queue: usize,
    /// Most topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Sources (CIDRs) allowed to connect; empty: every source not denied.
    pub allow_sources: Vec<ipnet::IpNet>,
    /// Sources (CIDRs) refused at accept (checked before `allow_sources`).
    pub deny_sources: Vec<ipnet::IpNet>,
    /// New connections per second one source address may open (a burst of as many);
    /// 0: no limit.
    pub new_connections_per_ip_per_s: u32,
    /// Messages per second one connection may send (a burst of as many); beyond it the
    /// connection is closed with 1008. 0: no limit.
    pub max_messages_per_s: u32,
}

impl Limits {
    /// Whether `ip` passes `deny_sources` and `allow_sources`.
    pub fn source_allowed(&self, ip: IpAddr) -> bool {
        !in_any(&self.deny_sources, ip)
            && (self.allow_sources.is_empty() || in_any(&self.allow_sources, ip))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
            max_header_bytes: 8192,
            allowed_origins: Vec::new(),
            shutdown_timeout_ms: 5_000,
            close_timeout_ms: 2_000,
            worker_queue: 4096,
            publish_queue: 4096,
            max_subscriptions: 256,
            allow_sources: Vec::new(),
            deny_sources: Vec::new(),
            new_connections_per_ip_per_s: 0,
            max_messages_per_s: 0,
        }
    }
}

impl Limits {
    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// What a route does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Every message sent back (diagnostics).
    Echo,
    /// Topics with the JSON control protocol (docs/GATEWAY.md).
    #[default]
    Pubsub,
    /// Each client bridged to `upstream`.
    Proxy,
}

impl RouteKind {
    /// The name used in the config and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Echo => "echo",
            RouteKind::Pubsub => "pubsub",
            RouteKind::Proxy => "proxy",
        }
    }
}

/// What happens when a connection's queued output exceeds `max_queued_bytes`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumer {
    /// The new message is not queued for that connection (counted).
    #[default]
    DropNewest,
    /// The connection is closed with `slow_close_code` (counted).
    Close,
}

/// `[[route]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Route {
    /// Request path, matched exactly (the query string is ignored).
    pub path: String,
    /// What the route does.
    pub kind: RouteKind,
    /// Upstream WebSocket URL (`ws://HOST:PORT/PATH`), for `kind = "proxy"` only.
    pub upstream: Option<String>,
    /// permessage-deflate (RFC 7692) on this route.
    pub compression: bool,
    /// Slow-consumer policy.
    pub slow_consumer: SlowConsumer,
    /// Close code for `slow_consumer = "close"`: 1008 (policy) or 1013 (try again later).
    pub slow_close_code: u16,
    /// Per-connection bound on queued output, in bytes.
    pub max_queued_bytes: usize,
    /// Who may open it: `none` (anyone) or `jwt`.
    pub auth: RouteAuth,
    /// Whether clients of this `pubsub` route may publish (`{"op":"publish"}`).
    pub client_publish: bool,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            path: String::new(),
            kind: RouteKind::Pubsub,
            upstream: None,
            compression: true,
            slow_consumer: SlowConsumer::DropNewest,
            slow_close_code: 1008,
            max_queued_bytes: 4 << 20,
            auth: RouteAuth::None,
            client_publish: true,
        }
    }
}

/// A config problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type (the message names the key and line).
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key, e.g. `route[1].upstream`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A parsed `ws://host:port/path` upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` to connect to.
    pub authority: String,
    /// Request path (at least `/`).
    pub path: String,
}

/// Parses a `ws://` URL (plain TCP only).
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| "must start with ws:// (wss is not supported)".to_string())?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| "needs an explicit :port".to_string())?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("bad host:port `{authority}`"));
    }
    Ok(Upstream {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Checks ranges and cross-key consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dataplane.validate()?;
        self.dpdk.validate()?;
        self.cluster.validate()?;
        let l = &self.limits;
        let positive = [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.max_frame_size", l.max_frame_size),
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_header_bytes", l.max_header_bytes),
            ("limits.worker_queue", l.worker_queue),
            ("limits.publish_queue", l.publish_queue),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("control.max_publish_bytes", self.control.max_publish_bytes),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !WORKER_STALL_MS.contains(&self.control.worker_stall_ms) {
            return Err(invalid(
                "control.worker_stall_ms",
                format!(
                    "must be in {}..={} (milliseconds)",
                    WORKER_STALL_MS.start(),
                    WORKER_STALL_MS.end()
                ),
            ));
        }
        if l.handshake_timeout_ms == 0 {
            return Err(invalid("limits.handshake_timeout_ms", "must be at least 1"));
        }
        if l.idle_timeout_ms != 0 && l.ping_interval_ms >= l.idle_timeout_ms {
            return Err(invalid(
                "limits.ping_interval_ms",
                "must be below limits.idle_timeout_ms so pings can keep a connection alive",
            ));
        }
        self.check_control_token()?;
        if self.routes.iter().any(|r| r.auth == RouteAuth::Jwt) {
            crate::gateway::auth::Verifier::new(&self.auth).map_err(|m| invalid("auth", m))?;
        }
        if self.listen.proxy_protocol && self.listen.trusted_proxies.is_empty() {
            return Err(invalid(
                "listen.proxy_protocol",
                "needs listen.trusted_proxies (the load balancers allowed to send the header)",
            ));
        }
        if self.listen.ports.is_empty() {
            return Err(invalid("listen.ports", "needs at least one port"));
        }
        self.check_tls()?;
        if self.routes.is_empty() {
            return Err(invalid("route", "needs at least one [[route]]"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            if !r.path.starts_with('/') {
                return Err(invalid(key("path"), "must start with /"));
            }
            if self.routes[..i].iter().any(|o| o.path == r.path) {
                return Err(invalid(key("path"), format!("duplicate path `{}`", r.path)));
            }
            if r.max_queued_bytes == 0 {
                return Err(invalid(key("max_queued_bytes"), "must be at least 1"));
            }
            if !matches!(r.slow_close_code, 1008 | 1013) {
                return Err(invalid(key("slow_close_code"), "must be 1008 or 1013"));
            }
            match (r.kind, &r.upstream) {
                (RouteKind::Proxy, None) => {
                    return Err(invalid(key("upstream"), "required for kind = \"proxy\""))
                }
                (RouteKind::Proxy, Some(u)) => {
                    parse_upstream(u).map_err(|m| invalid(key("upstream"), m))?;
                }
                (_, Some(_)) => {
                    return Err(invalid(key("upstream"), "only valid for kind = \"proxy\""))
                }
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// The control plane's token rules: readable, not empty, and set whenever the control
    /// address is not loopback (ingest and `/stat` would be open to the network).
    /// `[[listen.tls]]`: one entry per port, each loadable (files readable and parsed, the
    /// key matching the leaf certificate).
    fn check_tls(&self) -> Result<(), ConfigError> {
        for (i, t) in self.listen.tls.iter().enumerate() {
            let key = |k: &str| format!("listen.tls[{i}].{k}");
            if t.port == 0 {
                return Err(invalid(key("port"), "must be a fixed port (not 0)"));
            }
            if self.listen.tls[..i].iter().any(|o| o.port == t.port) {
                return Err(invalid(
                    key("port"),
                    format!("port {} has two entries", t.port),
                ));
            }
            crate::app::tls::server_config(t).map_err(|(k, m)| invalid(key(k), m))?;
        }
        Ok(())
    }

    /// Checks that every TLS port is one the gateway listens on (after `--port`).
    pub fn check_tls_ports(&self) -> Result<(), ConfigError> {
        for (i, t) in self.listen.tls.iter().enumerate() {
            if !self.listen.ports.contains(&t.port) {
                return Err(invalid(
                    format!("listen.tls[{i}].port"),
                    format!("{} is not one of the listening ports", t.port),
                ));
            }
        }
        Ok(())
    }

    fn check_control_token(&self) -> Result<(), ConfigError> {
        let token = self.control.bearer()?;
        if token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("control.token", "must not be empty"));
        }
        if self.control.enabled && !self.control.addr.ip().is_loopback() && token.is_none() {
            return Err(invalid(
                "control.token",
                format!(
                    "required when control.addr ({}) is not a loopback address: POST /publish and /stat would be open to the network",
                    self.control.addr
                ),
            ));
        }
        Ok(())
    }

    /// Warnings `check-config` prints (the file is valid): pubsub routes that let
    /// unauthenticated clients publish on a non-loopback listen address.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.listen.ip.is_loopback() {
            return out;
        }
        for r in &self.routes {
            if r.kind == RouteKind::Pubsub && r.auth == RouteAuth::None && r.client_publish {
                out.push(format!(
                    "route {}: any client that reaches {} may publish to every topic (set auth = \"jwt\" or client_publish = false)",
                    r.path, self.listen.ip
                ));
            }
        }
        out
    }

    /// The route for a request target (query string ignored).
    pub fn route(&self, target: &str) -> Option<(usize, &Route)> {
        let path = target.split('?').next().unwrap_or(target);
        self.routes.iter().enumerate().find(|(_, r)| r.path == path)
    }
}

/// `sluice check-config FILE`: validates and prints a summary, or the error with its key.
pub fn check_file(path: &str) -> anyhow::Result<()> {
    let c = Config::load(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    for w in c.warnings() {
        println!("{path}: warning: {w}");
    }
    let now = crate::app::tls::unix_now();
    let mut tls = String::new();
    for (i, t) in c.listen.tls.iter().enumerate() {
        let (_, expiries) = crate::app::tls::server_config_at(t, now)
            .map_err(|(k, m)| anyhow::anyhow!("{path}: listen.tls[{i}].{k}: {m}"))?;
        for e in &expiries {
            let days = (e.not_after - now) / 86_400;
            if days < TLS_EXPIRY_WARNING_DAYS {
                println!(
                    "{path}: warning: listen.tls[{i}] ({} on port {}): the certificate expires on {} ({days} day(s) left)",
                    e.name,
                    e.port,
                    crate::app::tls::utc_date(e.not_after)
                );
            }
        }
        let first = expiries.iter().map(|e| e.not_after).min().unwrap_or(now);
        tls.push_str(&format!(
            "; wss on port {} ({} certificate(s), earliest expiry {})",
            t.port,
            expiries.len(),
            crate::app::tls::utc_date(first)
        ));
    }
    println!(
        "{path}: ok ({} route(s): {}{tls})",
        c.routes.len(),
        c.routes
            .iter()
            .map(|r| format!("{} {}", r.path, r.kind.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `check-config` warns when a TLS certificate expires within this many days.
const TLS_EXPIRY_WARNING_DAYS: i64 = 30;

/// The configuration `--app ws-echo` runs with: one echo route (served on every path),
/// no control plane unless `--control` is given, no pings or idle timeout, and the
/// command line's limits.
pub fn ws_echo_for_run(args: &crate::cli::RunArgs) -> anyhow::Result<Config> {
    if args.config.is_some() {
        anyhow::bail!("--config applies to --app gateway; ws-echo takes its options as flags");
    }
    let mut c = Config::default();
    c.listen.ip = args.ip.addr;
    c.listen.ports.clone_from(&args.ports);
    c.control.enabled = args.control.is_some();
    if let Some(addr) = args.control {
        c.control.addr = addr;
    }
    c.limits.max_message_size = args.max_message_size;
    c.limits.max_frame_size = args.max_frame_size;
    c.limits.max_connections = args.max_connections;
    c.limits.max_connections_per_ip = args.max_connections;
    c.limits.handshake_timeout_ms = args.handshake_timeout.saturating_mul(1000).max(1);
    c.limits.ping_interval_ms = 0;
    c.limits.idle_timeout_ms = 0;
    c.routes = vec![Route {
        path: "/".to_string(),
        kind: RouteKind::Echo,
        compression: args.compression == crate::cli::Switch::On,
        max_queued_bytes: args.max_output_queue.max(1),
        ..Route::default()
    }];
    apply_tls_flags(&mut c, args);
    c.validate()
        .and_then(|()| c.check_tls_ports())
        .map_err(|e| anyhow::anyhow!("ws-echo options: {e}"))?;
    Ok(c)
}

/// The configuration for `sluice run --app gateway`: the file (or defaults) with the
/// flags given on the command line applied on top.
pub fn for_run(args: &crate::cli::RunArgs) -> anyhow::Result<Config> {
    use clap::parser::ValueSource;
    use clap::CommandFactory;
    let mut c = match &args.config {
        Some(path) => Config::load(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        None => Config::default(),
    };
    // Which flags were given explicitly (their clap defaults must not override the file).
    let matches = crate::cli::Cli::command().try_get_matches_from(std::env::args_os());
    let run = matches
        .as_ref()
        .ok()
        .and_then(|m| m.subcommand_matches("run"));
    let given =
        |id: &str| run.is_none_or(|m| matches!(m.value_source(id), Some(ValueSource::CommandLine)));
    if given("ip") || args.config.is_none() {
        c.listen.ip = args.ip.addr;
    }
    c.listen.ports.clone_from(&args.ports);
    if let Some(addr) = args.control {
        c.control.addr = addr;
    }
    if given("max_message_size") {
        c.limits.max_message_size = args.max_message_size;
    }
    if given("max_frame_size") {
        c.limits.max_frame_size = args.max_frame_size;
    }
    if given("max_connections") {
        c.limits.max_connections = args.max_connections;
    }
    if given("handshake_timeout") {
        c.limits.handshake_timeout_ms = args.handshake_timeout.saturating_mul(1000);
    }
    for r in &mut c.routes {
        if given("max_output_queue") {
            r.max_queued_bytes = args.max_output_queue;
        }
        if given("compression") {
            r.compression = args.compression == crate::cli::Switch::On;
        }
    }
    apply_tls_flags(&mut c, args);
    c.validate()
        .and_then(|()| c.check_tls_ports())
        .map_err(|e| anyhow::anyhow!("after applying flags: {e}"))?;
    Ok(c)
}

/// `--tls-port P --tls-cert F --tls-key K`: P joins the listening ports, served as TLS
/// with that certificate (replacing a `[[listen.tls]]` entry for P).
fn apply_tls_flags(c: &mut Config, args: &crate::cli::RunArgs) {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return;
    };
    for &port in &args.tls_ports {
        if !c.listen.ports.contains(&port) {
            c.listen.ports.push(port);
        }
        c.listen.tls.retain(|t| t.port != port);
        c.listen.tls.push(TlsListener {
            port,
            cert: cert.clone(),
            key: key.clone(),
            min_version: TlsVersion::default(),
            resumption: true,
            sni: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dpdk_section_parsed_validated_and_pool_sized() {
        let c = Config::parse(
            "[dpdk]\nport = \"0000:3b:00.0\"\neal_args = [\"--in-memory\", \"-l\", \"0\"]\nrx_ring = 512\n",
        )
        .unwrap();
        assert_eq!(c.dpdk.port.as_deref(), Some("0000:3b:00.0"));
        assert_eq!(c.dpdk.eal_args, ["--in-memory", "-l", "0"]);
        assert_eq!(c.dpdk.rx_ring, 512);
        assert_eq!(c.dpdk.tx_ring, 1024);
        assert_eq!(c.dpdk.queues, 1);
        assert_eq!(c.dpdk.lcores, None);
        // Sized from the rings: 2 x (512 + 2 x 1024 + 256) + 1024.
        assert_eq!(c.dpdk.pool_size(2), 2 * (512 + 2048 + 256) + 1024);
        // Never below 4095; an explicit size wins.
        assert_eq!(Dpdk::default().pool_size(1), 1024 + 2048 + 256 + 1024);
        let small = Dpdk {
            rx_ring: 32,
            tx_ring: 32,
            ..Dpdk::default()
        };
        assert_eq!(small.pool_size(1), 4095);
        let explicit = Dpdk {
            mbufs: 20_000,
            ..Dpdk::default()
        };
        assert_eq!(explicit.pool_size(8), 20_000);
        for bad in [
            "[dpdk]\nrx_ring = 16\n",
            "[dpdk]\ntx_ring = 20000\n",
            "[dpdk]\nmbufs = 100\n",
            "[dpdk]\nport = \"a b\"\n",
            "[dpdk]\nqueues = 0\n",
            "[dpdk]\nlcore = \"1\"\n",
        ] {
            let err = Config::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("dpdk") || err.contains("queues"),
                "{bad}: {err}"
            );
        }
    }

    /// `dataplane_for_run` for `sluice run --port 7 --app tcp-echo EXTRA...`.
    fn dataplane_for_args(extra: &[&str]) -> anyhow::Result<Dataplane> {
        use clap::Parser;
        let mut argv = vec!["sluice", "run", "--port", "7", "--app", "tcp-echo"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("not run")
        };
        dataplane_for_run(&run)
    }

    #[test]
    fn config_empty_file_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.control.addr.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn config_example_file_valid() {
        let text = include_str!("../../deploy/sluice.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.routes.len() >= 3);
    }

    #[test]
    fn config_unknown_key_named() {
        let e = Config::parse("[limits]\nmax_conections = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_conections"), "{e}");
    }

    #[test]
    fn config_wrong_type_named() {
        let e = Config::parse("[limits]\nmax_connections = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
    }

    #[test]
    fn route_proxy_without_upstream_rejected() {
        let e = Config::parse("[[route]]\npath = \"/p\"\nkind = \"proxy\"\n").unwrap_err();
        assert!(e.to_string().starts_with("route[0].upstream"), "{e}");
    }

    #[test]
    fn route_bad_close_code_rejected() {
        let e = Config::parse("[[route]]\npath = \"/a\"\nslow_close_code = 1000\n").unwrap_err();
        assert!(e.to_string().starts_with("route[0].slow_close_code"), "{e}");
    }

    #[test]
    fn route_duplicate_path_rejected() {
        let e = Config::parse("[[route]]\npath = \"/a\"\n[[route]]\npath = \"/a\"\n").unwrap_err();
        assert!(e.to_string().starts_with("route[1].path"), "{e}");
    }

    #[test]
    fn route_lookup_ignores_query() {
        let c = Config::parse("[[route]]\npath = \"/a\"\nkind = \"echo\"\n").unwrap();
        assert_eq!(c.route("/a?x=1").map(|(i, _)| i), Some(0));
        assert!(c.route("/b").is_none());
    }

    #[test]
    fn dataplane_defaults_valid_and_match_worker_defaults() {
        let d = Dataplane::default();
        d.validate().unwrap();
        assert_eq!(d.backoff(), dataplane::Backoff::default());
    }

    #[test]
    fn dataplane_keys_parsed() {
        let c = Config::parse(
            "[dataplane]\nidle_spin = 0\nidle_yield = 5\nidle_poll_timeout_us = 250\n\
             stop_grace_ms = 0\numem_frames = 4096\nframe_size = 4096\nring_size = 512\n",
        )
        .unwrap();
        let d = c.dataplane;
        assert_eq!(
            (d.idle_spin, d.idle_yield, d.idle_poll_timeout_us),
            (0, 5, 250)
        );
        assert_eq!(
            (d.umem_frames, d.frame_size, d.ring_size),
            (4096, 4096, 512)
        );
        assert_eq!(d.stop_grace(), Duration::ZERO);
    }

    #[test]
    fn dataplane_redirect_all_tcp_true_false_auto_parsed() {
        for (text, want) in [
            ("true", RedirectAllTcp::All),
            ("false", RedirectAllTcp::Ports),
            ("\"auto\"", RedirectAllTcp::Auto),
        ] {
            let c = Config::parse(&format!("[dataplane]\nredirect_all_tcp = {text}\n")).unwrap();
            assert_eq!(c.dataplane.redirect_all_tcp, want, "{text}");
        }
        assert_eq!(
            Config::parse("").unwrap().dataplane.redirect_all_tcp,
            RedirectAllTcp::Auto
        );
        let e = Config::parse("[dataplane]\nredirect_all_tcp = \"yes\"\n").unwrap_err();
        assert!(e.to_string().contains("redirect_all_tcp"), "{e}");
    }

    #[test]
    fn redirect_all_tcp_auto_follows_kernel_ownership() {
        assert!(RedirectAllTcp::Auto.redirects_all(|| false));
        assert!(!RedirectAllTcp::Auto.redirects_all(|| true));
        assert!(RedirectAllTcp::All.redirects_all(|| true));
        assert!(!RedirectAllTcp::Ports.redirects_all(|| false));
    }

    #[test]
    fn redirect_all_tcp_flag_bare_true_valued_and_over_file() {
        let dir = std::env::temp_dir().join(format!("sluice-rat-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("d.toml");
        std::fs::write(&file, "[dataplane]\nredirect_all_tcp = false\n").unwrap();
        let path = file.to_str().unwrap();
        let run = |extra: &[&str]| dataplane_for_args(extra).unwrap().redirect_all_tcp;
        assert_eq!(run(&[]), RedirectAllTcp::Auto);
        assert_eq!(run(&["--redirect-all-tcp"]), RedirectAllTcp::All);
        assert_eq!(run(&["--redirect-all-tcp", "false"]), RedirectAllTcp::Ports);
        assert_eq!(run(&["--redirect-all-tcp=auto"]), RedirectAllTcp::Auto);
        assert_eq!(run(&["--config", path]), RedirectAllTcp::Ports);
        assert_eq!(
            run(&["--config", path, "--redirect-all-tcp"]),
            RedirectAllTcp::All
        );
        // A bare flag followed by another option still means `true`.
        assert_eq!(
            run(&["--redirect-all-tcp", "--ring-size", "256"]),
            RedirectAllTcp::All
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dataplane_out_of_range_rejected_with_key_and_flag() {
        for (text, key) in [
            ("ring_size = 1000", "dataplane.ring_size (--ring-size)"),
            ("ring_size = 32", "dataplane.ring_size"),
            ("ring_size = 65536", "dataplane.ring_size"),
            ("frame_size = 3000", "dataplane.frame_size (--frame-size)"),
            ("umem_frames = 8", "dataplane.umem_frames (--umem-frames)"),
            ("idle_poll_timeout_us = 0", "dataplane.idle_poll_timeout_us"),
            ("stop_grace_ms = 600001", "dataplane.stop_grace_ms"),
            ("idle_spin = 100000001", "dataplane.idle_spin"),
        ] {
            let e = Config::parse(&format!("[dataplane]\n{text}\n")).unwrap_err();
            assert!(e.to_string().starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn dataplane_flags_override_file_and_are_validated() {
        let dir = std::env::temp_dir().join(format!("sluice-dp-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("d.toml");
        std::fs::write(&file, "[dataplane]\nring_size = 256\nidle_spin = 7\n").unwrap();
        let run = dataplane_for_args;
        let path = file.to_str().unwrap();
        let d = run(&["--config", path, "--idle-spin", "9"]).unwrap();
        assert_eq!((d.ring_size, d.idle_spin), (256, 9));
        let e = run(&["--ring-size", "100"]).unwrap_err();
        assert!(e.to_string().contains("--ring-size"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn upstream_url_parsed() {
        let u = parse_upstream("ws://127.0.0.1:9000/x").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path, "/x");
        assert!(parse_upstream("wss://a:1/").is_err());
        assert!(parse_upstream("ws://a/").is_err());
    }
}
