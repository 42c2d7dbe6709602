//! Unit tests of the interface, grouped by protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::wire::checksum;
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::{SackBlocks, TcpTimestamps};
use proptest::prelude::*;

const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x03]);
const GW_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 7);
const T0: Instant = Instant::ZERO;

fn config() -> InterfaceConfig {
    let mut c = InterfaceConfig::new(OUR_MAC, OUR_IP, 24);
    c.gateway = Some(GW_IP);
    c
}

fn iface() -> Interface {
    Interface::new(config())
}

fn eth_frame(src: EthernetAddress, dst: EthernetAddress, ty: EtherType, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETH + body.len()];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: ty,
    }
    .emit(&mut f)
    .unwrap();
    f[ETH..].copy_from_slice(body);
    f
}

fn arp_frame(eth_dst: EthernetAddress, arp: ArpRepr) -> Vec<u8> {
    let mut b = [0u8; 28];
    arp.emit(&mut b).unwrap();
    eth_frame(arp.source_hardware_addr, eth_dst, EtherType::Arp, &b)
}

fn arp_request(sha: EthernetAddress, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        EthernetAddress::BROADCAST,
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: tpa,
        },
    )
}

fn arp_reply_from(sha: EthernetAddress, spa: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        OUR_MAC,
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: OUR_MAC,
            target_protocol_addr: OUR_IP,
        },
    )
}

fn ipv4_frame(
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    body: &[u8],
) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: proto,
        payload_len: body.len(),
        ttl: 64,
        ident: 99,
        dont_frag: true,
        tos: 0,
    };
    let mut b = vec![0u8; ip.buffer_len()];
    ip.emit(&mut b).unwrap();
    b[IP..].copy_from_slice(body);
    eth_frame(src_mac, OUR_MAC, EtherType::Ipv4, &b)
}

fn segment(flags: TcpFlags, payload: &[u8]) -> TcpRepr<'_> {
    TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq: SeqNumber(1000),
        ack: SeqNumber(5000),
        flags,
        window: 65535,
        urgent: 0,
        options: TcpOptions::default(),
        payload,
    }
}

fn tcp_frame(src_mac: EthernetAddress, src: Ipv4Addr, seg: &TcpRepr) -> Vec<u8> {
    let mut b = vec![0u8; seg.buffer_len()];
    seg.emit(&mut b, src, OUR_IP).unwrap();
    ipv4_frame(src_mac, src, OUR_IP, IpProtocol::Tcp, &b)
}

fn echo_request_frame(data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x1c46,
        seq_no: 7,
        data,
    };
    let mut b = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut b).unwrap();
    ipv4_frame(PEER_MAC, PEER_IP, OUR_IP, IpProtocol::Icmp, &b)
}

/// Parses a transmitted IPv4 frame, verifying every checksum.
fn parse_sent(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let er = EthernetRepr::parse(&eth).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let ir = Ipv4Repr::parse(&ip, true).unwrap();
    (er, ir, ip.payload().to_vec())
}

fn sent_tcp(frame: &[u8]) -> (EthernetRepr, Ipv4Repr, TcpRepr<'static>) {
    let (e, i, body) = parse_sent(frame);
    let body: &'static [u8] = Box::leak(body.into_boxed_slice());
    let seg = TcpRepr::parse_bytes(body, i.src_addr, i.dst_addr, true).unwrap();
    (e, i, seg)
}

fn sent_arp(frame: &[u8]) -> (EthernetRepr, ArpRepr) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let er = EthernetRepr::parse(&eth).unwrap();
    assert_eq!(er.ethertype, EtherType::Arp);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    (er, arp)
}

// ---- ARP -----------------------------------------------------------------------------

