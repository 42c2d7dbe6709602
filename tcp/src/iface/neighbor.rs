//! The ARP cache (neighbor table) and the bounded queue of frames waiting for resolution.

use core::net::Ipv4Addr;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;

use crate::time::Instant;
use crate::wire::EthernetAddress;

/// Seed of the cache's hasher: fixed, so runs (and simulations) are reproducible. Only
/// on-link addresses enter the cache, which bounds what an attacker can choose.
const HASH_SEED: u64 = 0x5eed_a12b_0c0f_fee5;

#[derive(Debug, Clone, Copy)]
struct Neighbor {
    mac: EthernetAddress,
    expires_at: Instant,
}

/// Resolved IPv4 -> Ethernet mappings with a capacity and a lifetime.
#[derive(Debug)]
pub(crate) struct NeighborCache {
    entries: HashMap<Ipv4Addr, Neighbor, FixedState>,
    capacity: usize,
    ttl: Duration,
    /// The entry filled last, `ip -> mac` as one word ([`memo_key`], 0: none), and
    /// `recent_refresh`: a fill that repeats it before `recent_refresh` (an eighth of the
    /// TTL after its refresh) is skipped without hashing, so a busy peer's every frame
    /// costs two compares. The entry still expires no earlier than 7/8 of the TTL after
    /// the peer's last frame. Cleared when that entry is evicted.
    recent: u128,
    recent_refresh: Instant,
}

/// `ip -> mac` as one word, for the memo of the entry filled last: a marker bit, the
/// address, the MAC's six bytes. Never 0.
#[inline(always)]
fn memo_key(ip: Ipv4Addr, mac: EthernetAddress) -> u128 {
    let [a, b, c, d, e, f] = mac.0;
    let mac = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
    1 << 127 | u128::from(ip.to_bits()) << 64 | u128::from(mac)
}

/// What [`NeighborCache::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// A new entry was created.
    Inserted,
    /// An existing entry was refreshed (possibly with a new address).
    Updated,
    /// Nothing: no entry existed and creation was not allowed (or capacity is zero).
    Ignored,
}

impl NeighborCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> NeighborCache {
        NeighborCache {
            entries: HashMap::with_capacity_and_hasher(capacity, FixedState::with_seed(HASH_SEED)),
            capacity,
            ttl,
            recent: 0,
            recent_refresh: Instant::ZERO,
        }
    }

    /// The address for `ip` if known and not expired. The entry filled last answers
    /// without hashing while it is before its `refresh_after` (it then expires no earlier
    /// than 7/8 of the TTL later, and `recent` is cleared whenever it is evicted).
    #[inline]
    pub(crate) fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Option<EthernetAddress> {
        if self.recent != 0
            && (self.recent >> 64) as u32 == ip.to_bits()
            && now < self.recent_refresh
        {
            let [a, b, c, d, e, f, _, _] = (self.recent as u64).to_le_bytes();
            return Some(EthernetAddress([a, b, c, d, e, f]));
        }
        match self.entries.get(&ip) {
            Some(n) if now < n.expires_at => Some(n.mac),
            _ => None,
        }
    }

    /// Whether `ip -> mac` is the entry filled last and still before its refresh time:
    /// [`NeighborCache::fill`] would then change nothing.
    #[inline]
    pub(crate) fn is_fresh(&self, ip: Ipv4Addr, mac: EthernetAddress, now: Instant) -> bool {
        self.recent == memo_key(ip, mac) && now < self.recent_refresh
    }

    /// Records `ip -> mac`, refreshing its lifetime. Creates an entry only with `create`
    /// (RFC 826 "merge" vs. "add"). Returns what happened and whether an entry was evicted.
    pub(crate) fn fill(
        &mut self,
        ip: Ipv4Addr,
        mac: EthernetAddress,
        now: Instant,
        create: bool,
    ) -> (Fill, bool) {
        if self.is_fresh(ip, mac, now) {
            return (Fill::Updated, false);
        }
        let expires_at = now + self.ttl;
        let refresh_after = now + self.ttl / 8;
        if let Some(n) = self.entries.get_mut(&ip) {
            n.mac = mac;
            n.expires_at = expires_at;
            self.recent = memo_key(ip, mac);
            self.recent_refresh = refresh_after;
            return (Fill::Updated, false);
        }
        if !create || self.capacity == 0 {
            return (Fill::Ignored, false);
        }
        let mut evicted = false;
        if self.entries.len() >= self.capacity {
            // Full: evict the entry refreshed longest ago (an expired one if any).
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, n)| n.expires_at)
                .map(|(ip, _)| *ip);
            if let Some(v) = victim {
                self.entries.remove(&v);
                if self.recent != 0 && (self.recent >> 64) as u32 == v.to_bits() {
                    self.recent = 0;
                }
                evicted = true;
            }
        }
        self.entries.insert(ip, Neighbor { mac, expires_at });
        self.recent = memo_key(ip, mac);
        self.recent_refresh = refresh_after;
        (Fill::Inserted, evicted)
    }

    /// Number of entries (expired ones included until evicted or refreshed).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// An address being resolved: how often we asked and when to ask again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolution {
    pub(crate) ip: Ipv4Addr,
    /// ARP requests sent so far.
    pub(crate) attempts: u8,
    pub(crate) next_retry: Instant,
}

