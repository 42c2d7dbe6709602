//! Receive-side scaling: which queue a flow lands on, and how an active open picks a source
//! port whose answers come back to its own queue.
//!
//! NICs spread flows with a Toeplitz hash of the 4-tuple under a secret key and look the
//! hash up in an indirection table of queue numbers. When the driver reports both
//! (`ETHTOOL_GRSSH`, see [`crate::sys::rss_config`]), [`PortChooser::Toeplitz`] recomputes
//! the NIC's decision for each candidate port. When it does not (veth, some virtual NICs),
//! [`PortChooser::Partition`] gives each queue its own slice of the port range
//! (`port % queues == queue`); steering those slices to their queues is then the operator's
//! job (ethtool ntuple rules), see `docs/AFXDP.md`.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Microsoft's default RSS key, which many drivers use unless told otherwise.
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The Toeplitz hash of `input` under `key`: for every set bit of the input (most
/// significant first), XOR in the 32-bit window of the key starting at that bit. Key bits
/// past the end of `key` count as zero, so a key must be at least `input.len() + 4` bytes
/// long to give the NIC's answer (40-byte keys cover IPv4 and IPv6 4-tuples).
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_byte = |i: usize| u32::from(key.get(i).copied().unwrap_or(0));
    let mut window = (key_byte(0) << 24) | (key_byte(1) << 16) | (key_byte(2) << 8) | key_byte(3);
    let mut hash = 0u32;
    for (i, byte) in input.iter().enumerate() {
        let next = key_byte(i + 4);
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | ((next >> (7 - bit)) & 1);
        }
    }
    hash
}

/// The Toeplitz input for a TCP/IPv4 segment as the NIC sees it: source address,
/// destination address, source port, destination port, all in network byte order.
pub fn tcp4_input(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&src_port.to_be_bytes());
    input[10..12].copy_from_slice(&dst_port.to_be_bytes());
    input
}

/// A NIC's RSS configuration: hash key and indirection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssTable {
    /// The Toeplitz key.
    pub key: Vec<u8>,
    /// Queue number for each hash bucket; the bucket is `hash % len`.
    pub indirection: Vec<u32>,
}

impl RssTable {
    /// The queue a segment from `remote:remote_port` to `local:local_port` is delivered to.
    /// `None` when the indirection table is empty.
    pub fn queue_for(
        &self,
        remote: Ipv4Addr,
        local: Ipv4Addr,
        remote_port: u16,
        local_port: u16,
    ) -> Option<u32> {
        if self.indirection.is_empty() {
            return None;
        }
        let hash = toeplitz(
            &self.key,
            &tcp4_input(remote, local, remote_port, local_port),
        );
        // Drivers index with the low bits of the hash; tables are powers of two, where
        // `%` is that mask.
        let bucket = hash as usize % self.indirection.len();
        self.indirection.get(bucket).copied()
    }

    /// A table spreading buckets round-robin over `queues` queues (ethtool's default).
    pub fn round_robin(key: &[u8], size: usize, queues: u32) -> RssTable {
        let queues = queues.max(1);
        RssTable {
            key: key.to_vec(),
            indirection: (0..size).map(|i| (i as u32) % queues).collect(),
        }
    }
}

/// How a worker picks the local port of an active open so that the peer's answers arrive
/// on the worker's own queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChooser {
    /// Recompute the NIC's Toeplitz hash for each candidate.
    Toeplitz {
        /// The NIC's key and indirection table.
        table: RssTable,
        /// The opening worker's queue.
        queue: u32,
    },
    /// The documented fallback: queue `q` of `n` owns the ports with `port % n == q`.
    Partition {
        /// The opening worker's queue.
        queue: u32,
        /// How many queues share the port range.
        queues: u32,
    },
}

impl PortChooser {
    /// The chooser for `queue` of `queues` on `iface`: Toeplitz when the driver reports its
    /// RSS key and indirection table (`ETHTOOL_GRSSH`), port partitioning otherwise.
    pub fn for_interface(iface: &str, queue: u32, queues: u32) -> PortChooser {
        match crate::sys::rss_config(iface) {
            Ok(table) => PortChooser::Toeplitz { table, queue },
            Err(_) => PortChooser::Partition { queue, queues },
        }
    }

    /// Whether `local_port` is one this worker may use towards `remote:remote_port`.
    pub fn accepts(
        &self,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        remote_port: u16,
        local_port: u16,
    ) -> bool {
        match self {
            PortChooser::Toeplitz { table, queue } => {
                table.queue_for(remote, local, remote_port, local_port) == Some(*queue)
            }
            PortChooser::Partition { queue, queues } => {
                u32::from(local_port) % (*queues).max(1) == *queue
            }
        }
    }

    /// The first port of `range`, searching from `start` and wrapping around, that this
    /// worker accepts and `is_free` allows. `None` when every port is taken or maps to
    /// another queue.
    pub fn choose(
        &self,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        remote_port: u16,
        range: RangeInclusive<u16>,
        start: u16,
        mut is_free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
        if lo > hi {
            return None;
        }
        let span = hi - lo + 1;
        let first = u32::from(start).clamp(lo, hi) - lo;
        (0..span)
            .map(|i| lo + (first + i) % span)
            .filter_map(|p| u16::try_from(p).ok())
            .find(|&port| self.accepts(local, remote, remote_port, port) && is_free(port))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// (destination, destination port, source, source port, IPv4-only hash, TCP hash).
    type Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);

