//! Worker liveness for the control plane (`/healthz`): one heartbeat slot per worker,
//! written only by that worker and read by the control thread.
//!
//! A worker stores the instant of each poll-loop iteration (the `now` it reads anyway) with
//! one relaxed store into its own slot; each slot sits on its own cache line (128-byte
//! aligned, so the adjacent-line prefetcher does not pair two workers' slots either), so
//! no worker writes a line another worker writes. When the worker's loop ends the slot says
//! whether it returned (an error, or a stop) or unwound from a panic.
//!
//! The reader decides: a running worker whose last iteration is older than the stall
//! threshold is stalled. Busy workers iterate continuously; idle ones still iterate at
//! least once per idle sleep (`Backoff::sleep`), so the threshold must exceed that sleep.
//!
//! [`Fault`] is a fault injector **for tests only**: it makes one worker stall, exit or
//! panic after a delay, so tests can see `/healthz` notice it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tcp::Instant;

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const EXITED: u8 = 2;
const PANICKED: u8 = 3;

/// One worker's slot, alone on its cache line (and its prefetch partner).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    /// Microseconds since the shared clock's epoch of the last loop iteration.
    last_us: AtomicU64,
    /// `STARTING`, `RUNNING`, `EXITED` or `PANICKED`.
    state: AtomicU8,
}

/// The heartbeat slots of every worker of a process.
#[derive(Debug)]
pub struct Heartbeats {
    slots: Box<[Slot]>,
}

/// What a worker's heartbeat says at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Its poll loop has not started yet.
    Starting,
    /// Its poll loop ran within the stall threshold.
    Alive,
    /// Running, but its last poll-loop iteration was at `since`, longer ago than the
    /// threshold.
    Stalled {
        /// The last iteration.
        since: Instant,
    },
    /// Its poll loop returned (a device error, or a stop); last iteration at `since`.
    Exited {
        /// The last iteration.
        since: Instant,
    },
    /// Its thread unwound from a panic; last iteration at `since`. (With `panic = "abort"`,
    /// as Sluice's release build has, a panic ends the whole process instead.)
    Panicked {
        /// The last iteration.
        since: Instant,
    },
}

impl WorkerStatus {
    /// Whether the worker counts as healthy.
    pub fn is_alive(self) -> bool {
        self == WorkerStatus::Alive
    }
}

