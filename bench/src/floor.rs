//! The floor under every kernel-bypass figure: bare frames from one AF_XDP socket to
//! another across the same link and back, with no TCP/IP processing at either end.
//!
//! - `sluice-load reflect` ([`reflect`]) serves one address and TCP port on an interface:
//!   Sluice's XDP program steers those frames to its AF_XDP socket, and it sends each back
//!   with the Ethernet, IPv4 and TCP addresses swapped (checksums stay valid: a swap does
//!   not change a one's-complement sum).
//! - `sluice-load floor` ([`floor`]) sends frames of that shape (a TCP/IPv4 header and
//!   `message_size` bytes of payload, stamped) from its own AF_XDP socket and times each
//!   round trip, closed loop with `pipeline` frames in flight, and checks every returned
//!   payload byte for byte. It reports like a load run (one "connection").
//!
//! Both busy-poll pinned workers (`dataplane::worker`), as Sluice's workers do. No
//! protocol runs: a lost frame is counted unanswered after [`LOST_AFTER`], not resent.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dataplane::worker::{self, WorkerConfig};
use dataplane::{Backoff, Handler, StartError, TxQueue, XdpConfig, XdpModeRequest, XdpProgram};
use dataplane::{XskConfig, XskDevice};
use rand::{Rng, RngCore};

use crate::report::{ErrorKind, Report, WorkerStats};
use crate::settings::Settings;

/// A frame still unanswered after this long is counted lost.
pub const LOST_AFTER: Duration = Duration::from_millis(200);
/// Ethernet + IPv4 (no options) + TCP (no options).
const HEADERS: usize = 14 + 20 + 20;
/// Payload bytes stamped with the frame's sequence number.
const STAMP: usize = 8;

/// A worker that never yields or sleeps.
fn spinning(name: &str, core: Option<usize>) -> WorkerConfig {
    WorkerConfig {
        core,
        backoff: Backoff {
            spin: u32::MAX,
            yields: 0,
            sleep: Duration::from_millis(1),
        },
        stop_grace: Duration::from_millis(200),
        ..WorkerConfig::new(name)
    }
}

fn attach(iface: &str, addr: Ipv4Addr, port: u16) -> anyhow::Result<Arc<XdpProgram>> {
    Ok(Arc::new(XdpProgram::attach(
        iface,
        &XdpConfig {
            ipv4: addr,
            tcp_ports: vec![port..=port],
            mode: XdpModeRequest::Auto,
        },
    )?))
}

fn swap<const N: usize>(frame: &mut [u8], a: usize, b: usize) {
    if let (Some(x), Some(y)) = (frame.get(a..a + N), frame.get(b..b + N)) {
        let (x, y): ([u8; N], [u8; N]) = match (x.try_into(), y.try_into()) {
            (Ok(x), Ok(y)) => (x, y),
            _ => return,
        };
        if let Some(t) = frame.get_mut(a..a + N) {
            t.copy_from_slice(&y);
        }
        if let Some(t) = frame.get_mut(b..b + N) {
            t.copy_from_slice(&x);
        }
    }
}

/// Whether `frame` is TCP over IPv4 without IP options (the only frames either end sends).
fn is_plain_tcp(frame: &[u8]) -> bool {
    frame.len() >= HEADERS
        && frame.get(12..14) == Some(&[0x08, 0x00])
        && frame.get(14) == Some(&0x45)
        && frame.get(23) == Some(&6)
}

/// Sends every TCP/IPv4 frame back with its addresses and ports swapped.
#[derive(Debug)]
struct Reflector {
    reflected: Arc<AtomicU64>,
    ignored: u64,
}

impl Handler for Reflector {
    type Message = ();

