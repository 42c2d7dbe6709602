//! Root lab test: `--pcap FILE` records what the dataplane receives and sends, and
//! `tcpdump -r` reads the file back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::Command;
use std::time::Duration;

use lab::{Lab, PEER_IP, STACK_IP};

/// The `tcpdump -r FILE -nn` lines of one TCP conversation between the peer and port 7.
fn tcpdump_lines(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-r"])
        .arg(file)
        .args(["-nn", "tcp"])
        .output()
        .expect("run tcpdump (deploy/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_pcap_file_has_syn_synack_data_and_fins() {
    let _serial = lab::serial();
    pcap_one_connection(&Lab::up(1));
}

/// `--pcap` on the DPDK backend: the same capture (frames taken from the mbufs).
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_pcap_file_has_syn_synack_data_and_fins() {
    let _serial = lab::serial();
    pcap_one_connection(&Lab::up_dpdk(1));
}

/// One echoed connection under `--pcap`: the file shows its SYN, SYN-ACK, data both ways
/// and both FINs, nothing dropped.
fn pcap_one_connection(lab: &Lab) {
    let file = std::env::temp_dir().join(format!("sluice-pcap-{}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let sluice = lab.sluice("tcp-echo", &[7], &["--pcap", file.to_str().unwrap()]);

    let mut conn = lab.connect(7).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"captured payload").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"captured payload");
    drop(conn);
    // Stopping closes the capture: every frame is in the file once the process exited.
    let log = sluice.stop();
    let lines = tcpdump_lines(&file);
    let _ = std::fs::remove_file(&file);

    let peer_to_stack = format!("{PEER_IP}.");
    let to_stack = format!("> {STACK_IP}.7:");
    let from_stack = format!("{STACK_IP}.7 > {peer_to_stack}");
    let has = |dir: &str, what: &str| {
        lines.iter().any(|l| {
            l.contains(dir) && l.contains(what) && (dir != to_stack || l.contains(&peer_to_stack))
        })
    };
    let all = lines.join("\n");
    assert!(has(&to_stack, "Flags [S],"), "no SYN in:\n{all}\n{log}");
    assert!(has(&from_stack, "Flags [S.],"), "no SYN-ACK in:\n{all}");
    assert!(
        has(&to_stack, "length 16"),
        "no data to the stack in:\n{all}"
    );
    assert!(has(&from_stack, "length 16"), "no echoed data in:\n{all}");
    assert!(
        has(&to_stack, "Flags [F"),
        "no FIN from the peer in:\n{all}"
    );
    assert!(
        has(&from_stack, "Flags [F"),
        "no FIN from the stack in:\n{all}"
    );
    assert!(log.contains("pcap closed"), "{log}");
    assert_eq!(lab::Sluice::log_sum(&log, "pcap_dropped"), 0, "{log}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_pcap_two_queues_one_file_each_all_syns_recorded() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let dir = std::env::temp_dir().join(format!("sluice-pcap2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cap.pcap");
    let sluice = lab.sluice(
        "tcp-echo",
        &[7],
        &["--queues", "2", "--pcap", file.to_str().unwrap()],
    );
    for i in 0..20u8 {
        let mut c = lab.connect(7).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
    }
    let log = sluice.stop();
    let mut syns = Vec::new();
    for q in 0..2 {
        let lines = tcpdump_lines(&dir.join(format!("cap.q{q}.pcap")));
        syns.push(
            lines
                .iter()
                .filter(|l| l.contains(&format!("> {STACK_IP}.7:")) && l.contains("Flags [S],"))
                .count(),
        );
    }
    // With several queues only the suffixed files exist.
    let plain = file.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!plain, "unsuffixed {file:?} written");
    // The peer spreads its 20 connections over both queues; each queue's file has its own.
    assert_eq!(syns.iter().sum::<usize>(), 20, "{syns:?} {log}");
    assert!(syns.iter().all(|&n| n > 0), "{syns:?}");
}
