//! `GET /healthz`: `200 ok` only while every worker's poll loop is alive; otherwise 503
//! with one line per worker that is starting, stalled, exited or panicked, and since when.
//!
//! Each worker (an AF_XDP queue's poll loop, or the kernel backend's event loop) stores
//! the instant of every loop iteration in its own heartbeat slot
//! ([`dataplane::health`]); the control thread reads the slots on each request. A worker
//! silent for longer than `control.worker_stall_ms` is stalled.
//!
//! `SLUICE_TEST_WORKER_FAULT=KIND:WORKER:MS` (**for tests only**, read once at start)
//! injects a fault: worker WORKER stalls (`stall`), exits (`exit`) or panics (`panic`)
//! MS milliseconds after its loop starts.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dataplane::{Clock, Fault, Heartbeats, WorkerStatus};

/// The test-only fault-injection variable.
pub const FAULT_VAR: &str = "SLUICE_TEST_WORKER_FAULT";

/// What `/healthz` reads.
#[derive(Debug, Clone)]
pub struct Health {
    /// Every worker's heartbeat slot.
    pub beats: Arc<Heartbeats>,
    /// The clock the workers beat with.
    pub clock: Clock,
    /// Silence longer than this is a stall.
    pub stall_after: Duration,
    /// Each worker's name (its thread name), by index.
    pub names: Vec<String>,
}

impl Health {
    /// Heartbeat slots for workers named `names`.
    pub fn new(names: Vec<String>, clock: Clock, stall_after: Duration) -> Health {
        Health {
            beats: Heartbeats::new(names.len()),
            clock,
            stall_after,
            names,
        }
    }

    /// `None` while every worker is alive, otherwise the 503 body.
    pub fn problems(&self) -> Option<String> {
        let now = self.clock.now();
        let statuses = self.beats.statuses(now, self.stall_after);
        report(
            &statuses,
            now,
            &self.names,
            self.stall_after,
            SystemTime::now(),
        )
    }
}

/// The 503 body for `statuses` (by worker index) at `now` (`wall` is the same moment on
/// the system clock, to say since when in Unix time), or `None` when all are alive.
pub fn report(
    statuses: &[WorkerStatus],
    now: tcp::Instant,
    names: &[String],
    stall_after: Duration,
    wall: SystemTime,
) -> Option<String> {
    let bad = statuses.iter().filter(|s| !s.is_alive()).count();
    if bad == 0 {
        return None;
    }
    let mut out = format!(
        "unhealthy: {bad} of {} worker(s) not polling\n",
        statuses.len()
    );
    for (i, s) in statuses.iter().enumerate() {
        let name = names.get(i).map_or("?", String::as_str);
        let since = |at: tcp::Instant| {
            let ago = now.saturating_since(at);
            let unix = wall
                .checked_sub(ago)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            format!("{:.1} s ago (unix time {unix:.3})", ago.as_secs_f64())
        };
        let line = match *s {
            WorkerStatus::Alive => continue,
            WorkerStatus::Starting => "starting: its poll loop has not run yet".to_string(),
            WorkerStatus::Stalled { since: at } => format!(
                "stalled: last poll loop {} (threshold {:.1} s)",
                since(at),
                stall_after.as_secs_f64()
            ),
            WorkerStatus::Exited { since: at } => {
                format!("exited: its poll loop ended {}", since(at))
            }
            WorkerStatus::Panicked { since: at } => {
                format!("panicked: its poll loop died {}", since(at))
            }
        };
        let _ = writeln!(out, "worker {i} ({name}): {line}");
    }
    Some(out)
}

/// The fault `SLUICE_TEST_WORKER_FAULT` asks for (testing only; unset: none).
pub fn fault_from_env() -> anyhow::Result<Option<Fault>> {
    match std::env::var(FAULT_VAR) {
        Err(_) => Ok(None),
        Ok(text) => {
            let fault = Fault::parse(&text).map_err(|e| anyhow::anyhow!("{FAULT_VAR}: {e}"))?;
            tracing::warn!(
                fault = %text,
                "{FAULT_VAR} is set: injecting a worker fault (testing only)"
            );
            Ok(Some(fault))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn report_all_alive_none() {
        let s = [WorkerStatus::Alive, WorkerStatus::Alive];
        let now = tcp::Instant::from_millis(10);
        assert!(report(&s, now, &[], Duration::from_secs(2), SystemTime::now()).is_none());
    }

    #[test]
    fn report_names_each_dead_worker_and_since_when() {
        let now = tcp::Instant::from_millis(10_000);
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let s = [
            WorkerStatus::Alive,
            WorkerStatus::Stalled {
                since: tcp::Instant::from_millis(7_500),
            },
            WorkerStatus::Exited {
                since: tcp::Instant::from_millis(9_000),
            },
            WorkerStatus::Starting,
        ];
        let names: Vec<String> = (0..4).map(|i| format!("sluice-q{i}")).collect();
        let body = report(&s, now, &names, Duration::from_secs(2), wall).unwrap();
        assert!(body.starts_with("unhealthy: 3 of 4 worker(s)"), "{body}");
        assert!(!body.contains("worker 0"), "{body}");
        assert!(
            body.contains(
                "worker 1 (sluice-q1): stalled: last poll loop 2.5 s ago (unix time 997.500)"
            ),
            "{body}"
        );
        assert!(
            body.contains("worker 2 (sluice-q2): exited: its poll loop ended 1.0 s ago"),
            "{body}"
        );
        assert!(body.contains("worker 3 (sluice-q3): starting"), "{body}");
    }
}
