//! Bulk TCP throughput: `sluice-load bulk HOST:PORT` streams bytes to a discard server for
//! a fixed time, closes its sending side and waits for the server to close (so every byte
//! was received), and reports Gbit/s. `sluice-load sink --addr A` is a kernel-socket
//! discard server (one thread per connection) to run the same client kernel-to-kernel.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// The outcome of a bulk run.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// What this report measured ("bulk").
    pub kind: String,
    /// Target address.
    pub target: SocketAddr,
    /// Bytes written (all received: the server closed after reading them).
    pub bytes: u64,
    /// From the first write to the server's close, seconds.
    pub seconds: f64,
    /// Payload throughput, Gbit/s.
    pub gbit_per_s: f64,
}

/// Streams to `target` for `duration` in `chunk`-byte writes.
pub fn bulk(target: SocketAddr, duration: Duration, chunk: usize) -> anyhow::Result<BulkReport> {
    let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connect {target}"))?;
    let buf: Vec<u8> = (0..chunk.max(1)).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        conn.write_all(&buf).context("write")?;
        bytes += buf.len() as u64;
    }
    conn.shutdown(Shutdown::Write).context("shutdown")?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut sink = [0u8; 4096];
    while conn
        .read(&mut sink)
        .context("waiting for the server's close")?
        > 0
    {}
    let seconds = start.elapsed().as_secs_f64();
    Ok(BulkReport {
        kind: "bulk".into(),
        target,
        bytes,
        seconds,
        gbit_per_s: bytes as f64 * 8.0 / seconds / 1e9,
    })
}

/// A discard server: reads every connection to its end, then closes it. Never returns
/// unless accepting fails. `spin`: each reader busy-polls its non-blocking socket instead
/// of sleeping in `read`.
pub fn sink(addr: SocketAddr, spin: bool, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    ready(listener.local_addr()?);
    loop {
        let (mut conn, _) = listener.accept()?;
        if spin {
            conn.set_nonblocking(true)?;
        }
        std::thread::spawn(move || discard(&mut conn));
    }
}

/// Reads `conn` to its end (or its first error); a would-block read is retried at once.
fn discard(conn: &mut TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Both sink modes read every byte to the end and close: the client's run completes
    /// (it waits for the server's close) with what it wrote.
    #[test]
    fn sink_blocking_and_spinning_read_to_the_end_and_close() {
        for spin in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = sink("127.0.0.1:0".parse().unwrap(), spin, |a| {
                    tx.send(a).unwrap();
                });
            });
            let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let report = bulk(addr, Duration::from_millis(200), 64 * 1024).unwrap();
            assert!(report.bytes >= 64 * 1024, "spin={spin}: {report:?}");
            assert!(report.seconds < 30.0, "spin={spin}: {report:?}");
        }
    }
}
