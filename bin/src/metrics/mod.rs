//! Gateway metrics, rendered as Prometheus text by `/metrics`. Workers write only their
//! own [`WorkerStats`] block (plain per-worker memory, see [`worker`]); the control thread
//! merges the blocks when `/metrics` is scraped. The series names are those the gateway
//! always had (`sluice_messages_in_total{route}`, ...).

pub mod worker;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use worker::{Auth, Drop, Handshake, Refused, TcpTotals, Tls, WorkerSet, WorkerStats};

/// Labels `{route="/ws"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route path (or `-` before routing).
    pub route: String,
}

/// Labels `{reason="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Labels `{result="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome.
    pub result: String,
}

/// Labels `{worker="0"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// Worker (queue) index.
    pub worker: String,
}

/// Labels `{worker="0",state="Established"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerStateLabel {
    /// Worker (queue) index.
    pub worker: String,
    /// RFC 9293 state name.
    pub state: String,
}

/// Labels `{action="redirected"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// What the XDP program did with a frame.
    pub action: String,
}

/// Labels `{stat="ipackets"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatLabel {
    /// A DPDK port counter: an `rte_eth_stats` field, or `xstat_` and the driver's name.
    pub stat: String,
}

/// Labels `{port="8443",name="default"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// The TLS port.
    pub port: String,
    /// `default` or the SNI name.
    pub name: String,
}

/// The wss:// certificates' series (written by the thread that loads them).
#[derive(Debug, Default)]
pub struct TlsMetrics {
    /// Certificate reloads (SIGHUP), by result (`ok`, `failed`).
    pub reloads: Family<ResultLabel, Counter>,
    /// notAfter of each loaded certificate, Unix seconds.
    pub expiry: Family<CertLabel, Gauge>,
}

impl TlsMetrics {
    /// Counts a reload.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Records the loaded certificates' expiries (`(port, name, notAfter)`), replacing
    /// the previous ones.
    pub fn loaded(&self, certs: impl IntoIterator<Item = (u16, String, i64)>) {
        self.expiry.clear();
        for (port, name, not_after) in certs {
            self.expiry
                .get_or_create(&CertLabel {
                    port: port.to_string(),
                    name,
                })
                .set(not_after);
        }
    }
}

/// All gateway metrics: the per-worker blocks ([`WorkerSet`], merged on scrape) and the
/// few process-wide ones written by threads that are not workers.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Every worker's block (connections, handshakes, messages, bytes, drops, processing
    /// time, TCP states, busy ratio).
    pub workers: Arc<WorkerSet>,
    /// Messages accepted for publishing (ingest and clients; written by the broker).
    pub published: Counter,
    /// AF_XDP: frames the XDP program redirected to the sockets, passed to the kernel, or
    /// dropped (written by the main thread).
    pub xdp_packets: Family<ActionLabel, Counter>,
    /// DPDK: the port's counters (`rte_eth_stats` fields and the driver's xstats), by name
    /// (written by the main thread).
    pub dpdk_port: Family<StatLabel, Counter>,
    /// Cluster mode only (`[cluster]`): the NATS link's series.
    pub cluster: Option<Arc<ClusterMetrics>>,
    /// The wss:// certificates (reloads, expiry).
    pub tls: Arc<TlsMetrics>,
}

/// The cluster link's series (written by the cluster thread and the broker).
#[derive(Debug)]
pub struct ClusterMetrics {
    /// Local publications handed to the NATS client.
    pub published: Counter,
    /// Publications from other nodes handed to the broker.
    pub received: Counter,
    /// Publications lost between nodes, by reason.
    pub dropped_by: Family<ReasonLabel, Counter>,
    /// Reconnections to NATS after a lost connection.
    pub reconnects: Counter,
    /// 1 while connected to NATS.
    pub connected: Gauge,
    /// NATS subscriptions held (topics with local subscribers, and lingering ones).
    pub subscriptions: Gauge,
    /// From the publishing node's publish to this node's receipt (wall clocks of two
    /// nodes: as good as their clock sync).
    pub delay: Histogram,
}