    /// Microsoft's "Verifying the RSS hash calculation" vectors for IPv4.
    const MS_VECTORS: [Vector; 5] = [
        (
            [161, 142, 100, 80],
            1766,
            [66, 9, 149, 187],
            2794,
            0x323e_8fc2,
            0x51cc_c178,
        ),
        (
            [65, 69, 140, 83],
            4739,
            [199, 92, 111, 2],
            14230,
            0xd718_262a,
            0xc626_b0ea,
        ),
        (
            [12, 22, 207, 184],
            38024,
            [24, 19, 198, 95],
            12898,
            0xd2d0_a5de,
            0x5c2b_394a,
        ),
        (
            [209, 142, 163, 6],
            2217,
            [38, 27, 205, 30],
            48228,
            0x8298_9176,
            0xafc7_327f,
        ),
        (
            [202, 188, 127, 2],
            1303,
            [153, 39, 163, 191],
            44251,
            0x5d18_09c5,
            0x10e8_28a2,
        ),
    ];

    #[test]
    fn toeplitz_microsoft_ipv4_vectors_match() {
        for (dst, _, src, _, ip_hash, _) in MS_VECTORS {
            let mut input = [0u8; 8];
            input[..4].copy_from_slice(&src);
            input[4..].copy_from_slice(&dst);
            assert_eq!(
                toeplitz(&DEFAULT_KEY, &input),
                ip_hash,
                "{src:?} -> {dst:?}"
            );
        }
    }

    #[test]
    fn toeplitz_microsoft_tcp4_vectors_match() {
        for (dst, dport, src, sport, _, tcp_hash) in MS_VECTORS {
            let input = tcp4_input(src.into(), dst.into(), sport, dport);
            assert_eq!(
                toeplitz(&DEFAULT_KEY, &input),
                tcp_hash,
                "{src:?} -> {dst:?}"
            );
        }
    }

    #[test]
    fn toeplitz_empty_input_zero() {
        assert_eq!(toeplitz(&DEFAULT_KEY, &[]), 0);
    }

    #[test]
    fn toeplitz_short_key_no_panic() {
        let _ = toeplitz(&[1, 2], &[0xff; 12]);
    }

    #[test]
    fn queue_for_empty_table_none() {
        let table = RssTable {
            key: DEFAULT_KEY.to_vec(),
            indirection: Vec::new(),
        };
        let ip = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(table.queue_for(ip, ip, 1, 2), None);
    }

    #[test]
    fn chooser_toeplitz_chosen_port_lands_on_own_queue() {
        let table = RssTable::round_robin(&DEFAULT_KEY, 128, 4);
        let local = Ipv4Addr::new(198, 18, 0, 2);
        let remote = Ipv4Addr::new(198, 18, 0, 1);
        for queue in 0..4 {
            let chooser = PortChooser::Toeplitz {
                table: table.clone(),
                queue,
            };
            let port = chooser
                .choose(local, remote, 80, 32768..=60999, 40000, |_| true)
                .unwrap();
            assert_eq!(table.queue_for(remote, local, 80, port), Some(queue));
        }
    }

    #[test]
    fn chooser_toeplitz_busy_ports_skipped() {
        let table = RssTable::round_robin(&DEFAULT_KEY, 128, 2);
        let chooser = PortChooser::Toeplitz { table, queue: 1 };
        let local = Ipv4Addr::new(198, 18, 0, 2);
        let remote = Ipv4Addr::new(198, 18, 0, 1);
        let first = chooser
            .choose(local, remote, 80, 1024..=65535, 1024, |_| true)
            .unwrap();
        let second = chooser
            .choose(local, remote, 80, 1024..=65535, 1024, |p| p != first)
            .unwrap();
        assert_ne!(first, second);
        assert!(chooser.accepts(local, remote, 80, second));
    }

    #[test]
    fn chooser_partition_port_modulo_queue() {
        let chooser = PortChooser::Partition {
            queue: 2,
            queues: 3,
        };
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        let port = chooser
            .choose(ip, ip, 80, 1000..=2000, 1000, |_| true)
            .unwrap();
        assert_eq!(port, 1001);
        assert_eq!(port % 3, 2);
    }

    #[test]
    fn chooser_partition_wraps_from_start() {
        let chooser = PortChooser::Partition {
            queue: 0,
            queues: 2,
        };
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        let port = chooser
            .choose(ip, ip, 80, 10..=20, 20, |p| p != 20)
            .unwrap();
        assert_eq!(port, 10);
    }

    #[test]
    fn chooser_all_ports_taken_none() {
        let chooser = PortChooser::Partition {
            queue: 0,
            queues: 1,
        };
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(chooser.choose(ip, ip, 80, 10..=20, 10, |_| false), None);
    }

    #[test]
    fn chooser_empty_range_none() {
        let chooser = PortChooser::Partition {
            queue: 0,
            queues: 1,
        };
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        #[allow(clippy::reversed_empty_ranges)]
        let range = 20..=10;
        assert_eq!(chooser.choose(ip, ip, 80, range, 10, |_| true), None);
    }

    #[test]
    fn chooser_full_range_start_at_max_no_overflow() {
        let chooser = PortChooser::Partition {
            queue: 1,
            queues: 2,
        };
        let ip = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(
            chooser.choose(ip, ip, 80, 0..=65535, 65535, |_| true),
            Some(65535)
        );
    }
}
