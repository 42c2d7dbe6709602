//! The per-core L2/L3 interface: Ethernet, ARP (responder, cache, resolution queue),
//! IPv4 and ICMP echo. No TCP state lives here: TCP segments for our address are handed
//! up by [`Interface::receive`] and handed down through [`Interface::send_tcp`].
//!
//! Driving it (sans-IO, see `DESIGN.md` Contracts):
//! - [`Interface::receive`] for every received frame;
//! - [`Interface::send_tcp`] / [`Interface::send_tcp_with`] / [`Interface::reject`] from
//!   the TCP layer;
//! - [`Interface::poll_transmit`] after a batch of the above and after
//!   [`Interface::handle_timeout`], to flush ARP/ICMP replies and frames released by ARP;
//! - [`Interface::handle_timeout`] when [`Interface::poll_timeout`] is due (ARP retries).
//!
//! Every queue is bounded and every drop is counted in [`InterfaceStats`].

mod neighbor;
#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;
use core::time::Duration;
use std::collections::VecDeque;

use crate::time::Instant;
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use crate::wire::icmpv4::{DstUnreachable, Icmpv4Packet, Icmpv4Repr, OriginalDatagram};
use crate::wire::ipv4::{self, IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::wire::tcp::{self as tcpwire, TcpFlags, TcpOptions, TcpRepr, TcpTimestamps};
use crate::wire::{EthernetAddress, WireError};
use crate::SeqNumber;

use neighbor::{Fill, NeighborCache, PendingQueue, Resolution};

/// Where frames go out: the dataplane's TX ring (AF_XDP, DPDK, the in-memory device), or
/// a queue in tests. The one transmit trait of the workspace: `tcp` owns it (so the engine
/// stays free of I/O) and `dataplane` implements it for its devices' transmit halves.
pub trait TxQueue {
    /// Lends a free buffer of exactly `len` bytes to `fill`, which writes a whole Ethernet
    /// frame into it and returns how many bytes it used; those bytes are queued for
    /// transmission (for a device: until its next `submit`). A return of 0 cancels the
    /// frame and the buffer goes back unused; a return above `len` is clamped to `len`.
    ///
    /// Returns `false`, without calling `fill`, when no buffer is free or `len` exceeds
    /// [`TxQueue::capacity`]; `true` otherwise.
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool;

    /// The largest frame, in bytes, that [`TxQueue::transmit`] can lend a buffer for.
    fn capacity(&self) -> usize;
}

/// A [`TxQueue`] that collects frames in memory, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct VecTxQueue {
    /// Frames transmitted so far, oldest first.
    pub frames: VecDeque<Vec<u8>>,
    /// Most frames held before `transmit` refuses (`None`: unbounded).
    pub limit: Option<usize>,
}

impl VecTxQueue {
    /// An unbounded queue.
    pub fn new() -> VecTxQueue {
        VecTxQueue::default()
    }

    /// A queue refusing frames once `limit` are held.
    pub fn with_limit(limit: usize) -> VecTxQueue {
        VecTxQueue {
            frames: VecDeque::new(),
            limit: Some(limit),
        }
    }
}

impl TxQueue for VecTxQueue {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        if self.limit.is_some_and(|l| self.frames.len() >= l) {
            return false;
        }
        let mut buf = vec![0u8; len];
        let n = fill(&mut buf).min(len);
        if n > 0 {
            buf.truncate(n);
            self.frames.push_back(buf);
        }
        true
    }

    /// Unbounded: a `Vec` per frame.
    fn capacity(&self) -> usize {
        usize::MAX
    }
}

/// What to answer to a TCP segment that matched no socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClosedPortPolicy {
    /// A RST per RFC 9293 3.10.7.1 (what Linux does).
    #[default]
    Rst,
    /// An ICMP destination unreachable, port unreachable (RFC 1122 4.2.2.20 permits it).
    IcmpUnreachable,
    /// Nothing (a "stealth" port).
    Drop,
}

/// Configuration of an [`Interface`]. Build with [`InterfaceConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Our MAC address.
    pub mac: EthernetAddress,
    /// Our IPv4 address.
    pub addr: Ipv4Addr,
    /// Prefix length of the on-link subnet (0..=32).
    pub prefix_len: u8,
    /// Default gateway for off-link destinations (`None`: off-link is unreachable).
    pub gateway: Option<Ipv4Addr>,
    /// IP MTU in bytes (default 1500); larger datagrams are not sent.
    pub mtu: usize,
    /// Most ARP cache entries (default 1024).
    pub arp_cache_size: usize,
    /// Most frames held while waiting for ARP resolution, all destinations together
    /// (default 64).
    pub arp_pending_limit: usize,
    /// Most bytes held while waiting for ARP resolution (default 256 KiB).
    pub arp_pending_bytes: usize,
    /// Interval between ARP requests for an unresolved address (default 1 s).
    pub arp_retry: Duration,
    /// ARP requests sent before giving up and dropping the queued frames (default 3).
    pub arp_retries: u8,
    /// Lifetime of a cache entry since it was last confirmed (default 60 s). Received
    /// IPv4 from an on-link peer confirms its entry.
    pub arp_entry_ttl: Duration,
    /// Answer to segments for closed ports (default RST).
    pub closed_port: ClosedPortPolicy,
    /// Verify IPv4, ICMP and TCP checksums on receive (default true).
    pub verify_checksums: bool,
    /// TTL of datagrams we originate (default 64).
    pub ttl: u8,
    /// Most ARP/ICMP replies held until [`Interface::poll_transmit`] (default 64).
    pub control_queue_limit: usize,
}

