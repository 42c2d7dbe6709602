//! The load generator's engine: per-thread mio poll loops, each owning a share of the
//! connections, sending fixed-size messages and checking every echoed byte.
//!
//! Closed loop: every connection keeps `pipeline` messages in flight and sends the next one
//! when a reply arrives; latency runs from the actual send.
//! Open loop: messages come due on a fixed schedule (the total rate spread over all
//! connections, round robin, so each connection has a fixed period). A due message is sent
//! as soon as its connection has a free pipeline slot, and its latency runs from the
//! *intended* send time of the schedule, so time spent waiting behind a stalled server shows
//! up in the latency (coordinated-omission correction by intended-time stamping).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use crate::report::{ErrorKind, Report, WorkerStats};
use crate::settings::{Mode, Proto, Settings};
use crate::wsframe::{self, Opcode, Role};

/// Receive buffer per connection, in bytes (payloads are checked as they stream through,
/// so this does not grow with the message size).
pub const RECV_BUF: usize = 64 * 1024;
/// Most connection attempts in progress at once per thread.
pub const MAX_CONNECTING: usize = 256;
/// Bytes of a message stamped with its sequence number and connection id.
pub const STAMP_LEN: usize = 12;
/// Most pending bytes of Pong answers per connection before pings are ignored.
const MAX_PENDING_CONTROL: usize = 4 * 1024;

/// Runs the load described by `settings` and returns the merged report.
pub fn run(settings: &Settings) -> anyhow::Result<Report> {
    run_kind("run", settings)
}

pub(crate) fn run_kind(kind: &str, settings: &Settings) -> anyhow::Result<Report> {
    settings.validate()?;
    let tls = tls_setup(settings)?;
    // Each connection is one descriptor; make room for them if the hard limit allows.
    let _ = rlimit::increase_nofile_limit(settings.connections as u64 + 256);
    let threads = settings.threads;
    let barrier = Arc::new(Barrier::new(threads));
    let start = Arc::new(OnceLock::new());
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let s = settings.clone();
        let barrier = Arc::clone(&barrier);
        let start = Arc::clone(&start);
        let tls = tls.clone();
        let h = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || worker_main(t, &s, tls, &barrier, &start))?;
        handles.push(h);
    }
    let cpu_busy = sample_cpu_window(settings, &start, || {
        handles.iter().all(std::thread::JoinHandle::is_finished)
    });
    let mut stats = Vec::with_capacity(threads);
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.push(s),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("a generator thread panicked"),
        }
    }
    let mut report = Report::from_stats(kind, settings, stats);
    report.cpu_busy = cpu_busy;
    Ok(report)
}