impl ClusterMetrics {
    /// Counts one publication lost between nodes.
    pub fn dropped(&self, reason: &str) {
        self.dropped_by
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics {
            published: Counter::default(),
            received: Counter::default(),
            dropped_by: Family::default(),
            reconnects: Counter::default(),
            connected: Gauge::default(),
            subscriptions: Gauge::default(),
            // 50 us .. ~6.5 s.
            delay: Histogram::new(exponential_buckets(50e-6, 2.0, 18)),
        };
        let r = registry.sub_registry_with_prefix("cluster");
        r.register(
            "published",
            "Local publications handed to NATS for the other nodes",
            m.published.clone(),
        );
        r.register(
            "received",
            "Publications received from other nodes over NATS",
            m.received.clone(),
        );
        r.register(
            "dropped",
            "Publications lost between nodes, by reason",
            m.dropped_by.clone(),
        );
        r.register(
            "reconnects",
            "Reconnections to NATS after a lost connection",
            m.reconnects.clone(),
        );
        r.register(
            "connected",
            "1 while connected to NATS",
            m.connected.clone(),
        );
        r.register(
            "subscriptions",
            "NATS subscriptions held by this node",
            m.subscriptions.clone(),
        );
        r.register(
            "delay_seconds",
            "Publish on another node to receipt here (wall clocks)",
            m.delay.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh, registered set.
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// A fresh, registered set, with the cluster link's series when `cluster` is set.
    pub fn build(cluster: bool) -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let workers = Arc::new(WorkerSet::default());
        let published = Counter::default();
        let xdp_packets = Family::<ActionLabel, Counter>::default();
        registry.register(
            "published",
            "Messages accepted for publishing",
            published.clone(),
        );
        registry.register(
            "xdp_packets",
            "Frames handled by the XDP program, by action",
            xdp_packets.clone(),
        );
        let dpdk_port = Family::<StatLabel, Counter>::default();
        registry.register(
            "dpdk_port",
            "DPDK backend: the port's counters (rte_eth_stats fields, xstat_* from the driver)",
            dpdk_port.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&workers)));
        let tls = Arc::new(TlsMetrics::default());
        registry.register(
            "tls_reloads",
            "TLS certificate reloads (SIGHUP), by result",
            tls.reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of each loaded TLS certificate (Unix time)",
            tls.expiry.clone(),
        );
        let cluster = cluster.then(|| Arc::new(ClusterMetrics::register(&mut registry)));
        Metrics {
            registry,
            workers,
            published,
            xdp_packets,
            dpdk_port,
            cluster,
            tls,
        }
    }

    /// Registers worker `index`'s block with `routes` (paths in configuration order).
    pub fn worker(&self, index: usize, routes: &[String]) -> Arc<WorkerStats> {
        self.workers.add(index, routes)
    }

    /// Counts a drop outside the workers (control thread, broker).
    pub fn dropped(&self, reason: Drop) {
        self.workers.dropped(reason);
    }

    /// Renders the OpenMetrics 1.0 text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Renders the classic Prometheus text format 0.0.4 (what a scraper gets unless its
    /// `Accept` header asks for OpenMetrics).
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }
}

/// Whether an `Accept` header value asks for OpenMetrics text (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...;q=0.5,text/plain;version=0.0.4;q=0.4`).
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut best_om = -1.0f64;
    let mut best_text = -1.0f64;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let kind = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        if kind == "application/openmetrics-text" {
            best_om = best_om.max(q);
        } else if kind == "text/plain" || kind == "*/*" || kind == "text/*" {
            best_text = best_text.max(q);
        }
    }
    best_om > 0.0 && best_om >= best_text
}

/// Rewrites OpenMetrics text as Prometheus 0.0.4 text: no `# EOF` or `# UNIT`, counter
/// families named by their `_total` sample, `unknown` as `untyped`.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                } else {
                    out.push_str(&format!("{prefix}{name} {tail}\n"));
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The `route` label value for a route path.
pub fn route_label(path: &str) -> RouteLabel {
    RouteLabel {
        route: path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn metrics_counters_rendered_with_prefix() {
        let m = Metrics::new();
        let w0 = m.worker(0, &["/ws".to_string()]);
        let w1 = m.worker(1, &["/ws".to_string()]);
        w0.route(Some(0)).msgs_in.add(2);
        w1.route(Some(0)).msgs_in.add(1);
        w1.dropped(Drop::SlowConsumerDropped);
        m.dropped(Drop::WorkerQueueFull);
        w0.processing(std::time::Duration::from_micros(3));
        let text = m.render();
        assert!(
            text.contains("sluice_messages_in_total{route=\"/ws\"} 3"),
            "per-worker counters merged on scrape: {text}"
        );
        assert!(
            text.contains("sluice_drops_total{reason=\"slow_consumer_dropped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_drops_total{reason=\"worker_queue_full\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sluice_processing_seconds_bucket{le=\"4e-6\"} 1")
                || text.contains("sluice_processing_seconds_bucket{le=\"0.000004\"} 1"),
            "{text}"
        );
        assert!(text.contains("sluice_processing_seconds_count 1"), "{text}");
        assert!(text.contains("sluice_processing_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn prometheus_text_counter_named_by_total_no_eof() {
        let m = Metrics::new();
        m.published.inc();
        let text = m.render_prometheus();
        assert!(
            text.contains("# TYPE sluice_published_total counter"),
            "{text}"
        );
        assert!(text.contains("sluice_published_total 1"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE sluice_processing_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn accept_header_negotiation_prefers_higher_q() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
        ));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(wants_openmetrics("application/openmetrics-text"));
    }
}
