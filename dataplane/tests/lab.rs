//! Root lab tests of the AF_XDP layer: a device-level reflector answering the kernel's
//! `ping`, XDP_PASS for traffic that is not the stack's, two queues with a socket each,
//! typed startup errors, and a clean re-attach after `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{in_netns, reflect, Lab, Seen, STACK_IP};
use dataplane::worker::{self, Backoff, Handler, WorkerConfig, WorkerHandle};
use dataplane::{
    Device, PortChooser, StartError, TxQueue, XdpConfig, XdpModeRequest, XdpProgram, XskConfig,
    XskDevice,
};
use tcp::Instant;

/// Counts of what one queue's socket saw.
#[derive(Debug, Default)]
struct Tally {
    arp: AtomicU64,
    echo: AtomicU64,
    syn: AtomicU64,
    other: AtomicU64,
}

/// Answers ARP for the stack's address and ICMP echo requests to it.
#[derive(Debug)]
struct Reflector {
    mac: [u8; 6],
    tally: Arc<Tally>,
}

impl Handler for Reflector {
    type Message = ();

    fn on_frame<T: TxQueue>(&mut self, _now: Instant, frame: &mut [u8], tx: &mut T) {
        let mut answer = [0u8; 2048];
        let (seen, len) = reflect(frame, self.mac, STACK_IP, &mut answer);
        match seen {
            Seen::ArpForUs => self.tally.arp.fetch_add(1, Ordering::Relaxed),
            Seen::EchoRequest => self.tally.echo.fetch_add(1, Ordering::Relaxed),
            Seen::TcpSyn(_) => self.tally.syn.fetch_add(1, Ordering::Relaxed),
            Seen::Other => self.tally.other.fetch_add(1, Ordering::Relaxed),
        };
        if len > 0 {
            assert!(tx.transmit(len, |buf| {
                buf.copy_from_slice(&answer[..len]);
                len
            }));
        }
    }

    fn poll<T: TxQueue>(&mut self, _now: Instant, _tx: &mut T) -> bool {
        false
    }
}

fn xdp_config() -> XdpConfig {
    XdpConfig {
        ipv4: Ipv4Addr::from(STACK_IP),
        tcp_ports: Vec::new(),
        mode: XdpModeRequest::Auto,
    }
}

fn attach(lab: &Lab) -> Arc<XdpProgram> {
    let iface = lab.if_stack.clone();
    Arc::new(in_netns(&lab.ns_stack, move || {
        XdpProgram::attach(&iface, &xdp_config()).unwrap()
    }))
}

