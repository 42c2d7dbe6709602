//! Root lab test: 10,000 concurrent kernel connections to tcp-echo over a 2-queue veth
//! (one Sluice worker per queue, the peer's flows spread over both), each echoing its own
//! message, then a second one while all of them are open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use lab::{Lab, Sluice};

/// Opens N connections (non-blocking, in waves), sends each a distinct message, checks
/// each echo; then, with all N still open, checks that the kernel holds every one in
/// ESTABLISHED (TCP_INFO: a FIN or RST from Sluice would have moved it on) and sends each a
/// second message, whose echo proves Sluice still serves that connection while all the
/// others are open too. Closes them only then. Prints `ok N established E second S`.
const CLIENT: &str = r#"
import resource, selectors, socket, struct, sys, time
N = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (N + 1000, N + 1000))
sel = selectors.DefaultSelector()
conns = []
def msg(i, round):
    return b"message %06d round %d from the kernel\n" % (i, round)
deadline = time.time() + 240
def echo_round(round, start):
    # start(i) opens or reuses connection i and registers it for writing.
    done = 0
    started = 0
    while done < N:
        if time.time() > deadline:
            sys.exit("timeout: round %d: %d of %d echoed" % (round, done, N))
        # Keep at most 1000 exchanges in flight.
        while started < N and started - done < 1000:
            start(started)
            started += 1
        for key, ev in sel.select(timeout=1):
            s, st = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sys.exit("connection %d round %d failed: errno %d" % (st["i"], round, err))
                s.sendall(msg(st["i"], round))
                sel.modify(s, selectors.EVENT_READ, st)
            else:
                data = s.recv(4096)
                if not data:
                    sys.exit("connection %d closed early (round %d)" % (st["i"], round))
                st["buf"] += data
                want = msg(st["i"], round)
                if len(st["buf"]) >= len(want):
                    if st["buf"] != want:
                        sys.exit("connection %d echoed %r" % (st["i"], st["buf"]))
                    sel.unregister(s)
                    done += 1
    return done
def open_conn(i):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("198.18.0.2", 7))
    sel.register(s, selectors.EVENT_WRITE, {"i": i, "buf": b""})
    conns.append(s)
def reuse_conn(i):
    sel.register(conns[i], selectors.EVENT_WRITE, {"i": i, "buf": b""})
first = echo_round(1, open_conn)
# tcpi_state is the first byte of struct tcp_info; 1 is TCP_ESTABLISHED.
established = sum(
    1 for s in conns if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0] == 1
)
second = echo_round(2, reuse_conn)
for s in conns:
    s.close()
print("ok", first, "established", established, "second", second)
"#;

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_ten_thousand_concurrent_echoes_over_two_queues() {
    let _serial = lab::serial();
    many(&Lab::up(2), 10_000);
}

/// The DPDK backend (`net_af_packet` with two queue pairs on the veth: a fan-out of two
/// packet sockets, software steering between the workers): 1,000 concurrent connections.
#[cfg(feature = "dpdk")]
#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn dpdk_thousand_concurrent_echoes_over_two_queues() {
    let _serial = lab::serial();
    many(&Lab::up_dpdk(2), 1_000);
}

/// `n` concurrent connections to tcp-echo on two queues (see [`CLIENT`]); both workers take
/// some.
fn many(lab: &Lab, n: u64) {
    let sluice = lab.sluice("tcp-echo", &[7], &["--queues", "2"]);
    assert!(
        sluice.listening.contains("queues=0,1"),
        "{}",
        sluice.listening
    );
    let out = lab.peer_ok(&["python3", "-c", CLIENT, &n.to_string()]);
    assert!(
        out.contains(&format!("ok {n} established {n} second {n}")),
        "{out}"
    );
    let log = sluice.stop();
    // Both workers took connections.
    let opened: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .map(|l| Sluice::log_sum(l, "opened"))
        .collect();
    assert_eq!(opened.len(), 2, "{log}");
    assert_eq!(opened.iter().sum::<u64>(), n, "{log}");
    assert!(opened.iter().all(|&k| k > 0), "one queue idle: {opened:?}");
    println!("{n} connections, per queue: {opened:?}");
}
