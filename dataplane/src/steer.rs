//! Software steering for active opens when the NIC cannot be told where answers go.
//!
//! With [`crate::PortChooser::Partition`], worker `i` of `n` opens connections from local
//! ports with `port % n == i`. A NIC without a readable RSS configuration (veth, many
//! virtual NICs) still delivers the answers to whatever queue its own hash picks. A
//! [`SteerDevice`] wraps each worker's device and hands such frames to the worker that owns
//! them: a TCP segment to the stack's address whose destination port lies in the
//! active-open range goes to worker `port % n`; an ARP reply (the answer to some worker's
//! request) is delivered here and copied to every other worker, so each one's neighbour
//! cache learns it. Everything else (listening ports, ICMP, ARP requests) stays where it
//! arrived, as without steering.
//!
//! Frames cross between workers over bounded crossbeam channels, as copies: a full inbox
//! drops the frame and counts it ([`SteerStats::dropped`]; TCP retransmits it). A
//! forwarded frame waits until its worker's next loop iteration, which is at most the idle
//! backoff's `poll()` timeout. With ntuple rules on the NIC (docs/AFXDP.md) or a Toeplitz
//! [`crate::PortChooser`], answers already arrive on the right queue and nothing is
//! forwarded.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::device::{Device, DeviceError, DeviceStats};

/// Frames that may wait in one worker's inbox.
pub const INBOX_FRAMES: usize = 1024;

/// What [`classify`] says about a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// Deliver here.
    Local,
    /// Belongs to worker `n`.
    Worker(usize),
    /// An ARP reply: deliver here and to every other worker.
    Everyone,
}

/// Where the frame belongs among `workers` workers, for the stack at `local` whose active
/// opens use `ports` (partitioned by `port % workers`). Never panics on short or malformed
/// frames (they stay local, where the stack rejects them).
pub fn classify(
    frame: &[u8],
    local: Ipv4Addr,
    ports: &RangeInclusive<u16>,
    workers: usize,
) -> Steer {
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    match be16(12) {
        // ARP over Ethernet/IPv4, operation 2 (reply).
        Some(0x0806) => {
            if be16(20) == Some(2) {
                Steer::Everyone
            } else {
                Steer::Local
            }
        }
        Some(0x0800) => {
            let Some(&vihl) = frame.get(14) else {
                return Steer::Local;
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            let to_us = frame.get(30..34) == Some(&local.octets()[..]);
            let tcp = frame.get(23) == Some(&6);
            // Fragment offset 0 (the first or only fragment carries the ports).
            let first = be16(20).is_some_and(|f| f & 0x1fff == 0);
            if vihl >> 4 != 4 || ihl < 20 || !to_us || !tcp || !first || workers < 2 {
                return Steer::Local;
            }
            match be16(14 + ihl + 2) {
                Some(port) if ports.contains(&port) => Steer::Worker(usize::from(port) % workers),
                _ => Steer::Local,
            }
        }
        _ => Steer::Local,
    }
}

/// Counters of one worker's steering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames handed to another worker (ARP replies count once per copy).
    pub forwarded: u64,
    /// Frames received from other workers and delivered here.
    pub delivered: u64,
    /// Frames dropped because the owner's inbox was full.
    pub dropped: u64,
}

/// One worker's end of a steering group: its inbox and every worker's sender.
#[derive(Debug)]
pub struct Steering {
    index: usize,
    inbox: Receiver<Vec<u8>>,
    peers: Vec<Sender<Vec<u8>>>,
    local: Ipv4Addr,
    ports: RangeInclusive<u16>,
    stats: SteerStats,
}

/// The steering ends of `workers` workers (worker `i` owns ports with `port % workers ==
/// i` in `ports`), for the stack address `local`.
pub fn group(workers: usize, local: Ipv4Addr, ports: RangeInclusive<u16>) -> Vec<Steering> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| bounded(INBOX_FRAMES)).unzip();
    receivers
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| Steering {
            index,
            inbox,
            peers: senders.clone(),
            local,
            ports: ports.clone(),
            stats: SteerStats::default(),
        })
        .collect()
}