/// Starts a reflector worker on `queue`, opening its socket inside the stack namespace.
/// Returns the handle, the tally and the stack MAC, and prints the modes obtained.
fn reflector(
    lab: &Lab,
    program: &Arc<XdpProgram>,
    queue: u32,
) -> (WorkerHandle<Reflector>, Arc<Tally>, [u8; 6]) {
    let tally = Arc::new(Tally::default());
    let (ns, iface, prog, t) = (
        lab.ns_stack.clone(),
        lab.if_stack.clone(),
        Arc::clone(program),
        Arc::clone(&tally),
    );
    let (mac_tx, mac_rx) = crossbeam_channel::bounded(1);
    let config = WorkerConfig {
        backoff: Backoff {
            spin: 200,
            yields: 50,
            sleep: Duration::from_millis(1),
        },
        ..WorkerConfig::new(&format!("reflect-q{queue}"))
    };
    let handle = worker::spawn(config, move || {
        dataplane::sys::enter_netns(&ns).unwrap();
        let device = XskDevice::open(&XskConfig::new(&iface, queue), &prog)?;
        let mac = dataplane::sys::mac_address(&iface).unwrap();
        eprintln!(
            "queue {queue}: XDP mode {}, AF_XDP {} mode",
            prog.mode(),
            device.copy_mode()
        );
        mac_tx.send((mac, device.copy_mode())).unwrap();
        Ok((device, Reflector { mac, tally: t }))
    })
    .unwrap();
    let (mac, _) = mac_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reflector's socket did not open within 30 s");
    (handle, tally, mac)
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_reflector_ping_answered_and_other_traffic_passed() {
    let lab = Lab::new(1);
    let program = attach(&lab);
    let (worker, tally, mac) = reflector(&lab, &program, 0);

    // Echo requests with a static neighbour entry, as the kernel sends them.
    lab.peer_neigh("198.18.0.2", mac);
    let out = lab.peer(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-n",
        "198.18.0.2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping failed: {text}");
    assert!(text.contains("3 received"), "{text}");
    assert_eq!(tally.echo.load(Ordering::Relaxed), 3);
    let after_ping = program.counters().unwrap();
    assert!(after_ping.redirected >= 3, "{after_ping:?}");

    // Not the stack's: UDP to the stack's own address, UDP to another address (with a
    // neighbour entry so it goes out), and an ARP request for a third address.
    lab.peer_neigh("198.18.0.3", mac);
    lab.peer_udp("198.18.0.2");
    lab.peer_udp("198.18.0.3");
    lab.peer_udp("198.18.0.4");
    // A ping after them is a barrier: the veth queue is FIFO, so once it is answered the
    // three frames before it have been through the program.
    assert!(lab.ping_once());
    let after_other = program.counters().unwrap();
    assert!(
        after_other.passed >= after_ping.passed + 3,
        "{after_ping:?} -> {after_other:?}"
    );
    assert_eq!(
        after_other.redirected,
        after_ping.redirected + 1,
        "only the barrier ping"
    );
    assert_eq!(
        tally.other.load(Ordering::Relaxed),
        0,
        "nothing foreign reached the socket"
    );

    // ARP for the stack's address is redirected and answered: without the static entry the
    // peer resolves the stack's MAC through the reflector.
    let arp_before = tally.arp.load(Ordering::Relaxed);
    let out = lab.peer(&["ip", "neigh", "del", "198.18.0.2", "dev", &lab.if_peer]);
    assert!(out.status.success(), "{out:?}");
    assert!(lab.ping_once(), "ping after ARP resolution");
    assert!(tally.arp.load(Ordering::Relaxed) > arp_before);

    let exit = worker.stop().unwrap();
    assert_eq!(
        exit.stats.rx_frames, exit.stats.tx_frames,
        "{:?}",
        exit.stats
    );
    assert_eq!(program.counters().unwrap().dropped, 0);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_two_queues_socket_per_queue_both_answer() {
    let lab = Lab::new(2);
    let program = attach(&lab);
    let (w0, t0, mac) = reflector(&lab, &program, 0);
    let (w1, t1, _) = reflector(&lab, &program, 1);
    lab.peer_neigh("198.18.0.2", mac);
    // The peer's veth picks a TX queue (= our RX queue) by a hash of the flow, which for
    // ICMP covers the addresses: each ping goes from a new peer source address, so the
    // pings spread over both queues. Every one must be answered whichever queue it hit.
    let mut pings = 0;
    while pings < 32
        && (t0.echo.load(Ordering::Relaxed) == 0 || t1.echo.load(Ordering::Relaxed) == 0)
    {
        let src = format!("198.18.0.{}", 10 + pings);
        common::run(&[
            "ip",
            "-n",
            &lab.ns_peer,
            "addr",
            "add",
            &format!("{src}/24"),
            "dev",
            &lab.if_peer,
        ]);
        let out = lab.peer(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-n",
            "-q",
            "-I",
            &src,
            "198.18.0.2",
        ]);
        assert!(
            out.status.success(),
            "ping from {src} not answered: {out:?}"
        );
        pings += 1;
    }
    let (e0, e1) = (
        t0.echo.load(Ordering::Relaxed),
        t1.echo.load(Ordering::Relaxed),
    );
    eprintln!("{pings} pings: queue 0 answered {e0}, queue 1 answered {e1}");
    assert!(
        e0 > 0 && e1 > 0,
        "both queues must have answered: {e0} / {e1}"
    );
    assert_eq!(e0 + e1, pings);
    w0.stop().unwrap();
    w1.stop().unwrap();
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_start_errors_typed() {
    let lab = Lab::new(1);
    let iface = lab.if_stack.clone();
    in_netns(&lab.ns_stack, move || {
        let err = XdpProgram::attach("sdpnosuchif", &xdp_config()).unwrap_err();
        assert!(matches!(err, StartError::NoSuchInterface { .. }), "{err}");

        // The namespace's own loopback has no driver XDP: native only is refused, generic
        // attaches (and detaches when dropped).
        let native = XdpConfig {
            mode: XdpModeRequest::Native,
            ..xdp_config()
        };
        let err = XdpProgram::attach("lo", &native).unwrap_err();
        assert!(matches!(err, StartError::XdpUnsupported { .. }), "{err}");
        eprintln!("native on lo: {err}");
        let generic = XdpConfig {
            mode: XdpModeRequest::Generic,
            ..xdp_config()
        };
        let on_lo = XdpProgram::attach("lo", &generic).unwrap();
        assert_eq!(on_lo.mode(), dataplane::XdpMode::Generic);
        drop(on_lo);

        let program = XdpProgram::attach(&iface, &xdp_config()).unwrap();
        let err = XdpProgram::attach(&iface, &xdp_config()).unwrap_err();
        assert!(matches!(err, StartError::ProgramAttached { .. }), "{err}");
        eprintln!("second attach: {err}");

        let err = XskDevice::open(&XskConfig::new(&iface, 5), &program).unwrap_err();
        assert!(
            matches!(
                err,
                StartError::QueueOutOfRange {
                    queue: 5,
                    queues: 1,
                    ..
                }
            ),
            "{err}"
        );
        eprintln!("queue 5: {err}");

        let first = XskDevice::open(&XskConfig::new(&iface, 0), &program).unwrap();
        let err = XskDevice::open(&XskConfig::new(&iface, 0), &program).unwrap_err();
        assert!(
            matches!(err, StartError::QueueBusy { queue: 0, .. }),
            "{err}"
        );
        eprintln!("queue 0 twice: {err}");
        drop(first);
    });
}

/// Environment variable naming `NAMESPACE:INTERFACE` for the stale-program child.
const STALE_CHILD: &str = "SLUICE_STALE_CHILD";

/// The child half of `lab_stale_program_after_kill_attach_succeeds` (not a test of its
/// own: that test re-runs itself with [`STALE_CHILD`] set and comes here): it attaches the
/// program and binds a socket, reports, and waits to be killed.
fn stale_child_holds_program(spec: &str) -> ! {
    let (ns, iface) = spec.split_once(':').unwrap();
    dataplane::sys::enter_netns(ns).unwrap();
    let program = XdpProgram::attach(iface, &xdp_config()).unwrap();
    let device = XskDevice::open(&XskConfig::new(iface, 0), &program).unwrap();
    println!("ATTACHED {} {}", program.mode(), device.copy_mode());
    // Hold everything until killed; should the parent die first, its end of stdin closes
    // and the read returns, so no orphan outlives the test run.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    std::process::exit(0);
}

/// Re-runs the calling test `name` (root-only, so `--include-ignored`) in a child process
/// of this test binary, with `env` set so the test takes its child path.
fn rerun_self(name: &str, env: (&str, &str)) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(env.0, env.1);
    cmd
}

/// Kills (SIGKILL) and reaps a child process when dropped, panics included.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_stale_program_after_kill_attach_succeeds() {
    if let Ok(spec) = std::env::var(STALE_CHILD) {
        stale_child_holds_program(&spec);
    }
    let lab = Lab::new(1);
    let mut child = KillOnDrop(
        rerun_self(
            "lab_stale_program_after_kill_attach_succeeds",
            (STALE_CHILD, &format!("{}:{}", lab.ns_stack, lab.if_stack)),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    // libtest prints "test NAME ... " before the test's own output, on the same line.
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let attached = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("ATTACHED"));
    assert!(attached.is_some(), "child never attached");
    eprintln!("child: {}", attached.unwrap_or_default());

    // While the child lives, its program holds the interface.
    let iface = lab.if_stack.clone();
    let busy = in_netns(&lab.ns_stack, move || {
        XdpProgram::attach(&iface, &xdp_config()).err()
    });
    assert!(
        matches!(busy, Some(StartError::ProgramAttached { .. })),
        "{busy:?}"
    );

    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();

    // The link died with the process: nothing stays attached, and a new start attaches.
    let shown = common::run(&[
        "ip",
        "-n",
        &lab.ns_stack,
        "link",
        "show",
        "dev",
        &lab.if_stack,
    ]);
    assert!(!shown.contains("prog/xdp"), "stale program left: {shown}");
    let iface = lab.if_stack.clone();
    in_netns(&lab.ns_stack, move || {
        let program = XdpProgram::attach(&iface, &xdp_config()).unwrap();
        // The kernel frees the dead process's AF_XDP socket asynchronously (deferred
        // release): the queue may read busy for a moment after the kill, never longer.
        let mut waited = 0;
        loop {
            match XskDevice::open(&XskConfig::new(&iface, 0), &program) {
                Ok(_device) => break,
                Err(StartError::QueueBusy { .. }) if waited < 100 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waited += 1;
                }
                Err(e) => panic!("open after the kill: {e} (waited {} ms)", waited * 20),
            }
        }
    });
}