#[test]
fn arp_request_for_us_reply_queued_and_sender_learned() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    let f = arp_request(PEER_MAC, PEER_IP, OUR_IP);
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Handled);
    assert!(tx.frames.is_empty());
    assert!(i.has_pending_transmit());
    i.poll_transmit(T0, &mut tx);
    assert_eq!(tx.frames.len(), 1);
    let (eth, arp) = sent_arp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(eth.src_addr, OUR_MAC);
    assert_eq!(
        arp,
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: OUR_MAC,
            source_protocol_addr: OUR_IP,
            target_hardware_addr: PEER_MAC,
            target_protocol_addr: PEER_IP,
        }
    );
    assert_eq!(i.neighbor(T0, PEER_IP), Some(PEER_MAC));
    assert_eq!(i.stats().arp_requests_rx, 1);
    assert_eq!(i.stats().arp_replies_tx, 1);
}

#[test]
fn arp_request_for_other_host_not_for_us_not_learned() {
    let mut i = iface();
    let f = arp_request(PEER_MAC, PEER_IP, Ipv4Addr::new(198, 18, 0, 9));
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Dropped(DropReason::NotForUs));
    assert!(!i.has_pending_transmit());
    assert_eq!(i.neighbor(T0, PEER_IP), None);
}

#[test]
fn arp_gratuitous_unknown_sender_not_learned() {
    let mut i = iface();
    let f = arp_request(PEER_MAC, PEER_IP, PEER_IP);
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Dropped(DropReason::NotForUs));
    assert_eq!(i.neighbor(T0, PEER_IP), None);
    assert_eq!(i.stats().arp_gratuitous_rx, 1);
}

#[test]
fn arp_gratuitous_known_sender_updates_mac() {
    let mut i = iface();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let f = arp_request(OTHER_MAC, PEER_IP, PEER_IP);
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Handled);
    assert_eq!(i.neighbor(T0, PEER_IP), Some(OTHER_MAC));
    assert!(!i.has_pending_transmit());
}

#[test]
fn arp_unsolicited_reply_not_learned() {
    let mut i = iface();
    let f = arp_reply_from(PEER_MAC, PEER_IP);
    assert_eq!(i.receive(T0, &f), Inbound::Handled);
    assert_eq!(i.neighbor(T0, PEER_IP), None);
    assert_eq!(i.stats().arp_replies_rx, 1);
}

#[test]
fn arp_unsolicited_reply_known_sender_updates_mac() {
    let mut i = iface();
    i.insert_neighbor(T0, PEER_IP, OTHER_MAC);
    let f = arp_reply_from(PEER_MAC, PEER_IP);
    assert_eq!(i.receive(T0, &f), Inbound::Handled);
    assert_eq!(i.neighbor(T0, PEER_IP), Some(PEER_MAC));
}

#[test]
fn arp_claiming_our_address_conflict_counted_not_learned() {
    let mut i = iface();
    let f = arp_request(OTHER_MAC, OUR_IP, OUR_IP);
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Dropped(DropReason::BadSource));
    assert_eq!(i.stats().arp_conflicts, 1);
    assert_eq!(i.neighbor(T0, OUR_IP), None);
}

#[test]
fn arp_probe_for_us_answered_not_learned() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    let f = arp_request(PEER_MAC, Ipv4Addr::UNSPECIFIED, OUR_IP);
    let r = i.receive(T0, &f);
    assert_eq!(r, Inbound::Handled);
    i.poll_transmit(T0, &mut tx);
    let (eth, arp) = sent_arp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(arp.target_protocol_addr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(i.neighbor_count(), 0);
}

#[test]
fn arp_reply_broadcast_sender_mac_bad_source() {
    let mut i = iface();
    let f = arp_frame(
        OUR_MAC,
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress::BROADCAST,
            source_protocol_addr: PEER_IP,
            target_hardware_addr: OUR_MAC,
            target_protocol_addr: OUR_IP,
        },
    );
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadSource));
    assert_eq!(i.neighbor_count(), 0);
}

#[test]
fn arp_control_queue_full_reply_dropped_counted() {
    let mut c = config();
    c.control_queue_limit = 2;
    let mut i = Interface::new(c);
    for _ in 0..3 {
        i.receive(T0, &arp_request(PEER_MAC, PEER_IP, OUR_IP));
    }
    assert_eq!(i.stats().control_dropped, 1);
    let mut tx = VecTxQueue::new();
    i.poll_transmit(T0, &mut tx);
    assert_eq!(tx.frames.len(), 2);
}