impl Steering {
    fn forward(&mut self, to: usize, frame: &[u8]) {
        let Some(peer) = self.peers.get(to) else {
            return;
        };
        match peer.try_send(frame.to_vec()) {
            Ok(()) => self.stats.forwarded += 1,
            // A worker that has stopped is gone for good: its frames are dropped too.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.stats.dropped += 1,
        }
    }
}

/// A [`Device`] that delivers frames owned by other workers to them (see the module
/// documentation), or passes everything through when made without a [`Steering`].
#[derive(Debug)]
pub struct SteerDevice<D: Device> {
    inner: D,
    steering: Option<Steering>,
}

impl<D: Device> SteerDevice<D> {
    /// Wraps `inner`; `steering` is this worker's end of a [`group`], or `None` to pass
    /// everything through.
    pub fn new(inner: D, steering: Option<Steering>) -> SteerDevice<D> {
        SteerDevice { inner, steering }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The steering counters (`None` without steering).
    pub fn steer_stats(&self) -> Option<SteerStats> {
        self.steering.as_ref().map(|s| s.stats)
    }
}

impl<D: Device> Drop for SteerDevice<D> {
    fn drop(&mut self) {
        if let Some(s) = &self.steering {
            tracing::info!(
                worker = s.index,
                forwarded = s.stats.forwarded,
                delivered = s.stats.delivered,
                steer_dropped = s.stats.dropped,
                "steering closed"
            );
        }
    }
}

impl<D: Device> Device for SteerDevice<D> {
    type Tx = D::Tx;

    fn receive<F>(&mut self, budget: usize, mut on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut D::Tx),
    {
        let Some(steering) = &mut self.steering else {
            return self.inner.receive(budget, on_frame);
        };
        let mut delivered = 0;
        while delivered < budget {
            let Ok(mut frame) = steering.inbox.try_recv() else {
                break;
            };
            on_frame(&mut frame, self.inner.tx());
            delivered += 1;
        }
        steering.stats.delivered += delivered as u64;
        let workers = steering.peers.len();
        let me = steering.index;
        let received = self.inner.receive(budget - delivered, |frame, tx| {
            match classify(frame, steering.local, &steering.ports, workers) {
                Steer::Worker(owner) if owner != me => steering.forward(owner, frame),
                Steer::Everyone => {
                    for other in (0..workers).filter(|&w| w != me) {
                        steering.forward(other, frame);
                    }
                    on_frame(frame, tx);
                }
                Steer::Worker(_) | Steer::Local => on_frame(frame, tx),
            }
        })?;
        Ok(delivered + received)
    }

    fn tx(&mut self) -> &mut D::Tx {
        self.inner.tx()
    }

    fn submit(&mut self) -> Result<usize, DeviceError> {
        self.inner.submit()
    }

    fn reclaim(&mut self) -> usize {
        self.inner.reclaim()
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError> {
        if self.steering.as_ref().is_some_and(|s| !s.inbox.is_empty()) {
            return Ok(true);
        }
        self.inner.wait(timeout)
    }

    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }

    fn pending_frames<F: FnMut(&[u8])>(&mut self, f: F) {
        self.inner.pending_frames(f);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::device::TxQueue;
    use crate::mem::{MemConfig, MemDevice};

    const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const PORTS: RangeInclusive<u16> = 32768..=60999;

    /// An Ethernet/IPv4/TCP header to `dst:port`.
    fn tcp_frame(dst: Ipv4Addr, port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 6;
        f[30..34].copy_from_slice(&dst.octets());
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f
    }

    fn arp_frame(op: u16) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f
    }

    #[test]
    fn classify_active_open_port_owner_by_modulo() {
        assert_eq!(
            classify(&tcp_frame(LOCAL, 40001), LOCAL, &PORTS, 2),
            Steer::Worker(1)
        );
        assert_eq!(
            classify(&tcp_frame(LOCAL, 40002), LOCAL, &PORTS, 2),
            Steer::Worker(0)
        );
        assert_eq!(
            classify(&tcp_frame(LOCAL, 40003), LOCAL, &PORTS, 3),
            Steer::Worker(1)
        );
    }