impl InterfaceConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(mac: EthernetAddress, addr: Ipv4Addr, prefix_len: u8) -> InterfaceConfig {
        InterfaceConfig {
            mac,
            addr,
            prefix_len,
            gateway: None,
            mtu: 1500,
            arp_cache_size: 1024,
            arp_pending_limit: 64,
            arp_pending_bytes: 256 * 1024,
            arp_retry: Duration::from_secs(1),
            arp_retries: 3,
            arp_entry_ttl: Duration::from_secs(60),
            closed_port: ClosedPortPolicy::Rst,
            verify_checksums: true,
            ttl: ipv4::DEFAULT_TTL,
            control_queue_limit: 64,
        }
    }
}

/// Counters of everything the interface did or dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Frames given to `receive`.
    pub rx_frames: u64,
    /// Frames dropped as malformed (truncated, bad lengths, bad options, bad version).
    pub rx_malformed: u64,
    /// Frames of an EtherType we do not handle (VLAN, IPv6, ...).
    pub rx_unsupported_ethertype: u64,
    /// IPv4 datagrams of a protocol we do not handle (UDP, ...), or unhandled ICMP types.
    pub rx_unsupported_protocol: u64,
    /// Frames or datagrams not addressed to us (MAC or IP).
    pub rx_not_for_us: u64,
    /// Datagrams or ARP packets with an invalid source (broadcast, multicast, ours...).
    pub rx_bad_source: u64,
    /// IPv4 header checksum failures.
    pub ip_bad_checksum: u64,
    /// TCP checksum failures.
    pub tcp_bad_checksum: u64,
    /// ICMP checksum failures.
    pub icmp_bad_checksum: u64,
    /// IPv4 fragments dropped (no reassembly).
    pub fragments_dropped: u64,
    /// TCP segments handed up.
    pub tcp_rx: u64,
    /// Of those, the ones header prediction's receive path took (counted once there,
    /// and added to `rx_frames` and `tcp_rx` by [`Interface::stats`]).
    pub tcp_rx_predicted: u64,
    /// TCP segments transmitted (including RSTs and frames released by ARP).
    pub tcp_tx: u64,
    /// ARP requests received for our address.
    pub arp_requests_rx: u64,
    /// ARP replies received.
    pub arp_replies_rx: u64,
    /// Gratuitous ARPs received (sender == target address).
    pub arp_gratuitous_rx: u64,
    /// ARP replies sent.
    pub arp_replies_tx: u64,
    /// ARP requests sent (first tries and retries).
    pub arp_requests_tx: u64,
    /// ARP packets claiming our own address from another MAC.
    pub arp_conflicts: u64,
    /// Resolutions given up after all retries.
    pub arp_failed: u64,
    /// Cache entries evicted to make room.
    pub arp_evictions: u64,
    /// ICMP echo requests received.
    pub icmp_echo_rx: u64,
    /// ICMP echo replies sent.
    pub icmp_echo_tx: u64,
    /// ICMP destination unreachable messages received (handed up).
    pub icmp_errors_rx: u64,
    /// ICMP port unreachable messages sent.
    pub icmp_unreachable_tx: u64,
    /// RSTs sent by [`Interface::reject`].
    pub rst_sent: u64,
    /// Frames queued waiting for ARP.
    pub pending_queued: u64,
    /// Frames dropped because the ARP queue was full or the resolution failed.
    pub pending_dropped: u64,
    /// Frames dropped because the TX queue had no free buffer.
    pub tx_full: u64,
    /// Replies dropped because the control queue was full.
    pub control_dropped: u64,
    /// Sends refused because the datagram exceeds the MTU.
    pub tx_too_big: u64,
    /// Sends refused because there is no route (off-link, no gateway) or a bad destination.
    pub tx_no_route: u64,
}

/// Why a frame was dropped or a send refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame could not be parsed.
    Malformed(WireError),
    /// A checksum (IPv4, ICMP or TCP) did not verify.
    BadChecksum,
    /// An IPv4 fragment.
    Fragmented,
    /// An EtherType we do not handle.
    UnsupportedEtherType,
    /// An IP protocol or ICMP type we do not handle.
    UnsupportedProtocol,
    /// Not addressed to us.
    NotForUs,
    /// An invalid source address.
    BadSource,
    /// No free TX buffer.
    TxFull,
    /// The ARP pending queue is full.
    PendingFull,
    /// No route to the destination, or an invalid destination.
    NoRoute,
    /// The datagram exceeds the MTU.
    TooBig,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DropReason::Malformed(e) => write!(f, "malformed frame: {e}"),
            DropReason::BadChecksum => f.write_str("bad checksum"),
            DropReason::Fragmented => f.write_str("IPv4 fragment (not reassembled)"),
            DropReason::UnsupportedEtherType => f.write_str("unsupported EtherType"),
            DropReason::UnsupportedProtocol => f.write_str("unsupported IP protocol or ICMP type"),
            DropReason::NotForUs => f.write_str("not addressed to us"),
            DropReason::BadSource => f.write_str("invalid source address"),
            DropReason::TxFull => f.write_str("no free TX buffer"),
            DropReason::PendingFull => f.write_str("ARP pending queue full"),
            DropReason::NoRoute => f.write_str("no route to destination"),
            DropReason::TooBig => f.write_str("datagram exceeds the MTU"),
        }
    }
}

impl std::error::Error for DropReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DropReason::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

/// The outcome of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendResult {
    /// The frame is in the TX queue.
    Sent,
    /// The next hop is being resolved; a copy of the frame waits (bounded) and goes out
    /// from [`Interface::poll_transmit`] once ARP answers.
    Queued,
    /// Nothing was sent or queued.
    Dropped(DropReason),
    /// Nothing to send (e.g. [`Interface::reject`] of a RST, or policy `Drop`).
    Suppressed,
}

