//! A network-namespace lab for the root tests: two namespaces joined by a veth pair, the
//! peer side with 198.18.0.1/24 and offloads off, the stack side with no kernel address,
//! IPv6 off in both. Everything is deleted when the [`Lab`] is dropped, panics included.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The peer's (kernel's) address.
pub const PEER_IP: &str = "198.18.0.1";
/// The stack's address.
pub const STACK_IP: [u8; 4] = [198, 18, 0, 2];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = try_run(args);
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever the status.
pub fn try_run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// One lab. See the module documentation.
#[derive(Debug)]
pub struct Lab {
    /// The stack's namespace.
    pub ns_stack: String,
    /// The peer's namespace.
    pub ns_peer: String,
    /// The stack's veth end.
    pub if_stack: String,
    /// The peer's veth end.
    pub if_peer: String,
}

impl Lab {
    /// A lab whose veth has `queues` receive and transmit queues on each end.
    pub fn new(queues: u32) -> Lab {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            ns_stack: format!("sdp{id}s"),
            ns_peer: format!("sdp{id}p"),
            if_stack: format!("sdp{id}s"),
            if_peer: format!("sdp{id}p"),
        };
        // From here on a panic drops `lab`, which deletes whatever was created.
        lab.setup(queues);
        lab
    }

    fn setup(&self, queues: u32) {
        let q = queues.to_string();
        for ns in [&self.ns_stack, &self.ns_peer] {
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        run(&[
            "ip",
            "link",
            "add",
            &self.if_stack,
            "netns",
            &self.ns_stack,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &self.if_peer,
            "netns",
            &self.ns_peer,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ]);
        run(&[
            "ip",
            "-n",
            &self.ns_stack,
            "link",
            "set",
            &self.if_stack,
            "up",
        ]);
        run(&[
            "ip",
            "-n",
            &self.ns_peer,
            "link",
            "set",
            &self.if_peer,
            "up",
        ]);
        run(&[
            "ip",
            "-n",
            &self.ns_peer,
            "addr",
            "add",
            "198.18.0.1/24",
            "dev",
            &self.if_peer,
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_peer,
            "ethtool",
            "-K",
            &self.if_peer,
            "tx",
            "off",
            "tso",
            "off",
            "gso",
            "off",
            "gro",
            "off",
        ]);
    }

    /// Runs a command inside the peer namespace.
    pub fn peer(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.ns_peer.as_str()];
        full.extend_from_slice(args);
        try_run(&full)
    }

    /// Adds a static neighbour entry on the peer: `ip` is at `mac`.
    pub fn peer_neigh(&self, ip: &str, mac: [u8; 6]) {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        run(&[
            "ip",
            "-n",
            &self.ns_peer,
            "neigh",
            "replace",
            ip,
            "lladdr",
            &mac,
            "dev",
            &self.if_peer,
        ]);
    }

    /// `ping -c 1` from the peer to the stack; whether an answer came.
    pub fn ping_once(&self) -> bool {
        self.peer(&["ping", "-c", "1", "-W", "2", "-n", "-q", "198.18.0.2"])
            .status
            .success()
    }

    /// Sends one UDP datagram from the peer to `ip:9` (bash's /dev/udp).
    pub fn peer_udp(&self, ip: &str) {
        let script = format!("echo sluice > /dev/udp/{ip}/9");
        let out = self.peer(&["bash", "-c", &script]);
        assert!(out.status.success(), "udp send to {ip} failed: {out:?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.ns_stack, &self.ns_peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        dataplane::sys::enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// RFC 1071 Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What a received frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// ARP request for the stack's address (answered).
    ArpForUs,
    /// ICMP echo request to the stack's address (answered).
    EchoRequest,
    /// TCP SYN to the stack's address, to this port (answered with RST|ACK).
    TcpSyn(u16),
    /// Anything else (should never reach the socket).
    Other,
}

/// Builds the answer to `frame` into `out` (at least as long as `frame`, 60 bytes minimum)
/// when it is an ARP request for `ip` or an ICMP echo request to `ip`. Returns what the frame
/// was and the answer's length (0 for no answer).
pub fn reflect(frame: &[u8], mac: [u8; 6], ip: [u8; 4], out: &mut [u8]) -> (Seen, usize) {
    if frame.len() < 14 {
        return (Seen::Other, 0);
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x0806 && frame.len() >= 42 && frame[20..22] == [0, 1] && frame[38..42] == ip {
        let out = &mut out[..42];
        out[0..6].copy_from_slice(&frame[6..12]);
        out[6..12].copy_from_slice(&mac);
        out[12..14].copy_from_slice(&[0x08, 0x06]);
        out[14..20].copy_from_slice(&[0, 1, 0x08, 0, 6, 4]);
        out[20..22].copy_from_slice(&[0, 2]);
        out[22..28].copy_from_slice(&mac);
        out[28..32].copy_from_slice(&ip);
        out[32..38].copy_from_slice(&frame[22..28]);
        out[38..42].copy_from_slice(&frame[28..32]);
        return (Seen::ArpForUs, 42);
    }
    if ethertype != 0x0800 || frame.len() < 34 {
        return (Seen::Other, 0);
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    if frame[23] == 6 && frame[30..34] == ip && frame.len() >= 14 + ihl + 20 {
        return refuse(frame, ihl, out);
    }
    let icmp = 14 + ihl;
    if frame[23] != 1 || frame[30..34] != ip || frame.len() < icmp + 8 || frame[icmp] != 8 {
        return (Seen::Other, 0);
    }
    let len = frame.len();
    let out = &mut out[..len];
    out.copy_from_slice(frame);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    out[26..30].copy_from_slice(&frame[30..34]);
    out[30..34].copy_from_slice(&frame[26..30]);
    out[icmp] = 0;
    out[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&out[icmp..]);
    out[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    (Seen::EchoRequest, len)
}

/// Answers a TCP SYN with RST|ACK (RFC 9293 3.10.7.1: a segment to a closed port).
fn refuse(frame: &[u8], ihl: usize, out: &mut [u8]) -> (Seen, usize) {
    let tcp = &frame[14 + ihl..];
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    if tcp[13] & 0x02 == 0 {
        return (Seen::Other, 0);
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let out = &mut out[..54];
    out.fill(0);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    out[14] = 0x45;
    out[16..18].copy_from_slice(&40u16.to_be_bytes());
    out[22] = 64;
    out[23] = 6;
    out[26..30].copy_from_slice(&frame[30..34]);
    out[30..34].copy_from_slice(&frame[26..30]);
    let ip_sum = checksum(&out[14..34]);
    out[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    out[34..36].copy_from_slice(&tcp[2..4]);
    out[36..38].copy_from_slice(&tcp[0..2]);
    out[42..46].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    out[46] = 0x50;
    out[47] = 0x14;
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&out[26..34]);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&out[34..54]);
    let tcp_sum = checksum(&pseudo);
    out[50..52].copy_from_slice(&tcp_sum.to_be_bytes());
    (Seen::TcpSyn(dport), 54)
}
