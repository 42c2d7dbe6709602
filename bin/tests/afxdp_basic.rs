//! Root lab tests: `sluice run --backend afxdp` against the Linux kernel's own ICMP, ARP and
//! TCP in a peer namespace. The stack side has no kernel address; everything the peer gets
//! back comes from Sluice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

#[cfg(feature = "dpdk")]
use lab::Sluice;
use lab::{Lab, STACK_IP};

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_ping_answered_arp_resolved_dynamically() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let sluice = lab.sluice("tcp-echo", &[7], &[]);
    assert!(
        sluice.listening.contains("backend=afxdp"),
        "{}",
        sluice.listening
    );
    assert!(
        sluice.listening.contains("mode=copy"),
        "{}",
        sluice.listening
    );
    ping_arp(&lab);
}

/// The peer pings the stack with no static neighbour entry: ARP resolves to the stack's MAC
/// and every echo request is answered.
fn ping_arp(lab: &Lab) {
    // No static neighbour entry: the kernel must ARP for the stack's address.
    let neigh = lab.peer_ok(&["ip", "neigh", "show", &STACK_IP.to_string()]);
    assert!(!neigh.contains("PERMANENT"), "{neigh}");
    let ping = lab.peer_ok(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &STACK_IP.to_string(),
    ]);
    assert!(ping.contains("3 received"), "{ping}");
    let neigh = lab.peer_ok(&["ip", "neigh", "show", &STACK_IP.to_string()]);
    assert!(
        neigh.contains(&lab.stack_mac),
        "ARP did not resolve to the stack's MAC {}: {neigh}",
        lab.stack_mac
    );
    assert!(!neigh.contains("PERMANENT"), "{neigh}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_kernel_client_echo_options_negotiated() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let _sluice = lab.sluice("tcp-echo", &[7], &[]);
    echo_options(&lab);
}

