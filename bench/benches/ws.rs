//! WebSocket codec benchmarks, each beside tungstenite's equivalent where one exists.
//!
//! - `frame_decode/*`: masked binary frames of 16 B, 1 KiB and 64 KiB decoded into
//!   messages (header parse, unmask, message assembly). Sluice: `Connection::read` on the
//!   bytes in place; tungstenite: `WebSocket::read` (server role) over an in-memory stream.
//! - `unmask/*`: Sluice's header parse + in-place unmask alone (tungstenite's mask
//!   routine is private, so it has no stand-alone equivalent).
//! - `utf8/*`: validating 64 KiB of mixed text. tungstenite validates complete messages
//!   with `std::str::from_utf8`, measured beside Sluice's incremental validator.
//! - `deflate/*`: permessage-deflate round trip of a 64 KiB JSON-like message.
//!   tungstenite does not implement permessage-deflate, so there is nothing beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::{self, Read, Write};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ws::deflate::{Deflater, Inflater};
use ws::frame::encode_frame;
use ws::mask::apply_mask;
use ws::utf8::Utf8Validator;
use ws::{Config, Connection, Event, FrameHeader, OpCode, Role};

const SIZES: [usize; 3] = [16, 1024, 64 * 1024];

fn masked_frame(len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut h = FrameHeader::new(OpCode::Binary, 0);
    h.mask = Some([0x12, 0x34, 0x56, 0x78]);
    let mut out = Vec::new();
    encode_frame(&mut out, h, &payload);
    out
}

/// An endless stream repeating one frame; writes are discarded.
struct Cycle {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Cycle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.data.len();
        Ok(n)
    }
}

impl Write for Cycle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn frame_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        let frame = masked_frame(len);
        g.bench_with_input(BenchmarkId::new("sluice", len), &frame, |b, frame| {
            let mut buf = frame.clone();
            let mut conn = Connection::new(Role::Server, Config::default(), None, 0);
            b.iter(|| {
                // Unmasking in place flips the payload each time; the header is untouched.
                let n = conn.read(&mut buf);
                debug_assert_eq!(n, buf.len());
                match conn.poll_event() {
                    Some(Event::Message { data, .. }) => black_box(data),
                    other => panic!("{other:?}"),
                }
            });
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", len), &frame, |b, frame| {
            let stream = Cycle {
                data: frame.repeat((256 * 1024 / frame.len()).max(1)),
                pos: 0,
            };
            let mut sock = tungstenite::WebSocket::from_raw_socket(
                stream,
                tungstenite::protocol::Role::Server,
                None,
            );
            b.iter(|| black_box(sock.read().unwrap()));
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len as u64));
        let mut frame = masked_frame(len);
        g.bench_function(BenchmarkId::new("sluice", len), |b| {
            b.iter(|| {
                let (h, n) = FrameHeader::parse(black_box(&frame)).unwrap().unwrap();
                let key = h.mask.unwrap();
                black_box(apply_mask(&mut frame[n..], key, 0));
            });
        });
    }
    g.finish();
}

fn text_64k() -> Vec<u8> {
    "Sluice ünïcödé 日本語 text with some emoji 🚀 and plenty of ASCII padding to be realistic. "
        .repeat(800)
        .into_bytes()
        .into_iter()
        .take(64 * 1024 - 3)
        .collect::<Vec<u8>>()
}

fn utf8(c: &mut Criterion) {
    let text = String::from_utf8_lossy(&text_64k())
        .into_owned()
        .into_bytes();
    let mut g = c.benchmark_group("utf8");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("sluice_incremental_4k_chunks", |b| {
        b.iter(|| {
            let mut v = Utf8Validator::new();
            for chunk in text.chunks(4096) {
                v.feed(black_box(chunk)).unwrap();
            }
            v.finish().unwrap();
        });
    });
    g.bench_function("tungstenite_std_from_utf8", |b| {
        b.iter(|| black_box(std::str::from_utf8(black_box(&text)).is_ok()));
    });
    g.finish();
}

fn deflate(c: &mut Criterion) {
    let msg: Vec<u8> = (0..1500)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"user{}\",\"score\":{}}},",
                i % 97,
                i * 31 % 1000
            )
        })
        .collect::<String>()
        .into_bytes()
        .into_iter()
        .take(64 * 1024)
        .collect();
    let mut g = c.benchmark_group("deflate");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("sluice_roundtrip_64k_json", |b| {
        let mut d = Deflater::new(15, 1, false);
        let mut i = Inflater::new(false);
        let mut compressed = Vec::new();
        let mut out = Vec::new();
        b.iter(|| {
            compressed.clear();
            out.clear();
            d.compress_message(&msg, &mut compressed).unwrap();
            i.feed(&compressed, &mut out, 1 << 20).unwrap();
            i.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(out.len(), msg.len());
        });
    });
    g.finish();
}

criterion_group!(benches, frame_decode, unmask, utf8, deflate);
criterion_main!(benches);
