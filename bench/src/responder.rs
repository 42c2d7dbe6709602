//! A trivial single-threaded mio echo responder: raw TCP echo or a WebSocket reflector.
//!
//! It backs the `ref-tcp-echo` reference server and the generator's self-ceiling
//! measurement (`sluice-load ceiling`), where it must be cheaper than the client.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::settings::{Proto, MAX_MESSAGE_SIZE};
use crate::wsframe::{self, Opcode, Role};

const LISTENER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 * 1024;
/// Pending output per connection above which the responder stops reading from it.
const MAX_PENDING_OUT: usize = 1024 * 1024;

/// How the responder behaves.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Raw TCP echo or WebSocket reflector.
    pub proto: Proto,
    /// Busy-poll instead of blocking in epoll.
    pub spin: bool,
    /// Most connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Flip one byte of every echo (to test the generator's checking).
    pub corrupt: bool,
    /// Once this many bytes have been read in total, block the whole responder for the
    /// given time, once (to test that the open loop shows a stall in its tail).
    pub stall_after: Option<(u64, Duration)>,
}

impl ResponderConfig {
    /// An honest responder for `proto` with blocking waits and 100,000 connections at most.
    pub fn new(proto: Proto) -> Self {
        Self {
            proto,
            spin: false,
            max_connections: 100_000,
            corrupt: false,
            stall_after: None,
        }
    }
}

/// The options every trivial reference server (`ref-tcp-echo`, `ref-ws-echo`) takes beside
/// its address; flattened into each binary's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReferenceArgs {
    /// CPU to pin the server thread to.
    #[arg(long)]
    pub pin: Option<usize>,
    /// Busy-poll (epoll with a zero timeout, no sleep) instead of blocking in epoll.
    #[arg(long)]
    pub spin: bool,
    /// Most connections served at once.
    #[arg(long, default_value_t = 100_000)]
    pub max_connections: usize,
}

impl ReferenceArgs {
    /// Pins the thread if asked, then serves `proto` echo on `addr` until the process ends,
    /// printing `listening ADDR` once bound.
    pub fn serve(&self, proto: Proto, addr: SocketAddr) -> anyhow::Result<()> {
        if let Some(cpu) = self.pin {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                anyhow::bail!("could not pin to CPU {cpu}");
            }
        }
        let mut cfg = ResponderConfig::new(proto);
        cfg.spin = self.spin;
        cfg.max_connections = self.max_connections;
        let stop = AtomicBool::new(false);
        bind_and_serve(addr, &cfg, &stop, |a| println!("listening {a}"))?;
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RPhase {
    Handshake,
    Open,
}

#[derive(Debug)]
struct RConn {
    stream: TcpStream,
    phase: RPhase,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    frame_left: usize,
    frame_off: usize,
    mask: [u8; 4],
    closed: bool,
}

/// Serves echo on `listener` until `stop` is set.
pub fn serve(
    listener: std::net::TcpListener,
    cfg: &ResponderConfig,
    stop: &AtomicBool,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<RConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    let mut scratch = vec![0u8; READ_CHUNK];
    let mut read_total = 0u64;
    let mut stall = cfg.stall_after;
    let timeout = if cfg.spin {
        Duration::ZERO
    } else {
        Duration::from_millis(20)
    };
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&mut listener, &poll, &mut conns, &mut free, &mut live, cfg);
                continue;
            }
            let i = ev.token().0;
            let Some(Some(conn)) = conns.get_mut(i) else {
                continue;
            };
            let res = serve_conn(conn, cfg, &mut scratch, &mut read_total);
            if let Some((after, pause)) = stall {
                if read_total >= after {
                    std::thread::sleep(pause);
                    stall = None;
                }
            }
            if res.is_err() || conn.closed {
                if let Some(mut c) = conns[i].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(i);
                live -= 1;
            }
        }
    }
    Ok(())
}

fn accept_all(
    listener: &mut TcpListener,
    poll: &Poll,
    conns: &mut Vec<Option<RConn>>,
    free: &mut Vec<usize>,
    live: &mut usize,
    cfg: &ResponderConfig,
) {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock ends the batch; other errors (EMFILE, aborted) drop this attempt.
            Err(_) => return,
        };
        if *live >= cfg.max_connections {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let i = free.pop().unwrap_or(conns.len());
        if poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            if i < conns.len() {
                free.push(i);
            }
            continue;
        }
        let conn = RConn {
            stream,
            phase: match cfg.proto {
                Proto::Tcp => RPhase::Open,
                Proto::Ws => RPhase::Handshake,
            },
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            frame_left: 0,
            frame_off: 0,
            mask: [0; 4],
            closed: false,
        };
        if i == conns.len() {
            conns.push(Some(conn));
        } else {
            conns[i] = Some(conn);
        }
        *live += 1;
    }
}