// ---- IPv4 / ICMP ---------------------------------------------------------------------

#[test]
fn icmp_echo_request_reply_same_ident_seq_data_valid_checksums() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    let data: Vec<u8> = (0..56u8).collect();
    assert_eq!(i.receive(T0, &echo_request_frame(&data)), Inbound::Handled);
    i.poll_transmit(T0, &mut tx);
    assert_eq!(tx.frames.len(), 1);
    let (eth, ip, body) = parse_sent(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(ip.src_addr, OUR_IP);
    assert_eq!(ip.dst_addr, PEER_IP);
    assert_eq!(ip.protocol, IpProtocol::Icmp);
    let p = Icmpv4Packet::new_checked(&body[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(
        Icmpv4Repr::parse(&p, true).unwrap(),
        Icmpv4Repr::EchoReply {
            ident: 0x1c46,
            seq_no: 7,
            data: &data
        }
    );
    assert_eq!(i.stats().icmp_echo_rx, 1);
    assert_eq!(i.stats().icmp_echo_tx, 1);
    // The request taught us the sender's MAC.
    assert_eq!(i.neighbor(T0, PEER_IP), Some(PEER_MAC));
}

#[test]
fn icmp_echo_bad_checksum_dropped_counted() {
    let mut i = iface();
    let mut f = echo_request_frame(b"ping");
    let last = f.len() - 1;
    f[last] ^= 0xff;
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadChecksum));
    assert_eq!(i.stats().icmp_bad_checksum, 1);
    assert!(!i.has_pending_transmit());
}

#[test]
fn ipv4_bad_header_checksum_dropped_counted() {
    let mut i = iface();
    let mut f = echo_request_frame(b"ping");
    f[ETH + 8] = 1; // TTL changed without fixing the checksum
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadChecksum));
    assert_eq!(i.stats().ip_bad_checksum, 1);
}

#[test]
fn ipv4_checksum_verification_off_accepts_bad_header() {
    let mut c = config();
    c.verify_checksums = false;
    let mut i = Interface::new(c);
    let mut f = echo_request_frame(b"ping");
    f[ETH + 8] = 1;
    assert_eq!(i.receive(T0, &f), Inbound::Handled);
}

#[test]
fn ipv4_fragment_dropped_counted() {
    let mut i = iface();
    let mut f = echo_request_frame(b"ping");
    f[ETH + 6] = 0x20; // MF
    let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
    ip.fill_checksum();
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::Fragmented));
    assert_eq!(i.stats().fragments_dropped, 1);
}

#[test]
fn ipv4_for_other_address_not_for_us() {
    let mut i = iface();
    let seg = segment(TcpFlags::SYN, &[]);
    let mut b = vec![0u8; seg.buffer_len()];
    let other = Ipv4Addr::new(198, 18, 0, 77);
    seg.emit(&mut b, PEER_IP, other).unwrap();
    let mut f = ipv4_frame(PEER_MAC, PEER_IP, other, IpProtocol::Tcp, &b);
    let _ = &mut f;
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::NotForUs));
    assert_eq!(i.stats().rx_not_for_us, 1);
}

#[test]
fn ipv4_broadcast_source_bad_source() {
    let mut i = iface();
    let f = tcp_frame(
        PEER_MAC,
        Ipv4Addr::new(198, 18, 0, 255),
        &segment(TcpFlags::SYN, &[]),
    );
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadSource));
    let f = tcp_frame(
        PEER_MAC,
        Ipv4Addr::new(224, 0, 0, 1),
        &segment(TcpFlags::SYN, &[]),
    );
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadSource));
    assert_eq!(i.stats().rx_bad_source, 2);
}

