//! The kernel backend's TCP applications, signal handling and command-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::Server;
use ws::{ClientHandshake, CloseCode, Config, Connection, DeflateConfig, Event, MessageKind, Role};

/// A loopback client whose reads and writes give up after 30 s (a hung server fails the
/// test with a timeout error instead of hanging it).
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

#[test]
fn tcp_echo_bytes_echoed_until_half_close() {
    let server = Server::start("tcp-echo", &[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13) as u8).collect();
    assert_echoed_until_half_close(server.port, &data);
}

/// Writes `data` to a tcp-echo server on `port` from one thread, then half-closes, while
/// reading everything back to the server's close on this one; asserts it came back equal.
fn assert_echoed_until_half_close(port: u16, data: &[u8]) {
    let mut s = connect(port);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(
        got == data,
        "echo differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
}

#[test]
fn tcp_source_pattern_sent() {
    let server = Server::start("tcp-source", &[]);
    let mut s = connect(server.port);
    let mut got = vec![0u8; 100_000];
    s.read_exact(&mut got).unwrap();
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b, (i % 251) as u8, "byte {i}");
    }
}

#[test]
fn tcp_discard_input_dropped_and_closed_on_eof() {
    let server = Server::start("tcp-discard", &[]);
    let mut s = connect(server.port);
    s.write_all(&[7u8; 100_000]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
}

/// Opens a WebSocket with the crate's client codec; returns the stream and engine.
fn ws_client(port: u16) -> (TcpStream, Connection) {
    let mut s = connect(port);
    let hs = ClientHandshake::new([3; 16], vec![], DeflateConfig::default());
    s.write_all(&hs.request("127.0.0.1", "/")).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let accepted = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(a) = hs.parse_response(&buf).unwrap() {
            break a;
        }
    };
    assert!(accepted.deflate.is_some());
    assert_eq!(accepted.head_len, buf.len());
    (
        s,
        Connection::new(Role::Client, Config::default(), accepted.deflate, 99),
    )
}

fn next_event(s: &mut TcpStream, c: &mut Connection) -> Event {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(ev) = c.poll_event() {
            return ev;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed");
        let mut pos = 0;
        while pos < n && c.is_reading() {
            pos += c.read(&mut chunk[pos..n]);
        }
    }
}

#[test]
fn ws_client_codec_echo_roundtrip() {
    let server = Server::start("ws-echo", &[]);
    let (mut s, mut c) = ws_client(server.port);
    c.send_fragmented(
        MessageKind::Text,
        "héllo wörld ".repeat(1000).as_bytes(),
        1000,
    )
    .unwrap();
    s.write_all(c.pending_output()).unwrap();
    c.consume_output(c.pending_output().len());
    assert_eq!(
        next_event(&mut s, &mut c),
        Event::Message {
            kind: MessageKind::Text,
            data: "héllo wörld ".repeat(1000).into_bytes()
        }
    );
}

#[test]
fn ws_echo_message_far_beyond_the_write_buffer_echoed_whole() {
    // 1 MB of incompressible bytes: the echo is many times the kernel driver's 64 KiB
    // write buffer, so it drains through it in turns without a writable edge from the
    // socket in between (epoll is edge-triggered).
    let server = Server::start("ws-echo", &[]);
    let (mut s, mut c) = ws_client(server.port);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.send(MessageKind::Binary, &data).unwrap();
    let out = c.pending_output().to_vec();
    c.consume_output(out.len());
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&out).unwrap())
    };
    match next_event(&mut s, &mut c) {
        Event::Message { kind, data: echo } => {
            assert_eq!(kind, MessageKind::Binary);
            assert!(echo == data, "echo differs ({} bytes)", echo.len());
        }
        other => panic!("{other:?}"),
    }
    writer.join().unwrap();
}

