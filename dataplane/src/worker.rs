//! Per-queue workers: one thread per queue, pinned to a core, running a busy-poll loop over
//! a [`Device`] and a [`Handler`] (the TCP stack, in the product), with an idle backoff and
//! a bounded control channel.
//!
//! One loop iteration: drain control messages, read the clock once, reclaim completions,
//! receive a batch (each frame goes to [`Handler::on_frame`] with the transmit half), let
//! the handler do its timer and application work ([`Handler::poll`]), then submit the whole
//! transmit batch with one kick. An iteration that moved nothing counts as idle; the backoff
//! spins for `spin` idle iterations, then yields the CPU for `yields` more, then sleeps in
//! `poll()` on the device for at most `sleep` (or until the handler's next deadline).
//!
//! Each iteration also stores its `now` in the worker's heartbeat slot, when it has one
//! ([`crate::health`]), so the control thread can tell a stalled or dead worker.

use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use tcp::Instant;

use crate::device::{Device, DeviceError, DeviceStats, TxQueue};
use crate::error::StartError;
use crate::health::{Fault, FaultKind, Heartbeats};

/// What a worker runs for every frame and every loop iteration. The TCP `Stack` implements
/// it (through an adapter in the binary); tests implement small reflectors.
pub trait Handler {
    /// Application messages sent to the worker over its control channel.
    type Message: Send + 'static;

    /// One received frame, mutable in place; answers may be transmitted through `tx`.
    fn on_frame<T: TxQueue>(&mut self, now: Instant, frame: &mut [u8], tx: &mut T);

    /// Timer and application work after each receive batch. Returns `true` when it did
    /// something (the loop then does not count the iteration as idle).
    fn poll<T: TxQueue>(&mut self, now: Instant, tx: &mut T) -> bool;

    /// The next instant at which `poll` has timer work; the idle sleep never passes it.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// A message from the control channel.
    fn on_message(&mut self, _now: Instant, _message: Self::Message) {}

    /// Stop was requested: stop accepting new work and start draining.
    fn on_stop(&mut self, _now: Instant) {}

    /// Whether draining is finished; the worker exits once this is `true` after a stop (or
    /// once `WorkerConfig::stop_grace` has passed).
    fn drained(&self) -> bool {
        true
    }
}

/// A control message for a worker.
#[derive(Debug)]
pub enum Control<M> {
    /// Drain (see [`Handler::on_stop`]) and exit.
    Stop,
    /// An application message for [`Handler::on_message`].
    Message(M),
}

/// The idle backoff. Defaults: 2,000 spins, 200 yields, then 1 ms sleeps in `poll()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Idle iterations that only spin (`std::hint::spin_loop`).
    pub spin: u32,
    /// Further idle iterations that yield the CPU.
    pub yields: u32,
    /// Longest sleep in the device's `poll()` once spinning and yielding are exhausted.
    pub sleep: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            spin: 2_000,
            yields: 200,
            sleep: Duration::from_millis(1),
        }
    }
}

impl Backoff {
    /// Never spin or yield: sleep in `poll()` as soon as an iteration is idle.
    pub fn sleepy(sleep: Duration) -> Backoff {
        Backoff {
            spin: 0,
            yields: 0,
            sleep,
        }
    }
}

/// The monotonic clock workers read once per batch: microseconds since a shared epoch, so
/// instants from different workers compare.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    /// Now, as the engine's instant.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name (shows in `top -H`).
    pub name: String,
    /// Core to pin to; `None` leaves the thread unpinned.
    pub core: Option<usize>,
    /// Most frames taken from the device per iteration.
    pub batch: usize,
    /// The idle backoff.
    pub backoff: Backoff,
    /// Capacity of the control channel.
    pub control_capacity: usize,
    /// Longest drain after a stop before the worker exits anyway.
    pub stop_grace: Duration,
    /// The clock (share one between workers).
    pub clock: Clock,
    /// The heartbeat slots and this worker's index among them; `None`: no heartbeat.
    pub heartbeat: Option<(std::sync::Arc<Heartbeats>, usize)>,
    /// **Testing only**: a fault to inject into this worker (its `worker` field is not
    /// consulted; set it only on the worker it names).
    pub fault: Option<Fault>,
}