#[test]
fn bad_source_matches_the_plain_definition() {
    // RFC 1122 3.2.1.3's classes as written before the first-octet table, for every first
    // octet (with host parts that hit our address and the subnet broadcast too).
    let i = iface();
    let ours = i.addr();
    let bcast = Ipv4Addr::from(u32::from(ours) | !i.netmask);
    for o in 0..=255u8 {
        for rest in [
            [0, 0, 0],
            [0, 0, 1],
            [255, 255, 255],
            ours.octets()[1..].try_into().unwrap(),
        ] {
            let src = Ipv4Addr::new(o, rest[0], rest[1], rest[2]);
            let plain = src.is_broadcast()
                || src.is_multicast()
                || src.is_loopback()
                || src.octets()[0] == 0
                || src == ours
                || (i.config.prefix_len < 31 && src == bcast);
            assert_eq!(i.is_bad_source(src), plain, "{src}");
        }
    }
    assert!(i.is_bad_source(bcast));
}

#[test]
fn ipv4_udp_unsupported_protocol() {
    let mut i = iface();
    let f = ipv4_frame(PEER_MAC, PEER_IP, OUR_IP, IpProtocol::Udp, &[0u8; 8]);
    assert_eq!(
        i.receive(T0, &f),
        Inbound::Dropped(DropReason::UnsupportedProtocol)
    );
}

#[test]
fn ethernet_vlan_frame_unsupported() {
    let mut i = iface();
    let f = eth_frame(PEER_MAC, OUR_MAC, EtherType::Vlan, &[0u8; 46]);
    assert_eq!(
        i.receive(T0, &f),
        Inbound::Dropped(DropReason::UnsupportedEtherType)
    );
    assert_eq!(i.stats().rx_unsupported_ethertype, 1);
}

#[test]
fn ethernet_other_destination_mac_not_for_us() {
    let mut i = iface();
    let mut f = echo_request_frame(b"x");
    f[..6].copy_from_slice(&OTHER_MAC.0);
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::NotForUs));
}

#[test]
fn ethernet_runt_frame_malformed() {
    let mut i = iface();
    assert_eq!(
        i.receive(T0, &[0u8; 10]),
        Inbound::Dropped(DropReason::Malformed(WireError::Truncated))
    );
    assert_eq!(i.stats().rx_malformed, 1);
}