/// What a received frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A TCP segment for our address, checksum verified (if configured).
    Tcp {
        /// Sender's IPv4 address.
        src: Ipv4Addr,
        /// Our address.
        dst: Ipv4Addr,
        /// Sender's MAC (the previous hop).
        src_mac: EthernetAddress,
        /// The segment, borrowing the frame.
        segment: TcpRepr<'a>,
        /// Where `segment.payload` starts in the frame (so a caller holding the frame
        /// mutably can lend the payload out in place once the segment is processed).
        payload_offset: usize,
    },
    /// An ICMP destination unreachable for a datagram we sent (for PMTUD and soft errors,
    /// RFC 1122 4.2.3.9, RFC 1191).
    IcmpError {
        /// Who sent the ICMP message.
        src: Ipv4Addr,
        /// The code.
        reason: DstUnreachable,
        /// Next-hop MTU for fragmentation needed, else 0.
        next_hop_mtu: u16,
        /// The quoted datagram (addresses, protocol, first payload bytes).
        original: OriginalDatagram<'a>,
    },
    /// Consumed here (ARP, ICMP echo); any reply is queued for `poll_transmit`.
    Handled,
    /// Dropped, and counted.
    Dropped(DropReason),
}

/// A TCP segment [`Interface::receive_predicted`] accepted: ACK (and maybe PSH) set, no
/// other flag, no option but timestamps; checksums verified. Offsets index the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Predicted {
    /// Sender's IPv4 address.
    pub src: Ipv4Addr,
    /// Sender's port.
    pub src_port: u16,
    /// Our port.
    pub dst_port: u16,
    /// SEG.SEQ.
    pub seq: SeqNumber,
    /// SEG.ACK.
    pub ack: SeqNumber,
    /// SEG.WND, unscaled.
    pub window: u16,
    /// The timestamps option, if the header had one.
    pub ts: Option<TcpTimestamps>,
    /// Where the payload starts in the frame (after the TCP header).
    pub payload_at: usize,
    /// Where the IP datagram ends in the frame (padding may follow).
    pub end: usize,
}

const ETH: usize = ethernet::HEADER_LEN;

/// The source classes known by the first octet (RFC 1122 3.2.1.3): 0/8, loopback
/// (127/8), multicast (224/4), one table load instead of the range tests.
static BAD_FIRST_OCTET: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i, 0 | 127 | 224..=239);
        i += 1;
    }
    t
};
const IP: usize = ipv4::HEADER_LEN;
const ARP_FRAME_LEN: usize = ETH + 28;

/// The per-core interface: see the module documentation.
#[derive(Debug)]
pub struct Interface {
    config: InterfaceConfig,
    netmask: u32,
    /// The subnet's directed broadcast address, computed once; for /31 and /32, which
    /// have none (RFC 3021), the limited broadcast address, rejected as a source anyway.
    subnet_broadcast: Ipv4Addr,
    neighbors: NeighborCache,
    pending: PendingQueue,
    /// ARP and ICMP replies waiting for `poll_transmit`.
    control: VecDeque<Vec<u8>>,
    /// Spare buffers recycled from `control`.
    spare: Vec<Vec<u8>>,
    next_ident: u16,
    stats: InterfaceStats,
}

