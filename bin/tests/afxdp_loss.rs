//! Root lab test: 5 % loss both ways (nftables in the peer namespace; AF_XDP takes frames
//! before netfilter on the stack's side), 64 MiB each way byte-exact through tcp-echo,
//! then again with the peer's SACK and timestamps off. The stack's counters (logged by
//! each worker at stop) show the recovery: retransmissions in both runs, RFC 6675 SACK
//! recoveries when the peer has SACK on and none when it is off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::time::Duration;

use lab::{Lab, Sluice, STACK_IP};

const TOTAL: usize = 64 << 20;

fn drop_five_percent(lab: &Lab) {
    lab.peer_ok(&["nft", "add", "table", "inet", "t"]);
    for hook in ["input", "output"] {
        lab.peer_ok(&[
            "nft",
            "add",
            "chain",
            "inet",
            "t",
            hook,
            &format!("{{ type filter hook {hook} priority 0; }}"),
        ]);
        lab.peer_ok(&[
            "nft", "add", "rule", "inet", "t", hook, "numgen", "random", "mod", "100", "<", "5",
            "drop",
        ]);
    }
}

/// 64 MiB through tcp-echo from a kernel client; returns (sent hash, echoed hash, length).
fn echo_64_mib(lab: &Lab) -> (u64, u64, usize) {
    lab.in_peer(|| {
        let c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = c.try_clone().unwrap();
        let rd = std::thread::spawn(move || {
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    return (hash.finish(), total);
                }
                hash.write(&buf[..n]);
                total += n;
            }
        });
        let mut w = c;
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..TOTAL / buf.len() {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            w.write_all(&buf).unwrap();
            hash.write(&buf);
        }
        w.shutdown(Shutdown::Write).unwrap();
        let (got, len) = rd.join().unwrap();
        (hash.finish(), got, len)
    })
}

fn lossy_echo(peer_sack_and_ts: bool) {
    let _serial = lab::serial();
    lossy_echo_on(&Lab::up(1), peer_sack_and_ts);
}

fn lossy_echo_on(lab: &Lab, peer_sack_and_ts: bool) {
    if !peer_sack_and_ts {
        lab.peer_ok(&["sysctl", "-qw", "net.ipv4.tcp_sack=0"]);
        lab.peer_ok(&["sysctl", "-qw", "net.ipv4.tcp_timestamps=0"]);
    }
    drop_five_percent(lab);
    let sluice = lab.sluice("tcp-echo", &[7], &[]);
    let (sent, got, len) = echo_64_mib(lab);
    assert_eq!(len, TOTAL);
    assert_eq!(got, sent, "echo differs");
    let log = sluice.stop();
    let retransmits = Sluice::log_sum(&log, "retransmits");
    let fast = Sluice::log_sum(&log, "fast_retransmits");
    let sack = Sluice::log_sum(&log, "sack_recoveries");
    println!(
        "5% loss, peer SACK/TS {peer_sack_and_ts}: stack retransmits {retransmits}, \
         fast retransmits {fast}, SACK recoveries {sack}"
    );
    assert!(retransmits > 0, "no retransmissions logged: {log}");
    assert!(fast > 0, "no fast retransmit logged: {log}");
    if peer_sack_and_ts {
        assert!(
            sack > 0,
            "SACK negotiated but no SACK recovery logged: {log}"
        );
    } else {
        assert_eq!(sack, 0, "SACK recovery without SACK: {log}");
    }
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_loss_5_percent_64_mib_each_way_byte_exact() {
    lossy_echo(true);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_loss_5_percent_peer_without_sack_and_timestamps_byte_exact() {
    lossy_echo(false);
}

/// The same on the DPDK backend (`net_af_packet` on the veth; the loss is the peer's
/// nftables, as for AF_XDP).
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_loss_5_percent_64_mib_each_way_byte_exact() {
    let _serial = lab::serial();
    lossy_echo_on(&Lab::up_dpdk(1), true);
}