#[test]
fn icmp_frag_needed_handed_up_with_mtu() {
    let mut i = iface();
    // Quote a datagram we sent: us -> peer, TCP 80 -> 40000.
    let orig_ip = Ipv4Repr {
        src_addr: OUR_IP,
        dst_addr: REMOTE_IP,
        protocol: IpProtocol::Tcp,
        payload_len: 1480,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        tos: 0,
    };
    let mut orig = [0u8; 28];
    orig_ip.emit(&mut orig).unwrap();
    orig[20..22].copy_from_slice(&80u16.to_be_bytes());
    orig[22..24].copy_from_slice(&40000u16.to_be_bytes());
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: DstUnreachable::FragRequired,
        next_hop_mtu: 1400,
        original: &orig,
    };
    let mut b = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut b).unwrap();
    let f = ipv4_frame(PEER_MAC, GW_IP, OUR_IP, IpProtocol::Icmp, &b);
    match i.receive(T0, &f) {
        Inbound::IcmpError {
            src,
            reason,
            next_hop_mtu,
            original,
        } => {
            assert_eq!(src, GW_IP);
            assert_eq!(reason, DstUnreachable::FragRequired);
            assert_eq!(next_hop_mtu, 1400);
            assert_eq!(original.dst_addr, REMOTE_IP);
            assert_eq!(original.ports(), (80, 40000));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(i.stats().icmp_errors_rx, 1);
}

// ---- TCP receive ---------------------------------------------------------------------

#[test]
fn tcp_segment_for_us_handed_up_and_mac_learned() {
    let mut i = iface();
    let seg = segment(TcpFlags::ACK | TcpFlags::PSH, b"hello");
    let f = tcp_frame(PEER_MAC, PEER_IP, &seg);
    match i.receive(T0, &f) {
        Inbound::Tcp {
            src,
            dst,
            src_mac,
            segment,
            payload_offset,
        } => {
            assert_eq!((src, dst, src_mac), (PEER_IP, OUR_IP, PEER_MAC));
            assert_eq!(segment, seg);
            assert_eq!(f.get(payload_offset..), Some(&b"hello"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(i.neighbor(T0, PEER_IP), Some(PEER_MAC));
    assert_eq!(i.stats().tcp_rx, 1);
}

#[test]
fn tcp_with_ethernet_padding_payload_excludes_padding() {
    let mut i = iface();
    let seg = segment(TcpFlags::ACK, &[]);
    let mut f = tcp_frame(PEER_MAC, PEER_IP, &seg);
    f.extend_from_slice(&[0u8; 6]); // pad 54 -> 60 bytes
    match i.receive(T0, &f) {
        Inbound::Tcp { segment, .. } => assert!(segment.payload.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn tcp_bad_checksum_dropped_counted() {
    let mut i = iface();
    let mut f = tcp_frame(PEER_MAC, PEER_IP, &segment(TcpFlags::ACK, b"data"));
    let last = f.len() - 1;
    f[last] ^= 1;
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::BadChecksum));
    assert_eq!(i.stats().tcp_bad_checksum, 1);
}

#[test]
fn tcp_off_link_source_mac_not_learned() {
    let mut i = iface();
    let f = tcp_frame(PEER_MAC, REMOTE_IP, &segment(TcpFlags::SYN, &[]));
    assert!(matches!(i.receive(T0, &f), Inbound::Tcp { .. }));
    assert_eq!(i.neighbor(T0, REMOTE_IP), None);
    assert_eq!(i.neighbor_count(), 0);
}

#[test]
fn tcp_to_broadcast_mac_not_for_us() {
    let mut i = iface();
    let mut f = tcp_frame(PEER_MAC, PEER_IP, &segment(TcpFlags::SYN, &[]));
    f[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(i.receive(T0, &f), Inbound::Dropped(DropReason::NotForUs));
}

// ---- TCP send and ARP resolution -----------------------------------------------------

#[test]
fn send_resolved_neighbor_frame_valid() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let mut seg = segment(TcpFlags::SYN | TcpFlags::ACK, &[]);
    seg.options = TcpOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamps: Some(TcpTimestamps { tsval: 1, tsecr: 2 }),
        sack_blocks: SackBlocks::new(),
    };
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Sent
    );
    let (eth, ip, back) = sent_tcp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(eth.src_addr, OUR_MAC);
    assert!(ip.dont_frag);
    assert_eq!(ip.ttl, 64);
    assert_eq!(back, seg);
    assert_eq!(i.stats().tcp_tx, 1);
}

#[test]
fn send_with_fill_two_halves_matches_send() {
    let mut i = iface();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let mut tx = VecTxQueue::new();
    let seg = segment(TcpFlags::ACK, b"");
    i.send_tcp_with(T0, &mut tx, OUR_IP, PEER_IP, &seg, 10, |buf| {
        buf[..4].copy_from_slice(b"ring");
        buf[4..].copy_from_slice(b"buffer");
    });
    let (_, _, back) = sent_tcp(&tx.frames[0]);
    assert_eq!(back.payload, b"ringbuffer");
}

#[test]
fn send_off_link_goes_to_gateway_mac() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    i.insert_neighbor(T0, GW_IP, OTHER_MAC);
    let seg = segment(TcpFlags::ACK, b"x");
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, REMOTE_IP, &seg),
        SendResult::Sent
    );
    let (eth, ip, _) = sent_tcp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, OTHER_MAC);
    assert_eq!(ip.dst_addr, REMOTE_IP);
}

#[test]
fn send_off_link_without_gateway_no_route() {
    let mut i = Interface::new(InterfaceConfig::new(OUR_MAC, OUR_IP, 24));
    let mut tx = VecTxQueue::new();
    let seg = segment(TcpFlags::ACK, b"x");
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, REMOTE_IP, &seg),
        SendResult::Dropped(DropReason::NoRoute)
    );
    assert_eq!(i.stats().tx_no_route, 1);
}

