//! One `Stack` holding 1,000,000 established, idle connections.
//!
//! A frame generator plays the clients (16 source addresses x 62,500 ports, behind a
//! gateway so the stack needs one ARP entry): a SYN with the options Linux sends (MSS,
//! SACK-permitted, timestamps, window scale), then the ACK of the stack's SYN-ACK. Every
//! connection must end ESTABLISHED, announced and counted. The memory the stack holds per
//! idle connection is measured as the growth of the process's resident set (VmRSS, so
//! allocator overhead counts) from before `Stack::new` to after the last handshake,
//! printed, and bounded.
//!
//! `SLUICE_IDLE_CONNS=N` changes the count (default 1,000,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use core::net::Ipv4Addr;
use core::time::Duration;

use tcp::conn::State;
use tcp::iface::{InterfaceConfig, VecTxQueue};
use tcp::stack::{ConnHandle, Event, Stack, StackConfig};
use tcp::time::Instant;
use tcp::wire::checksum::{checksum, combine, finish, ones_complement_sum, pseudo_header_sum};
use tcp::wire::EthernetAddress;

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PORT: u16 = 443;
const PORTS_PER_ADDR: u32 = 62_500;
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
/// Handshakes in flight at once.
const BATCH: u32 = 1024;
/// Upper bound on resident bytes per idle connection (engine state + table + allocator).
const MAX_BYTES_PER_CONN: u64 = 1024;

fn client(i: u32) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::new(
        198,
        19,
        ((i / PORTS_PER_ADDR) >> 8) as u8,
        (i / PORTS_PER_ADDR) as u8,
    );
    (addr, 1024 + (i % PORTS_PER_ADDR) as u16)
}