    fn on_frame<T: TxQueue>(&mut self, _now: tcp::Instant, frame: &mut [u8], tx: &mut T) {
        if !is_plain_tcp(frame) {
            self.ignored += 1;
            return;
        }
        swap::<6>(frame, 0, 6);
        swap::<4>(frame, 26, 30);
        swap::<2>(frame, 34, 36);
        let len = frame.len();
        let sent = tx.transmit(len, |buf| match buf.get_mut(..len) {
            Some(out) => {
                out.copy_from_slice(frame);
                len
            }
            None => 0,
        });
        if sent {
            self.reflected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll<T: TxQueue>(&mut self, _now: tcp::Instant, _tx: &mut T) -> bool {
        false
    }
}

/// Runs the reflector on `iface` queue 0 for `addr:port`, pinned to `core`, until `stop`
/// is set; calls `ready` once it serves. Returns the frames reflected.
pub fn reflect(
    iface: &str,
    addr: SocketAddrV4,
    core: Option<usize>,
    stop: &AtomicBool,
    ready: impl FnOnce(),
) -> anyhow::Result<u64> {
    let program = attach(iface, *addr.ip(), addr.port())?;
    let reflected = Arc::new(AtomicU64::new(0));
    let xsk = XskConfig::new(iface, 0);
    let worker_program = Arc::clone(&program);
    let count = Arc::clone(&reflected);
    let handle = worker::spawn(spinning("sluice-reflect", core), move || {
        let device = XskDevice::open(&xsk, &worker_program)?;
        Ok((
            device,
            Reflector {
                reflected: count,
                ignored: 0,
            },
        ))
    })
    .context("starting the reflector")?;
    ready();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.stop().context("the reflector failed")?;
    drop(program);
    Ok(reflected.load(Ordering::Relaxed))
}

/// Where the floor's pinger sends from and to.
#[derive(Debug, Clone)]
pub struct FloorOptions {
    /// The pinger's interface (queue 0).
    pub iface: String,
    /// The pinger's own address (its XDP program takes TCP to it on its port).
    pub addr: Ipv4Addr,
    /// The reflector's MAC address (no ARP: the frames are addressed to it directly).
    pub dst_mac: [u8; 6],
}

/// Frames out and back, timed.
struct Pinger {
    /// The frame sent, less its stamp.
    frame: Vec<u8>,
    pipeline: usize,
    inflight: VecDeque<(u64, Instant)>,
    next_seq: u64,
    stats: WorkerStats,
    warmup: Duration,
    duration: Duration,
    measure: Option<(Instant, Instant)>,
    drain_until: Option<Instant>,
    done: Arc<AtomicBool>,
    start: Arc<OnceLock<Instant>>,
}

impl std::fmt::Debug for Pinger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinger")
            .field("next_seq", &self.next_seq)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl Pinger {
    fn sending(&self, now: Instant) -> bool {
        self.measure.is_some_and(|(_, end)| now < end)
    }
}

impl Handler for Pinger {
    type Message = ();

    fn on_frame<T: TxQueue>(&mut self, _now: tcp::Instant, frame: &mut [u8], _tx: &mut T) {
        let now = Instant::now();
        if !is_plain_tcp(frame) {
            return;
        }
        let Some(stamp) = frame
            .get(HEADERS..HEADERS + STAMP)
            .and_then(|s| <[u8; STAMP]>::try_from(s).ok())
        else {
            return;
        };
        let seq = u64::from_le_bytes(stamp);
        // The sent payload, byte for byte (the headers came back swapped).
        let same = frame.len() == self.frame.len()
            && frame.get(HEADERS + STAMP..) == self.frame.get(HEADERS + STAMP..);
        if !same {
            self.stats.error(
                ErrorKind::EchoMismatch,
                format!("frame {seq} came back different"),
            );
        }
        // Frames come back in order; any sent before this one are lost.
        while let Some(&(s, at)) = self.inflight.front() {
            if s > seq {
                break;
            }
            self.inflight.pop_front();
            if s < seq {
                self.stats.unanswered += 1;
                continue;
            }
            self.stats.replies += 1;
            if let Some((begin, end)) = self.measure {
                if at >= begin && at < end {
                    let ns = u64::try_from(now.saturating_duration_since(at).as_nanos())
                        .unwrap_or(u64::MAX);
                    self.stats.hist.saturating_record(ns.max(1));
                }
            }
        }
    }

    fn poll<T: TxQueue>(&mut self, _now: tcp::Instant, tx: &mut T) -> bool {
        let now = Instant::now();
        if self.measure.is_none() {
            let t0 = *self.start.get_or_init(|| now);
            let begin = t0 + self.warmup;
            self.measure = Some((begin, begin + self.duration));
        }
        while let Some(&(_, at)) = self.inflight.front() {
            if now.saturating_duration_since(at) < LOST_AFTER {
                break;
            }
            self.inflight.pop_front();
            self.stats.unanswered += 1;
        }
        let mut worked = false;
        if self.sending(now) {
            while self.inflight.len() < self.pipeline {
                let seq = self.next_seq;
                let frame = &self.frame;
                let len = frame.len();
                let sent = tx.transmit(len, |buf| match buf.get_mut(..len) {
                    Some(out) => {
                        out.copy_from_slice(frame);
                        if let Some(s) = out.get_mut(HEADERS..HEADERS + STAMP) {
                            s.copy_from_slice(&seq.to_le_bytes());
                        }
                        len
                    }
                    None => 0,
                });
                if !sent {
                    break;
                }
                self.inflight.push_back((seq, Instant::now()));
                self.next_seq += 1;
                self.stats.sent += 1;
                worked = true;
            }
        } else if !self.done.load(Ordering::Relaxed) {
            let until = *self.drain_until.get_or_insert(now + LOST_AFTER);
            if self.inflight.is_empty() || now >= until {
                self.stats.unanswered += self.inflight.len() as u64;
                self.inflight.clear();
                self.done.store(true, Ordering::Release);
            }
        }
        worked
    }
}

/// The pinger's frame to `to` from `from` (`size` payload bytes, the first [`STAMP`] of
/// them replaced by the sequence number when sent).
fn build_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddrV4,
    to: SocketAddrV4,
    size: usize,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADERS + size);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 20 + size).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let sum = tcp::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&from.port().to_be_bytes());
    t[2..4].copy_from_slice(&to.port().to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18; // PSH, ACK
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    f.extend_from_slice(&t);
    let mut payload = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut payload);
    f.extend_from_slice(&payload);
    f
}

