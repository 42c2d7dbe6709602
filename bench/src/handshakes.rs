//! `sluice-load handshakes`: the connection-setup rate. Closed loop: each of `connections`
//! slots connects, does the TLS handshake (full, or resumed from a shared session store
//! with `--resume`), the WebSocket upgrade, then closes (a Close frame, close_notify and
//! FIN, then waits for the server's end of the connection) and starts again. A cycle is
//! recorded when it started inside the measurement window; its latency runs from
//! `connect()` to the `101` response. `msgs/s` in the report is completed cycles per second.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::{ClientConnection, HandshakeKind};

use crate::client::{connect_done, tls_flush, tls_setup, ConnError, TlsClient};
use crate::report::{ErrorKind, Report, WorkerStats};
use crate::settings::{Mode, Proto, Settings};
use crate::wsframe::{self, Opcode};

/// Most bytes of the upgrade response (and anything after it) kept per slot.
const MAX_RESPONSE: usize = 16 * 1024;

/// Runs the handshake scenario described by `settings` (TLS, WebSocket, closed loop).
pub fn handshakes(settings: &Settings) -> anyhow::Result<Report> {
    settings.validate()?;
    if settings.proto != Proto::Ws || settings.mode != Mode::Closed {
        anyhow::bail!("handshakes runs WebSocket upgrades in a closed loop");
    }
    let tls = tls_setup(settings)?;
    if tls.is_none() {
        anyhow::bail!("handshakes needs --tls");
    }
    let _ = rlimit::increase_nofile_limit(settings.connections as u64 + 256);
    let start = Arc::new(OnceLock::new());
    let t0 = *start.get_or_init(Instant::now);
    let mut handles = Vec::with_capacity(settings.threads);
    for t in 0..settings.threads {
        let s = settings.clone();
        let tls = tls.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("hs-{t}"))
                .spawn(move || worker(t, &s, tls, t0))?,
        );
    }
    let cpu_busy = crate::client::sample_cpu_window(settings, &start, || {
        handles.iter().all(std::thread::JoinHandle::is_finished)
    });
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.push(s),
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("a handshake thread panicked"),
        }
    }
    let mut report = Report::from_stats("handshakes", settings, stats);
    report.cpu_busy = cpu_busy;
    Ok(report)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Idle,
    Connecting,
    /// TLS handshake and WebSocket upgrade.
    Upgrading,
    /// Close sent; waiting for the server to end the connection.
    Closing,
}

struct Slot {
    stream: Option<TcpStream>,
    tls: Option<ClientConnection>,
    st: St,
    started: Instant,
    deadline: Instant,
    key: String,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    ok_once: bool,
}

struct Worker<'a> {
    settings: &'a Settings,
    tls: TlsClient,
    poll: Poll,
    slots: Vec<Slot>,
    rng: StdRng,
    stats: WorkerStats,
    measure_start: Instant,
    measure_end: Instant,
}

fn worker(
    t: usize,
    settings: &Settings,
    tls: TlsClient,
    t0: Instant,
) -> anyhow::Result<WorkerStats> {
    if !settings.pin.is_empty() {
        let cpu = settings.pin[t % settings.pin.len()];
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            anyhow::bail!("could not pin thread {t} to CPU {cpu}");
        }
    }
    let n = (t..settings.connections).step_by(settings.threads).count();
    let now = Instant::now();
    let measure_start = t0 + settings.warmup();
    let mut w = Worker {
        settings,
        tls,
        poll: Poll::new()?,
        slots: (0..n)
            .map(|_| Slot {
                stream: None,
                tls: None,
                st: St::Idle,
                started: now,
                deadline: now,
                key: String::new(),
                wbuf: Vec::new(),
                wpos: 0,
                rbuf: Vec::new(),
                ok_once: false,
            })
            .collect(),
        rng: StdRng::from_entropy(),
        stats: WorkerStats::new(),
        measure_start,
        measure_end: measure_start + settings.duration(),
    };
    w.run();
    Ok(w.stats)
}