#[test]
fn ws_echo_sigterm_closes_1001_and_exits_0() {
    let server = Server::start("ws-echo", &[]);
    let (mut s, mut c) = ws_client(server.port);
    let status = std::thread::scope(|scope| {
        let stopper = scope.spawn(|| server.terminate());
        let ev = next_event(&mut s, &mut c);
        assert!(
            matches!(
                ev,
                Event::Close {
                    code: Some(CloseCode::GOING_AWAY),
                    ..
                }
            ),
            "{ev:?}"
        );
        // Our Close answer is queued by the engine; send it to finish the handshake.
        s.write_all(c.pending_output()).unwrap();
        stopper.join().unwrap()
    });
    assert!(status.success(), "exit status {status}");
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `sluice ARGS`, requires a non-zero exit with exactly one line on stderr, and
/// returns that line.
fn fails_with_one_line(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn run_afxdp_backend_without_iface_fails_with_one_line() {
    let err = fails_with_one_line(&[
        "run",
        "--backend",
        "afxdp",
        "--port",
        "1",
        "--app",
        "tcp-echo",
    ]);
    assert!(err.contains("afxdp"), "{err}");
}

#[test]
fn run_gateway_app_fails_with_one_line() {
    // The gateway runs now; a missing config file is the one-line failure.
    let err = fails_with_one_line(&[
        "run",
        "--backend",
        "kernel",
        "--port",
        "1",
        "--app",
        "gateway",
        "--config",
        "/nonexistent/gateway.toml",
    ]);
    assert!(err.contains("gateway"), "{err}");
}

/// `--tcp-idle-timeout`: a silent connection is reset once idle that long; one that keeps
/// talking is kept.
#[test]
fn tcp_idle_connection_reset_after_timeout_active_one_kept() {
    let server = Server::start("tcp-echo", &["--tcp-idle-timeout", "1"]);
    let mut idle = connect(server.port);
    let mut busy = connect(server.port);
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4];
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        busy.write_all(b"ping").unwrap();
        busy.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }
    // 2.4 s later the silent one is gone (reset, or at least closed), the busy one alive.
    let mut one = [0u8; 1];
    let r = idle.read(&mut one);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?} after {:?}",
        started.elapsed()
    );
    busy.write_all(b"more").unwrap();
    busy.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"more");
}

/// User plus system CPU time of process `pid` so far (`/proc/PID/stat`, clock ticks at
/// the usual 100 per second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (in parentheses): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// `--busy-poll`: the event loop never sleeps (an idle server burns CPU, a default one
/// does not), and it still serves tcp-echo and ws-echo and stops on SIGTERM with exit 0.
#[test]
fn busy_poll_spins_while_idle_serves_and_stops() {
    let spinning = Server::start("tcp-echo", &["--busy-poll"]);
    let sleeping = Server::start("tcp-echo", &[]);
    let before = (cpu_seconds(spinning.pid()), cpu_seconds(sleeping.pid()));
    std::thread::sleep(Duration::from_secs(2));
    let used = (
        cpu_seconds(spinning.pid()) - before.0,
        cpu_seconds(sleeping.pid()) - before.1,
    );
    // A spinning loop takes its share of a core even on a busy test machine; the
    // blocking one wakes every 100 ms for its tick.
    assert!(
        used.0 >= 0.3,
        "busy-polling server used only {used:?} s of CPU in 2 s idle"
    );
    assert!(
        used.1 <= 0.2,
        "the default server used {used:?} s of CPU in 2 s idle"
    );
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    assert_echoed_until_half_close(spinning.port, &data);
    assert!(spinning.terminate().success());

    let ws = Server::start("ws-echo", &["--busy-poll"]);
    let (mut s, mut c) = ws_client(ws.port);
    c.send(MessageKind::Text, "spin".as_bytes()).unwrap();
    s.write_all(c.pending_output()).unwrap();
    c.consume_output(c.pending_output().len());
    assert_eq!(
        next_event(&mut s, &mut c),
        Event::Message {
            kind: MessageKind::Text,
            data: b"spin".to_vec()
        }
    );
    assert!(ws.terminate().success());
}

#[test]
fn busy_poll_on_afxdp_refused_with_one_line() {
    let err = fails_with_one_line(&[
        "run",
        "--backend",
        "afxdp",
        "--iface",
        "lo",
        "--port",
        "1",
        "--app",
        "tcp-echo",
        "--busy-poll",
    ]);
    assert!(
        err.contains("--busy-poll applies to --backend kernel"),
        "{err}"
    );
}