impl WorkerConfig {
    /// Defaults: batch 64, default backoff, 64 control slots, 1 s stop grace, unpinned.
    pub fn new(name: &str) -> WorkerConfig {
        WorkerConfig {
            name: name.to_string(),
            core: None,
            batch: 64,
            backoff: Backoff::default(),
            control_capacity: 64,
            stop_grace: Duration::from_secs(1),
            clock: Clock::new(),
            heartbeat: None,
            fault: None,
        }
    }
}

/// What a worker reports when it ends.
#[derive(Debug)]
pub struct WorkerExit<H> {
    /// The handler, as the loop left it.
    pub handler: H,
    /// The device's counters at exit.
    pub stats: DeviceStats,
    /// Whether the thread was pinned to the requested core.
    pub pinned: bool,
}

/// Errors of a running or ending worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The device failed on the packet path.
    #[error("worker device failed: {0}")]
    Device(#[from] DeviceError),
    /// The worker thread panicked.
    #[error("worker thread panicked")]
    Panicked,
    /// An injected fault ended the loop (testing only, see [`Fault`]).
    #[error("the worker exited: injected fault (testing only)")]
    InjectedFault,
}

/// The spawning side's handle on a worker.
#[derive(Debug)]
pub struct WorkerHandle<H: Handler> {
    control: Sender<Control<H::Message>>,
    thread: JoinHandle<Result<WorkerExit<H>, WorkerError>>,
}

impl<H: Handler> WorkerHandle<H> {
    /// The control channel, to hand to other threads.
    pub fn control(&self) -> Sender<Control<H::Message>> {
        self.control.clone()
    }

    /// Sends an application message without blocking; gives it back when the channel is
    /// full or the worker is gone.
    pub fn try_send(&self, message: H::Message) -> Result<(), H::Message> {
        self.control
            .try_send(Control::Message(message))
            .map_err(|e| match e {
                TrySendError::Full(Control::Message(m))
                | TrySendError::Disconnected(Control::Message(m)) => m,
                // Only `Message` was sent, so only `Message` can come back.
                TrySendError::Full(Control::Stop) | TrySendError::Disconnected(Control::Stop) => {
                    unreachable!("sent a Message, got a Stop back")
                }
            })
    }

    /// Asks the worker to stop (blocking while the channel is full) and waits for it.
    pub fn stop(self) -> Result<WorkerExit<H>, WorkerError> {
        // A worker that already ended has dropped its receiver; join reports why.
        let _ = self.control.send(Control::Stop);
        self.join()
    }

    /// Waits for the worker to end.
    pub fn join(self) -> Result<WorkerExit<H>, WorkerError> {
        self.thread.join().map_err(|_| WorkerError::Panicked)?
    }
}

/// Starts a worker thread. `setup` runs on the new thread, after pinning, and builds the
/// device and handler there (so a device can be opened inside a network namespace the
/// thread entered, and per-core memory is first touched on its own core). Returns once
/// `setup` has finished; its error is returned as is.
pub fn spawn<D, H, S>(config: WorkerConfig, setup: S) -> Result<WorkerHandle<H>, StartError>
where
    D: Device,
    H: Handler + Send + 'static,
    S: FnOnce() -> Result<(D, H), StartError> + Send + 'static,
{
    let (control_tx, control_rx) = bounded(config.control_capacity.max(1));
    let (ready_tx, ready_rx) = bounded::<Result<(), StartError>>(1);
    let name = config.name.clone();
    let thread = thread::Builder::new()
        .name(name)
        .spawn(move || {
            let pinned = config
                .core
                .is_some_and(|id| core_affinity::set_for_current(core_affinity::CoreId { id }));
            if config.core.is_some() && !pinned {
                tracing::warn!(worker = %config.name, core = ?config.core, "could not pin worker");
            }
            let (device, handler) = match setup() {
                Ok(parts) => parts,
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return Err(WorkerError::Panicked);
                }
            };
            // Running from here on: whoever waits for `spawn` sees the worker alive.
            if let Some((beats, index)) = &config.heartbeat {
                beats.mark_running(*index, config.clock.now());
            }
            let _ = ready_tx.send(Ok(()));
            run(&config, device, handler, &control_rx, pinned)
        })
        .map_err(|e| StartError::Os {
            what: "spawn a worker thread",
            source: e,
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WorkerHandle {
            control: control_tx,
            thread,
        }),
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(err)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Os {
                what: "start a worker",
                source: std::io::Error::other("worker thread died during setup"),
            })
        }
    }
}

