//! Results of a run: per-thread statistics, their merge, the human table and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpustat::CpuBusy;
use crate::settings::{Mode, Settings};

/// Highest latency the histograms track, in nanoseconds (larger values are clamped).
pub const MAX_TRACKED_NS: u64 = 100_000_000_000;

/// Most error messages kept as samples per thread.
pub const MAX_ERROR_SAMPLES: usize = 8;

/// Why a connection failed; every failure is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The target refused the connection (RST to the SYN).
    ConnectRefused,
    /// Connecting (and the WebSocket upgrade) did not finish within the connect timeout.
    ConnectTimeout,
    /// Connecting failed for another reason.
    ConnectFailed,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection (FIN or WebSocket Close) during the run.
    PeerClosed,
    /// The WebSocket upgrade was answered with something other than a valid 101.
    HandshakeRejected,
    /// The peer sent a malformed or unexpected frame.
    Protocol,
    /// An echo did not match what was sent (content, length or type).
    EchoMismatch,
    /// TLS failed: handshake (certificate, alert, protocol) or a bad record later.
    Tls,
    /// Any other I/O error.
    Io,
}

impl ErrorKind {
    /// Short name used in the table and the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::ConnectFailed => "connect_failed",
            Self::Reset => "reset",
            Self::PeerClosed => "peer_closed",
            Self::HandshakeRejected => "handshake_rejected",
            Self::Protocol => "protocol",
            Self::EchoMismatch => "echo_mismatch",
            Self::Tls => "tls",
            Self::Io => "io",
        }
    }
}

/// Counters and the latency histogram of one generator thread.
#[derive(Debug)]
pub struct WorkerStats {
    /// Latencies in nanoseconds of replies whose send (closed loop) or intended send (open
    /// loop) time fell inside the measurement window.
    pub hist: Histogram<u64>,
    /// Connections that reached the running state.
    pub connected: u64,
    /// Messages sent, warm-up and drain included.
    pub sent: u64,
    /// Replies received and checked, warm-up and drain included.
    pub replies: u64,
    /// Messages still unanswered when the drain timeout ended the run.
    pub unanswered: u64,
    /// Open loop: messages that were due by the end of the measurement but never sent
    /// because their connection's pipeline stayed full.
    pub unsent: u64,
    /// TLS connections whose handshake was full.
    pub tls_full: u64,
    /// TLS connections whose handshake resumed an earlier session.
    pub tls_resumed: u64,
    /// Failures by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first few failure messages.
    pub error_samples: Vec<String>,
}

impl WorkerStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            hist: new_histogram(),
            connected: 0,
            sent: 0,
            replies: 0,
            unanswered: 0,
            unsent: 0,
            tls_full: 0,
            tls_resumed: 0,
            errors: BTreeMap::new(),
            error_samples: Vec::new(),
        }
    }

    /// Counts a failure and keeps its message if there is room.
    pub fn error(&mut self, kind: ErrorKind, msg: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(format!("{}: {msg}", kind.name()));
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        // Both histograms have the same bounds; `add` only fails on a range mismatch.
        if self.hist.add(&other.hist).is_err() {
            self.error(ErrorKind::Io, "histogram merge failed".into());
        }
        self.connected += other.connected;
        self.sent += other.sent;
        self.replies += other.replies;
        self.unanswered += other.unanswered;
        self.unsent += other.unsent;
        self.tls_full += other.tls_full;
        self.tls_resumed += other.tls_resumed;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        for s in other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES {
                self.error_samples.push(s);
            }
        }
    }
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram of 3 significant digits from 1 ns to [`MAX_TRACKED_NS`].
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5):
    // no input can make this fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("constant histogram bounds")
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyUs {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One point of the percentile distribution (for plots).
#[derive(Debug, Clone, Serialize)]
pub struct PercentilePoint {
    /// Percentile, 0..=100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: f64,
    /// Samples at or below this latency.
    pub count: u64,
}

/// The outcome of a run, printed as a table and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What this report measured ("run" or "ceiling").
    pub kind: String,
    /// The settings of the run.
    pub settings: Settings,
    /// How the client waited for events ("spin" or "blocking").
    pub client_wait: String,
    /// Connections that reached the running state.
    pub connected: u64,
    /// Replies recorded in the measurement window.
    pub messages: u64,
    /// Recorded replies per second of measurement.
    pub msgs_per_s: f64,
    /// Payload throughput of recorded replies, one direction, bytes per second.
    pub payload_bytes_per_s: f64,
    /// Latency summary.
    pub latency_us: LatencyUs,
    /// The histogram's percentile distribution.
    pub percentiles: Vec<PercentilePoint>,
    /// Messages sent, warm-up and drain included.
    pub sent: u64,
    /// Replies received and checked, warm-up and drain included.
    pub replies: u64,
    /// Messages unanswered at the end of the drain.
    pub unanswered: u64,
    /// Open loop: messages due but never sent (pipeline full).
    pub unsent: u64,
    /// TLS handshakes completed in full (warm-up and drain included; 0 without TLS).
    pub tls_full: u64,
    /// TLS handshakes that resumed a session (ticket or session id).
    pub tls_resumed: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Total failures.
    pub error_total: u64,
    /// The first few failure messages.
    pub error_samples: Vec<String>,
    /// What every CPU did during the measurement window (from `/proc/stat`; empty when
    /// it could not be sampled).
    pub cpu_busy: Vec<CpuBusy>,
}

fn us(ns: f64) -> f64 {
    (ns / 10.0).round() / 100.0
}

