//! Fuzz the frame parser and the connection engine: arbitrary bytes, split at arbitrary
//! points, with and without permessage-deflate, as server and as client. Never panics,
//! never consumes more than it was given, and output always parses as frames (the
//! server's reflected small-frame answers too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws::{Config, Connection, DeflateParams, FrameHeader, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let _ = FrameHeader::parse(rest);
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let deflate = (flags & 2 != 0).then(DeflateParams::default);
    let config = Config {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 18,
    };
    // A server's reflected answers (the echo's small-frame path): within bounds, and
    // exactly `messages` whole frames of our own.
    let mut reflector = Connection::new(Role::Server, config, None, 7);
    let mut answers = vec![0u8; rest.len() * usize::from(flags % 3) / 2];
    let r = reflector.reflect_small(rest, &mut answers);
    assert!(r.consumed <= rest.len() && r.written <= answers.len());
    let (mut at, mut frames) = (0, 0);
    while at < r.written {
        let (h, n) = FrameHeader::parse(&answers[at..r.written])
            .ok()
            .flatten()
            .expect("reflected answers parse");
        at += n + h.payload_len as usize;
        frames += 1;
    }
    assert_eq!((at, frames), (r.written, r.messages));
    let mut conn = Connection::new(role, config, deflate, 7);
    let mut buf = rest.to_vec();
    let step = usize::from(flags >> 2).max(1);
    let mut pos = 0;
    while pos < buf.len() && conn.is_reading() {
        let end = (pos + step).min(buf.len());
        let n = conn.read(&mut buf[pos..end]);
        assert!(n <= end - pos);
        pos += n;
        while let Some(ev) = conn.poll_event() {
            if let ws::Event::Message { kind, data } = ev {
                let _ = conn.send(kind, &data);
            }
        }
    }
    let mut out = conn.pending_output().to_vec();
    let mut at = 0;
    while at < out.len() {
        let (h, n) = FrameHeader::parse(&out[at..])
            .ok()
            .flatten()
            .expect("own output parses");
        at += n + h.payload_len as usize;
        assert!(at <= out.len());
    }
    out.clear();
});