impl Interface {
    /// An interface with `config`. Out-of-range values are clamped (prefix length to 32,
    /// MTU to 68..=65535).
    pub fn new(mut config: InterfaceConfig) -> Interface {
        config.prefix_len = config.prefix_len.min(32);
        // RFC 791: every host must accept 68-byte datagrams; 65535 is the IPv4 maximum.
        config.mtu = config.mtu.clamp(68, usize::from(u16::MAX));
        let netmask = match config.prefix_len {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        };
        Interface {
            neighbors: NeighborCache::new(config.arp_cache_size, config.arp_entry_ttl),
            pending: PendingQueue::new(config.arp_pending_limit, config.arp_pending_bytes),
            control: VecDeque::new(),
            spare: Vec::new(),
            next_ident: 0,
            stats: InterfaceStats::default(),
            netmask,
            subnet_broadcast: if config.prefix_len < 31 {
                Ipv4Addr::from(u32::from(config.addr) | !netmask)
            } else {
                Ipv4Addr::BROADCAST
            },
            config,
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &InterfaceConfig {
        &self.config
    }

    /// Our IPv4 address.
    pub fn addr(&self) -> Ipv4Addr {
        self.config.addr
    }

    /// Our MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.config.mac
    }

    /// The IP MTU.
    pub fn mtu(&self) -> usize {
        self.config.mtu
    }

    /// The counters (a copy).
    pub fn stats(&self) -> InterfaceStats {
        let mut s = self.stats.clone();
        s.rx_frames += s.tcp_rx_predicted;
        s.tcp_rx += s.tcp_rx_predicted;
        s
    }

    /// Segments header prediction's receive path took ([`InterfaceStats::tcp_rx_predicted`]).
    pub(crate) fn tcp_rx_predicted(&self) -> u64 {
        self.stats.tcp_rx_predicted
    }

    /// `ip` is in our subnet.
    pub fn is_on_link(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.config.addr)) & self.netmask == 0
    }

    /// The next hop towards `dst`: `dst` itself on-link, else the gateway.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.is_on_link(dst) {
            Some(dst)
        } else {
            self.config.gateway
        }
    }

    /// The cached MAC for `ip`, if resolved and not expired.
    pub fn neighbor(&self, now: Instant, ip: Ipv4Addr) -> Option<EthernetAddress> {
        self.neighbors.lookup(ip, now)
    }

    /// Number of ARP cache entries (expired ones included until evicted).
    pub fn neighbor_count(&self) -> usize {
        self.neighbors.len()
    }

    /// Adds or refreshes a neighbor by hand (static configuration, tests). Releases frames
    /// waiting for it.
    pub fn insert_neighbor(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress) {
        self.learn(now, ip, mac, true);
    }

    /// A source address we must not accept datagrams from (RFC 1122 3.2.1.3: broadcast,
    /// multicast, 0/8, loopback, and our own address).
    #[inline(always)]
    fn is_bad_source(&self, src: Ipv4Addr) -> bool {
        BAD_FIRST_OCTET[usize::from(src.octets()[0])]
            || src.is_broadcast()
            || src == self.config.addr
            || src == self.subnet_broadcast
    }

    fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: EthernetAddress, create: bool) -> Fill {
        let (fill, evicted) = self.neighbors.fill(ip, mac, now, create);
        if evicted {
            self.stats.arp_evictions += 1;
        }
        if fill != Fill::Ignored && !self.pending.resolutions.is_empty() {
            self.pending.resolve(ip, mac);
        }
        fill
    }

    // ---- receive ------------------------------------------------------------------

    /// Parses one received frame. ARP and ICMP echo are answered internally (replies
    /// queued for [`poll_transmit`](Self::poll_transmit)); a TCP segment for our address is
    /// returned for the TCP layer; everything else is dropped and counted.
    pub fn receive<'a>(&mut self, now: Instant, frame: &'a [u8]) -> Inbound<'a> {
        self.stats.rx_frames += 1;
        let eth = match EthernetFrame::new_checked(frame) {
            Ok(f) => f,
            Err(e) => return self.malformed(e),
        };
        let repr = match EthernetRepr::parse(&eth) {
            Ok(r) => r,
            Err(WireError::Unsupported) => {
                self.stats.rx_unsupported_ethertype += 1;
                return Inbound::Dropped(DropReason::UnsupportedEtherType);
            }
            Err(e) => return self.malformed(e),
        };
        let to_us = repr.dst_addr == self.config.mac;
        if !to_us && !repr.dst_addr.is_broadcast() {
            return self.not_for_us();
        }
        match repr.ethertype {
            EtherType::Arp => self.receive_arp(now, &repr, eth.payload()),
            EtherType::Ipv4 => self.receive_ipv4(now, &repr, to_us, eth.payload()),
            _ => {
                self.stats.rx_unsupported_ethertype += 1;
                Inbound::Dropped(DropReason::UnsupportedEtherType)
            }
        }
    }

    /// Header prediction's first half (RFC 9293 3.10.7.4's fast path as BSD and Linux
    /// do it, here for the layers below TCP): a frame in the exact layout an established
    /// connection's segments have — unicast to our MAC, IPv4 without options,
    /// unfragmented, for our address from a good source, TCP with ACK (and maybe PSH) as
    /// its only flags and no option or exactly NOP NOP TS — is checked with fixed-offset
    /// reads, both checksums verified (when configured), counted and its sender's ARP
    /// entry refreshed as [`Interface::receive`] would. Anything else is `None` with
    /// nothing counted or changed, and goes through [`Interface::receive`] (which also
    /// counts what this rejects for a bad checksum).
    #[inline(always)]
    pub(crate) fn receive_predicted(&mut self, now: Instant, frame: &[u8]) -> Option<Predicted> {
        const TCP_AT: usize = ETH + IP;
        let h = frame.first_chunk::<{ ETH + IP + tcpwire::HEADER_LEN }>()?;
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        // Ethernet: to our MAC, IPv4. IPv4: version 4 with a 20-byte header, TCP, not a
        // fragment (MF clear, offset 0), the total length within the frame.
        let ip_end = ETH + usize::from(be16(16));
        if h[0..6] != self.config.mac.0
            || be16(12) != 0x0800
            || h[14] != 0x45
            || h[23] != tcpwire::IP_PROTOCOL_TCP
            || h[20] & 0x3f != 0
            || h[21] != 0
            || ip_end > frame.len()
        {
            return None;
        }
        let src = Ipv4Addr::from_bits(be32(26));
        if be32(30) != self.config.addr.to_bits() || self.is_bad_source(src) {
            return None;
        }
        // TCP: ACK, or ACK and PSH, and a 20-byte header or one with NOP NOP TS
        // (RFC 7323 App. A): the data offset and flags read as one word (the reserved
        // bits and PSH masked out).
        let (payload_at, ts) = match be16(46) & 0xf0f7 {
            0x5010 => (TCP_AT + tcpwire::HEADER_LEN, None),
            0x8010 => {
                let o = frame.get(TCP_AT + tcpwire::HEADER_LEN..TCP_AT + 32)?;
                let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                if word(0) != 0x0101_080a {
                    return None;
                }
                let ts = TcpTimestamps {
                    tsval: word(4),
                    tsecr: word(8),
                };
                (TCP_AT + 32, Some(ts))
            }
            _ => return None,
        };
        // (Also the datagram's minimum: `payload_at` is at least a TCP header in.)
        if payload_at > ip_end {
            return None;
        }
        if self.config.verify_checksums {
            let ip = h[ETH..TCP_AT].first_chunk::<IP>()?;
            let tcp = frame.get(TCP_AT..ip_end)?;
            let tcp_len = u16::try_from(tcp.len()).ok()?;
            if !crate::wire::checksum::ipv4_header_verifies(ip)
                || !crate::wire::checksum::pseudo_header_and_data_verify(
                    src,
                    self.config.addr,
                    tcpwire::IP_PROTOCOL_TCP,
                    tcp_len,
                    tcp,
                )
            {
                return None;
            }
        }
        // Accepted: counted (in `rx_frames` and `tcp_rx` too, by `stats`), and the
        // sender's MAC learnt, as `receive` does.
        self.stats.tcp_rx_predicted += 1;
        let src_mac = EthernetAddress([h[6], h[7], h[8], h[9], h[10], h[11]]);
        // (`learn` would change nothing for the entry filled last while it is fresh and
        // no resolution waits: checked first, the common case.)
        let fresh =
            self.neighbors.is_fresh(src, src_mac, now) && self.pending.resolutions.is_empty();
        if !fresh && self.is_on_link(src) && src_mac.is_unicast() && src_mac != self.config.mac {
            self.learn(now, src, src_mac, true);
        }
        Some(Predicted {
            src,
            src_port: be16(34),
            dst_port: be16(36),
            seq: SeqNumber(be32(38)),
            ack: SeqNumber(be32(42)),
            window: be16(48),
            ts,
            payload_at,
            end: ip_end,
        })
    }

    fn malformed<'a>(&mut self, e: WireError) -> Inbound<'a> {
        self.stats.rx_malformed += 1;
        Inbound::Dropped(DropReason::Malformed(e))
    }

    fn not_for_us<'a>(&mut self) -> Inbound<'a> {
        self.stats.rx_not_for_us += 1;
        Inbound::Dropped(DropReason::NotForUs)
    }

    fn bad_source<'a>(&mut self) -> Inbound<'a> {
        self.stats.rx_bad_source += 1;
        Inbound::Dropped(DropReason::BadSource)
    }

    fn receive_arp<'a>(&mut self, now: Instant, eth: &EthernetRepr, payload: &[u8]) -> Inbound<'a> {
        let arp = match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
            Ok(a) => a,
            Err(WireError::Unsupported) => {
                self.stats.rx_unsupported_protocol += 1;
                return Inbound::Dropped(DropReason::UnsupportedProtocol);
            }
            Err(e) => return self.malformed(e),
        };
        let sha = arp.source_hardware_addr;
        let spa = arp.source_protocol_addr;
        let tpa = arp.target_protocol_addr;
        // The Ethernet source may differ from the sender hardware address (bridges,
        // proxies); like Linux we trust the ARP payload but require a unicast sender.
        if !sha.is_unicast() || sha == self.config.mac || eth.src_addr == self.config.mac {
            return self.bad_source();
        }
        if spa == self.config.addr {
            // Someone else claims our address (RFC 5227 2.4): never learn it.
            self.stats.arp_conflicts += 1;
            return self.bad_source();
        }
        let for_us = tpa == self.config.addr;
        match arp.operation {
            ArpOperation::Request if for_us => self.stats.arp_requests_rx += 1,
            ArpOperation::Reply => self.stats.arp_replies_rx += 1,
            _ => {}
        }
        if spa == tpa {
            self.stats.arp_gratuitous_rx += 1;
        }
        let probe = spa.is_unspecified();
        let mut learned = false;
        if !probe && self.is_on_link(spa) && !self.is_bad_source(spa) {
            // RFC 826 "Packet Reception": update an existing entry for the sender (merge);
            // add one only if we are the target. Like Linux, an unsolicited reply does not
            // create an entry: only a request to us or an answer to our own request does.
            let create = for_us
                && (arp.operation == ArpOperation::Request || self.pending.is_resolving(spa));
            learned = self.learn(now, spa, sha, create) != Fill::Ignored;
        }
        if for_us && arp.operation == ArpOperation::Request {
            // RFC 826: swap sender and target, fill in our address, send a reply. A probe
            // (sender 0.0.0.0, RFC 5227 2.1.1) is answered too, to its hardware address.
            let reply = ArpRepr {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.config.mac,
                source_protocol_addr: self.config.addr,
                target_hardware_addr: sha,
                target_protocol_addr: spa,
            };
            if self.queue_arp(sha, &reply) {
                self.stats.arp_replies_tx += 1;
            }
            return Inbound::Handled;
        }
        if for_us || learned {
            Inbound::Handled
        } else {
            self.not_for_us()
        }
    }

    fn receive_ipv4<'a>(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        to_us: bool,
        payload: &'a [u8],
    ) -> Inbound<'a> {
        // `Ipv4Repr::parse` runs the view's length checks (malformed: counted below).
        let packet = Ipv4Packet::new_unchecked(payload);
        let ip = match Ipv4Repr::parse(&packet, self.config.verify_checksums) {
            Ok(r) => r,
            Err(WireError::BadChecksum) => {
                self.stats.ip_bad_checksum += 1;
                return Inbound::Dropped(DropReason::BadChecksum);
            }
            Err(WireError::Fragmented) => {
                self.stats.fragments_dropped += 1;
                return Inbound::Dropped(DropReason::Fragmented);
            }
            Err(e) => return self.malformed(e),
        };
        if ip.dst_addr != self.config.addr {
            return self.not_for_us();
        }
        if self.is_bad_source(ip.src_addr) {
            return self.bad_source();
        }
        // Learn (or confirm) the on-link sender's MAC, as an ARP cache refresh.
        if self.is_on_link(ip.src_addr)
            && eth.src_addr.is_unicast()
            && eth.src_addr != self.config.mac
        {
            self.learn(now, ip.src_addr, eth.src_addr, true);
        }
        let body = packet.payload();
        match ip.protocol {
            IpProtocol::Tcp => {
                if !to_us {
                    // Link-layer broadcast carrying TCP: not for a host (Linux drops it).
                    return self.not_for_us();
                }
                let segment = match TcpRepr::parse_bytes(
                    body,
                    ip.src_addr,
                    ip.dst_addr,
                    self.config.verify_checksums,
                ) {
                    Ok(s) => s,
                    Err(WireError::BadChecksum) => {
                        self.stats.tcp_bad_checksum += 1;
                        return Inbound::Dropped(DropReason::BadChecksum);
                    }
                    Err(e) => return self.malformed(e),
                };
                self.stats.tcp_rx += 1;
                // The payload is the tail of the IP payload, which starts after the
                // Ethernet and IP headers.
                let payload_offset =
                    ETH + packet.header_len() + body.len().saturating_sub(segment.payload.len());
                Inbound::Tcp {
                    src: ip.src_addr,
                    dst: ip.dst_addr,
                    src_mac: eth.src_addr,
                    segment,
                    payload_offset,
                }
            }
            IpProtocol::Icmp => self.receive_icmp(eth, &ip, body),
            _ => {
                self.stats.rx_unsupported_protocol += 1;
                Inbound::Dropped(DropReason::UnsupportedProtocol)
            }
        }
    }

    fn receive_icmp<'a>(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv4Repr,
        body: &'a [u8],
    ) -> Inbound<'a> {
        let icmp = match Icmpv4Packet::new_checked(body)
            .and_then(|p| Icmpv4Repr::parse(&p, self.config.verify_checksums))
        {
            Ok(r) => r,
            Err(WireError::BadChecksum) => {
                self.stats.icmp_bad_checksum += 1;
                return Inbound::Dropped(DropReason::BadChecksum);
            }
            Err(WireError::Unsupported) => {
                self.stats.rx_unsupported_protocol += 1;
                return Inbound::Dropped(DropReason::UnsupportedProtocol);
            }
            Err(e) => return self.malformed(e),
        };
        match icmp {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                self.stats.icmp_echo_rx += 1;
                // RFC 1122 3.2.2.6: MUST answer; the reply carries the same identifier,
                // sequence number and data.
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                if self.queue_icmp(eth.src_addr, ip.src_addr, &reply) {
                    self.stats.icmp_echo_tx += 1;
                }
                Inbound::Handled
            }
            Icmpv4Repr::EchoReply { .. } => {
                // We never send echo requests.
                self.stats.rx_unsupported_protocol += 1;
                Inbound::Dropped(DropReason::UnsupportedProtocol)
            }
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                original,
            } => match OriginalDatagram::parse(original) {
                Ok(o) if o.src_addr == self.config.addr => {
                    self.stats.icmp_errors_rx += 1;
                    Inbound::IcmpError {
                        src: ip.src_addr,
                        reason,
                        next_hop_mtu,
                        original: o,
                    }
                }
                Ok(_) => self.not_for_us(),
                Err(e) => self.malformed(e),
            },
        }
    }

    // ---- control queue ----------------------------------------------------------------

    fn control_buffer(&mut self, len: usize) -> Option<Vec<u8>> {
        if self.control.len() >= self.config.control_queue_limit {
            self.stats.control_dropped += 1;
            return None;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        Some(buf)
    }

    fn queue_arp(&mut self, dst_mac: EthernetAddress, arp: &ArpRepr) -> bool {
        let Some(mut buf) = self.control_buffer(ARP_FRAME_LEN) else {
            return false;
        };
        let eth = EthernetRepr {
            src_addr: self.config.mac,
            dst_addr: dst_mac,
            ethertype: EtherType::Arp,
        };
        let ok =
            eth.emit(&mut buf).is_ok() && buf.get_mut(ETH..).is_some_and(|b| arp.emit(b).is_ok());
        if ok {
            self.control.push_back(buf);
        } else {
            self.spare.push(buf);
        }
        ok
    }

    fn queue_arp_request(&mut self, target: Ipv4Addr) -> bool {
        let req = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.config.mac,
            source_protocol_addr: self.config.addr,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: target,
        };
        let ok = self.queue_arp(EthernetAddress::BROADCAST, &req);
        if ok {
            self.stats.arp_requests_tx += 1;
        }
        ok
    }

    fn next_ip_repr(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: IpProtocol,
        len: usize,
    ) -> Ipv4Repr {
        let ident = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            payload_len: len,
            ttl: self.config.ttl,
            ident,
            // RFC 1191 3: path MTU discovery sets DF on every datagram.
            dont_frag: true,
            tos: 0,
        }
    }

    /// Queues an ICMP message to `dst` (a neighbor whose MAC we just saw).
    fn queue_icmp(&mut self, dst_mac: EthernetAddress, dst: Ipv4Addr, icmp: &Icmpv4Repr) -> bool {
        let icmp_len = icmp.buffer_len();
        if IP + icmp_len > self.config.mtu {
            self.stats.tx_too_big += 1;
            return false;
        }
        let ip = self.next_ip_repr(self.config.addr, dst, IpProtocol::Icmp, icmp_len);
        let Some(mut buf) = self.control_buffer(ETH + IP + icmp_len) else {
            return false;
        };
        let eth = EthernetRepr {
            src_addr: self.config.mac,
            dst_addr: dst_mac,
            ethertype: EtherType::Ipv4,
        };
        let ok = eth.emit(&mut buf).is_ok()
            && buf.get_mut(ETH..).is_some_and(|b| ip.emit(b).is_ok())
            && buf
                .get_mut(ETH + IP..)
                .is_some_and(|b| icmp.emit(b).is_ok());
        if ok {
            self.control.push_back(buf);
        } else {
            self.spare.push(buf);
        }
        ok
    }

    // ---- send -------------------------------------------------------------------------

    /// Builds Ethernet + IPv4 (DF, TTL, fresh identification) + TCP for `segment` straight
    /// into a TX buffer, copying the payload once. The next hop (on-link: `dst`, else the
    /// gateway) is resolved through the ARP cache; when unresolved, a bounded copy of the
    /// frame waits and an ARP request goes out (retries and expiry in
    /// [`handle_timeout`](Self::handle_timeout)).
    pub fn send_tcp(
        &mut self,
        now: Instant,
        tx: &mut impl TxQueue,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &TcpRepr,
    ) -> SendResult {
        let payload = segment.payload;
        self.send_tcp_with(now, tx, src, dst, segment, payload.len(), |buf| {
            buf.copy_from_slice(payload)
        })
    }

    /// Like [`send_tcp`](Self::send_tcp), but the payload (`payload_len` bytes) is written
    /// by `fill_payload` straight into the frame — e.g. from the two halves of a ring
    /// buffer. `segment.payload` is ignored. `fill_payload` is called at most once, with a
    /// slice of exactly `payload_len` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn send_tcp_with(
        &mut self,
        now: Instant,
        tx: &mut impl TxQueue,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &TcpRepr,
        payload_len: usize,
        fill_payload: impl FnOnce(&mut [u8]),
    ) -> SendResult {
        let tcp_len = segment.header_len() + payload_len;
        if IP + tcp_len > self.config.mtu {
            self.stats.tx_too_big += 1;
            return SendResult::Dropped(DropReason::TooBig);
        }
        if dst.is_broadcast() || dst.is_multicast() || dst.is_unspecified() {
            self.stats.tx_no_route += 1;
            return SendResult::Dropped(DropReason::NoRoute);
        }
        let Some(next_hop) = self.next_hop(dst) else {
            self.stats.tx_no_route += 1;
            return SendResult::Dropped(DropReason::NoRoute);
        };
        let ip = self.next_ip_repr(src, dst, IpProtocol::Tcp, tcp_len);
        let frame_len = ETH + IP + tcp_len;
        let src_mac = self.config.mac;
        let build = |buf: &mut [u8], dst_mac: EthernetAddress| -> usize {
            build_tcp_frame(
                buf,
                src_mac,
                dst_mac,
                &ip,
                segment,
                payload_len,
                fill_payload,
            )
            .unwrap_or(0)
        };

        if let Some(mac) = self.neighbors.lookup(next_hop, now) {
            if tx.transmit(frame_len, |buf| build(buf, mac)) {
                self.stats.tcp_tx += 1;
                return SendResult::Sent;
            }
            self.stats.tx_full += 1;
            return SendResult::Dropped(DropReason::TxFull);
        }

        // Unresolved: keep a bounded copy and ask.
        if !self.pending.has_room(frame_len) {
            self.stats.pending_dropped += 1;
            return SendResult::Dropped(DropReason::PendingFull);
        }
        let mut copy = vec![0u8; frame_len];
        if build(&mut copy, EthernetAddress::UNSPECIFIED) == 0 {
            // Unreachable in practice: the sizes were checked above.
            self.stats.pending_dropped += 1;
            return SendResult::Dropped(DropReason::TooBig);
        }
        self.pending.push(next_hop, copy);
        self.stats.pending_queued += 1;
        if self.pending.resolution_mut(next_hop).is_none() {
            self.pending.resolutions.push(Resolution {
                ip: next_hop,
                attempts: 0,
                next_retry: now,
            });
            self.send_arp_requests(now);
            self.flush_control(tx);
        }
        SendResult::Queued
    }

    /// Answers a segment that matched no socket, according to the closed-port policy.
    ///
    /// `src`/`dst` are the addresses of the received segment (the peer, then us).
    /// With [`ClosedPortPolicy::Rst`], per RFC 9293 3.10.7.1: a RST is never answered;
    /// if ACK is set the reply is `<SEQ=SEG.ACK><CTL=RST>`, otherwise
    /// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`.
    pub fn reject(
        &mut self,
        now: Instant,
        tx: &mut impl TxQueue,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &TcpRepr,
    ) -> SendResult {
        // RFC 9293 3.10.7.1: an incoming segment containing a RST is discarded.
        if segment.flags.contains(TcpFlags::RST) {
            return SendResult::Suppressed;
        }
        match self.config.closed_port {
            ClosedPortPolicy::Drop => SendResult::Suppressed,
            ClosedPortPolicy::Rst => {
                let rst = rst_for(segment);
                let r = self.send_tcp(now, tx, dst, src, &rst);
                if matches!(r, SendResult::Sent | SendResult::Queued) {
                    self.stats.rst_sent += 1;
                }
                r
            }
            ClosedPortPolicy::IcmpUnreachable => {
                self.send_port_unreachable(now, tx, src, dst, segment)
            }
        }
    }

    fn send_port_unreachable(
        &mut self,
        now: Instant,
        tx: &mut impl TxQueue,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        segment: &TcpRepr,
    ) -> SendResult {
        // RFC 792 / RFC 1122 3.2.2: quote the offending IP header and at least the first 8
        // bytes of its payload (TCP ports and sequence number). The original header is
        // rebuilt from what the TCP layer kept.
        let mut original = [0u8; IP + 8];
        let orig_ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::Tcp,
            payload_len: segment.buffer_len(),
            ttl: self.config.ttl,
            ident: 0,
            dont_frag: true,
            tos: 0,
        };
        if orig_ip.emit(&mut original).is_err() {
            return SendResult::Dropped(DropReason::Malformed(WireError::BadValue));
        }
        if let Some(t) = original.get_mut(IP..) {
            t[0..2].copy_from_slice(&segment.src_port.to_be_bytes());
            t[2..4].copy_from_slice(&segment.dst_port.to_be_bytes());
            t[4..8].copy_from_slice(&segment.seq.0.to_be_bytes());
        }
        let icmp = Icmpv4Repr::DstUnreachable {
            reason: DstUnreachable::PortUnreachable,
            next_hop_mtu: 0,
            original: &original,
        };
        let Some(next_hop) = self.next_hop(src) else {
            self.stats.tx_no_route += 1;
            return SendResult::Dropped(DropReason::NoRoute);
        };
        let Some(mac) = self.neighbors.lookup(next_hop, now) else {
            // The peer's MAC was learned from the segment being rejected; if it is gone,
            // an ICMP error is not worth an ARP round trip.
            self.stats.tx_no_route += 1;
            return SendResult::Dropped(DropReason::NoRoute);
        };
        if self.queue_icmp(mac, src, &icmp) {
            self.stats.icmp_unreachable_tx += 1;
            self.flush_control(tx);
            SendResult::Sent
        } else {
            SendResult::Dropped(DropReason::TxFull)
        }
    }

    // ---- transmit and timers ----------------------------------------------------------

    fn flush_control(&mut self, tx: &mut impl TxQueue) -> bool {
        while let Some(frame) = self.control.front() {
            let len = frame.len();
            let sent = tx.transmit(len, |buf| match buf.get_mut(..len) {
                Some(dst) => {
                    dst.copy_from_slice(frame);
                    len
                }
                None => 0,
            });
            if !sent {
                return false;
            }
            if let Some(f) = self.control.pop_front() {
                if self.spare.len() < self.config.control_queue_limit {
                    self.spare.push(f);
                }
            }
        }
        true
    }

    /// Transmits queued ARP replies and requests, ICMP replies, and frames released by
    /// ARP resolution, until `tx` is full. Call after a batch of `receive`s, after
    /// `handle_timeout`, and whenever `tx` has room again.
    pub fn poll_transmit(&mut self, _now: Instant, tx: &mut impl TxQueue) {
        if !self.flush_control(tx) {
            return;
        }
        while let Some(frame) = self.pending.front_released() {
            let len = frame.len();
            let sent = tx.transmit(len, |buf| match buf.get_mut(..len) {
                Some(dst) => {
                    dst.copy_from_slice(frame);
                    len
                }
                None => 0,
            });
            if !sent {
                return;
            }
            self.pending.pop_released();
            self.stats.tcp_tx += 1;
        }
    }

    /// Whether `poll_transmit` has frames to send.
    pub fn has_pending_transmit(&self) -> bool {
        !self.control.is_empty() || self.pending.front_released().is_some()
    }

    /// The next ARP retry or expiry deadline, if any resolution is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.next_retry()
    }

    /// Retries ARP requests that are due and gives up on those out of retries (dropping
    /// their frames). Requests are queued for [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_arp_requests(now);
    }

    fn send_arp_requests(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(r) = self.pending.resolutions.get(i).copied() {
            if r.next_retry > now {
                i += 1;
                continue;
            }
            if r.attempts >= self.config.arp_retries.max(1) {
                let dropped = self.pending.fail(r.ip);
                self.stats.arp_failed += 1;
                self.stats.pending_dropped += dropped as u64;
                continue; // `fail` removed entry i
            }
            let sent = self.queue_arp_request(r.ip);
            if let Some(res) = self.pending.resolutions.get_mut(i) {
                if sent {
                    res.attempts += 1;
                }
                res.next_retry = now + self.config.arp_retry;
            }
            i += 1;
        }
    }
}