impl Heartbeats {
    /// Slots for `workers` workers, all starting.
    pub fn new(workers: usize) -> Arc<Heartbeats> {
        Arc::new(Heartbeats {
            slots: (0..workers).map(|_| Slot::default()).collect(),
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Worker `index`'s writing side (give each index to one worker only). `None` when
    /// `index` is out of range.
    pub fn writer(self: &Arc<Self>, index: usize) -> Option<Heartbeat> {
        (index < self.slots.len()).then(|| Heartbeat {
            beats: Arc::clone(self),
            index,
        })
    }

    /// Marks worker `index` running as of `now` (what [`Heartbeat::start`] does), e.g. from
    /// the spawning code before it reports the worker ready, so a `/healthz` right after
    /// start-up does not see it starting.
    pub fn mark_running(&self, index: usize, now: Instant) {
        if let Some(slot) = self.slots.get(index) {
            slot.last_us.store(now.total_micros(), Ordering::Relaxed);
            slot.state.store(RUNNING, Ordering::Release);
        }
    }

    /// Worker `index`'s status at `now`: stalled when running but silent for longer than
    /// `stall_after`. `None` when `index` is out of range.
    pub fn status(
        &self,
        index: usize,
        now: Instant,
        stall_after: Duration,
    ) -> Option<WorkerStatus> {
        let slot = self.slots.get(index)?;
        let state = slot.state.load(Ordering::Acquire);
        let since = Instant::from_micros(slot.last_us.load(Ordering::Relaxed));
        Some(match state {
            STARTING => WorkerStatus::Starting,
            EXITED => WorkerStatus::Exited { since },
            PANICKED => WorkerStatus::Panicked { since },
            _ if now.saturating_since(since) > stall_after => WorkerStatus::Stalled { since },
            _ => WorkerStatus::Alive,
        })
    }

    /// Every worker's status at `now`, by index.
    pub fn statuses(&self, now: Instant, stall_after: Duration) -> Vec<WorkerStatus> {
        (0..self.slots.len())
            .filter_map(|i| self.status(i, now, stall_after))
            .collect()
    }
}

/// One worker's writing side of its heartbeat slot. Dropping it (when the worker's loop
/// ends, normally or by unwinding) marks the worker exited or panicked.
#[derive(Debug)]
pub struct Heartbeat {
    beats: Arc<Heartbeats>,
    index: usize,
}

impl Heartbeat {
    fn slot(&self) -> Option<&Slot> {
        self.beats.slots.get(self.index)
    }

    /// The loop is running (call once, before the first [`Heartbeat::beat`]).
    pub fn start(&self, now: Instant) {
        self.beats.mark_running(self.index, now);
    }

    /// One loop iteration at `now`: a relaxed store into this worker's own cache line.
    #[inline]
    pub fn beat(&self, now: Instant) {
        if let Some(slot) = self.slot() {
            slot.last_us.store(now.total_micros(), Ordering::Relaxed);
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let end = if std::thread::panicking() {
            PANICKED
        } else {
            EXITED
        };
        if let Some(slot) = self.slot() {
            slot.state.store(end, Ordering::Release);
        }
    }
}

/// What an injected fault does to its worker (testing only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The worker stops polling (no device, no application, no heartbeat); it still
    /// takes a stop from its control channel, so the process can end.
    Stall,
    /// The worker's loop returns an error, as a failing device would.
    Exit,
    /// The worker panics.
    Panic,
}

/// A fault injected into one worker, **for tests only** (`SLUICE_TEST_WORKER_FAULT`, read
/// once at start by the binary): worker `worker` does `kind` once `after` has passed since
/// its loop started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The worker's index (0-based, in start order).
    pub worker: usize,
    /// What happens.
    pub kind: FaultKind,
    /// How long after the loop starts.
    pub after: Duration,
}

impl Fault {
    /// Parses `KIND:WORKER:MS` (`stall:1:3000`, `exit:0:500`, `panic:0:500`).
    pub fn parse(text: &str) -> Result<Fault, String> {
        let bad = || format!("expected stall|exit|panic:WORKER:MS, found `{text}`");
        let mut parts = text.trim().split(':');
        let kind = match parts.next() {
            Some("stall") => FaultKind::Stall,
            Some("exit") => FaultKind::Exit,
            Some("panic") => FaultKind::Panic,
            _ => return Err(bad()),
        };
        let worker = parts.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let ms: u64 = parts.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Fault {
            worker,
            kind,
            after: Duration::from_millis(ms),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(2);

    #[test]
    fn slot_own_cache_line() {
        assert!(std::mem::align_of::<Slot>() >= 128);
        assert!(std::mem::size_of::<Slot>() >= 128);
    }

    #[test]
    fn status_starting_then_alive_then_stalled() {
        let beats = Heartbeats::new(2);
        let w = beats.writer(1).unwrap();
        let t0 = Instant::from_millis(1_000);
        assert_eq!(beats.status(1, t0, STALL), Some(WorkerStatus::Starting));
        w.start(t0);
        w.beat(t0 + Duration::from_millis(500));
        assert_eq!(
            beats.status(1, t0 + Duration::from_millis(2_400), STALL),
            Some(WorkerStatus::Alive)
        );
        assert_eq!(
            beats.status(1, t0 + Duration::from_millis(2_600), STALL),
            Some(WorkerStatus::Stalled {
                since: t0 + Duration::from_millis(500)
            })
        );
        assert_eq!(beats.status(2, t0, STALL), None);
        assert!(beats.writer(2).is_none());
    }

    #[test]
    fn drop_marks_exited_panic_marks_panicked() {
        let beats = Heartbeats::new(2);
        let t = Instant::from_millis(7);
        let w = beats.writer(0).unwrap();
        w.start(t);
        drop(w);
        assert_eq!(
            beats.status(0, t, STALL),
            Some(WorkerStatus::Exited { since: t })
        );
        let b = Arc::clone(&beats);
        let _ = std::thread::spawn(move || {
            let w = b.writer(1).unwrap();
            w.start(t);
            panic!("worker dies");
        })
        .join();
        assert_eq!(
            beats.status(1, t, STALL),
            Some(WorkerStatus::Panicked { since: t })
        );
    }

    #[test]
    fn fault_parse_kinds_and_garbage() {
        assert_eq!(
            Fault::parse("stall:1:3000").unwrap(),
            Fault {
                worker: 1,
                kind: FaultKind::Stall,
                after: Duration::from_secs(3)
            }
        );
        assert_eq!(Fault::parse("exit:0:0").unwrap().kind, FaultKind::Exit);
        assert_eq!(Fault::parse("panic:2:5").unwrap().kind, FaultKind::Panic);
        for bad in [
            "",
            "stall",
            "stall:x:1",
            "nap:0:1",
            "stall:0:1:2",
            "stall:0:-1",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad}");
        }
    }
}