/// Times frames to the reflector at `settings.target` (`message_size` payload bytes each,
/// `pipeline` in flight) from `opts`, on one pinned busy-polling worker.
pub fn floor(settings: &Settings, opts: &FloorOptions) -> anyhow::Result<Report> {
    settings.validate()?;
    let std::net::SocketAddr::V4(to) = settings.target else {
        anyhow::bail!("floor: an IPv4 target only");
    };
    if settings.message_size < STAMP || HEADERS + settings.message_size > 1514 {
        anyhow::bail!("floor: a message of {STAMP}..={} bytes", 1514 - HEADERS);
    }
    let src_mac = dataplane::sys::mac_address(&opts.iface)
        .map_err(|e| anyhow::Error::new(StartError::from_os("read the MAC of", &opts.iface, e)))?;
    let port = rand::thread_rng().gen_range(32_768..=60_999);
    let from = SocketAddrV4::new(opts.addr, port);
    let program = attach(&opts.iface, opts.addr, port)?;
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(OnceLock::new());
    let pinger = Pinger {
        frame: build_frame(src_mac, opts.dst_mac, from, to, settings.message_size),
        pipeline: settings.pipeline,
        inflight: VecDeque::with_capacity(settings.pipeline),
        next_seq: 0,
        stats: WorkerStats::new(),
        warmup: settings.warmup(),
        duration: settings.duration(),
        measure: None,
        drain_until: None,
        done: Arc::clone(&done),
        start: Arc::clone(&start),
    };
    let xsk = XskConfig::new(&opts.iface, 0);
    let worker_program = Arc::clone(&program);
    let handle = worker::spawn(
        spinning("sluice-floor", settings.pin.first().copied()),
        move || Ok((XskDevice::open(&xsk, &worker_program)?, pinger)),
    )
    .context("starting the pinger")?;
    let cpu_busy =
        crate::client::sample_cpu_window(settings, &start, || done.load(Ordering::Acquire));
    let limit = settings.warmup() + settings.duration() + Duration::from_secs(5);
    let began = Instant::now();
    while !done.load(Ordering::Acquire) && began.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut exit = handle.stop().context("the pinger failed")?;
    drop(program);
    let mut stats = std::mem::take(&mut exit.handler.stats);
    stats.connected = u64::from(stats.replies > 0);
    let mut s = settings.clone();
    s.spin = true;
    s.connections = 1;
    let mut report = Report::from_stats("floor", &s, vec![stats]);
    report.cpu_busy = cpu_busy;
    Ok(report)
}
