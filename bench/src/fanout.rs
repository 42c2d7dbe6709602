//! Broadcast fan-out through the gateway: one publisher, many subscribers.
//!
//! `sluice-load fanout HOST:PORT --ingest CONTROL_ADDR -c N`: N WebSocket subscribers
//! connect to a `pubsub` route (`--path`, default `/live`) and subscribe to one topic; once
//! all are subscribed, one publisher thread POSTs `/publish/{topic}` to the gateway's
//! control endpoint (the ingest path, HTTP/1.1 keep-alive), closed loop (the next POST
//! when the previous one returned) or at `--publish-rate` publications per second. Each message
//! carries its publication time (wall clock in ns, so it reads the same in every process);
//! every subscriber records publish-to-delivery latency and counts deliveries. The report
//! has the same shape as a load run: `msgs_per_s` is deliveries per second over all
//! subscribers, `messages` the deliveries recorded in the measurement window.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rand::RngCore;

use crate::report::{new_histogram, ErrorKind, Report, WorkerStats};
use crate::settings::Settings;
use crate::wsframe::{self, Opcode, Role};

/// What a fan-out run needs besides the common settings.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// The gateway's control endpoint (ingest: `POST /publish/{topic}`).
    pub ingest: SocketAddr,
    /// The pubsub route's path.
    pub path: String,
    /// The topic.
    pub topic: String,
    /// Publications per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Bearer token for the ingest (`[control] token` of the gateway).
    pub token: Option<String>,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Upgrade,
    Subscribing,
    Ready,
    Dead,
}

#[derive(Debug)]
struct Sub {
    stream: TcpStream,
    key: String,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
}

/// Publish-to-delivery latency of a delivery frame's text, if it is a delivery.
fn delivery_stamp(text: &[u8]) -> Option<u64> {
    const OP: &[u8] = b"\"op\":\"message\"";
    const DATA: &[u8] = b"\"data\":\"";
    text.windows(OP.len()).position(|w| w == OP)?;
    let at = text.windows(DATA.len()).position(|w| w == DATA)? + DATA.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn masked_text(out: &mut Vec<u8>, text: &[u8]) {
    let mut mask = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut mask);
    wsframe::write_frame(out, Opcode::Text, Some(mask), text);
}

