//! The kernel-socket backend of the TCP applications (tcp-echo, tcp-discard, tcp-source):
//! mio (epoll, edge-triggered), many connections on one thread. ws-echo and the gateway run
//! on the gateway's kernel driver (`gateway::kernel`).
//!
//! Each connection has a bounded output queue: while it holds more than
//! `--max-output-queue` bytes the connection is not read, so a slow reader slows its
//! sender down through TCP flow control instead of growing memory.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info, warn};

use crate::cli::{App, RunArgs};

/// How long a closing connection may linger to drain the peer's data.
const LINGER: Duration = Duration::from_secs(2);
/// How long shutdown waits for WebSocket peers to answer our Close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Size of the shared receive buffer.
const READ_BUF: usize = 64 * 1024;

/// Application state of one connection.
#[derive(Debug)]
enum AppState {
    Echo(Vec<u8>),
    Discard,
    Source { offset: u64, chunk: Vec<u8> },
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    app: AppState,
    /// Peer sent FIN.
    read_eof: bool,
    /// We want to close once the output is flushed.
    closing: bool,
    /// Our FIN is sent; draining the peer until EOF or the linger deadline.
    linger_until: Option<Instant>,
}

struct Limits {
    max_output: usize,
}

/// Runs the kernel backend until SIGINT/SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    if matches!(args.app, App::WsEcho | App::Gateway) {
        anyhow::bail!("ws-echo and the gateway run on the gateway's kernel driver");
    }
    let mut poll = Poll::new().context("creating epoll instance")?;
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for (i, &port) in args.ports.iter().enumerate() {
        let addr = SocketAddr::new(args.ip, port);
        let mut l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)
            .context("registering listener")?;
        bound.push(l.local_addr().context("listener address")?.port());
        listeners.push(l);
    }
    let ports: Vec<String> = bound.iter().map(u16::to_string).collect();
    let app_name = match args.app {
        App::TcpEcho => "tcp-echo",
        App::TcpDiscard => "tcp-discard",
        App::TcpSource => "tcp-source",
        App::WsEcho => "ws-echo",
        App::Gateway => "gateway",
    };
    let limits = Limits {
        max_output: args.max_output_queue.max(1),
    };
    println!(
        "listening ip={} port={} backend=kernel app={app_name}",
        args.ip,
        ports.join(",")
    );
    io::stdout().flush().ok();
    info!(ip = %args.ip, ports = %ports.join(","), app = app_name, "listening");

    let base = listeners.len();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF];
    let mut shutdown_deadline: Option<Instant> = None;
    let mut last_sweep = Instant::now();

    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e).context("epoll_wait");
            }
        }
        for event in events.iter() {
            let Token(t) = event.token();
            if t < base {
                if shutdown_deadline.is_some() {
                    continue;
                }
                accept_all(
                    &listeners[t],
                    &poll,
                    args,
                    base,
                    &mut conns,
                    &mut free,
                    &mut live,
                );
            }
        }
        for event in events.iter() {
            let Token(t) = event.token();
            if t < base {
                continue;
            }
            let idx = t - base;
            let done = match conns.get_mut(idx).and_then(Option::as_mut) {
                Some(c) => drive(c, &mut buf, &limits),
                None => false,
            };
            if done {
                remove(&poll, &mut conns, &mut free, &mut live, idx);
            }
        }
        let now = Instant::now();
        if shutdown_deadline.is_none() && stop.load(Ordering::Relaxed) {
            info!(connections = live, "stopping: closing connections");
            for l in listeners.iter_mut() {
                poll.registry().deregister(l).ok();
            }
            listeners.clear();
            shutdown_deadline = Some(now + SHUTDOWN_GRACE);
            for idx in 0..conns.len() {
                let done = match conns[idx].as_mut() {
                    Some(c) => {
                        c.closing = true;
                        drive(c, &mut buf, &limits)
                    }
                    None => false,
                };
                if done {
                    remove(&poll, &mut conns, &mut free, &mut live, idx);
                }
            }
        }
        if let Some(deadline) = shutdown_deadline {
            if live == 0 || now >= deadline {
                info!(remaining = live, "stopped");
                return Ok(());
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(200) {
            last_sweep = now;
            for idx in 0..conns.len() {
                let expired = conns[idx]
                    .as_ref()
                    .is_some_and(|c| c.linger_until.is_some_and(|d| now >= d));
                if expired {
                    debug!(idx, "closing on timeout");
                    remove(&poll, &mut conns, &mut free, &mut live, idx);
                }
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    args: &RunArgs,
    base: usize,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    live: &mut usize,
) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                warn!(error = %e, "accept failed");
                return;
            }
        };
        if *live >= args.max_connections {
            warn!(%peer, limit = args.max_connections, "connection limit reached; closing");
            continue;
        }
        stream.set_nodelay(true).ok();
        let idx = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(base + idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(error = %e, "register failed");
            free.push(idx);
            continue;
        }
        let app = match args.app {
            App::TcpEcho => AppState::Echo(Vec::new()),
            App::TcpDiscard => AppState::Discard,
            App::TcpSource => AppState::Source {
                offset: 0,
                chunk: Vec::new(),
            },
            // Refused in `run`.
            App::WsEcho | App::Gateway => AppState::Discard,
        };
        debug!(%peer, idx, "accepted");
        conns[idx] = Some(Conn {
            stream,
            peer,
            app,
            read_eof: false,
            closing: false,
            linger_until: None,
        });
        *live += 1;
    }
}