#[test]
fn send_larger_than_mtu_too_big() {
    let mut i = iface();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let mut tx = VecTxQueue::new();
    let payload = vec![0u8; 1461];
    let seg = segment(TcpFlags::ACK, &payload);
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Dropped(DropReason::TooBig)
    );
    let ok = segment(TcpFlags::ACK, &payload[..1460]);
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &ok),
        SendResult::Sent
    );
    assert_eq!(tx.frames[0].len(), 1514);
}

#[test]
fn send_tx_full_dropped_counted() {
    let mut i = iface();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let mut tx = VecTxQueue::with_limit(0);
    let seg = segment(TcpFlags::ACK, b"x");
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Dropped(DropReason::TxFull)
    );
    assert_eq!(i.stats().tx_full, 1);
}

#[test]
fn send_unresolved_queues_and_sends_arp_request() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    let seg = segment(TcpFlags::SYN, &[]);
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(tx.frames.len(), 1);
    let (eth, arp) = sent_arp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, EthernetAddress::BROADCAST);
    assert_eq!(arp.operation, ArpOperation::Request);
    assert_eq!(arp.source_hardware_addr, OUR_MAC);
    assert_eq!(arp.source_protocol_addr, OUR_IP);
    assert_eq!(arp.target_protocol_addr, PEER_IP);
    // A second segment to the same hop queues without another request.
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(tx.frames.len(), 1);
    assert_eq!(i.stats().pending_queued, 2);
    assert_eq!(i.stats().arp_requests_tx, 1);
    assert_eq!(i.poll_timeout(), Some(T0 + Duration::from_secs(1)));
}

#[test]
fn send_unresolved_arp_reply_releases_queued_frames() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    let seg = segment(TcpFlags::ACK, b"first");
    i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg);
    let seg2 = segment(TcpFlags::ACK, b"second");
    i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg2);
    tx.frames.clear();
    assert_eq!(
        i.receive(T0, &arp_reply_from(PEER_MAC, PEER_IP)),
        Inbound::Handled
    );
    assert_eq!(i.stats().arp_replies_rx, 1);
    i.poll_transmit(T0, &mut tx);
    assert_eq!(tx.frames.len(), 2);
    let (eth, _, back) = sent_tcp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(back.payload, b"first");
    let (_, _, back) = sent_tcp(&tx.frames[1]);
    assert_eq!(back.payload, b"second");
    assert_eq!(i.poll_timeout(), None);
    assert!(!i.has_pending_transmit());
    // Now resolved: sends go straight out.
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Sent
    );
}

#[test]
fn send_unresolved_resolved_by_incoming_ipv4_released() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &segment(TcpFlags::ACK, b"q"));
    tx.frames.clear();
    i.receive(T0, &echo_request_frame(b"hi"));
    i.poll_transmit(T0, &mut tx);
    // The echo reply and the released segment.
    assert_eq!(tx.frames.len(), 2);
    let (eth, _, back) = sent_tcp(&tx.frames[1]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(back.payload, b"q");
}

#[test]
fn arp_unanswered_retried_then_frames_dropped() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &segment(TcpFlags::SYN, &[]));
    assert_eq!(i.stats().arp_requests_tx, 1);
    // Not yet due: nothing.
    i.handle_timeout(Instant::from_millis(999));
    i.poll_transmit(Instant::from_millis(999), &mut tx);
    assert_eq!(tx.frames.len(), 1);
    for (n, ms) in [(2u64, 1000u64), (3, 2000)] {
        let now = Instant::from_millis(ms);
        assert_eq!(i.poll_timeout(), Some(now));
        i.handle_timeout(now);
        i.poll_transmit(now, &mut tx);
        assert_eq!(i.stats().arp_requests_tx, n);
        assert_eq!(
            sent_arp(tx.frames.back().unwrap()).1.target_protocol_addr,
            PEER_IP
        );
    }
    let now = Instant::from_millis(3000);
    i.handle_timeout(now);
    assert_eq!(i.stats().arp_failed, 1);
    assert_eq!(i.stats().pending_dropped, 1);
    assert_eq!(i.poll_timeout(), None);
    // A late reply releases nothing.
    i.receive(now, &arp_reply_from(PEER_MAC, PEER_IP));
    assert!(!i.has_pending_transmit());
}