/// A complete Ethernet frame waiting for its destination MAC.
#[derive(Debug)]
struct PendingFrame {
    next_hop: Ipv4Addr,
    frame: Vec<u8>,
}

/// Frames waiting for ARP resolution, and frames released by it, bounded in count and
/// bytes together.
#[derive(Debug)]
pub(crate) struct PendingQueue {
    waiting: VecDeque<PendingFrame>,
    released: VecDeque<Vec<u8>>,
    pub(crate) resolutions: Vec<Resolution>,
    bytes: usize,
    frame_limit: usize,
    byte_limit: usize,
}

impl PendingQueue {
    pub(crate) fn new(frame_limit: usize, byte_limit: usize) -> PendingQueue {
        PendingQueue {
            waiting: VecDeque::new(),
            released: VecDeque::new(),
            resolutions: Vec::new(),
            bytes: 0,
            frame_limit,
            byte_limit,
        }
    }

    /// Frames held (waiting + released).
    pub(crate) fn frames(&self) -> usize {
        self.waiting.len() + self.released.len()
    }

    /// Whether one more frame of `len` bytes fits.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.frames() < self.frame_limit && self.bytes + len <= self.byte_limit
    }

    /// Queues a frame for `next_hop`; the caller checked [`has_room`](Self::has_room).
    pub(crate) fn push(&mut self, next_hop: Ipv4Addr, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.waiting.push_back(PendingFrame { next_hop, frame });
    }

    /// A resolution for `ip` is in progress.
    pub(crate) fn is_resolving(&self, ip: Ipv4Addr) -> bool {
        self.resolutions.iter().any(|r| r.ip == ip)
    }

    /// Finds the resolution in progress for `ip`.
    pub(crate) fn resolution_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Resolution> {
        self.resolutions.iter_mut().find(|r| r.ip == ip)
    }

    /// `ip` resolved to `mac`: its frames move to the released queue with their
    /// destination set. Returns the number of frames released.
    pub(crate) fn resolve(&mut self, ip: Ipv4Addr, mac: EthernetAddress) -> usize {
        let before = self.resolutions.len();
        self.resolutions.retain(|r| r.ip != ip);
        if before == self.resolutions.len() {
            return 0;
        }
        let mut released = 0;
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        for mut p in self.waiting.drain(..) {
            if p.next_hop == ip {
                if let Some(dst) = p.frame.get_mut(..6) {
                    dst.copy_from_slice(&mac.0);
                }
                self.released.push_back(p.frame);
                released += 1;
            } else {
                keep.push_back(p);
            }
        }
        self.waiting = keep;
        released
    }

    /// Resolution of `ip` failed: drops its frames. Returns how many were dropped.
    pub(crate) fn fail(&mut self, ip: Ipv4Addr) -> usize {
        self.resolutions.retain(|r| r.ip != ip);
        let mut dropped = 0;
        let mut bytes = self.bytes;
        self.waiting.retain(|p| {
            if p.next_hop == ip {
                dropped += 1;
                bytes -= p.frame.len();
                false
            } else {
                true
            }
        });
        self.bytes = bytes;
        dropped
    }

    /// The oldest released frame, if any.
    pub(crate) fn front_released(&self) -> Option<&[u8]> {
        self.released.front().map(Vec::as_slice)
    }

    /// Removes the oldest released frame (after it was transmitted).
    pub(crate) fn pop_released(&mut self) {
        if let Some(f) = self.released.pop_front() {
            self.bytes -= f.len();
        }
    }

    /// The earliest retry deadline.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.resolutions.iter().map(|r| r.next_retry).min()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xa]);
    const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn cache_entry_expires_after_ttl() {
        let mut c = NeighborCache::new(4, Duration::from_secs(60));
        let ip = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(c.fill(ip, MAC_A, Instant::ZERO, true).0, Fill::Inserted);
        assert_eq!(c.lookup(ip, Instant::from_millis(59_999)), Some(MAC_A));
        assert_eq!(c.lookup(ip, Instant::from_millis(60_000)), None);
    }

    #[test]
    fn cache_refresh_skipped_only_while_fresh() {
        let ttl = Duration::from_secs(80);
        let mut c = NeighborCache::new(4, ttl);
        let ip = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(c.fill(ip, MAC_A, Instant::ZERO, true).0, Fill::Inserted);
        // Within an eighth of the TTL: skipped, the lifetime still counts from 0.
        assert_eq!(
            c.fill(ip, MAC_A, Instant::from_millis(9_999), true).0,
            Fill::Updated
        );
        assert_eq!(c.lookup(ip, Instant::from_millis(79_999)), Some(MAC_A));
        assert_eq!(c.lookup(ip, Instant::from_millis(80_000)), None);
        // A peer sending every second keeps its entry forever.
        let mut c = NeighborCache::new(4, ttl);
        for s in 0..1_000 {
            c.fill(ip, MAC_A, Instant::from_millis(s * 1_000), true);
            assert_eq!(
                c.lookup(ip, Instant::from_millis(s * 1_000 + 69_999)),
                Some(MAC_A)
            );
        }
        // A new address is never skipped.
        assert_eq!(
            c.fill(ip, MAC_B, Instant::from_millis(999_001), true).0,
            Fill::Updated
        );
        assert_eq!(c.lookup(ip, Instant::from_millis(999_002)), Some(MAC_B));
        // Another neighbor in between does not confuse the memo.
        let other = Ipv4Addr::new(198, 18, 0, 10);
        c.fill(other, MAC_A, Instant::from_millis(999_003), true);
        assert_eq!(
            c.fill(ip, MAC_A, Instant::from_millis(999_004), true).0,
            Fill::Updated
        );
        assert_eq!(c.lookup(ip, Instant::from_millis(999_005)), Some(MAC_A));
    }

    #[test]
    fn cache_evicted_recent_entry_is_recreated() {
        let mut c = NeighborCache::new(1, Duration::from_secs(60));
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        c.fill(a, MAC_A, Instant::ZERO, true);
        c.fill(b, MAC_B, Instant::from_millis(1), true); // evicts a
        assert_eq!(c.lookup(a, Instant::from_millis(2)), None);
        assert_eq!(
            c.fill(a, MAC_A, Instant::from_millis(3), true).0,
            Fill::Inserted
        );
        assert_eq!(c.lookup(a, Instant::from_millis(4)), Some(MAC_A));
    }

    #[test]
    fn cache_merge_without_create_ignored() {
        let mut c = NeighborCache::new(4, Duration::from_secs(60));
        let ip = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(c.fill(ip, MAC_A, Instant::ZERO, false).0, Fill::Ignored);
        c.fill(ip, MAC_A, Instant::ZERO, true);
        assert_eq!(c.fill(ip, MAC_B, Instant::ZERO, false).0, Fill::Updated);
        assert_eq!(c.lookup(ip, Instant::ZERO), Some(MAC_B));
    }

    #[test]
    fn cache_full_evicts_oldest() {
        let mut c = NeighborCache::new(2, Duration::from_secs(60));
        let ips = [1u8, 2, 3].map(|i| Ipv4Addr::new(198, 18, 0, i));
        c.fill(ips[0], MAC_A, Instant::from_millis(0), true);
        c.fill(ips[1], MAC_A, Instant::from_millis(10), true);
        let (f, evicted) = c.fill(ips[2], MAC_A, Instant::from_millis(20), true);
        assert_eq!(f, Fill::Inserted);
        assert!(evicted);
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(ips[0], Instant::from_millis(20)), None);
        assert!(c.lookup(ips[1], Instant::from_millis(20)).is_some());
    }

    #[test]
    fn pending_limits_by_frames_and_bytes() {
        let mut q = PendingQueue::new(2, 100);
        let ip = Ipv4Addr::new(198, 18, 0, 9);
        assert!(q.has_room(60));
        q.push(ip, vec![0; 60]);
        assert!(!q.has_room(41));
        assert!(q.has_room(40));
        q.push(ip, vec![0; 40]);
        assert!(!q.has_room(0));
        q.resolutions.push(Resolution {
            ip,
            attempts: 1,
            next_retry: Instant::ZERO,
        });
        assert_eq!(q.fail(ip), 2);
        assert!(q.has_room(100));
    }
}