    #[test]
    fn classify_listen_port_other_address_one_worker_local() {
        assert_eq!(
            classify(&tcp_frame(LOCAL, 7), LOCAL, &PORTS, 2),
            Steer::Local
        );
        let other = Ipv4Addr::new(198, 18, 0, 3);
        assert_eq!(
            classify(&tcp_frame(other, 40001), LOCAL, &PORTS, 2),
            Steer::Local
        );
        assert_eq!(
            classify(&tcp_frame(LOCAL, 40001), LOCAL, &PORTS, 1),
            Steer::Local
        );
    }

    #[test]
    fn classify_arp_reply_everyone_request_local() {
        assert_eq!(classify(&arp_frame(2), LOCAL, &PORTS, 2), Steer::Everyone);
        assert_eq!(classify(&arp_frame(1), LOCAL, &PORTS, 2), Steer::Local);
    }

    #[test]
    fn classify_truncated_or_fragment_local_no_panic() {
        let full = tcp_frame(LOCAL, 40001);
        for len in 0..full.len() {
            let s = classify(&full[..len], LOCAL, &PORTS, 2);
            assert!(matches!(s, Steer::Local | Steer::Worker(1)), "{len}: {s:?}");
        }
        let mut frag = full.clone();
        frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(classify(&frag, LOCAL, &PORTS, 2), Steer::Local);
        let mut bad_ihl = full;
        bad_ihl[14] = 0x41;
        assert_eq!(classify(&bad_ihl, LOCAL, &PORTS, 2), Steer::Local);
    }

    fn inject(peer: &mut MemDevice, frame: &[u8]) {
        peer.reclaim();
        assert!(peer.tx().transmit(frame.len(), |b| {
            b.copy_from_slice(frame);
            frame.len()
        }));
        peer.submit().unwrap();
    }

    #[test]
    fn steer_foreign_segment_delivered_by_owner_arp_reply_by_both() {
        let mut ends = group(2, LOCAL, PORTS).into_iter();
        let (mut wire0, d0) = MemDevice::pair(MemConfig::default());
        let (_wire1, d1) = MemDevice::pair(MemConfig::default());
        let mut w0 = SteerDevice::new(d0, ends.next());
        let mut w1 = SteerDevice::new(d1, ends.next());
        // Both arrive on queue 0: the odd port belongs to worker 1.
        inject(&mut wire0, &tcp_frame(LOCAL, 40001));
        inject(&mut wire0, &tcp_frame(LOCAL, 40002));
        inject(&mut wire0, &arp_frame(2));
        let mut seen0 = Vec::new();
        w0.receive(64, |f, _| seen0.push(f.len())).unwrap();
        assert_eq!(seen0, vec![54, 42]);
        assert!(w1.wait(Duration::ZERO).unwrap());
        let mut seen1 = Vec::new();
        assert_eq!(w1.receive(64, |f, _| seen1.push(f.to_vec())).unwrap(), 2);
        assert_eq!(seen1[0], tcp_frame(LOCAL, 40001));
        assert_eq!(seen1[1], arp_frame(2));
        assert_eq!(w0.steer_stats().unwrap().forwarded, 2);
        assert_eq!(w1.steer_stats().unwrap().delivered, 2);
    }

    #[test]
    fn steer_full_inbox_dropped_and_counted() {
        let mut ends = group(2, LOCAL, PORTS).into_iter();
        let (mut wire0, d0) = MemDevice::pair(MemConfig::default());
        let mut w0 = SteerDevice::new(d0, ends.next());
        let _w1_end = ends.next();
        let frame = tcp_frame(LOCAL, 40001);
        let mut sent = 0;
        while sent < INBOX_FRAMES + 10 {
            for _ in 0..32 {
                inject(&mut wire0, &frame);
                sent += 1;
            }
            w0.receive(64, |_, _| panic!("not ours")).unwrap();
        }
        let s = w0.steer_stats().unwrap();
        assert_eq!(s.forwarded, INBOX_FRAMES as u64);
        assert_eq!(s.dropped, (sent - INBOX_FRAMES) as u64);
    }
}