/// The RST answering `segment` on a closed port (RFC 9293 3.10.7.1).
pub fn rst_for(segment: &TcpRepr) -> TcpRepr<'static> {
    let (seq, ack, flags) = if segment.flags.contains(TcpFlags::ACK) {
        (segment.ack, SeqNumber(0), TcpFlags::RST)
    } else {
        (
            SeqNumber(0),
            segment.seq + segment.segment_len(),
            TcpFlags::RST | TcpFlags::ACK,
        )
    };
    TcpRepr {
        src_port: segment.dst_port,
        dst_port: segment.src_port,
        seq,
        ack,
        flags,
        window: 0,
        urgent: 0,
        options: TcpOptions::default(),
        payload: &[],
    }
}

/// Writes Ethernet + IPv4 + TCP into `buf`, the payload by `fill_payload`; returns the
/// frame length.
fn build_tcp_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    ip: &Ipv4Repr,
    segment: &TcpRepr,
    payload_len: usize,
    fill_payload: impl FnOnce(&mut [u8]),
) -> Result<usize, WireError> {
    let hl = segment.header_len();
    let total = ETH + IP + hl + payload_len;
    let frame = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::Ipv4,
    }
    .emit(frame)?;
    let rest = frame.get_mut(ETH..).ok_or(WireError::BufferTooSmall)?;
    ip.emit(rest)?;
    let tcp = rest.get_mut(IP..).ok_or(WireError::BufferTooSmall)?;
    let payload = tcp
        .get_mut(hl..hl + payload_len)
        .ok_or(WireError::BufferTooSmall)?;
    fill_payload(payload);
    segment.emit_header(tcp, payload_len, ip.src_addr, ip.dst_addr)?;
    Ok(total)
}

/// Longest Ethernet + IPv4 + TCP header we emit, for callers sizing TX buffers.
pub const MAX_FRAME_HEADERS: usize = ETH + IP + tcpwire::MAX_HEADER_LEN;