fn flush(conn: &mut RConn) -> io::Result<()> {
    while conn.wpos < conn.wbuf.len() {
        match conn.stream.write(&conn.wbuf[conn.wpos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if conn.wpos == conn.wbuf.len() {
        conn.wbuf.clear();
        conn.wpos = 0;
    }
    Ok(())
}

fn serve_conn(
    conn: &mut RConn,
    cfg: &ResponderConfig,
    scratch: &mut [u8],
    read_total: &mut u64,
) -> io::Result<()> {
    flush(conn)?;
    while conn.wbuf.len() - conn.wpos < MAX_PENDING_OUT && !conn.closed {
        let n = match conn.stream.read(scratch) {
            Ok(0) => {
                conn.closed = true;
                break;
            }
            Ok(n) => {
                *read_total += n as u64;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let data = &mut scratch[..n];
        match cfg.proto {
            Proto::Tcp => {
                if cfg.corrupt {
                    data[0] ^= 0xFF;
                }
                conn.wbuf.extend_from_slice(data);
            }
            Proto::Ws => {
                conn.rbuf.extend_from_slice(data);
                reflect_ws(conn, cfg)?;
            }
        }
        flush(conn)?;
    }
    flush(conn)
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Turns the client's masked frames in `rbuf` into unmasked echo frames in `wbuf`.
fn reflect_ws(conn: &mut RConn, cfg: &ResponderConfig) -> io::Result<()> {
    let mut pos = 0;
    if conn.phase == RPhase::Handshake {
        match wsframe::parse_upgrade_request(&conn.rbuf) {
            Ok(Some(req)) => {
                conn.wbuf
                    .extend_from_slice(&wsframe::upgrade_response(&req.key));
                conn.phase = RPhase::Open;
                pos = req.len;
            }
            Ok(None) => return Ok(()),
            Err(e) => {
                conn.wbuf
                    .extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                conn.closed = true;
                return Err(proto_err(e.to_string()));
            }
        }
    }
    loop {
        if conn.frame_left > 0 {
            let take = (conn.rbuf.len() - pos).min(conn.frame_left);
            if take == 0 {
                break;
            }
            let start = conn.wbuf.len();
            conn.wbuf.extend_from_slice(&conn.rbuf[pos..pos + take]);
            wsframe::apply_mask(&mut conn.wbuf[start..], conn.mask, conn.frame_off);
            if cfg.corrupt && conn.frame_off == 0 {
                conn.wbuf[start] ^= 0xFF;
            }
            conn.frame_off += take;
            conn.frame_left -= take;
            pos += take;
            continue;
        }
        let h = match wsframe::parse_header(&conn.rbuf[pos..], Role::Server, MAX_MESSAGE_SIZE) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(proto_err(e.to_string())),
        };
        let mask = h.mask.unwrap_or([0; 4]);
        if h.opcode.is_control() {
            let end = pos + h.header_len + h.payload_len;
            if end > conn.rbuf.len() {
                break;
            }
            let mut payload = conn.rbuf[pos + h.header_len..end].to_vec();
            wsframe::apply_mask(&mut payload, mask, 0);
            pos = end;
            match h.opcode {
                // RFC 6455 5.5.2: answer a Ping with a Pong carrying the same data.
                Opcode::Ping => wsframe::write_frame(&mut conn.wbuf, Opcode::Pong, None, &payload),
                // RFC 6455 5.5.1: answer a Close with a Close, then close the connection.
                Opcode::Close => {
                    let code = payload.get(..2).unwrap_or(&[]);
                    wsframe::write_frame(&mut conn.wbuf, Opcode::Close, None, code);
                    conn.closed = true;
                    break;
                }
                _ => {}
            }
            continue;
        }
        if h.payload_len == 0 && cfg.corrupt {
            return Err(proto_err("cannot corrupt an empty frame"));
        }
        wsframe::write_header(&mut conn.wbuf, h.fin, h.opcode, None, h.payload_len);
        pos += h.header_len;
        conn.frame_left = h.payload_len;
        conn.frame_off = 0;
        conn.mask = mask;
    }
    conn.rbuf.drain(..pos);
    Ok(())
}

/// Binds `addr` and serves until `stop` is set, on the calling thread; returns the bound
/// address through `on_bound` before serving.
pub fn bind_and_serve(
    addr: SocketAddr,
    cfg: &ResponderConfig,
    stop: &AtomicBool,
    on_bound: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    on_bound(listener.local_addr()?);
    serve(listener, cfg, stop)
}