/// The client configuration and server name every TLS connection of the run shares (one
/// configuration, so with resumption on its session store is shared by all threads).
pub(crate) type TlsClient = Option<(Arc<ClientConfig>, ServerName<'static>)>;

pub(crate) fn tls_setup(settings: &Settings) -> anyhow::Result<TlsClient> {
    match &settings.tls {
        None => Ok(None),
        Some(o) => Ok(Some((
            crate::tls::client_config(o)?,
            crate::tls::server_name(o.sni.as_deref(), &settings.host)?,
        ))),
    }
}

/// Samples `/proc/stat` when the measurement window opens (warm-up over) and when it
/// closes, and returns what every CPU did in between; empty if the threads end first.
pub(crate) fn sample_cpu_window(
    settings: &Settings,
    start: &OnceLock<Instant>,
    finished: impl Fn() -> bool,
) -> Vec<crate::cpustat::CpuBusy> {
    // The threads set `start` once every connection is open (or failed).
    let t0 = loop {
        if let Some(t) = start.get() {
            break *t;
        }
        if finished() {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let open = t0 + settings.warmup();
    let close = open + settings.duration();
    std::thread::sleep(open.saturating_duration_since(Instant::now()));
    let before = crate::cpustat::sample();
    std::thread::sleep(close.saturating_duration_since(Instant::now()));
    let after = crate::cpustat::sample();
    crate::cpustat::busy_between(&before, &after)
}

/// A failure that ends one connection.
#[derive(Debug)]
pub(crate) struct ConnError {
    pub(crate) kind: ErrorKind,
    pub(crate) msg: String,
}

impl ConnError {
    pub(crate) fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            msg: msg.into(),
        }
    }

    pub(crate) fn tls(e: &rustls::Error) -> Self {
        Self::new(ErrorKind::Tls, e.to_string())
    }

    pub(crate) fn io(e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            _ => ErrorKind::Io,
        };
        Self::new(kind, e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Connecting,
    /// `--proto tcp` over TLS: waiting for the handshake (ws waits in `Upgrading`).
    TlsHandshake,
    Upgrading {
        key: String,
    },
    Open,
    Failed,
}

/// The thread-wide state every connection touches.
pub(crate) struct Ctx {
    pub(crate) proto: Proto,
    mode: Mode,
    size: usize,
    pub(crate) pipeline: usize,
    /// Random payload; the first STAMP_LEN bytes of each message are replaced by its stamp.
    template: Vec<u8>,
    pub(crate) rng: StdRng,
    pub(crate) stats: WorkerStats,
    pub(crate) measure_start: Instant,
    pub(crate) measure_end: Instant,
    pub(crate) sending: bool,
    /// Open loop: start of the schedule and the gap between two sends of this thread.
    sched_start: Instant,
    interval_ns: f64,
    conns_here: u64,
    tls: TlsClient,
}

impl Ctx {
    /// The context of one generator thread with `conns_here` of the connections; the
    /// measurement window and the schedule are set when the load starts.
    pub(crate) fn new(settings: &Settings, tls: TlsClient, conns_here: u64) -> Ctx {
        let mut rng = StdRng::from_entropy();
        let mut template = vec![0u8; settings.message_size];
        rng.fill_bytes(&mut template);
        let now = Instant::now();
        let rate = settings.rate.unwrap_or(1.0);
        // This thread's share of the rate, spread evenly over its connections.
        let interval_ns = 1e9 * settings.connections as f64 / (rate * conns_here.max(1) as f64);
        Ctx {
            proto: settings.proto,
            mode: settings.mode,
            size: settings.message_size,
            pipeline: settings.pipeline,
            template,
            rng,
            stats: WorkerStats::new(),
            measure_start: now,
            measure_end: now,
            sending: false,
            sched_start: now,
            interval_ns,
            conns_here,
            tls,
        }
    }

    fn intended(&self, g: u64) -> Instant {
        self.sched_start + Duration::from_nanos((g as f64 * self.interval_ns) as u64)
    }
}

pub(crate) struct Conn {
    /// Global connection index (stamped into payloads).
    pub(crate) id: u32,
    /// Index within this thread (its slot in the open-loop schedule).
    local: u64,
    stream: Option<TcpStream>,
    /// The TLS session between the socket and the framing (`--tls`).
    tls: Option<ClientConnection>,
    pub(crate) phase: Phase,
    rbuf: Box<[u8]>,
    rlen: usize,
    pub(crate) wbuf: Vec<u8>,
    pub(crate) wpos: usize,
    pub(crate) inflight: VecDeque<(u64, Instant)>,
    next_seq: u64,
    due: u64,
    // Receive state: offset in the current reply message; WebSocket frame state.
    msg_off: usize,
    in_msg: bool,
    frame_left: usize,
    frame_fin: bool,
    pub(crate) closing: bool,
}

fn stamp(conn: u32, seq: u64) -> [u8; STAMP_LEN] {
    let mut s = [0u8; STAMP_LEN];
    s[..8].copy_from_slice(&seq.to_le_bytes());
    s[8..].copy_from_slice(&conn.to_le_bytes());
    s
}

/// True when `chunk`, found at offset `off` of the reply to message (`conn`, `seq`), holds
/// exactly the bytes that were sent there.
fn chunk_matches(template: &[u8], conn: u32, seq: u64, off: usize, chunk: &[u8]) -> bool {
    let end = off + chunk.len();
    if end > template.len() {
        return false;
    }
    let st = stamp(conn, seq);
    let mut i = 0;
    while off + i < STAMP_LEN && i < chunk.len() {
        if chunk[i] != st[off + i] {
            return false;
        }
        i += 1;
    }
    chunk[i..] == template[off + i..end]
}

impl Conn {
    pub(crate) fn new(id: u32, local: u64, pipeline: usize) -> Self {
        Self {
            id,
            local,
            stream: None,
            tls: None,
            phase: Phase::Idle,
            rbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
            rlen: 0,
            wbuf: Vec::new(),
            wpos: 0,
            inflight: VecDeque::with_capacity(pipeline),
            next_seq: 0,
            due: 0,
            msg_off: 0,
            in_msg: false,
            frame_left: 0,
            frame_fin: false,
            closing: false,
        }
    }

    /// Queues one message stamped `stamp_at`.
    pub(crate) fn send_one(&mut self, ctx: &mut Ctx, stamp_at: Instant) {
        let seq = self.next_seq;
        let start = self.wbuf.len();
        let mask = match ctx.proto {
            Proto::Ws => {
                // RFC 6455 5.3: a fresh, unpredictable masking key for every frame.
                let m: [u8; 4] = ctx.rng.gen();
                wsframe::write_header(&mut self.wbuf, true, Opcode::Binary, Some(m), ctx.size);
                Some(m)
            }
            Proto::Tcp => None,
        };
        let body = self.wbuf.len();
        self.wbuf.extend_from_slice(&ctx.template);
        let st = stamp(self.id, seq);
        let n = STAMP_LEN.min(ctx.size);
        self.wbuf[body..body + n].copy_from_slice(&st[..n]);
        if let Some(m) = mask {
            wsframe::apply_mask(&mut self.wbuf[body..], m, 0);
        }
        debug_assert!(self.wbuf.len() - start <= ctx.size + wsframe::MAX_HEADER_LEN);
        self.inflight.push_back((seq, stamp_at));
        self.next_seq += 1;
        ctx.stats.sent += 1;
    }

    /// Open loop: sends due messages while the pipeline has room, each stamped with its
    /// intended time.
    fn send_due(&mut self, ctx: &mut Ctx) {
        if self.phase != Phase::Open || !ctx.sending {
            return;
        }
        while self.next_seq < self.due && self.inflight.len() < ctx.pipeline {
            let g = self.next_seq * ctx.conns_here + self.local;
            let at = ctx.intended(g);
            self.send_one(ctx, at);
        }
    }

    /// Writes as much of the pending output as the socket takes.
    fn flush(&mut self) -> Result<(), ConnError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if let Some(tls) = self.tls.as_mut() {
            tls_flush(tls, stream, &self.wbuf, &mut self.wpos)?;
        }
        while self.tls.is_none() && self.wpos < self.wbuf.len() {
            match stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(ConnError::new(ErrorKind::Reset, "write returned 0")),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::io(&e)),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > RECV_BUF {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Completes a non-blocking connect once the socket reports an event.
    fn finish_connect(&mut self, ctx: &mut Ctx, host: &str) -> Result<bool, ConnError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        if !connect_done(stream)? {
            return Ok(false);
        }
        stream
            .set_nodelay(true)
            .map_err(|e| ConnError::new(ErrorKind::ConnectFailed, e.to_string()))?;
        self.connected(ctx, host)?;
        Ok(true)
    }

    /// The TCP connection is up: starts TLS (`--tls`), queues the WebSocket upgrade
    /// request (`--proto ws`) or opens at once (plain `--proto tcp`).
    pub(crate) fn connected(&mut self, ctx: &mut Ctx, host: &str) -> Result<(), ConnError> {
        if let Some((config, name)) = &ctx.tls {
            let c = ClientConnection::new(Arc::clone(config), name.clone())
                .map_err(|e| ConnError::tls(&e))?;
            self.tls = Some(c);
        }
        match ctx.proto {
            // Over TLS the connection opens when the handshake is done (see `on_readable`).
            Proto::Tcp if self.tls.is_some() => self.phase = Phase::TlsHandshake,
            Proto::Tcp => self.phase = Phase::Open,
            Proto::Ws => {
                let key = wsframe::new_key(ctx.rng.gen());
                self.wbuf
                    .extend_from_slice(&wsframe::upgrade_request(host, &key));
                self.phase = Phase::Upgrading { key };
            }
        }
        Ok(())
    }

    /// Checks `data`, received on a transport without a socket here (the bypass
    /// generator's stack hands it in), as `on_readable` checks what it reads.
    pub(crate) fn feed(
        &mut self,
        ctx: &mut Ctx,
        mut data: &[u8],
        now: Instant,
    ) -> Result<(), ConnError> {
        while !data.is_empty() {
            let room = self.rbuf.len() - self.rlen;
            if room == 0 {
                return Err(ConnError::new(
                    ErrorKind::Protocol,
                    "receive buffer stuck full",
                ));
            }
            let n = room.min(data.len());
            self.rbuf[self.rlen..self.rlen + n].copy_from_slice(&data[..n]);
            self.rlen += n;
            data = &data[n..];
            let used = self.process(ctx, now)?;
            self.rbuf.copy_within(used..self.rlen, 0);
            self.rlen -= used;
        }
        Ok(())
    }

    /// Output queued and not yet taken by the transport.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.wbuf[self.wpos..]
    }

    /// The transport took `n` bytes of [`Conn::pending`].
    pub(crate) fn wrote(&mut self, n: usize) {
        self.wpos = (self.wpos + n).min(self.wbuf.len());
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > RECV_BUF {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }

    /// Reads until the socket would block, checking every reply.
    fn on_readable(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), ConnError> {
        if self.tls.is_some() {
            return self.on_readable_tls(ctx, now);
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            if self.rlen == self.rbuf.len() {
                return Err(ConnError::new(
                    ErrorKind::Protocol,
                    "receive buffer stuck full",
                ));
            }
            match stream.read(&mut self.rbuf[self.rlen..]) {
                Ok(0) => {
                    return Err(ConnError::new(ErrorKind::PeerClosed, "peer closed (FIN)"));
                }
                Ok(n) => {
                    self.rlen += n;
                    let used = self.process(ctx, now)?;
                    self.rbuf.copy_within(used..self.rlen, 0);
                    self.rlen -= used;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::io(&e)),
            }
        }
    }

    /// TLS: reads records until the socket would block, decrypts them and feeds the
    /// plaintext through `process` as `on_readable` does with the socket's bytes.
    fn on_readable_tls(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), ConnError> {
        loop {
            let (Some(stream), Some(tls)) = (self.stream.as_mut(), self.tls.as_mut()) else {
                return Ok(());
            };
            let mut eof = false;
            let mut drained = false;
            match tls.read_tls(stream) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::io(&e)),
            }
            let state = match tls.process_new_packets() {
                Ok(st) => st,
                Err(e) => {
                    // Send the alert rustls queued, then fail.
                    let _ = tls.write_tls(stream);
                    return Err(ConnError::tls(&e));
                }
            };
            let closed = state.peer_has_closed();
            if self.phase == Phase::TlsHandshake && !tls.is_handshaking() {
                // --proto tcp over TLS: open once the handshake is done.
                self.phase = Phase::Open;
            }
            self.drain_plaintext(ctx, now)?;
            if closed {
                return Err(ConnError::new(
                    ErrorKind::PeerClosed,
                    "peer closed (TLS close_notify)",
                ));
            }
            if eof {
                return Err(ConnError::new(ErrorKind::PeerClosed, "peer closed (FIN)"));
            }
            if drained {
                return Ok(());
            }
        }
    }

    /// Moves the session's decrypted bytes into the receive buffer and checks them.
    fn drain_plaintext(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), ConnError> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Ok(());
            };
            if self.rlen == self.rbuf.len() {
                return Err(ConnError::new(
                    ErrorKind::Protocol,
                    "receive buffer stuck full",
                ));
            }
            match tls.reader().read(&mut self.rbuf[self.rlen..]) {
                // 0: close_notify; UnexpectedEof: FIN without it. The caller sees both.
                Ok(0) => return Ok(()),
                Ok(n) => self.rlen += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(ConnError::new(ErrorKind::Tls, e.to_string())),
            }
            let used = self.process(ctx, now)?;
            self.rbuf.copy_within(used..self.rlen, 0);
            self.rlen -= used;
        }
    }

    /// Consumes what it can from the receive buffer; returns the bytes consumed.
    fn process(&mut self, ctx: &mut Ctx, now: Instant) -> Result<usize, ConnError> {
        let mut pos = 0;
        if let Phase::Upgrading { key } = &self.phase {
            match wsframe::parse_upgrade_response(&self.rbuf[..self.rlen], key) {
                Ok(Some(n)) => {
                    pos = n;
                    self.phase = Phase::Open;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(ConnError::new(ErrorKind::HandshakeRejected, e.to_string())),
            }
        }
        match ctx.proto {
            Proto::Tcp => self.process_tcp(ctx, now, pos),
            Proto::Ws => self.process_ws(ctx, now, pos),
        }
    }

    /// Checks `chunk` as the next bytes of the reply at the head of the pipeline.
    fn take_payload(
        &mut self,
        ctx: &mut Ctx,
        chunk_start: usize,
        len: usize,
    ) -> Result<(), ConnError> {
        let Some(&(seq, _)) = self.inflight.front() else {
            return Err(ConnError::new(
                ErrorKind::EchoMismatch,
                "data with nothing in flight",
            ));
        };
        let chunk = &self.rbuf[chunk_start..chunk_start + len];
        if !chunk_matches(&ctx.template, self.id, seq, self.msg_off, chunk) {
            return Err(ConnError::new(
                ErrorKind::EchoMismatch,
                format!(
                    "reply to message {seq} differs at bytes {}..{}",
                    self.msg_off,
                    self.msg_off + len
                ),
            ));
        }
        self.msg_off += len;
        Ok(())
    }

    /// A whole reply arrived: record it and keep the load going.
    fn reply_done(&mut self, ctx: &mut Ctx, now: Instant) {
        self.msg_off = 0;
        let Some((_, at)) = self.inflight.pop_front() else {
            return;
        };
        ctx.stats.replies += 1;
        if at >= ctx.measure_start && at < ctx.measure_end {
            let ns = now.saturating_duration_since(at).as_nanos();
            ctx.stats
                .hist
                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        }
        match ctx.mode {
            Mode::Closed if ctx.sending && now < ctx.measure_end => self.send_one(ctx, now),
            Mode::Closed => {}
            Mode::Open => self.send_due(ctx),
        }
    }

    fn process_tcp(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        mut pos: usize,
    ) -> Result<usize, ConnError> {
        while pos < self.rlen {
            let take = (self.rlen - pos).min(ctx.size - self.msg_off);
            self.take_payload(ctx, pos, take)?;
            pos += take;
            if self.msg_off == ctx.size {
                self.reply_done(ctx, now);
            }
        }
        Ok(pos)
    }

    fn process_ws(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        mut pos: usize,
    ) -> Result<usize, ConnError> {
        loop {
            if self.frame_left > 0 {
                let take = (self.rlen - pos).min(self.frame_left);
                if take == 0 {
                    return Ok(pos);
                }
                if self.msg_off + take > ctx.size {
                    return Err(ConnError::new(
                        ErrorKind::EchoMismatch,
                        "reply longer than message",
                    ));
                }
                self.take_payload(ctx, pos, take)?;
                pos += take;
                self.frame_left -= take;
            }
            if self.in_msg && self.frame_left == 0 && self.frame_fin {
                if self.msg_off != ctx.size {
                    return Err(ConnError::new(
                        ErrorKind::EchoMismatch,
                        format!("reply of {} bytes, sent {}", self.msg_off, ctx.size),
                    ));
                }
                self.in_msg = false;
                self.reply_done(ctx, now);
            }
            let h = match wsframe::parse_header(&self.rbuf[pos..self.rlen], Role::Client, ctx.size)
            {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(pos),
                Err(wsframe::FrameError::TooLarge { len, .. }) => {
                    return Err(ConnError::new(
                        ErrorKind::EchoMismatch,
                        format!("reply frame of {len} bytes, sent {}", ctx.size),
                    ))
                }
                Err(e) => return Err(ConnError::new(ErrorKind::Protocol, e.to_string())),
            };
            match h.opcode {
                Opcode::Binary | Opcode::Text => {
                    // RFC 6455 5.4: a new data message MUST NOT start inside a fragmented one.
                    if self.in_msg {
                        return Err(ConnError::new(
                            ErrorKind::Protocol,
                            "data frame inside a fragmented message",
                        ));
                    }
                    if h.opcode == Opcode::Text {
                        return Err(ConnError::new(
                            ErrorKind::EchoMismatch,
                            "text reply to a binary message",
                        ));
                    }
                    self.in_msg = true;
                    self.msg_off = 0;
                    self.frame_left = h.payload_len;
                    self.frame_fin = h.fin;
                    pos += h.header_len;
                }
                Opcode::Continuation => {
                    // RFC 6455 5.4: a continuation frame needs a message in progress.
                    if !self.in_msg {
                        return Err(ConnError::new(
                            ErrorKind::Protocol,
                            "continuation without a message",
                        ));
                    }
                    self.frame_left = h.payload_len;
                    self.frame_fin = h.fin;
                    pos += h.header_len;
                }
                Opcode::Ping | Opcode::Pong | Opcode::Close => {
                    let end = pos + h.header_len + h.payload_len;
                    if end > self.rlen {
                        return Ok(pos);
                    }
                    let payload_start = pos + h.header_len;
                    pos = end;
                    let pending = self.wbuf.len() - self.wpos;
                    let room =
                        MAX_PENDING_CONTROL + ctx.pipeline * (ctx.size + wsframe::MAX_HEADER_LEN);
                    match h.opcode {
                        // RFC 6455 5.5.2: answer a Ping with a Pong of the same payload
                        // (pings beyond the pending-output bound are dropped, not queued).
                        Opcode::Ping if pending < room => {
                            let payload = self.rbuf[payload_start..end].to_vec();
                            let m: [u8; 4] = ctx.rng.gen();
                            wsframe::write_frame(&mut self.wbuf, Opcode::Pong, Some(m), &payload);
                        }
                        Opcode::Close => {
                            return Err(ConnError::new(ErrorKind::PeerClosed, "peer sent Close"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Hands the pending plaintext `wbuf[*wpos..]` to the TLS session and writes its records
/// until the socket would block. Before the handshake ends rustls holds the plaintext (up to
/// its buffer limit) and sends it once the session is up.
pub(crate) fn tls_flush(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    wbuf: &[u8],
    wpos: &mut usize,
) -> Result<(), ConnError> {
    loop {
        let mut took = 0;
        if *wpos < wbuf.len() {
            took = tls
                .writer()
                .write(&wbuf[*wpos..])
                .map_err(|e| ConnError::new(ErrorKind::Tls, e.to_string()))?;
            *wpos += took;
        }
        let wrote = tls.wants_write();
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(ConnError::new(ErrorKind::Reset, "write returned 0")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::io(&e)),
            }
        }
        // Done, or rustls takes no more plaintext until the handshake is over.
        if *wpos == wbuf.len() || (took == 0 && !wrote) {
            return Ok(());
        }
    }
}

/// epoll waits in whole milliseconds (mio rounds up), which would make open-loop sends up to
/// a millisecond late. Before a scheduled send, block for the whole milliseconds that end at
/// least 200 us (timer slack and wake-up) short of it and busy-poll the rest; other
/// deadlines (end of measurement, drain) keep the plain wait.
fn coarse_timeout(wait: Duration, send_scheduled: bool) -> Duration {
    if !send_scheduled {
        return wait;
    }
    let whole_ms = wait.saturating_sub(Duration::from_micros(200)).as_millis();
    Duration::from_millis(u64::try_from(whole_ms).unwrap_or(u64::MAX))
}

struct Worker<'a> {
    settings: &'a Settings,
    poll: Poll,
    conns: Vec<Conn>,
    ctx: Ctx,
    /// Connections that are open or failed (no longer connecting).
    settled: usize,
    connecting: usize,
}

fn worker_main(
    t: usize,
    settings: &Settings,
    tls: TlsClient,
    barrier: &Barrier,
    start: &OnceLock<Instant>,
) -> anyhow::Result<WorkerStats> {
    if !settings.pin.is_empty() {
        let cpu = settings.pin[t % settings.pin.len()];
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            // Keep the other threads from waiting forever at the barrier.
            barrier.wait();
            anyhow::bail!("could not pin thread {t} to CPU {cpu}");
        }
    }
    let ids: Vec<u32> = (t..settings.connections)
        .step_by(settings.threads)
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    let conns_here = ids.len() as u64;
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            barrier.wait();
            return Err(e.into());
        }
    };
    let mut w = Worker {
        settings,
        poll,
        conns: ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Conn::new(id, i as u64, settings.pipeline))
            .collect(),
        ctx: Ctx::new(settings, tls, conns_here),
        settled: 0,
        connecting: 0,
    };
    w.connect_all();
    barrier.wait();
    let t0 = *start.get_or_init(Instant::now);
    w.ctx.measure_start = t0 + settings.warmup();
    w.ctx.measure_end = w.ctx.measure_start + settings.duration();
    // Threads interleave their schedules: thread t starts t/T of an interval later.
    w.ctx.sched_start =
        t0 + Duration::from_nanos((w.ctx.interval_ns * t as f64 / settings.threads as f64) as u64);
    w.run_load();
    Ok(w.ctx.stats)
}

impl Worker<'_> {
    fn fail(&mut self, c: usize, err: ConnError) {
        let conn = &mut self.conns[c];
        if conn.phase == Phase::Failed {
            return;
        }
        let was_connecting = matches!(
            conn.phase,
            Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading { .. }
        );
        if let Some(mut s) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        conn.phase = Phase::Failed;
        conn.tls = None;
        conn.inflight.clear();
        conn.wbuf = Vec::new();
        conn.rbuf = Box::default();
        conn.rlen = 0;
        if was_connecting {
            self.settled += 1;
            self.connecting -= 1;
        }
        self.ctx
            .stats
            .error(err.kind, format!("connection {}: {}", conn.id, err.msg));
    }

    fn start_connect(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let addr = self.settings.target_of(conn.id);
        conn.phase = Phase::Connecting;
        self.connecting += 1;
        let res = TcpStream::connect(addr).and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(c),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match res {
            Ok(s) => conn.stream = Some(s),
            Err(e) => {
                let mut err = ConnError::io(&e);
                if err.kind != ErrorKind::ConnectRefused {
                    err.kind = ErrorKind::ConnectFailed;
                }
                self.fail(c, err);
            }
        }
    }

    /// Connects (and upgrades) every connection of this thread, at most MAX_CONNECTING at a
    /// time, until all are open or failed or the connect timeout passes.
    fn connect_all(&mut self) {
        let n = self.conns.len();
        let deadline = Instant::now() + Duration::from_secs_f64(self.settings.connect_timeout_s);
        let mut events = Events::with_capacity(1024);
        let mut next = 0;
        loop {
            while self.connecting < MAX_CONNECTING && next < n {
                self.start_connect(next);
                next += 1;
            }
            if self.settled == n {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                for c in 0..n {
                    if matches!(
                        self.conns[c].phase,
                        Phase::Connecting | Phase::TlsHandshake | Phase::Upgrading { .. }
                    ) {
                        let conn = &self.conns[c];
                        let what = match (&conn.phase, &conn.tls) {
                            (Phase::Connecting, _) => "connect",
                            (_, Some(t)) if t.is_handshaking() => "TLS handshake",
                            _ => "upgrade",
                        };
                        self.fail(
                            c,
                            ConnError::new(
                                ErrorKind::ConnectTimeout,
                                format!("{what} not done in time"),
                            ),
                        );
                    }
                }
                break;
            }
            let timeout = if self.settings.spin {
                Duration::ZERO
            } else {
                deadline - now
            };
            if !self.poll_events(&mut events, timeout) {
                break;
            }
        }
    }

    /// Waits up to `timeout` for readiness and handles what arrived. `false` when polling
    /// itself failed (recorded as an I/O error): the loop must stop.
    fn poll_events(&mut self, events: &mut Events, timeout: Duration) -> bool {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                self.ctx.stats.error(ErrorKind::Io, format!("poll: {e}"));
                return false;
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            self.on_event(ev.token().0, now);
        }
        true
    }

    fn on_event(&mut self, c: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(c) else {
            return;
        };
        let before_open = conn.phase == Phase::Open;
        let res = (|| {
            if conn.phase == Phase::Connecting
                && !conn.finish_connect(&mut self.ctx, &self.settings.host)?
            {
                return Ok(());
            }
            match conn.phase {
                Phase::TlsHandshake | Phase::Upgrading { .. } | Phase::Open => {
                    conn.flush()?;
                    conn.on_readable(&mut self.ctx, now)?;
                    conn.flush()
                }
                _ => Ok(()),
            }
        })();
        let now_open = conn.phase == Phase::Open;
        if !before_open && now_open {
            self.settled += 1;
            self.connecting -= 1;
            self.ctx.stats.connected += 1;
            match conn.tls.as_ref().and_then(|t| t.handshake_kind()) {
                Some(HandshakeKind::Resumed) => self.ctx.stats.tls_resumed += 1,
                Some(_) => self.ctx.stats.tls_full += 1,
                None => {}
            }
        }
        if let Err(e) = res {
            if !(conn.closing && e.kind == ErrorKind::PeerClosed) {
                self.fail(c, e);
            }
        }
    }

    fn run_load(&mut self) {
        let mut events = Events::with_capacity(1024);
        self.ctx.sending = true;
        if self.ctx.mode == Mode::Closed {
            let now = Instant::now();
            for c in 0..self.conns.len() {
                let conn = &mut self.conns[c];
                if conn.phase == Phase::Open {
                    for _ in 0..self.ctx.pipeline {
                        conn.send_one(&mut self.ctx, now);
                    }
                    if let Err(e) = conn.flush() {
                        self.fail(c, e);
                    }
                }
            }
        }
        let mut g: u64 = 0;
        let mut drain_deadline = None;
        let n = self.conns.len() as u64;
        loop {
            let now = Instant::now();
            // Open loop: every slot of the schedule up to now (and before the end of the
            // measurement) comes due on its connection, round robin.
            let mut next_due = None;
            if self.ctx.mode == Mode::Open && self.ctx.sending && n > 0 {
                loop {
                    let at = self.ctx.intended(g);
                    if at > now || at >= self.ctx.measure_end {
                        next_due = Some(at);
                        break;
                    }
                    let c = (g % n) as usize;
                    g += 1;
                    let conn = &mut self.conns[c];
                    conn.due += 1;
                    conn.send_due(&mut self.ctx);
                    if let Err(e) = conn.flush() {
                        self.fail(c, e);
                    }
                }
            }
            if self.ctx.sending && now >= self.ctx.measure_end {
                self.ctx.sending = false;
                if self.ctx.mode == Mode::Open {
                    self.ctx.stats.unsent += self
                        .conns
                        .iter()
                        .filter(|c| c.phase == Phase::Open)
                        .map(|c| c.due - c.next_seq)
                        .sum::<u64>();
                }
                drain_deadline = Some(now + Duration::from_secs_f64(self.settings.drain_timeout_s));
            }
            if let Some(d) = drain_deadline {
                let idle = self.conns.iter().all(|c| c.inflight.is_empty());
                if idle || now >= d {
                    break;
                }
            }
            let timeout = if self.settings.spin {
                Duration::ZERO
            } else {
                let wake = match drain_deadline {
                    Some(d) => d,
                    None => next_due.map_or(self.ctx.measure_end, |d| d.min(self.ctx.measure_end)),
                };
                coarse_timeout(wake.saturating_duration_since(now), next_due.is_some())
            };
            if !self.poll_events(&mut events, timeout) {
                break;
            }
        }
        self.close_all();
    }

    fn close_all(&mut self) {
        for conn in &mut self.conns {
            if conn.phase != Phase::Open {
                continue;
            }
            self.ctx.stats.unanswered += conn.inflight.len() as u64;
            conn.closing = true;
            if self.ctx.proto == Proto::Ws {
                // RFC 6455 5.5.1: start the closing handshake with a Close frame (1000).
                let m: [u8; 4] = self.ctx.rng.gen();
                wsframe::write_frame(
                    &mut conn.wbuf,
                    Opcode::Close,
                    Some(m),
                    &1000u16.to_be_bytes(),
                );
            }
            let _ = conn.flush();
            if let Some(tls) = conn.tls.as_mut() {
                tls.send_close_notify();
                let _ = conn.flush();
            }
            if let Some(s) = conn.stream.as_ref() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Whether a non-blocking connect has completed (false: still in progress); its failure
/// as a counted error (`ConnectRefused`, else `ConnectFailed`).
pub(crate) fn connect_done(stream: &TcpStream) -> Result<bool, ConnError> {
    if let Ok(Some(e)) | Err(e) = stream.take_error() {
        let mut err = ConnError::io(&e);
        if err.kind != ErrorKind::ConnectRefused {
            err.kind = ErrorKind::ConnectFailed;
        }
        return Err(err);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(ConnError::new(ErrorKind::ConnectFailed, e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn test_ctx(proto: Proto, size: usize) -> Ctx {
        let now = Instant::now();
        Ctx {
            proto,
            mode: Mode::Closed,
            size,
            pipeline: 1,
            template: (0..size).map(|i| (i * 13 + 5) as u8).collect(),
            rng: StdRng::seed_from_u64(1),
            stats: WorkerStats::new(),
            measure_start: now,
            measure_end: now + Duration::from_secs(3600),
            sending: false,
            sched_start: now,
            interval_ns: 1e6,
            conns_here: 1,
            tls: None,
        }
    }

    /// A connection with one message (seq 0) in flight, and that message's payload.
    fn open_conn(ctx: &mut Ctx) -> (Conn, Vec<u8>) {
        let mut c = Conn::new(3, 0, 1);
        c.phase = Phase::Open;
        c.send_one(ctx, Instant::now());
        c.wbuf.clear();
        let mut msg = ctx.template.clone();
        let n = STAMP_LEN.min(msg.len());
        msg[..n].copy_from_slice(&stamp(3, 0)[..n]);
        (c, msg)
    }

    /// Feeds `bytes` `step` bytes at a time, as reads would.
    fn feed(c: &mut Conn, ctx: &mut Ctx, bytes: &[u8], step: usize) -> Result<(), ConnError> {
        for chunk in bytes.chunks(step) {
            c.rbuf[c.rlen..c.rlen + chunk.len()].copy_from_slice(chunk);
            c.rlen += chunk.len();
            let used = c.process(ctx, Instant::now())?;
            c.rbuf.copy_within(used..c.rlen, 0);
            c.rlen -= used;
        }
        Ok(())
    }

    #[test]
    fn ws_open_fragmented_reply_with_ping_recorded_and_ponged() {
        for step in [1, 3, 1000] {
            let mut ctx = test_ctx(Proto::Ws, 40);
            let (mut c, msg) = open_conn(&mut ctx);
            let mut wire = Vec::new();
            wsframe::write_header(&mut wire, false, Opcode::Binary, None, 10);
            wire.extend_from_slice(&msg[..10]);
            wsframe::write_frame(&mut wire, Opcode::Ping, None, b"hi");
            wsframe::write_header(&mut wire, true, Opcode::Continuation, None, 30);
            wire.extend_from_slice(&msg[10..]);
            feed(&mut c, &mut ctx, &wire, step).unwrap();
            assert_eq!(ctx.stats.replies, 1);
            assert_eq!(ctx.stats.hist.len(), 1);
            assert!(c.inflight.is_empty());
            let h = wsframe::parse_header(&c.wbuf, Role::Server, 125)
                .unwrap()
                .unwrap();
            assert_eq!(h.opcode, Opcode::Pong);
            let mut body = c.wbuf[h.header_len..].to_vec();
            wsframe::apply_mask(&mut body, h.mask.unwrap(), 0);
            assert_eq!(body, b"hi");
        }
    }

    #[test]
    fn ws_open_text_reply_mismatch() {
        let mut ctx = test_ctx(Proto::Ws, 16);
        let (mut c, msg) = open_conn(&mut ctx);
        let mut wire = Vec::new();
        wsframe::write_frame(&mut wire, Opcode::Text, None, &msg);
        let e = feed(&mut c, &mut ctx, &wire, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::EchoMismatch);
    }

    #[test]
    fn ws_open_masked_reply_protocol_error() {
        let mut ctx = test_ctx(Proto::Ws, 16);
        let (mut c, msg) = open_conn(&mut ctx);
        let mut wire = Vec::new();
        wsframe::write_frame(&mut wire, Opcode::Binary, Some([1, 2, 3, 4]), &msg);
        let e = feed(&mut c, &mut ctx, &wire, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    #[test]
    fn ws_open_short_reply_mismatch() {
        let mut ctx = test_ctx(Proto::Ws, 16);
        let (mut c, msg) = open_conn(&mut ctx);
        let mut wire = Vec::new();
        wsframe::write_frame(&mut wire, Opcode::Binary, None, &msg[..15]);
        let e = feed(&mut c, &mut ctx, &wire, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::EchoMismatch);
    }

    #[test]
    fn ws_open_close_from_peer_counted_closed() {
        let mut ctx = test_ctx(Proto::Ws, 16);
        let (mut c, _) = open_conn(&mut ctx);
        let mut wire = Vec::new();
        wsframe::write_frame(&mut wire, Opcode::Close, None, &1001u16.to_be_bytes());
        let e = feed(&mut c, &mut ctx, &wire, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PeerClosed);
    }

    #[test]
    fn tcp_open_split_reply_recorded() {
        for step in [1, 7, 64] {
            let mut ctx = test_ctx(Proto::Tcp, 64);
            let (mut c, msg) = open_conn(&mut ctx);
            feed(&mut c, &mut ctx, &msg, step).unwrap();
            assert_eq!(ctx.stats.replies, 1);
            assert!(c.inflight.is_empty());
        }
    }

    #[test]
    fn tcp_open_unsolicited_bytes_mismatch() {
        let mut ctx = test_ctx(Proto::Tcp, 8);
        let (mut c, msg) = open_conn(&mut ctx);
        let mut wire = msg.clone();
        wire.push(0);
        let e = feed(&mut c, &mut ctx, &wire, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::EchoMismatch);
    }

    #[test]
    fn upgrading_bad_accept_rejected() {
        let mut ctx = test_ctx(Proto::Ws, 8);
        let mut c = Conn::new(0, 0, 1);
        c.phase = Phase::Upgrading {
            key: wsframe::new_key([1; 16]),
        };
        let resp = wsframe::upgrade_response(&wsframe::new_key([2; 16]));
        let e = feed(&mut c, &mut ctx, &resp, 1000).unwrap_err();
        assert_eq!(e.kind, ErrorKind::HandshakeRejected);
    }

    #[test]
    fn upgrading_valid_then_frames_open() {
        let mut ctx = test_ctx(Proto::Ws, 8);
        let key = wsframe::new_key([1; 16]);
        let mut c = Conn::new(0, 0, 1);
        c.phase = Phase::Upgrading { key: key.clone() };
        let resp = wsframe::upgrade_response(&key);
        feed(&mut c, &mut ctx, &resp, 5).unwrap();
        assert_eq!(c.phase, Phase::Open);
        assert_eq!(c.rlen, 0);
    }

    #[test]
    fn timeout_send_in_half_ms_spins() {
        assert_eq!(
            coarse_timeout(Duration::from_micros(500), true),
            Duration::ZERO
        );
    }

    #[test]
    fn timeout_send_in_2500us_blocks_whole_ms() {
        assert_eq!(
            coarse_timeout(Duration::from_micros(2500), true),
            Duration::from_millis(2)
        );
        assert_eq!(
            coarse_timeout(Duration::from_micros(1100), true),
            Duration::ZERO
        );
    }

    #[test]
    fn timeout_no_send_keeps_wait() {
        let w = Duration::from_micros(2500);
        assert_eq!(coarse_timeout(w, false), w);
    }

    #[test]
    fn chunk_matches_split_reply_accepted() {
        let template: Vec<u8> = (0..40u8).collect();
        let mut msg = template.clone();
        msg[..STAMP_LEN].copy_from_slice(&stamp(3, 77));
        for cut in 0..msg.len() {
            assert!(chunk_matches(&template, 3, 77, 0, &msg[..cut]));
            assert!(chunk_matches(&template, 3, 77, cut, &msg[cut..]));
        }
    }

    #[test]
    fn chunk_matches_flipped_byte_rejected() {
        let template: Vec<u8> = (0..40u8).collect();
        let mut msg = template.clone();
        msg[..STAMP_LEN].copy_from_slice(&stamp(3, 77));
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 1;
            assert!(!chunk_matches(&template, 3, 77, 0, &bad));
        }
        assert!(!chunk_matches(&template, 3, 78, 0, &msg));
        assert!(!chunk_matches(&template, 4, 77, 0, &msg));
    }

    #[test]
    fn chunk_matches_overlong_rejected() {
        let template = vec![0u8; 16];
        assert!(!chunk_matches(&template, 0, 0, 10, &[0u8; 7]));
    }

    #[test]
    fn chunk_matches_short_message_uses_stamp_prefix() {
        let template = vec![9u8; 4];
        let st = stamp(1, 2);
        assert!(chunk_matches(&template, 1, 2, 0, &st[..4]));
        assert!(!chunk_matches(&template, 1, 3, 0, &st[..4]));
    }
}