impl Worker<'_> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        for i in 0..self.slots.len() {
            self.start(i, Instant::now());
        }
        let drain_end = self.measure_end + Duration::from_secs_f64(self.settings.drain_timeout_s);
        loop {
            let now = Instant::now();
            for i in 0..self.slots.len() {
                let s = &self.slots[i];
                if s.st != St::Idle && now >= s.deadline {
                    let what = match s.st {
                        St::Connecting => "connect",
                        St::Closing => "close",
                        _ => "TLS handshake or upgrade",
                    };
                    self.end(
                        i,
                        Some(ConnError::new(
                            ErrorKind::ConnectTimeout,
                            format!("{what} not done in time"),
                        )),
                        now,
                    );
                }
            }
            let busy = self.slots.iter().any(|s| s.st != St::Idle);
            if (now >= self.measure_end && !busy) || now >= drain_end {
                break;
            }
            let timeout = if self.settings.spin {
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.stats.error(ErrorKind::Io, format!("poll: {e}"));
                    break;
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                let i = ev.token().0;
                if i < self.slots.len() {
                    self.on_event(i, now);
                }
            }
        }
        for s in &mut self.slots {
            s.stream = None;
            s.tls = None;
        }
    }

    /// Starts the next cycle of slot `i` (if the measurement is still running).
    fn start(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        s.stream = None;
        s.tls = None;
        s.st = St::Idle;
        if now >= self.measure_end {
            return;
        }
        let addr = self
            .settings
            .target_of(u32::try_from(i * self.settings.threads).unwrap_or(0));
        s.started = Instant::now();
        s.deadline = s.started + Duration::from_secs_f64(self.settings.connect_timeout_s);
        s.wbuf.clear();
        s.wpos = 0;
        s.rbuf.clear();
        let res = TcpStream::connect(addr).and_then(|mut st| {
            self.poll.registry().register(
                &mut st,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(st)
        });
        match res {
            Ok(st) => {
                s.stream = Some(st);
                s.st = St::Connecting;
            }
            Err(e) => {
                let mut err = ConnError::io(&e);
                err.kind = ErrorKind::ConnectFailed;
                self.end(i, Some(err), now);
            }
        }
    }

    /// Ends slot `i`'s cycle (with an error, or done) and starts the next one.
    fn end(&mut self, i: usize, err: Option<ConnError>, now: Instant) {
        if let Some(e) = err {
            self.stats.error(e.kind, format!("slot {i}: {}", e.msg));
            // A failing target must not turn into a connect storm: pause a little.
            std::thread::sleep(Duration::from_millis(1));
        }
        self.start(i, now);
    }

    fn on_event(&mut self, i: usize, now: Instant) {
        match self.step(i, now) {
            Ok(true) => self.end(i, None, now),
            Ok(false) => {}
            Err(e) => self.end(i, Some(e), now),
        }
    }

    /// Advances slot `i`; `Ok(true)` when its cycle is complete.
    fn step(&mut self, i: usize, now: Instant) -> Result<bool, ConnError> {
        let in_window = {
            let s = &self.slots[i];
            s.started >= self.measure_start && s.started < self.measure_end
        };
        let s = &mut self.slots[i];
        let Some(stream) = s.stream.as_mut() else {
            return Ok(false);
        };
        if s.st == St::Connecting {
            if !connect_done(stream)? {
                return Ok(false);
            }
            let _ = stream.set_nodelay(true);
            let Some((config, name)) = &self.tls else {
                return Err(ConnError::new(ErrorKind::Tls, "no TLS configuration"));
            };
            s.tls = Some(
                ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| ConnError::tls(&e))?,
            );
            s.key = wsframe::new_key(self.rng.gen());
            s.wbuf
                .extend_from_slice(&wsframe::upgrade_request(&self.settings.host, &s.key));
            s.st = St::Upgrading;
        }
        let Some(tls) = s.tls.as_mut() else {
            return Ok(false);
        };
        tls_flush(tls, stream, &s.wbuf, &mut s.wpos)?;
        // Read what arrived (until the socket would block: edge-triggered): records into
        // the session, plaintext into rbuf.
        loop {
            let mut eof = false;
            let mut blocked = false;
            match tls.read_tls(stream) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A reset after our Close still ends the cycle.
                Err(_) if s.st == St::Closing => return Ok(true),
                Err(e) => return Err(ConnError::io(&e)),
            }
            match tls.process_new_packets() {
                Ok(_) => {}
                Err(_) if s.st == St::Closing => return Ok(true),
                Err(e) => {
                    let _ = tls.write_tls(stream);
                    return Err(ConnError::tls(&e));
                }
            }
            let mut buf = [0u8; 4096];
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) if s.st == St::Upgrading => {
                        if s.rbuf.len() + n > MAX_RESPONSE {
                            return Err(ConnError::new(
                                ErrorKind::HandshakeRejected,
                                "upgrade response too long",
                            ));
                        }
                        s.rbuf.extend_from_slice(&buf[..n]);
                    }
                    // After our Close: the server's Close frame; not checked.
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            // The handshake's own records, and the request rustls held until it was done.
            if s.st == St::Upgrading {
                tls_flush(tls, stream, &s.wbuf, &mut s.wpos)?;
            }
            if s.st == St::Upgrading {
                match wsframe::parse_upgrade_response(&s.rbuf, &s.key) {
                    Ok(Some(_)) => {
                        if in_window {
                            let ns = now.saturating_duration_since(s.started).as_nanos();
                            self.stats
                                .hist
                                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
                            match tls.handshake_kind() {
                                Some(HandshakeKind::Resumed) => self.stats.tls_resumed += 1,
                                _ => self.stats.tls_full += 1,
                            }
                        }
                        self.stats.replies += 1;
                        if !s.ok_once {
                            s.ok_once = true;
                            self.stats.connected += 1;
                        }
                        // RFC 6455 5.5.1: Close (1000), then close_notify and FIN.
                        s.wbuf.clear();
                        s.wpos = 0;
                        let m: [u8; 4] = self.rng.gen();
                        wsframe::write_frame(
                            &mut s.wbuf,
                            Opcode::Close,
                            Some(m),
                            &1000u16.to_be_bytes(),
                        );
                        tls_flush(tls, stream, &s.wbuf, &mut s.wpos)?;
                        tls.send_close_notify();
                        tls_flush(tls, stream, &s.wbuf, &mut s.wpos)?;
                        let _ = stream.shutdown(Shutdown::Write);
                        s.st = St::Closing;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(ConnError::new(ErrorKind::HandshakeRejected, e.to_string()))
                    }
                }
            }
            if eof {
                return match s.st {
                    St::Closing => Ok(true),
                    _ => Err(ConnError::new(
                        ErrorKind::PeerClosed,
                        "peer closed before the upgrade",
                    )),
                };
            }
            if blocked {
                return Ok(false);
            }
        }
    }
}