impl Report {
    /// Merges the threads' statistics into a report.
    pub fn from_stats(kind: &str, settings: &Settings, stats: Vec<WorkerStats>) -> Self {
        let mut total = WorkerStats::new();
        for s in stats {
            total.merge(s);
        }
        let h = &total.hist;
        let q = |p: f64| us(h.value_at_quantile(p) as f64);
        let latency_us = LatencyUs {
            min: us(h.min() as f64),
            mean: us(h.mean()),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: us(h.max() as f64),
        };
        let percentiles = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(4)
                .map(|v| PercentilePoint {
                    percentile: v.quantile_iterated_to() * 100.0,
                    latency_us: us(v.value_iterated_to() as f64),
                    count: v.count_since_last_iteration(),
                })
                .collect()
        };
        let messages = h.len();
        let secs = settings.duration_s;
        let error_total = total.errors.values().sum();
        Self {
            kind: kind.to_string(),
            settings: settings.clone(),
            client_wait: if settings.spin { "spin" } else { "blocking" }.to_string(),
            connected: total.connected,
            messages,
            msgs_per_s: messages as f64 / secs,
            payload_bytes_per_s: (messages as f64) * (settings.message_size as f64) / secs,
            latency_us,
            percentiles,
            sent: total.sent,
            replies: total.replies,
            unanswered: total.unanswered,
            unsent: total.unsent,
            tls_full: total.tls_full,
            tls_resumed: total.tls_resumed,
            errors: total
                .errors
                .iter()
                .map(|(k, v)| (k.name().to_string(), *v))
                .collect(),
            error_total,
            error_samples: total.error_samples,
            cpu_busy: Vec::new(),
        }
    }

    /// True when every connection ran and every echo matched.
    pub fn is_ok(&self) -> bool {
        self.error_total == 0 && self.connected == self.settings.connections as u64
    }

    /// The human-readable table.
    pub fn human(&self) -> String {
        let s = &self.settings;
        let l = &self.latency_us;
        let mut out = String::new();
        let mode = match (s.mode, s.rate) {
            (Mode::Open, Some(r)) => format!("open loop at {r} msg/s"),
            _ => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "{} {} {:?} x{} conns, {} B, pipeline {}, {mode}, {} thread(s){}, client {}, \
             warm-up {} s, measured {} s",
            self.kind,
            s.target,
            s.proto,
            s.connections,
            s.message_size,
            s.pipeline,
            s.threads,
            if s.pin.is_empty() {
                String::new()
            } else {
                format!(" pinned {:?}", s.pin)
            },
            self.client_wait,
            s.warmup_s,
            s.duration_s,
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>8}",
            "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "mean us", "msgs/s", "errors"
        );
        let _ = writeln!(
            out,
            "{:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.0} {:>8}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean, self.msgs_per_s, self.error_total
        );
        let _ = writeln!(
            out,
            "connected {}/{}, recorded {}, sent {}, replies {}, unanswered {}, unsent {}",
            self.connected,
            s.connections,
            self.messages,
            self.sent,
            self.replies,
            self.unanswered,
            self.unsent
        );
        if s.tls.is_some() {
            let _ = writeln!(
                out,
                "tls handshakes: {} full, {} resumed",
                self.tls_full, self.tls_resumed
            );
        }
        if self.kind == "handshakes" {
            out.push_str(
                "msgs/s here = handshakes/s (connect, TLS, upgrade, close); latency = connect \
                 to 101; tls counts cover the recorded cycles\n",
            );
        }
        // The client's own CPUs (all of them when unpinned and few).
        let shown: Vec<&CpuBusy> = self
            .cpu_busy
            .iter()
            .filter(|c| s.pin.contains(&c.cpu) || (s.pin.is_empty() && self.cpu_busy.len() <= 16))
            .collect();
        if !shown.is_empty() {
            out.push_str("cpu busy during the measurement:");
            for c in shown {
                let _ = write!(
                    out,
                    " cpu{} {:.0}% (usr {:.0} sys {:.0} irq {:.0})",
                    c.cpu,
                    c.busy * 100.0,
                    c.user * 100.0,
                    c.system * 100.0,
                    c.irq * 100.0
                );
            }
            out.push('\n');
        }
        for (k, v) in &self.errors {
            let _ = writeln!(out, "error {k}: {v}");
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "  {e}");
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings::new("127.0.0.1:9".parse().unwrap());
        s.duration_s = 2.0;
        s.connections = 2;
        s
    }

    #[test]
    fn report_two_threads_merge_counts() {
        let mut a = WorkerStats::new();
        let mut b = WorkerStats::new();
        for v in [1_000u64, 2_000, 3_000] {
            a.hist.record(v).unwrap();
        }
        b.hist.record(1_000_000).unwrap();
        a.connected = 1;
        b.connected = 1;
        let r = Report::from_stats("run", &settings(), vec![a, b]);
        assert_eq!(r.messages, 4);
        assert_eq!(r.msgs_per_s, 2.0);
        assert!(r.is_ok());
        assert!((r.latency_us.max - 1000.0).abs() < 1.0);
        assert!((r.latency_us.p50 - 2.0).abs() < 0.01);
        assert!(!r.percentiles.is_empty());
    }

    #[test]
    fn report_with_error_not_ok() {
        let mut a = WorkerStats::new();
        a.connected = 2;
        a.error(ErrorKind::EchoMismatch, "byte 3".into());
        let r = Report::from_stats("run", &settings(), vec![a]);
        assert!(!r.is_ok());
        assert_eq!(r.errors.get("echo_mismatch"), Some(&1));
        assert!(r.human().contains("echo_mismatch"));
    }

    #[test]
    fn report_missing_connection_not_ok() {
        let mut a = WorkerStats::new();
        a.connected = 1;
        let r = Report::from_stats("run", &settings(), vec![a]);
        assert!(!r.is_ok());
    }
}