/// The poll loop. Runs on the calling thread until a stop has been drained.
pub fn run<D: Device, H: Handler>(
    config: &WorkerConfig,
    mut device: D,
    mut handler: H,
    control: &Receiver<Control<H::Message>>,
    pinned: bool,
) -> Result<WorkerExit<H>, WorkerError> {
    let clock = config.clock;
    let backoff = config.backoff;
    let mut idle: u32 = 0;
    let mut stop_deadline: Option<Instant> = None;
    // Dropped when this function returns or unwinds: marks the slot exited or panicked.
    let heartbeat = config
        .heartbeat
        .as_ref()
        .and_then(|(beats, index)| beats.writer(*index));
    let started = clock.now();
    if let Some(h) = &heartbeat {
        h.start(started);
    }
    let fault_at = config.fault.map(|f| (started + f.after, f.kind));
    let mut stalled = false;
    loop {
        let now = clock.now();
        loop {
            match control.try_recv() {
                Ok(Control::Message(message)) => handler.on_message(now, message),
                Ok(Control::Stop) => {
                    if stop_deadline.is_none() {
                        handler.on_stop(now);
                        stop_deadline = Some(now + config.stop_grace);
                    }
                }
                Err(TryRecvError::Empty) => break,
                // Everyone who could send has gone: treat as a stop.
                Err(TryRecvError::Disconnected) => {
                    if stop_deadline.is_none() {
                        handler.on_stop(now);
                        stop_deadline = Some(now + config.stop_grace);
                    }
                    break;
                }
            }
        }
        if let Some(deadline) = stop_deadline {
            if handler.drained() || now >= deadline {
                device.submit()?;
                return Ok(WorkerExit {
                    handler,
                    stats: device.stats(),
                    pinned,
                });
            }
        }

        if let Some((at, kind)) = fault_at {
            if now >= at {
                match kind {
                    FaultKind::Stall => stalled = true,
                    FaultKind::Exit => return Err(WorkerError::InjectedFault),
                    FaultKind::Panic => panic!("injected fault: worker panics (testing only)"),
                }
            }
        }
        if stalled {
            // Testing only: no device, no application, no heartbeat; stops still end it.
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        if let Some(h) = &heartbeat {
            h.beat(now);
        }

        device.reclaim();
        let received = device.receive(config.batch, |frame, tx| {
            handler.on_frame(now, frame, tx);
        })?;
        let worked = handler.poll(now, device.tx());
        let sent = device.submit()?;

        if received > 0 || worked || sent > 0 {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle <= backoff.spin {
            std::hint::spin_loop();
        } else if idle <= backoff.spin.saturating_add(backoff.yields) {
            thread::yield_now();
        } else {
            let mut sleep = backoff.sleep;
            if let Some(at) = handler.poll_timeout() {
                sleep = sleep.min(at.saturating_since(clock.now()));
            }
            if !sleep.is_zero() {
                device.wait(sleep)?;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::mem::{MemConfig, MemDevice};

    /// Echoes every frame back with its first byte incremented; counts messages.
    #[derive(Debug, Default)]
    struct Echo {
        frames: usize,
        messages: Vec<u32>,
        stopped: bool,
        last_now: Option<Instant>,
    }

    impl Handler for Echo {
        type Message = u32;

        fn on_frame<T: TxQueue>(&mut self, now: Instant, frame: &mut [u8], tx: &mut T) {
            self.frames += 1;
            if let Some(prev) = self.last_now {
                assert!(now >= prev, "clock went backwards");
            }
            self.last_now = Some(now);
            frame[0] = frame[0].wrapping_add(1);
            let len = frame.len();
            tx.transmit(len, |buf| {
                buf.copy_from_slice(frame);
                len
            });
        }

        fn poll<T: TxQueue>(&mut self, _now: Instant, _tx: &mut T) -> bool {
            false
        }

        fn on_message(&mut self, _now: Instant, message: u32) {
            self.messages.push(message);
        }

        fn on_stop(&mut self, _now: Instant) {
            self.stopped = true;
        }
    }

    fn quick(name: &str) -> WorkerConfig {
        WorkerConfig {
            backoff: Backoff::sleepy(Duration::from_millis(1)),
            ..WorkerConfig::new(name)
        }
    }

    #[test]
    fn worker_frames_in_echoed_out() {
        let (mut peer, dev) = MemDevice::pair(MemConfig::default());
        let worker = spawn(quick("echo"), move || Ok((dev, Echo::default()))).unwrap();
        for i in 0..10u8 {
            assert!(peer.tx().transmit(1, |b| {
                b[0] = i;
                1
            }));
        }
        peer.submit().unwrap();
        let mut got = Vec::new();
        while got.len() < 10 {
            peer.wait(Duration::from_millis(50)).unwrap();
            peer.receive(64, |f, _| got.push(f[0])).unwrap();
        }
        assert_eq!(got, (1..=10).collect::<Vec<u8>>());
        let exit = worker.stop().unwrap();
        assert_eq!(exit.handler.frames, 10);
        assert!(exit.handler.stopped);
        assert_eq!(exit.stats.tx_frames, 10);
    }

    #[test]
    fn worker_messages_delivered_in_order() {
        let dev = MemDevice::new(MemConfig::default());
        let worker = spawn(quick("msgs"), move || Ok((dev, Echo::default()))).unwrap();
        for i in 0..5 {
            worker.try_send(i).unwrap();
        }
        let exit = worker.stop().unwrap();
        assert_eq!(exit.handler.messages, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn spawn_setup_error_returned_to_caller() {
        let result = spawn(quick("fails"), || -> Result<(MemDevice, Echo), _> {
            Err(StartError::NoSuchInterface {
                iface: "nope0".into(),
            })
        });
        assert!(matches!(
            result,
            Err(StartError::NoSuchInterface { ref iface }) if iface == "nope0"
        ));
    }

    #[test]
    fn worker_control_dropped_exits_like_stop() {
        let dev = MemDevice::new(MemConfig::default());
        let worker = spawn(quick("orphan"), move || Ok((dev, Echo::default()))).unwrap();
        let WorkerHandle { control, thread } = worker;
        drop(control);
        let exit = thread.join().unwrap().unwrap();
        assert!(exit.handler.stopped);
    }

    #[test]
    fn worker_pinned_to_core_zero_reports_pinned() {
        let dev = MemDevice::new(MemConfig::default());
        let config = WorkerConfig {
            core: Some(0),
            ..quick("pinned")
        };
        let worker = spawn(config, move || Ok((dev, Echo::default()))).unwrap();
        assert!(worker.stop().unwrap().pinned);
    }

    /// A handler that needs several iterations to drain after a stop.
    #[derive(Debug, Default)]
    struct SlowDrain {
        left: u32,
        polls_after_stop: u32,
    }

    impl Handler for SlowDrain {
        type Message = ();
        fn on_frame<T: TxQueue>(&mut self, _: Instant, _: &mut [u8], _: &mut T) {}
        fn poll<T: TxQueue>(&mut self, _: Instant, _: &mut T) -> bool {
            if self.left > 0 {
                self.left -= 1;
                self.polls_after_stop += 1;
                return true;
            }
            false
        }
        fn on_stop(&mut self, _: Instant) {
            self.left = 3;
        }
        fn drained(&self) -> bool {
            self.left == 0
        }
    }

    fn watched(
        name: &str,
        beats: &std::sync::Arc<Heartbeats>,
        fault: Option<Fault>,
    ) -> WorkerConfig {
        WorkerConfig {
            heartbeat: Some((std::sync::Arc::clone(beats), 0)),
            fault,
            ..quick(name)
        }
    }

    /// Waits up to 10 s for worker 0's status to satisfy `want`.
    fn wait_status(
        beats: &Heartbeats,
        clock: Clock,
        want: impl Fn(crate::health::WorkerStatus) -> bool,
    ) -> crate::health::WorkerStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = beats
                .status(0, clock.now(), Duration::from_millis(200))
                .unwrap();
            if want(s) || std::time::Instant::now() > deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn worker_heartbeat_alive_then_exited_after_stop() {
        use crate::health::WorkerStatus;
        let beats = Heartbeats::new(1);
        let config = watched("beat", &beats, None);
        let clock = config.clock;
        let dev = MemDevice::new(MemConfig::default());
        let worker = spawn(config, move || Ok((dev, Echo::default()))).unwrap();
        // Idle, it sleeps 1 ms at a time: well within the 200 ms threshold.
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            wait_status(&beats, clock, WorkerStatus::is_alive),
            WorkerStatus::Alive
        );
        worker.stop().unwrap();
        assert!(matches!(
            beats.status(0, clock.now(), Duration::from_millis(200)),
            Some(WorkerStatus::Exited { .. })
        ));
    }

    #[test]
    fn worker_fault_stall_stalled_and_still_stops() {
        use crate::health::WorkerStatus;
        let beats = Heartbeats::new(1);
        let fault = Fault {
            worker: 0,
            kind: FaultKind::Stall,
            after: Duration::from_millis(50),
        };
        let config = watched("stall", &beats, Some(fault));
        let clock = config.clock;
        let dev = MemDevice::new(MemConfig::default());
        let worker = spawn(config, move || Ok((dev, Echo::default()))).unwrap();
        let s = wait_status(&beats, clock, |s| matches!(s, WorkerStatus::Stalled { .. }));
        assert!(matches!(s, WorkerStatus::Stalled { .. }), "{s:?}");
        assert!(worker.stop().unwrap().handler.stopped);
    }

    #[test]
    fn worker_fault_exit_and_panic_reported() {
        use crate::health::WorkerStatus;
        for (kind, dead) in [(FaultKind::Exit, "Exited"), (FaultKind::Panic, "Panicked")] {
            let beats = Heartbeats::new(1);
            let fault = Fault {
                worker: 0,
                kind,
                after: Duration::from_millis(20),
            };
            let config = watched("dies", &beats, Some(fault));
            let clock = config.clock;
            let dev = MemDevice::new(MemConfig::default());
            let worker = spawn(config, move || Ok((dev, Echo::default()))).unwrap();
            let s = wait_status(&beats, clock, |s| {
                matches!(
                    s,
                    WorkerStatus::Exited { .. } | WorkerStatus::Panicked { .. }
                )
            });
            assert!(format!("{s:?}").starts_with(dead), "{kind:?}: {s:?}");
            let err = worker.join().unwrap_err();
            match kind {
                FaultKind::Exit => assert!(matches!(err, WorkerError::InjectedFault)),
                _ => assert!(matches!(err, WorkerError::Panicked)),
            }
        }
    }

    #[test]
    fn worker_stop_runs_until_drained() {
        let dev = MemDevice::new(MemConfig::default());
        let worker = spawn(quick("drain"), move || Ok((dev, SlowDrain::default()))).unwrap();
        let exit = worker.stop().unwrap();
        assert_eq!(exit.handler.polls_after_stop, 3);
    }
}