fn remove(
    poll: &Poll,
    conns: &mut [Option<Conn>],
    free: &mut Vec<usize>,
    live: &mut usize,
    idx: usize,
) {
    if let Some(mut c) = conns.get_mut(idx).and_then(Option::take) {
        poll.registry().deregister(&mut c.stream).ok();
        debug!(peer = %c.peer, "closed");
        free.push(idx);
        *live -= 1;
    }
}

/// The byte at `offset` of the tcp-source pattern.
pub fn source_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn output(app: &AppState) -> &[u8] {
    match app {
        AppState::Echo(out) => out,
        AppState::Source { chunk, .. } => chunk,
        AppState::Discard => &[],
    }
}

fn consume(app: &mut AppState, n: usize) {
    match app {
        AppState::Echo(out) => {
            out.drain(..n);
        }
        AppState::Source { chunk, .. } => {
            chunk.drain(..n);
        }
        AppState::Discard => {}
    }
}

/// Writes as much output as the socket takes. `Err` means the connection is broken.
fn flush(c: &mut Conn) -> io::Result<()> {
    loop {
        if let AppState::Source { offset, chunk } = &mut c.app {
            if chunk.is_empty() && !c.closing {
                chunk.extend((0..16 * 1024u64).map(|i| source_byte(*offset + i)));
                *offset += 16 * 1024;
            }
        }
        let out = output(&c.app);
        if out.is_empty() {
            return Ok(());
        }
        match c.stream.write(out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => consume(&mut c.app, n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs one connection as far as it can go; returns true when it should be removed.
fn drive(c: &mut Conn, buf: &mut [u8], limits: &Limits) -> bool {
    loop {
        if c.linger_until.is_some() {
            // Our FIN is out: discard whatever the peer still sends until its FIN.
            loop {
                match c.stream.read(buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
        }
        if flush(c).is_err() {
            return true;
        }
        let pending = output(&c.app).len();
        if c.closing || c.read_eof {
            if pending == 0 {
                if c.read_eof {
                    return true;
                }
                // Lingering close: send FIN, then drain so unread data causes no RST
                // that could destroy our last frames in flight.
                if c.stream.shutdown(Shutdown::Write).is_err() {
                    return true;
                }
                c.linger_until = Some(Instant::now() + LINGER);
                continue;
            }
            if c.read_eof {
                // Peer half-closed: finish sending, nothing more to read.
                return false;
            }
        }
        if c.closing || pending > limits.max_output {
            // Backpressure: wait for a writable event before reading more.
            return false;
        }
        match c.stream.read(buf) {
            Ok(0) => {
                c.read_eof = true;
                if matches!(c.app, AppState::Source { .. }) {
                    // A source's reader that closes is done.
                    c.closing = true;
                    if let AppState::Source { chunk, .. } = &mut c.app {
                        chunk.clear();
                    }
                }
            }
            Ok(n) => on_data(c, &mut buf[..n], limits),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn on_data(c: &mut Conn, data: &mut [u8], _limits: &Limits) {
    match &mut c.app {
        AppState::Echo(out) => out.extend_from_slice(data),
        AppState::Discard | AppState::Source { .. } => {}
    }
}