/// Runs a fan-out measurement.
pub fn fanout(settings: &Settings, opts: &FanoutOptions) -> anyhow::Result<Report> {
    if settings.connections == 0 || settings.connections > 60_000 {
        bail!("--connections must be 1..=60000");
    }
    if settings.tls.is_some() {
        bail!("fanout speaks no TLS (yet)");
    }
    if let Some(&cpu) = settings.pin.first() {
        // Best effort, like the load run: the caller asked for one CPU for the client.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let _ = rlimit::increase_nofile_limit(settings.connections as u64 + 256);
    let mut poll = Poll::new()?;
    let mut subs = Vec::with_capacity(settings.connections);
    let host = settings.host.clone();
    for i in 0..settings.connections {
        let mut stream = TcpStream::connect(settings.target)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        let key = wsframe::new_key(random);
        let out = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            opts.path
        )
        .into_bytes();
        subs.push(Sub {
            stream,
            key,
            phase: Phase::Upgrade,
            inbuf: Vec::new(),
            out,
        });
    }
    let subscribe = format!(r#"{{"op":"subscribe","topic":"{}"}}"#, opts.topic);
    let mut stats = WorkerStats::new();
    let mut events = Events::with_capacity(1024);
    let mut subscribed = 0usize;
    let connect_deadline = Instant::now() + Duration::from_secs_f64(settings.connect_timeout_s);
    let start_publishing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut window: Option<(u64, u64)> = None; // measurement window, wall ns
    let mut end_at: Option<Instant> = None;
    let mut publisher: Option<std::thread::JoinHandle<anyhow::Result<u64>>> = None;
    let mut hist: Histogram<u64> = new_histogram();
    let mut deliveries_total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if subscribed < subs.len() && now > connect_deadline {
            stats.error(
                ErrorKind::ConnectTimeout,
                format!("{subscribed}/{} subscribed in time", subs.len()),
            );
            break;
        }
        if subscribed == subs.len() && publisher.is_none() {
            let warm = settings.warmup();
            let dur = settings.duration();
            let w0 = wall_ns() + warm.as_nanos() as u64;
            window = Some((w0, w0 + dur.as_nanos() as u64));
            end_at = Some(now + warm + dur + Duration::from_secs_f64(settings.drain_timeout_s));
            start_publishing.store(true, Ordering::SeqCst);
            let ingest = opts.ingest;
            let topic = opts.topic.clone();
            let size = settings.message_size;
            let rate = opts.rate;
            let auth = opts
                .token
                .as_ref()
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let stop = stop.clone();
            let published = published.clone();
            let pub_end = now + warm + dur;
            publisher = Some(std::thread::spawn(move || {
                publish_loop(
                    ingest, &topic, &auth, size, rate, pub_end, &stop, &published,
                )
            }));
        }
        if end_at.is_some_and(|e| now >= e) {
            break;
        }
        let timeout = if settings.spin {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(1))
        };
        poll.poll(&mut events, timeout)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(s) = subs.get_mut(i) else { continue };
            if s.phase == Phase::Dead {
                continue;
            }
            // Read everything available.
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => {
                        stats.error(ErrorKind::PeerClosed, format!("subscriber {i} closed"));
                        s.phase = Phase::Dead;
                        break;
                    }
                    Ok(n) => s.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        stats.error(ErrorKind::Io, format!("subscriber {i}: {e}"));
                        s.phase = Phase::Dead;
                        break;
                    }
                }
            }
            // Handle what was read.
            if s.phase == Phase::Upgrade {
                match wsframe::parse_upgrade_response(&s.inbuf, &s.key) {
                    Ok(Some(n)) => {
                        s.inbuf.drain(..n);
                        masked_text(&mut s.out, subscribe.as_bytes());
                        s.phase = Phase::Subscribing;
                        stats.connected += 1;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        stats.error(ErrorKind::HandshakeRejected, format!("subscriber {i}: {e}"));
                        s.phase = Phase::Dead;
                    }
                }
            }
            let mut off = 0;
            while matches!(s.phase, Phase::Subscribing | Phase::Ready) {
                let h = match wsframe::parse_header(&s.inbuf[off..], Role::Client, 16 << 20) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => {
                        stats.error(ErrorKind::Protocol, format!("subscriber {i}: {e}"));
                        s.phase = Phase::Dead;
                        break;
                    }
                };
                if s.inbuf.len() - off < h.header_len + h.payload_len {
                    break;
                }
                let payload = &s.inbuf[off + h.header_len..off + h.header_len + h.payload_len];
                match h.opcode {
                    Opcode::Text => {
                        if let Some(stamp) = delivery_stamp(payload) {
                            deliveries_total += 1;
                            let t = wall_ns();
                            if let Some((w0, w1)) = window {
                                if (w0..w1).contains(&stamp) {
                                    let _ = hist.record(t.saturating_sub(stamp).max(1));
                                }
                            }
                        } else if s.phase == Phase::Subscribing
                            && payload.windows(12).any(|w| w == b"\"subscribed\"")
                        {
                            s.phase = Phase::Ready;
                            subscribed += 1;
                        }
                    }
                    Opcode::Ping => {
                        let p = payload.to_vec();
                        let mut mask = [0u8; 4];
                        rand::thread_rng().fill_bytes(&mut mask);
                        wsframe::write_frame(&mut s.out, Opcode::Pong, Some(mask), &p);
                    }
                    Opcode::Close => {
                        stats.error(ErrorKind::PeerClosed, format!("subscriber {i}: Close"));
                        s.phase = Phase::Dead;
                    }
                    _ => {}
                }
                off += h.header_len + h.payload_len;
            }
            s.inbuf.drain(..off.min(s.inbuf.len()));
            while !s.out.is_empty() && s.phase != Phase::Dead {
                match s.stream.write(&s.out) {
                    Ok(n) => {
                        s.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) => {
                        stats.error(ErrorKind::Io, format!("subscriber {i}: {e}"));
                        s.phase = Phase::Dead;
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let publications = match publisher.map(|p| p.join()) {
        Some(Ok(Ok(n))) => n,
        Some(Ok(Err(e))) => {
            stats.error(ErrorKind::Io, format!("publisher: {e:#}"));
            published.load(Ordering::SeqCst)
        }
        Some(Err(_)) => {
            stats.error(ErrorKind::Io, "publisher panicked".into());
            0
        }
        None => 0,
    };
    stats.connected = subscribed as u64;
    stats.sent = publications;
    stats.replies = deliveries_total;
    stats.hist = hist;
    Ok(Report::from_stats("fanout", settings, vec![stats]))
}

/// POSTs publications until `end`; returns how many the gateway acknowledged.
#[allow(clippy::too_many_arguments)]
fn publish_loop(
    ingest: SocketAddr,
    topic: &str,
    auth: &str,
    size: usize,
    rate: Option<f64>,
    end: Instant,
    stop: &AtomicBool,
    published: &AtomicU64,
) -> anyhow::Result<u64> {
    let mut conn = StdStream::connect(ingest).with_context(|| format!("ingest {ingest}"))?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut resp = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(n as f64 / r);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        let stamp = wall_ns().to_string();
        let mut body = stamp.into_bytes();
        body.push(b':');
        while body.len() < size {
            body.push(b'x');
        }
        let req = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: {ingest}\r\nContent-Type: text/plain\r\n\
             {auth}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = req.into_bytes();
        req.extend_from_slice(&body);
        conn.write_all(&req)?;
        resp.clear();
        loop {
            let got = conn.read(&mut buf)?;
            if got == 0 {
                bail!("ingest closed the connection after {n} publications");
            }
            resp.extend_from_slice(&buf[..got]);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(hlen) = r.parse(&resp)? {
                let clen: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0);
                if resp.len() >= hlen + clen {
                    if r.code != Some(200) {
                        bail!(
                            "ingest answered {:?}: {}",
                            r.code,
                            String::from_utf8_lossy(&resp[hlen..hlen + clen])
                        );
                    }
                    break;
                }
            }
        }
        n += 1;
        published.store(n, Ordering::Relaxed);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::delivery_stamp;

    #[test]
    fn delivery_stamp_reads_the_publication_time() {
        let t = br#"{"op":"message","topic":"t","data":"1234567:xxxx"}"#;
        assert_eq!(delivery_stamp(t), Some(1_234_567));
        assert_eq!(delivery_stamp(br#"{"op":"subscribed","topic":"t"}"#), None);
    }
}
