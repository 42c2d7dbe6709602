//! Gateway metrics, shared by the workers and the control thread, rendered as Prometheus
//! text by `/metrics`. Every update is an atomic operation; nothing here blocks a worker
//! except the first use of a new label value (a short write lock inside `Family`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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

/// All gateway metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections accepted by the transport.
    pub connections_accepted: Counter,
    /// Connections refused at accept, by reason (`max_connections`, `max_connections_per_ip`).
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Connections currently open.
    pub connections_open: Gauge,
    /// Upgrade handshakes by result (`ok`, `not_found`, `origin`, `bad_request`, `timeout`).
    pub handshakes: Family<ResultLabel, Counter>,
    /// Messages received from clients, per route.
    pub messages_in: Family<RouteLabel, Counter>,
    /// Messages queued to clients, per route.
    pub messages_out: Family<RouteLabel, Counter>,
    /// Bytes received from clients (TCP payload), per route.
    pub bytes_in: Family<RouteLabel, Counter>,
    /// Bytes written to clients (TCP payload), per route.
    pub bytes_out: Family<RouteLabel, Counter>,
    /// Messages not delivered, or connections closed, by reason.
    pub drops: Family<ReasonLabel, Counter>,
    /// Messages accepted for publishing (ingest and clients).
    pub published: Counter,
    /// Seconds spent in the gateway per received batch of bytes (parse, route, fan-out).
    pub processing_seconds: Histogram,
    /// AF_XDP: TCP connections of each worker's stack by state (refreshed every 100 ms).
    pub tcp_connections: Family<WorkerStateLabel, Gauge>,
    /// AF_XDP: segments retransmitted by each worker's stack.
    pub tcp_retransmits: Family<WorkerLabel, Counter>,
    /// AF_XDP: frames the XDP program redirected to the sockets, passed to the kernel, or
    /// dropped.
    pub xdp_packets: Family<ActionLabel, Counter>,
    /// Fraction of each worker's loop iterations (AF_XDP) or wall time (kernel) that did
    /// work, over the last ~100 ms.
    pub worker_busy_ratio: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh, registered set.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let m = Metrics {
            registry: Registry::default(),
            connections_accepted: Counter::default(),
            connections_refused: Family::default(),
            connections_open: Gauge::default(),
            handshakes: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            drops: Family::default(),
            published: Counter::default(),
            processing_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 10)),
            tcp_connections: Family::default(),
            tcp_retransmits: Family::default(),
            xdp_packets: Family::default(),
            worker_busy_ratio: Family::default(),
        };
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused at accept, by reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections currently open",
            m.connections_open.clone(),
        );
        registry.register(
            "handshakes",
            "WebSocket upgrade handshakes by result",
            m.handshakes.clone(),
        );
        registry.register(
            "messages_in",
            "WebSocket messages received from clients",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "WebSocket messages queued to clients",
            m.messages_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register("bytes_out", "Bytes sent to clients", m.bytes_out.clone());
        registry.register(
            "drops",
            "Messages dropped or connections closed by policy, by reason",
            m.drops.clone(),
        );
        registry.register(
            "published",
            "Messages accepted for publishing",
            m.published.clone(),
        );
        registry.register(
            "processing_seconds",
            "Gateway processing time per received batch",
            m.processing_seconds.clone(),
        );
        registry.register(
            "tcp_connections",
            "TCP connections of the AF_XDP stacks by worker and state",
            m.tcp_connections.clone(),
        );
        registry.register(
            "tcp_retransmits",
            "TCP segments retransmitted by the AF_XDP stacks",
            m.tcp_retransmits.clone(),
        );
        registry.register(
            "xdp_packets",
            "Frames handled by the XDP program, by action",
            m.xdp_packets.clone(),
        );
        registry.register(
            "worker_busy_ratio",
            "Fraction of a worker's loop that did work (last ~100 ms)",
            m.worker_busy_ratio.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Sets worker `worker`'s busy ratio.
    pub fn set_busy(&self, worker: usize, ratio: f64) {
        self.worker_busy_ratio
            .get_or_create(&WorkerLabel {
                worker: worker.to_string(),
            })
            .set(ratio);
    }

    /// Counts a drop for `reason`.
    pub fn dropped(&self, reason: &str) {
        self.drops
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a handshake with `result`.
    pub fn handshake(&self, result: &str) {
        self.handshakes
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a refused connection.
    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
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
        m.messages_in.get_or_create(&route_label("/ws")).inc_by(3);
        m.dropped("slow_consumer");
        let text = m.render();
        assert!(
            text.contains("sluice_messages_in_total{route=\"/ws\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sluice_drops_total{reason=\"slow_consumer\"} 1"),
            "{text}"
        );
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
