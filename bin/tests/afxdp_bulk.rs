//! Root lab tests: bulk transfers between the Linux kernel and `sluice --backend afxdp`,
//! byte-exact in both directions, with throughput printed beside a kernel-to-kernel
//! transfer over the same kind of veth (printed only: no timing asserts).
//!
//! The size is `SLUICE_BULK_MIB` MiB (default 256; lower it to keep the suite short on a loaded
//! machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lab::{Lab, STACK_IP};

fn bulk_bytes() -> u64 {
    std::env::var("SLUICE_BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        << 20
}

fn gbit(bytes: u64, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

/// Deterministic test data: an xorshift stream.
fn fill(buf: &mut [u8], state: &mut u64) {
    for b in buf {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *b = *state as u8;
    }
}

/// Writes `total` bytes of the xorshift stream seeded with `seed`; returns their hash.
fn write_stream(conn: &mut TcpStream, total: u64, seed: u64) -> u64 {
    let mut state = seed;
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], &mut state);
        conn.write_all(&buf[..n]).unwrap();
        hash.write(&buf[..n]);
        left -= n as u64;
    }
    hash.finish()
}

/// Reads until end of stream; returns (bytes, hash).
fn read_stream(conn: &mut TcpStream) -> (u64, u64) {
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            return (total, hash.finish());
        }
        hash.write(&buf[..n]);
        total += n as u64;
    }
}

/// Kernel writer -> receiver in the other namespace, over a plain kernel veth pair.
fn kernel_to_kernel(total: u64) -> f64 {
    let lab = Lab::up(1);
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.stack_ns, "addr", "add", "198.18.0.2/24", "dev"])
        .arg(&lab.stack_if)
        .status()
        .unwrap();
    assert!(out.success());
    let stack_ns = lab.stack_ns.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        dataplane::sys::enter_netns(&stack_ns).unwrap();
        let l = TcpListener::bind(SocketAddrV4::new(STACK_IP, 5001)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        while let Ok(k) = c.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    ready_rx.recv().unwrap();
    let took = lab.in_peer(move || {
        let mut c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 5001)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let start = Instant::now();
        write_stream(&mut c, total, 7);
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        start.elapsed()
    });
    assert_eq!(server.join().unwrap(), total);
    gbit(total, took)
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn afxdp_bulk_byte_exact_both_directions_beside_kernel() {
    let _serial = lab::serial();
    let total = bulk_bytes();
    let lab = Lab::up(1);
    let _sluice = lab.sluice("tcp-source", &[19], &[]);

    // tcp-source -> kernel reader: every byte is `offset mod 251`.
    let (took_source, got) = lab.in_peer(move || {
        let mut c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 19)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        let start = Instant::now();
        while off < total {
            let want = (total - off).min(buf.len() as u64) as usize;
            let n = c.read(&mut buf[..want]).unwrap();
            assert!(n > 0, "tcp-source closed early at {off}");
            for (i, &b) in buf[..n].iter().enumerate() {
                let expect = ((off + i as u64) % 251) as u8;
                assert_eq!(b, expect, "pattern mismatch at offset {}", off + i as u64);
            }
            off += n as u64;
        }
        (start.elapsed(), off)
    });
    assert_eq!(got, total);
    drop(_sluice);

    // kernel writer -> tcp-echo -> kernel reader: the echo hashes like what was sent.
    let _sluice = lab.sluice("tcp-echo", &[7], &[]);
    let (took_echo, sent_hash, got_hash, got_len) = lab.in_peer(move || {
        let c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 7)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = c.try_clone().unwrap();
        let start = Instant::now();
        let rd = std::thread::spawn(move || read_stream(&mut reader));
        let mut w = c;
        let sent = write_stream(&mut w, total, 0x5eed);
        w.shutdown(Shutdown::Write).unwrap();
        let (len, hash) = rd.join().unwrap();
        (start.elapsed(), sent, hash, len)
    });
    assert_eq!(got_len, total, "echo length");
    assert_eq!(got_hash, sent_hash, "echo content");
    drop(_sluice);

    // kernel writer -> tcp-discard: all of it is taken (discard closes after our FIN).
    let _sluice = lab.sluice("tcp-discard", &[9], &[]);
    let took_discard = lab.in_peer(move || {
        let mut c = TcpStream::connect(SocketAddrV4::new(STACK_IP, 9)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let start = Instant::now();
        write_stream(&mut c, total, 3);
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        start.elapsed()
    });
    drop(_sluice);
    drop(lab);

    let kernel = kernel_to_kernel(total);
    println!(
        "bulk {} MiB: sluice tcp-source->kernel {:.2} Gbit/s, kernel->sluice tcp-discard {:.2} Gbit/s, \
         kernel<->sluice tcp-echo {:.2} Gbit/s each way; kernel->kernel veth {:.2} Gbit/s",
        total >> 20,
        gbit(total, took_source),
        gbit(total, took_discard),
        gbit(total, took_echo),
        kernel
    );
}