/// A non-blocking `connect()` from the peer: one SYN leaves, nobody waits for an answer.
fn peer_syn(lab: &Lab, port: u16) {
    let script = format!(
        "import socket; s = socket.socket(); s.setblocking(False); s.connect_ex(('198.18.0.2', {port}))"
    );
    let out = lab.peer(&["python3", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
}

/// A blocking `connect()` from the peer; returns its stderr (bash's error message).
fn peer_connect(lab: &Lab, port: u16) -> String {
    let script = format!("exec 3<>/dev/tcp/198.18.0.2/{port}");
    // Bounded: an unanswered SYN would otherwise retry for about two minutes.
    let out = lab.peer(&["timeout", "10", "bash", "-c", &script]);
    assert!(
        !out.status.success(),
        "connect to {port} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_tcp_port_filter_redirects_only_configured_ports() {
    let lab = Lab::new(1);
    let iface = lab.if_stack.clone();
    let program = Arc::new(in_netns(&lab.ns_stack, move || {
        let config = XdpConfig {
            tcp_ports: vec![7000..=7000],
            ..xdp_config()
        };
        XdpProgram::attach(&iface, &config).unwrap()
    }));
    let (worker, tally, mac) = reflector(&lab, &program, 0);
    lab.peer_neigh("198.18.0.2", mac);

    // A configured port reaches the socket, whose RST makes connect() fail at once.
    let err = peer_connect(&lab, 7000);
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(tally.syn.load(Ordering::Relaxed), 1);

    // Another port is passed to the kernel (which does not own the address).
    let before = program.counters().unwrap();
    peer_syn(&lab, 7001);
    assert!(lab.ping_once(), "barrier ping");
    let after = program.counters().unwrap();
    assert!(after.passed > before.passed, "{before:?} -> {after:?}");
    assert_eq!(
        tally.syn.load(Ordering::Relaxed),
        1,
        "7001 must not reach the socket"
    );

    // Clearing the filter at run time redirects every port.
    program
        .set_tcp_ports(Ipv4Addr::from(STACK_IP), &[])
        .unwrap();
    let err = peer_connect(&lab, 7001);
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(tally.syn.load(Ordering::Relaxed), 2);
    worker.stop().unwrap();
}

fn peer_rx_packets(lab: &Lab) -> u64 {
    let path = format!("/sys/class/net/{}/statistics/rx_packets", lab.if_peer);
    let out = lab.peer(&["cat", &path]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_tx_burst_larger_than_kernel_batch_all_delivered() {
    const BURST: usize = 300;
    let lab = Lab::new(1);
    let program = attach(&lab);
    let before = peer_rx_packets(&lab);
    let (ns, iface) = (lab.ns_stack.clone(), lab.if_stack.clone());
    let (submitted, drained) = in_netns(&ns, move || {
        let mut device = XskDevice::open(&XskConfig::new(&iface, 0), &program).unwrap();
        let free = device.tx().free_buffers();
        for i in 0..BURST {
            // Broadcast frames of the local experimental EtherType 0x88b5.
            assert!(device.tx().transmit(60, |buf| {
                buf.fill(0);
                buf[..6].fill(0xff);
                buf[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
                buf[12..14].copy_from_slice(&[0x88, 0xb5]);
                buf[14..16].copy_from_slice(&(i as u16).to_be_bytes());
                60
            }));
        }
        let submitted = device.submit().unwrap();
        // Copy mode sends at most 32 frames per kick; later submits keep kicking until
        // every buffer has come back through the completion ring.
        let mut rounds = 0;
        while device.tx().free_buffers() < free && rounds < 100_000 {
            device.reclaim();
            device.submit().unwrap();
            rounds += 1;
        }
        (submitted, device.tx().free_buffers() == free)
    });
    assert_eq!(
        submitted, BURST,
        "one submit puts the whole batch on the ring"
    );
    assert!(drained, "every buffer completed");
    let delivered = peer_rx_packets(&lab) - before;
    assert!(
        delivered >= BURST as u64,
        "peer received {delivered} of {BURST}"
    );
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_veth_channels_reported_rss_absent_partition_fallback() {
    let lab = Lab::new(2);
    let iface = lab.if_stack.clone();
    let (channels, rss, chooser) = in_netns(&lab.ns_stack, move || {
        (
            dataplane::sys::channels(&iface).unwrap(),
            dataplane::sys::rss_config(&iface).is_err(),
            PortChooser::for_interface(&iface, 1, 2),
        )
    });
    assert_eq!(channels.rx_queues(), 2, "{channels:?}");
    assert!(rss, "veth has no RSS table");
    assert_eq!(
        chooser,
        PortChooser::Partition {
            queue: 1,
            queues: 2
        }
    );
}

/// Environment variable set for the unprivileged child.
const NO_PRIV_CHILD: &str = "SLUICE_NO_PRIV_CHILD";

/// The child half of `lab_unprivileged_start_no_privileges` (not a test of its own: that
/// test re-runs itself as user `nobody` with [`NO_PRIV_CHILD`] set and comes here).
fn no_priv_child_attach() -> ! {
    let err = XdpProgram::attach("lo", &xdp_config()).unwrap_err();
    println!("NOPRIV {}", matches!(err, StartError::NoPrivileges { .. }));
    println!("LINE {err}");
    std::process::exit(0);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_unprivileged_start_no_privileges() {
    if std::env::var(NO_PRIV_CHILD).is_ok() {
        no_priv_child_attach();
    }
    let child = rerun_self("lab_unprivileged_start_no_privileges", (NO_PRIV_CHILD, "1"));
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(child.get_program())
        .args(child.get_args())
        .envs(
            child
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOPRIV true"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}",
        text.lines()
            .find(|l| l.contains("LINE"))
            .unwrap_or_default()
    );
}
