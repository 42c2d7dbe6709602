//! Root lab tests: active opens from every queue (source ports chosen per queue, answers
//! steered back to the opening worker), and the XDP port filter (only Sluice's ports are
//! redirected; a kernel socket on another port of the same address keeps working).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use lab::{Lab, Sluice, PEER_IP, STACK_IP};

/// Accepts `n` connections within 20 s.
fn accept_n(listener: &TcpListener, n: usize) -> Vec<(TcpStream, std::net::SocketAddr)> {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        match listener.accept() {
            Ok((c, from)) => {
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                out.push((c, from));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "only {} of {n} connections arrived",
                    out.len()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    out
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_active_opens_from_both_queues_echo_with_kernel_listener() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let listener = lab.listen(5005);
    let sluice = lab.sluice(
        "tcp-echo",
        &[7],
        &["--queues", "2", "--connect", &format!("{PEER_IP}:5005")],
    );
    let conns = accept_n(&listener, 2);
    let mut parities = Vec::new();
    for (i, (mut conn, from)) in conns.into_iter().enumerate() {
        assert_eq!(from.ip(), std::net::IpAddr::V4(STACK_IP));
        // veth reports no RSS key: queue q of 2 owns the local ports with port % 2 == q.
        parities.push(from.port() % 2);
        // Enough data for many segments each way, so every answer has to find its worker.
        let msg: Vec<u8> = (0..200_000u32).map(|b| (b * 13 + i as u32) as u8).collect();
        let mut reader = conn.try_clone().unwrap();
        let len = msg.len();
        let rd = std::thread::spawn(move || {
            let mut back = vec![0u8; len];
            reader.read_exact(&mut back).unwrap();
            back
        });
        conn.write_all(&msg).unwrap();
        let back = rd.join().unwrap();
        assert!(back == msg, "echo on connection from {from} differs");
        conn.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    parities.sort();
    assert_eq!(
        parities,
        vec![0, 1],
        "both local ports on one queue's partition"
    );
    let log = sluice.stop();
    let opened: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .map(|l| Sluice::log_sum(l, "opened"))
        .collect();
    assert_eq!(opened, vec![1, 1], "{log}");
    assert_eq!(Sluice::log_sum(&log, "steer_dropped"), 0, "{log}");
    println!(
        "frames forwarded between workers: {}",
        Sluice::log_sum(&log, "forwarded")
    );
}

/// The peer interface's MAC, as `ip link` prints it.
fn peer_mac(lab: &Lab) -> String {
    let out = lab.peer_ok(&["ip", "-o", "link", "show", &lab.peer_if]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"))
        .to_string()
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_port_filter_kernel_keeps_other_ports_of_the_same_address() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    // The host kernel shares the stack's address on the stack-side interface. ARP for
    // that address goes to Sluice, so the kernel gets a static entry for the peer.
    let stack = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", &lab.stack_ns])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    stack(&[
        "addr",
        "add",
        &format!("{STACK_IP}/24"),
        "dev",
        &lab.stack_if,
    ]);
    let mac = peer_mac(&lab);
    stack(&[
        "neigh",
        "replace",
        &PEER_IP.to_string(),
        "lladdr",
        &mac,
        "dev",
        &lab.stack_if,
        "nud",
        "permanent",
    ]);
    let ns = lab.stack_ns.clone();
    let kernel_server = std::thread::spawn(move || {
        dataplane::sys::enter_netns(&ns).unwrap();
        let l = TcpListener::bind(SocketAddrV4::new(STACK_IP, 2222)).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 6];
        c.read_exact(&mut b).unwrap();
        c.write_all(b"kernel").unwrap();
        b
    });
    // Default options: redirect_all_tcp = auto sees the kernel's address and keeps the
    // port filter.
    let sluice = lab.sluice("tcp-echo", &[7], &[]);

    // Port 2222 is not Sluice's: XDP passes it to the kernel's socket.
    let mut k = lab.connect(2222).expect("kernel socket on port 2222");
    k.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    k.write_all(b"hello!").unwrap();
    let mut b = [0u8; 6];
    k.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"kernel");
    assert_eq!(&kernel_server.join().unwrap(), b"hello!");

    // Port 7 is Sluice's: tcp-echo answers.
    let mut s = lab.connect(7).expect("tcp-echo on port 7");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"sluice").unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"sluice");
    drop(s);
    drop(k);

    let log = sluice.stop();
    assert!(log.contains("port-filter"), "{log}");
    assert!(
        log.contains(&format!("the kernel owns {STACK_IP} on {}", lab.stack_if)),
        "{log}"
    );
    assert!(Sluice::log_sum(&log, "passed") >= 3, "{log}");
    assert!(Sluice::log_sum(&log, "redirected") >= 3, "{log}");
}