/// A kernel client of tcp-echo on port 7: the echo, MSS 1448 with window scaling,
/// timestamps and SACK in the kernel's view, and a half-close finished by the echo.
fn echo_options(lab: &Lab) {
    let mut conn = lab.connect(7).expect("connect to tcp-echo");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    let msg = b"hello over AF_XDP";
    conn.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, msg);

    // `ss -tin` while the connection is open: the kernel's view of the negotiation.
    let ss = lab.peer_ok(&["ss", "-tin", "dst", &STACK_IP.to_string()]);
    assert!(ss.contains("ESTAB"), "{ss}");
    assert!(
        ss.contains("wscale:3,"),
        "window scaling not negotiated: {ss}"
    );
    assert!(
        ss.contains("mss:1448"),
        "MSS (1460 less 12 for timestamps) not seen: {ss}"
    );
    // This machine's `ss` (iproute2 6.1) does not print `ts`/`sack`; read them from the
    // kernel's TCP_INFO (tcpi_options: 1 timestamps, 2 SACK, 4 window scaling) instead.
    let script = "import socket\n\
s = socket.create_connection(('198.18.0.2', 7), timeout=5)\n\
s.sendall(b'opts')\n\
assert s.recv(4) == b'opts'\n\
i = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)\n\
print('options', i[5], 'wscale', i[6])\n";
    let info = lab.peer_ok(&["python3", "-c", script]);
    let options: u8 = info
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no TCP_INFO: {info}"));
    assert_eq!(options & 1, 1, "timestamps not negotiated: {info}");
    assert_eq!(options & 2, 2, "SACK not negotiated: {info}");
    assert_eq!(options & 4, 4, "window scaling not negotiated: {info}");

    // Half-close: the echo finishes and then closes its side too.
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// From the peer, `create_connection` to `port` of the stack with a `timeout`-second
/// connect timeout: the exception's class name (`ok` when it connected) and the seconds
/// it took.
fn peer_connect_outcome(lab: &Lab, port: u16, timeout: f64) -> (String, f64) {
    let script = format!(
        "import socket, time\n\
t = time.monotonic()\n\
try:\n    socket.create_connection(('{STACK_IP}', {port}), timeout={timeout})\n    r = 'ok'\n\
except Exception as e:\n    r = type(e).__name__\n\
print(r, time.monotonic() - t)\n"
    );
    let out = lab.peer_ok(&["python3", "-c", &script]);
    let mut words = out.split_whitespace();
    let class = words.next().unwrap_or_default().to_string();
    let secs = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    (class, secs)
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_closed_port_connect_refused() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    // The stack namespace has no kernel address: the default policy (redirect_all_tcp =
    // auto) sends every TCP port of the address to Sluice, which answers a SYN to a closed
    // port with RST (RFC 9293 3.10.7.1), in or out of its active-open range.
    let sluice = lab.sluice("tcp-echo", &[7], &[]);
    let (class, secs) = peer_connect_outcome(&lab, 9, 3.0);
    assert_eq!(class, "ConnectionRefusedError", "port 9 after {secs} s");
    // An RST answers at once; a lost SYN would cost the client's 1 s retransmission.
    assert!(secs < 1.0, "port 9 refused only after {secs} s");
    let err = lab.connect(40_000).expect_err("port 40000 is closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // The listener still works afterwards.
    let mut conn = lab.connect(7).expect("connect to tcp-echo");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    drop(conn);
    let log = sluice.stop();
    assert!(
        log.contains("tcp_policy=\"all-ports\"") || log.contains("tcp_policy=all-ports"),
        "{log}"
    );
    assert!(log.contains("the kernel does not own 198.18.0.2"), "{log}");

    // Explicitly `false`: only Sluice's ports (listening, active-open range) come to it;
    // port 9 goes to the kernel, which does not own the address and stays silent, while
    // port 40000 is still Sluice's and refused.
    let _sluice = lab.sluice("tcp-echo", &[7], &["--redirect-all-tcp", "false"]);
    let (class, secs) = peer_connect_outcome(&lab, 9, 1.0);
    assert_eq!(class, "TimeoutError", "port 9 after {secs} s");
    let err = lab.connect(40_000).expect_err("port 40000 is closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_active_open_to_kernel_listener_echoes() {
    let _serial = lab::serial();
    active_open_echo(&Lab::up(1));
}

/// `--connect` on the DPDK backend: the worker's active open (source port chosen by the
/// partition chooser: `net_af_packet` has no RSS) to a kernel listener echoes.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_active_open_to_kernel_listener_echoes() {
    let _serial = lab::serial();
    active_open_echo(&Lab::up_dpdk(1));
}

/// tcp-echo with `--connect 198.18.0.1:5005`: Sluice connects to a kernel listener, with
/// its options, and echoes what the kernel sends; half-close ends it.
fn active_open_echo(lab: &Lab) {
    let listener = lab.listen(5005);
    let _sluice = lab.sluice("tcp-echo", &[7], &["--connect", "198.18.0.1:5005"]);
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (mut conn, from) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "Sluice never connected"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    assert_eq!(from.ip(), std::net::IpAddr::V4(STACK_IP));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let msg = b"the kernel listens, Sluice connects";
    conn.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, msg);

    // The peer accepted Sluice's SYN with its options.
    let ss = lab.peer_ok(&["ss", "-tin", "src", "198.18.0.1:5005"]);
    assert!(ss.contains("ESTAB"), "{ss}");
    assert!(ss.contains("wscale:"), "{ss}");
    assert!(ss.contains("mss:1448"), "{ss}");

    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// The DPDK backend (`net_af_packet` on the lab's veth) against the kernel: ARP and ping,
/// the handshake's options, RST for closed ports; at stop every mbuf is back in the pool.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_ping_arp_options_negotiated_closed_port_rst() {
    let _serial = lab::serial();
    let lab = Lab::up_dpdk(1);
    let sluice = lab.sluice("tcp-echo", &[7], &[]);
    assert!(
        sluice.listening.contains("backend=dpdk")
            && sluice.listening.contains("driver=net_af_packet"),
        "{}",
        sluice.listening
    );
    ping_arp(&lab);
    echo_options(&lab);
    let (class, secs) = peer_connect_outcome(&lab, 9, 3.0);
    assert_eq!(class, "ConnectionRefusedError", "port 9 after {secs} s");
    assert!(secs < 1.0, "port 9 refused only after {secs} s");
    let err = lab.connect(40_000).expect_err("port 40000 is closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let log = sluice.stop();
    assert!(
        log.contains("DPDK port closed, every mbuf returned"),
        "{log}"
    );
    assert!(Sluice::log_sum(&log, "ipackets") > 0, "{log}");
}

/// Start failures on the DPDK backend exit non-zero with one clear line, and a port that
/// fails after the mbuf pool exists gives every mbuf back.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_failed_starts_clear_errors_every_mbuf_returned() {
    let _serial = lab::serial();
    let lab = Lab::up_dpdk(1);
    let run = |extra: &[&str]| -> (Option<i32>, String) {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            lab.stack_ns.clone(),
            env!("CARGO_BIN_EXE_sluice").into(),
            "run".into(),
            "--backend".into(),
            "dpdk".into(),
            "--ip".into(),
            format!("{STACK_IP}/24"),
            "--app".into(),
            "tcp-echo".into(),
            "--port".into(),
            "7".into(),
            "--log-level".into(),
            "info".into(),
            "--eal-args".into(),
            "--no-huge --no-shconf --no-pci -m 256".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .expect("run sluice");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("needs --dpdk-port"), "{err}");
    // Two queues on a one-queue-pair port: the pool exists, the port set-up fails.
    let spec = format!("net_af_packet0,iface={},qpairs=1", lab.stack_if);
    let (code, err) = run(&["--dpdk-port", &spec, "--queues", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("queue count"), "{err}");
    assert!(
        err.contains("DPDK start failed, every mbuf returned"),
        "{err}"
    );
    let (code, err) = run(&["--dpdk-port", "net_af_packet0,iface=nosuchif0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("net_af_packet0"), "{err}");
}