/// An Ethernet + IPv4 + TCP frame from `src` to the server, checksums filled in.
fn frame(src: (Ipv4Addr, u16), seq: u32, ack: u32, flags: u8, options: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + options.len();
    let ip_len = 20 + tcp_len;
    let mut f = vec![0u8; 14 + ip_len];
    f[0..6].copy_from_slice(&SERVER_MAC.0);
    f[6..12].copy_from_slice(&GATEWAY_MAC.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&SERVER.octets());
    let ck = checksum(ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&PORT.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    t[20..].copy_from_slice(options);
    let sum = combine(
        pseudo_header_sum(src.0, SERVER, 6, tcp_len as u16),
        ones_complement_sum(t),
    );
    t[16..18].copy_from_slice(&finish(sum).to_be_bytes());
    f
}

fn syn_options(tsval: u32) -> [u8; 20] {
    let mut o = [0u8; 20];
    o[0..4].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    o[4..6].copy_from_slice(&[4, 2]); // SACK permitted
    o[6..8].copy_from_slice(&[8, 10]); // timestamps
    o[8..12].copy_from_slice(&tsval.to_be_bytes());
    o[16..20].copy_from_slice(&[1, 3, 3, 7]); // NOP, window scale 7
    o
}

fn ack_options(tsval: u32, tsecr: u32) -> [u8; 12] {
    let mut o = [1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
    o[4..8].copy_from_slice(&tsval.to_be_bytes());
    o[8..12].copy_from_slice(&tsecr.to_be_bytes());
    o
}

/// The SYN-ACK's destination port, sequence number and TSval.
fn parse_syn_ack(f: &[u8]) -> (u16, u32, u32) {
    assert_eq!(f[12..14], [0x08, 0x00]);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let t = &f[14 + ihl..];
    assert_eq!(t[13] & 0x12, 0x12, "not a SYN-ACK");
    let dst_port = u16::from_be_bytes([t[2], t[3]]);
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let hdr = usize::from(t[12] >> 4) * 4;
    let mut opts = &t[20..hdr];
    let mut tsval = 0;
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(opts[1]).max(2);
                if kind == 8 && len == 10 {
                    tsval = u32::from_be_bytes([opts[2], opts[3], opts[4], opts[5]]);
                }
                opts = &opts[len.min(opts.len())..];
            }
        }
    }
    (dst_port, seq, tsval)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn established_idle_million_connections_held_and_counted() {
    let n: u32 = std::env::var("SLUICE_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let started = std::time::Instant::now();
    let mut handles: Vec<ConnHandle> = Vec::with_capacity(n as usize);
    let mut tx = VecTxQueue::new();
    let mut syn_acks: Vec<(u16, u32, u32)> = Vec::with_capacity(BATCH as usize);

    let rss_before = rss_bytes();
    let mut iface = InterfaceConfig::new(SERVER_MAC, SERVER, 24);
    iface.gateway = Some(GATEWAY);
    let mut cfg = StackConfig::new(iface, *b"idle-million-key");
    cfg.max_connections = n as usize + 1024;
    cfg.syn_backlog = 2 * BATCH as usize;
    cfg.backlog = 2 * BATCH as usize;
    let mut stack = Stack::new(cfg);
    let mut now = Instant::from_millis(1000);
    stack.iface_mut().insert_neighbor(now, GATEWAY, GATEWAY_MAC);
    stack.listen(PORT, 0).expect("listen");

    let mut next = 0u32;
    while next < n {
        let end = (next + BATCH).min(n);
        let tsval = now.total_millis() as u32;
        for i in next..end {
            let mut syn = frame(
                client(i),
                i.wrapping_mul(7919),
                0,
                0x02,
                &syn_options(tsval),
            );
            stack.handle_frame(now, &mut syn);
        }
        stack.poll_transmit(now, &mut tx);
        assert_eq!(
            tx.frames.len(),
            (end - next) as usize,
            "one SYN-ACK per SYN"
        );
        syn_acks.clear();
        syn_acks.extend(tx.frames.drain(..).map(|f| parse_syn_ack(&f)));
        now += Duration::from_micros(100);
        let tsval = now.total_millis() as u32;
        for (k, &(port, seq, ts)) in syn_acks.iter().enumerate() {
            // SYN-ACKs come out in SYN order; the port checks the pairing.
            let i = next + k as u32;
            let src = client(i);
            assert_eq!(port, src.1);
            let mut ack = frame(
                src,
                i.wrapping_mul(7919).wrapping_add(1),
                seq.wrapping_add(1),
                0x10,
                &ack_options(tsval, ts),
            );
            stack.handle_frame(now, &mut ack);
        }
        while let Some(ev) = stack.poll_event() {
            match ev {
                Event::Accepted { conn, .. } => handles.push(conn),
                // A new connection can take data: fine, nothing to send.
                Event::Writable(_) => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
        stack.poll_transmit(now, &mut tx);
        assert!(
            tx.frames.is_empty(),
            "the stack answered an ACK: {:?}",
            tx.frames.front()
        );
        next = end;
    }
    let rss_after = rss_bytes();
    let setup = started.elapsed();

    assert_eq!(handles.len(), n as usize, "every connection accepted");
    assert_eq!(stack.connection_count(), n as usize);
    assert_eq!(stack.counters().opened, u64::from(n));
    assert_eq!(stack.iface_stats().tcp_bad_checksum, 0);
    for &h in &handles {
        assert_eq!(
            stack.stats(h).expect("live handle").state,
            State::Established
        );
    }

    // Idle: a minute passes with nothing to send; nobody is dropped.
    now += Duration::from_secs(60);
    stack.handle_timeout(now);
    stack.poll_transmit(now, &mut tx);
    assert!(tx.frames.is_empty(), "idle connections transmitted");
    assert!(stack.poll_event().is_none());
    assert_eq!(stack.connection_count(), n as usize);

    let per_conn = rss_after.saturating_sub(rss_before) / u64::from(n);
    eprintln!(
        "idle_million: {n} established in {:.1} s; resident {:.1} MiB -> {:.1} MiB, \
         {per_conn} bytes per idle connection",
        setup.as_secs_f64(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );
    if n >= 100_000 {
        assert!(
            per_conn <= MAX_BYTES_PER_CONN,
            "{per_conn} bytes per idle connection (bound {MAX_BYTES_PER_CONN})"
        );
    }
}
