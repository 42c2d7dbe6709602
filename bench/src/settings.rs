//! Run settings of the load generator, their bounds and validation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::tls::TlsOptions;

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 60_000;
/// Largest message, in bytes.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// Most messages in flight per connection.
pub const MAX_PIPELINE: usize = 4096;
/// Most generator threads.
pub const MAX_THREADS: usize = 256;
/// Highest open-loop rate, messages per second over all connections.
pub const MAX_RATE: f64 = 100_000_000.0;
/// Longest warm-up or measurement, in seconds.
pub const MAX_SECONDS: f64 = 86_400.0;
/// Bound on in-flight bytes per connection (pipeline x message size).
pub const MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// Wire protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// WebSocket: HTTP upgrade, masked binary frames, echoed frames checked.
    Ws,
    /// Raw TCP: fixed-size messages echoed back byte for byte.
    Tcp,
}

/// How sends are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each connection keeps `pipeline` messages in flight and sends on every reply.
    Closed,
    /// Messages are due at a fixed total rate; latency counts from the intended send time.
    Open,
}

/// Everything one run needs; `Serialize` so the JSON report carries it.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Target address.
    pub target: SocketAddr,
    /// `Host` header value for WebSocket (the target as given).
    pub host: String,
    /// Protocol.
    pub proto: Proto,
    /// Consecutive ports from the target's: connection `i` goes to port `target + i % ports`
    /// (with `ports` = threads, thread `t` talks to port `target + t` only).
    pub ports: u16,
    /// Number of connections.
    pub connections: usize,
    /// Payload bytes per message.
    pub message_size: usize,
    /// Messages in flight per connection (closed loop: always; open loop: at most).
    pub pipeline: usize,
    /// Warm-up seconds (traffic flows, nothing recorded).
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Closed or open loop.
    pub mode: Mode,
    /// Open-loop rate, messages per second over all connections.
    pub rate: Option<f64>,
    /// Generator threads, each with its own poll loop and share of the connections.
    pub threads: usize,
    /// CPUs to pin threads to (thread i on `pin[i % len]`); empty means no pinning.
    pub pin: Vec<usize>,
    /// Busy-poll instead of blocking in epoll.
    pub spin: bool,
    /// Seconds allowed to connect (and finish the WebSocket upgrade).
    pub connect_timeout_s: f64,
    /// Seconds allowed after the measurement for in-flight replies to come back.
    pub drain_timeout_s: f64,
    /// TLS (wss, or TLS under `--proto tcp`); `None`: plain TCP.
    pub tls: Option<TlsOptions>,
}

/// A setting outside its bounds.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

fn secs_ok(name: &str, v: f64, allow_zero: bool) -> Result<(), SettingsError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > MAX_SECONDS {
        return Err(SettingsError(format!(
            "{name} must be {} and at most {MAX_SECONDS} s, got {v}",
            if allow_zero { ">= 0" } else { "> 0" }
        )));
    }
    Ok(())
}

impl Settings {
    /// Defaults for a target: 1 ws connection, 64 B, closed loop, 1 s warm-up, 5 s run.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            host: target.to_string(),
            proto: Proto::Ws,
            ports: 1,
            connections: 1,
            message_size: 64,
            pipeline: 1,
            warmup_s: 1.0,
            duration_s: 5.0,
            mode: Mode::Closed,
            rate: None,
            threads: 1,
            pin: Vec::new(),
            spin: false,
            connect_timeout_s: 5.0,
            drain_timeout_s: 2.0,
            tls: None,
        }
    }

    /// Checks every bound; a run only starts with validated settings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: String| Err(SettingsError(m));
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return bad(format!("connections must be 1..={MAX_CONNECTIONS}"));
        }
        if self.ports == 0 || u32::from(self.target.port()) + u32::from(self.ports) > 65_536 {
            return bad("ports must be >= 1 and end at port 65535 or below".into());
        }
        if self.message_size == 0 || self.message_size > MAX_MESSAGE_SIZE {
            return bad(format!("message size must be 1..={MAX_MESSAGE_SIZE}"));
        }
        if self.pipeline == 0 || self.pipeline > MAX_PIPELINE {
            return bad(format!("pipeline must be 1..={MAX_PIPELINE}"));
        }
        if self.pipeline.saturating_mul(self.message_size) > MAX_INFLIGHT_BYTES {
            return bad(format!(
                "pipeline x message size must be at most {MAX_INFLIGHT_BYTES} bytes"
            ));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return bad(format!("threads must be 1..={MAX_THREADS}"));
        }
        if self.threads > self.connections {
            return bad("threads must not exceed connections".into());
        }
        secs_ok("warmup", self.warmup_s, true)?;
        secs_ok("duration", self.duration_s, false)?;
        secs_ok("connect timeout", self.connect_timeout_s, false)?;
        secs_ok("drain timeout", self.drain_timeout_s, true)?;
        match (self.mode, self.rate) {
            (Mode::Open, Some(r)) if r.is_finite() && r > 0.0 && r <= MAX_RATE => Ok(()),
            (Mode::Open, _) => bad(format!("open loop needs --rate in (0, {MAX_RATE}]")),
            (Mode::Closed, Some(_)) => bad("--rate applies to --mode open only".into()),
            (Mode::Closed, None) => Ok(()),
        }
    }

    /// The address connection `id` connects to (see [`Settings::ports`]).
    pub fn target_of(&self, id: u32) -> SocketAddr {
        let mut a = self.target;
        let span = u32::from(self.ports.max(1));
        // validate() keeps target port + ports - 1 within u16.
        let port = u32::from(a.port()) + id % span;
        a.set_port(u16::try_from(port).unwrap_or(a.port()));
        a
    }

    /// Warm-up as a duration.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }

    /// Measurement as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

/// Parses a CPU list such as `0,2-3` into `[0, 2, 3]`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, SettingsError> {
    let err = || SettingsError(format!("bad CPU list {s:?} (expected e.g. 0,2-3)"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| err())?;
                let b: usize = b.trim().parse().map_err(|_| err())?;
                if a > b || b - a >= 4096 {
                    return Err(err());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| err())?),
        }
    }
    if out.is_empty() {
        return Err(err());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings::new("127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn cpu_list_ranges_expand() {
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), vec![0, 2, 3]);
    }

    #[test]
    fn cpu_list_garbage_rejected() {
        assert!(parse_cpu_list("a-b").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn settings_defaults_valid() {
        assert_eq!(base().validate(), Ok(()));
    }

    #[test]
    fn settings_open_without_rate_rejected() {
        let mut s = base();
        s.mode = Mode::Open;
        assert!(s.validate().is_err());
        s.rate = Some(1000.0);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn settings_zero_connections_rejected() {
        let mut s = base();
        s.connections = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn settings_ports_spread_connections_round_robin() {
        let mut s = base();
        s.ports = 3;
        s.connections = 6;
        assert_eq!(s.validate(), Ok(()));
        let ports: Vec<u16> = (0..6).map(|i| s.target_of(i).port()).collect();
        assert_eq!(ports, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn settings_ports_past_65535_rejected() {
        let mut s = Settings::new("127.0.0.1:65535".parse().unwrap());
        assert_eq!(s.validate(), Ok(()));
        s.ports = 2;
        assert!(s.validate().is_err());
        s.ports = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn settings_huge_inflight_rejected() {
        let mut s = base();
        s.pipeline = MAX_PIPELINE;
        s.message_size = MAX_MESSAGE_SIZE;
        assert!(s.validate().is_err());
    }
}
