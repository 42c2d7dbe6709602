//! Root lab test: 10,000 concurrent kernel connections to tcp-echo over a 2-queue veth
//! (one Sluice worker per queue, the peer's flows spread over both), each echoing its own
//! message while all of them are open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use lab::{Lab, Sluice};

/// Opens N connections (non-blocking, in waves), sends each a distinct message, checks
/// each echo, and closes them only when all have answered. Prints `ok N`.
const CLIENT: &str = r#"
import resource, selectors, socket, sys, time
N = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (N + 1000, N + 1000))
sel = selectors.DefaultSelector()
conns = []
echoed = 0
def msg(i):
    return b"message %06d from the kernel\n" % i
started = 0
deadline = time.time() + 240
while echoed < N:
    if time.time() > deadline:
        sys.exit("timeout: %d of %d echoed" % (echoed, N))
    # Keep at most 1000 handshakes in flight.
    while started < N and started - echoed < 1000:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("198.18.0.2", 7))
        st = {"i": started, "buf": b""}
        sel.register(s, selectors.EVENT_WRITE, st)
        conns.append(s)
        started += 1
    for key, ev in sel.select(timeout=1):
        s, st = key.fileobj, key.data
        if ev & selectors.EVENT_WRITE:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                sys.exit("connect %d failed: errno %d" % (st["i"], err))
            s.sendall(msg(st["i"]))
            sel.modify(s, selectors.EVENT_READ, st)
        else:
            data = s.recv(4096)
            if not data:
                sys.exit("connection %d closed early" % st["i"])
            st["buf"] += data
            want = msg(st["i"])
            if len(st["buf"]) >= len(want):
                if st["buf"] != want:
                    sys.exit("connection %d echoed %r" % (st["i"], st["buf"]))
                sel.unregister(s)
                echoed += 1
open_now = sum(1 for s in conns if s.fileno() >= 0)
for s in conns:
    s.close()
print("ok", echoed, "open", open_now)
"#;

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_ten_thousand_concurrent_echoes_over_two_queues() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let sluice = lab.sluice("tcp-echo", &[7], &["--queues", "2"]);
    assert!(
        sluice.listening.contains("queues=0,1"),
        "{}",
        sluice.listening
    );
    let out = lab.peer_ok(&["python3", "-c", CLIENT, "10000"]);
    assert!(out.contains("ok 10000 open 10000"), "{out}");
    let log = sluice.stop();
    // Both workers took connections.
    let opened: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("worker stopped"))
        .map(|l| Sluice::log_sum(l, "opened"))
        .collect();
    assert_eq!(opened.len(), 2, "{log}");
    assert_eq!(opened.iter().sum::<u64>(), 10_000, "{log}");
    assert!(opened.iter().all(|&n| n > 0), "one queue idle: {opened:?}");
    println!("10k connections per queue: {opened:?}");
}
