//! An in-memory, one-way link with delay, bandwidth, loss, reordering, duplication,
//! corruption and an MTU, driven by a virtual clock and a seeded RNG.

use super::Rng;
use crate::time::Instant;
use core::time::Duration;
use std::collections::BTreeMap;

/// Something a link can carry.
pub trait Packet: Clone {
    /// Bytes on the wire (for bandwidth and MTU).
    fn wire_len(&self) -> usize;
    /// Flips a random bit; returns false if this packet type cannot be corrupted.
    fn corrupt(&mut self, rng: &mut Rng) -> bool;
}

impl Packet for Vec<u8> {
    fn wire_len(&self) -> usize {
        self.len()
    }
    fn corrupt(&mut self, rng: &mut Rng) -> bool {
        if self.is_empty() {
            return false;
        }
        let i = rng.below(self.len() as u64) as usize;
        let bit = rng.below(8) as u32;
        if let Some(b) = self.get_mut(i) {
            *b ^= 1 << bit;
        }
        true
    }
}

/// Link impairments.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra random delay in `[0, jitter)` per packet (may reorder).
    pub jitter: Duration,
    /// Bytes per second; `None` = infinitely fast.
    pub bandwidth: Option<u64>,
    /// Most time a packet may wait for the wire before it is tail-dropped.
    pub queue_limit: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is held back by `reorder_delay` (so later ones pass it).
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability one bit of a packet is flipped.
    pub corrupt: f64,
    /// Largest packet carried; bigger ones are dropped.
    pub mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            bandwidth: Some(12_500_000), // 100 Mbit/s
            queue_limit: Duration::from_millis(50),
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(3),
            duplicate: 0.0,
            corrupt: 0.0,
            mtu: usize::MAX,
        }
    }
}

/// What happened on a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets offered.
    pub sent: u64,
    /// Packets delivered (including duplicates).
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Dropped for exceeding the MTU.
    pub too_big: u64,
    /// Tail-dropped because the queue was full.
    pub queue_drops: u64,
    /// Held back to be reordered.
    pub reordered: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Corrupted.
    pub corrupted: u64,
}

/// One direction of a simulated link.
#[derive(Debug)]
pub struct Link<P> {
    cfg: LinkConfig,
    rng: Rng,
    busy_until: Instant,
    order: u64,
    queue: BTreeMap<(Instant, u64), P>,
    /// Counters.
    pub stats: LinkStats,
}

impl<P: Packet> Link<P> {
    /// A link with impairments `cfg` and RNG `seed`.
    pub fn new(cfg: LinkConfig, seed: u64) -> Link<P> {
        Link {
            cfg,
            rng: Rng::new(seed),
            busy_until: Instant::ZERO,
            order: 0,
            queue: BTreeMap::new(),
            stats: LinkStats::default(),
        }
    }

    /// Offers a packet at `now`.
    pub fn send(&mut self, now: Instant, mut p: P) {
        self.stats.sent += 1;
        let len = p.wire_len();
        if len > self.cfg.mtu {
            self.stats.too_big += 1;
            return;
        }
        let start = self.busy_until.max(now);
        if start.saturating_since(now) > self.cfg.queue_limit {
            self.stats.queue_drops += 1;
            return;
        }
        let tx = match self.cfg.bandwidth {
            Some(bw) if bw > 0 => {
                Duration::from_nanos((len as u64).saturating_mul(1_000_000_000) / bw)
            }
            _ => Duration::ZERO,
        };
        self.busy_until = start + tx;
        if self.rng.chance(self.cfg.loss) {
            self.stats.lost += 1;
            return;
        }
        let mut at = self.busy_until + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let j = self.rng.below(self.cfg.jitter.as_micros() as u64);
            at += Duration::from_micros(j);
        }
        if self.rng.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            at += self.cfg.reorder_delay;
        }
        if self.rng.chance(self.cfg.corrupt) && p.corrupt(&mut self.rng) {
            self.stats.corrupted += 1;
        }
        if self.rng.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            self.push(at + Duration::from_micros(100), p.clone());
        }
        self.push(at, p);
    }

    fn push(&mut self, at: Instant, p: P) {
        self.order += 1;
        self.queue.insert((at, self.order), p);
    }

    /// When the next packet arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// The next packet due by `now`.
    pub fn poll(&mut self, now: Instant) -> Option<P> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.stats.delivered += 1;
        self.queue.remove(&key)
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn link_delay_and_bandwidth_delay_delivery() {
        let cfg = LinkConfig {
            delay: Duration::from_millis(10),
            bandwidth: Some(1_000_000),
            ..LinkConfig::default()
        };
        let mut l: Link<Vec<u8>> = Link::new(cfg, 1);
        l.send(Instant::ZERO, vec![0; 1000]);
        l.send(Instant::ZERO, vec![1; 1000]);
        assert_eq!(l.next_delivery(), Some(Instant::from_millis(11)));
        assert!(l.poll(Instant::from_millis(10)).is_none());
        assert_eq!(l.poll(Instant::from_millis(11)).unwrap()[0], 0);
        assert_eq!(l.poll(Instant::from_millis(12)).unwrap()[0], 1);
    }

    #[test]
    fn link_loss_rate_is_roughly_configured() {
        let cfg = LinkConfig {
            loss: 0.2,
            bandwidth: None,
            ..LinkConfig::default()
        };
        let mut l: Link<Vec<u8>> = Link::new(cfg, 7);
        for _ in 0..10_000 {
            l.send(Instant::ZERO, vec![0; 10]);
        }
        assert!((1_700..2_300).contains(&l.stats.lost), "{}", l.stats.lost);
    }

    #[test]
    fn link_mtu_drops_big_packets() {
        let cfg = LinkConfig {
            mtu: 100,
            ..LinkConfig::default()
        };
        let mut l: Link<Vec<u8>> = Link::new(cfg, 7);
        l.send(Instant::ZERO, vec![0; 101]);
        assert_eq!(l.stats.too_big, 1);
        assert_eq!(l.in_flight(), 0);
    }
}