#[test]
fn send_unresolved_pending_limit_reached_dropped() {
    let mut c = config();
    c.arp_pending_limit = 2;
    let mut i = Interface::new(c);
    let mut tx = VecTxQueue::new();
    let seg = segment(TcpFlags::ACK, b"x");
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Dropped(DropReason::PendingFull)
    );
    assert_eq!(i.stats().pending_dropped, 1);
}

#[test]
fn send_unresolved_pending_bytes_limit_reached_dropped() {
    let mut c = config();
    c.arp_pending_bytes = 1000;
    let mut i = Interface::new(c);
    let mut tx = VecTxQueue::new();
    let payload = [0u8; 600];
    let seg = segment(TcpFlags::ACK, &payload);
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(
        i.send_tcp(T0, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Dropped(DropReason::PendingFull)
    );
}

#[test]
fn neighbor_expired_entry_resolved_again() {
    let mut i = iface();
    let mut tx = VecTxQueue::new();
    i.insert_neighbor(T0, PEER_IP, PEER_MAC);
    let later = T0 + Duration::from_secs(61);
    let seg = segment(TcpFlags::ACK, b"x");
    assert_eq!(
        i.send_tcp(later, &mut tx, OUR_IP, PEER_IP, &seg),
        SendResult::Queued
    );
    assert_eq!(sent_arp(&tx.frames[0]).1.target_protocol_addr, PEER_IP);
}

#[test]
fn arp_cache_full_oldest_evicted_counted() {
    let mut c = config();
    c.arp_cache_size = 2;
    let mut i = Interface::new(c);
    for (k, host) in [10u8, 11, 12].into_iter().enumerate() {
        let ip = Ipv4Addr::new(198, 18, 0, host);
        let mac = EthernetAddress([2, 0, 0, 0, 1, host]);
        i.receive(
            Instant::from_millis(k as u64),
            &arp_request(mac, ip, OUR_IP),
        );
    }
    assert_eq!(i.neighbor_count(), 2);
    assert_eq!(i.stats().arp_evictions, 1);
    assert_eq!(i.neighbor(T0, Ipv4Addr::new(198, 18, 0, 10)), None);
}

// ---- reject (closed port) ------------------------------------------------------------

fn reject_one(policy: ClosedPortPolicy, seg: &TcpRepr) -> (SendResult, Interface, VecTxQueue) {
    let mut c = config();
    c.closed_port = policy;
    let mut i = Interface::new(c);
    let mut tx = VecTxQueue::new();
    // The segment arrives first, teaching us the peer's MAC.
    assert!(matches!(
        i.receive(T0, &tcp_frame(PEER_MAC, PEER_IP, seg)),
        Inbound::Tcp { .. }
    ));
    let r = i.reject(T0, &mut tx, PEER_IP, OUR_IP, seg);
    (r, i, tx)
}

#[test]
fn closed_port_syn_rst_ack_seq_zero_ack_seq_plus_len() {
    // RFC 9293 3.10.7.1: ACK off -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    let seg = segment(TcpFlags::SYN, &[]);
    let (r, i, tx) = reject_one(ClosedPortPolicy::Rst, &seg);
    assert_eq!(r, SendResult::Sent);
    let (eth, ip, rst) = sent_tcp(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!((ip.src_addr, ip.dst_addr), (OUR_IP, PEER_IP));
    assert_eq!((rst.src_port, rst.dst_port), (80, 40000));
    assert_eq!(rst.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(rst.seq, SeqNumber(0));
    assert_eq!(rst.ack, SeqNumber(1001));
    assert!(rst.payload.is_empty());
    assert_eq!(i.stats().rst_sent, 1);
}

#[test]
fn closed_port_data_fin_without_ack_rst_acks_data_and_fin() {
    let seg = segment(TcpFlags::FIN | TcpFlags::PSH, b"abc");
    let (_, _, tx) = reject_one(ClosedPortPolicy::Rst, &seg);
    let (_, _, rst) = sent_tcp(&tx.frames[0]);
    assert_eq!(rst.ack, SeqNumber(1000 + 3 + 1));
}

#[test]
fn closed_port_ack_segment_rst_seq_from_ack() {
    // RFC 9293 3.10.7.1: ACK on -> <SEQ=SEG.ACK><CTL=RST>
    let seg = segment(TcpFlags::ACK | TcpFlags::PSH, b"data");
    let (r, _, tx) = reject_one(ClosedPortPolicy::Rst, &seg);
    assert_eq!(r, SendResult::Sent);
    let (_, _, rst) = sent_tcp(&tx.frames[0]);
    assert_eq!(rst.flags, TcpFlags::RST);
    assert_eq!(rst.seq, SeqNumber(5000));
    assert_eq!(rst.ack, SeqNumber(0));
}

#[test]
fn closed_port_rst_segment_not_answered() {
    let seg = segment(TcpFlags::RST, &[]);
    let (r, i, tx) = reject_one(ClosedPortPolicy::Rst, &seg);
    assert_eq!(r, SendResult::Suppressed);
    assert!(tx.frames.is_empty());
    assert_eq!(i.stats().rst_sent, 0);
}

#[test]
fn closed_port_icmp_policy_port_unreachable_quotes_segment() {
    let seg = segment(TcpFlags::SYN, &[]);
    let (r, i, tx) = reject_one(ClosedPortPolicy::IcmpUnreachable, &seg);
    assert_eq!(r, SendResult::Sent);
    let (eth, ip, body) = parse_sent(&tx.frames[0]);
    assert_eq!(eth.dst_addr, PEER_MAC);
    assert_eq!(ip.dst_addr, PEER_IP);
    assert_eq!(checksum::checksum(&body), 0);
    let p = Icmpv4Packet::new_checked(&body[..]).unwrap();
    let Icmpv4Repr::DstUnreachable {
        reason, original, ..
    } = Icmpv4Repr::parse(&p, true).unwrap()
    else {
        panic!("not unreachable");
    };
    assert_eq!(reason, DstUnreachable::PortUnreachable);
    let o = OriginalDatagram::parse(original).unwrap();
    assert_eq!((o.src_addr, o.dst_addr), (PEER_IP, OUR_IP));
    assert_eq!(o.ports(), (40000, 80));
    assert_eq!(&o.payload[4..8], &1000u32.to_be_bytes());
    assert_eq!(i.stats().icmp_unreachable_tx, 1);
}

#[test]
fn closed_port_drop_policy_silent() {
    let seg = segment(TcpFlags::SYN, &[]);
    let (r, _, tx) = reject_one(ClosedPortPolicy::Drop, &seg);
    assert_eq!(r, SendResult::Suppressed);
    assert!(tx.frames.is_empty());
}

// ---- robustness ----------------------------------------------------------------------

proptest! {
    #[test]
    fn receive_arbitrary_frame_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut i = iface();
        let _ = i.receive(T0, &data);
        let mut tx = VecTxQueue::new();
        i.poll_transmit(T0, &mut tx);
        prop_assert_eq!(i.stats().rx_frames, 1);
    }

    #[test]
    fn receive_arbitrary_ipv4_payload_never_panics(
        proto in prop_oneof![Just(1u8), Just(6u8), any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut i = iface();
        let f = ipv4_frame(PEER_MAC, PEER_IP, OUR_IP, IpProtocol::from(proto), &body);
        let _ = i.receive(T0, &f);
        let mut c = config();
        c.verify_checksums = false;
        let mut i = Interface::new(c);
        if let Inbound::Tcp { segment, .. } = i.receive(T0, &f) {
            let mut tx = VecTxQueue::new();
            let _ = i.reject(T0, &mut tx, PEER_IP, OUR_IP, &segment);
        }
    }
}
