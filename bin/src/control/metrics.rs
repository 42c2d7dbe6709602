//! Gateway metrics, shared by the workers and the control thread, rendered as Prometheus
//! text by `/metrics`. Every update is an atomic operation; nothing here blocks a worker
//! except the first use of a new label value (a short write lock inside `Family`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
        Metrics { registry, ..m }
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

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
}
