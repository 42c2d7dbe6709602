//! The WebSocket gateway application (`--app gateway`).
//!
//! The core is sans-IO: a [`worker::Worker`] implements [`crate::app::App`] (it takes the
//! bytes each connection receives and hands back the bytes to send), so the kernel-socket
//! driver and the stack driver (`crate::drivers`) serve the same code. Publishing goes through one [`broker`] thread, which frames
//! each message once and fans the same bytes out to every worker over bounded crossbeam
//! queues; per-topic order is the broker's order.

pub mod broker;
pub mod protocol;
pub mod proxy;
pub mod session;
pub mod worker;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ws::deflate::Deflater;
use ws::frame::encode_frame;
use ws::{FrameHeader, OpCode};

pub use crate::app::{ConnId, TcpInfo};

/// A published message, framed once; compressed lazily once per deflate window size.
#[derive(Debug)]
pub struct Publication {
    /// The topic.
    pub topic: Arc<str>,
    /// The delivery's JSON text (`{"op":"message",...}`).
    text: Bytes,
    /// The uncompressed text frame.
    plain: Bytes,
    /// Compressed frames, indexed by `server_max_window_bits - 8`.
    deflated: [OnceLock<Bytes>; 8],
    level: u32,
}

impl Publication {
    /// Frames `text` (a whole delivery message) for `topic`.
    pub fn new(topic: Arc<str>, text: Bytes, level: u32) -> Publication {
        let mut plain = Vec::with_capacity(text.len() + FrameHeader::MAX_LEN);
        encode_frame(&mut plain, FrameHeader::new(OpCode::Text, 0), &text);
        Publication {
            topic,
            text,
            plain: Bytes::from(plain),
            deflated: Default::default(),
            level,
        }
    }

    /// The frame for a connection: `window_bits` is its negotiated
    /// `server_max_window_bits` when permessage-deflate is on (with server no context
    /// takeover, so a frame compressed once is valid for every such connection).
    pub fn frame(&self, window_bits: Option<u8>) -> Bytes {
        let Some(bits) = window_bits else {
            return self.plain.clone();
        };
        let idx = usize::from(bits.clamp(8, 15) - 8);
        self.deflated[idx]
            .get_or_init(|| {
                let mut payload = Vec::new();
                // RFC 7692 7.1.1.1: server_no_context_takeover - each message stands alone.
                let mut d = Deflater::new(bits, self.level, true);
                if d.compress_message(&self.text, &mut payload).is_err() {
                    return self.plain.clone();
                }
                let mut h = FrameHeader::new(OpCode::Text, 0);
                // RFC 7692 6: RSV1 marks a compressed message.
                h.rsv1 = true;
                let mut out = Vec::with_capacity(payload.len() + FrameHeader::MAX_LEN);
                encode_frame(&mut out, h, &payload);
                Bytes::from(out)
            })
            .clone()
    }
}

/// Completion tracking for an ingest publish: answered once every worker queued it.
#[derive(Debug)]
pub struct Ack {
    remaining: std::sync::atomic::AtomicUsize,
    delivered: std::sync::atomic::AtomicUsize,
    done: crossbeam_channel::Sender<usize>,
}

impl Ack {
    /// An ack waiting for `workers` workers; the total delivery count is sent on `done`.
    pub fn new(workers: usize, done: crossbeam_channel::Sender<usize>) -> Arc<Ack> {
        Arc::new(Ack {
            remaining: workers.into(),
            delivered: 0.into(),
            done,
        })
    }

    /// One worker queued the message to `n` subscribers.
    pub fn worker_done(&self, n: usize) {
        use std::sync::atomic::Ordering;
        self.delivered.fetch_add(n, Ordering::AcqRel);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.try_send(self.delivered.load(Ordering::Acquire));
        }
    }
}

/// One row of `sluice stat`'s per-connection table.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnInfo {
    /// Worker index.
    pub worker: usize,
    /// Peer address.
    pub peer: String,
    /// Route path, or `-` before the handshake.
    pub route: String,
    /// `handshake`, `open`, `closing`.
    pub state: String,
    /// Subscribed topics.
    pub topics: usize,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages queued out.
    pub msgs_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes queued for sending now.
    pub queued: usize,
    /// Messages dropped by the slow-consumer policy.
    pub drops: u64,
    /// Seconds since accept.
    pub age_s: u64,
    /// The TCP engine's view (AF_XDP backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpInfo>,
}

/// Messages to a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Queue a publication to the local subscribers of its topic.
    Deliver(Arc<Publication>, Option<Arc<Ack>>),
    /// Reply with the per-connection table.
    Snapshot(crossbeam_channel::Sender<Vec<ConnInfo>>),
}

/// How to reach one worker: its bounded queue and a wake-up for its poll loop.
#[derive(Clone)]
pub struct WorkerHandle {
    /// The worker's queue.
    pub tx: crossbeam_channel::Sender<WorkerMsg>,
    /// Wakes the worker's poll loop after a send.
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Sends, blocking while the queue is full; false once the worker is gone.
    pub fn send(&self, msg: WorkerMsg) -> bool {
        let ok = self.tx.send(msg).is_ok();
        (self.wake)();
        ok
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn publication_plain_frame_is_text_fin() {
        let p = Publication::new("t".into(), Bytes::from_static(b"hello"), 1);
        let f = p.frame(None);
        assert_eq!(&f[..], b"\x81\x05hello");
    }

    #[test]
    fn publication_deflated_frame_shared_and_inflates() {
        let text = Bytes::from("abcabcabcabcabcabcabcabc".repeat(10));
        let p = Publication::new("t".into(), text.clone(), 6);
        let a = p.frame(Some(15));
        let b = p.frame(Some(15));
        // Same allocation: compressed once.
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(a[0], 0xc1);
        // A client engine with server_no_context_takeover reads it back.
        let params = ws::DeflateParams {
            server_no_context_takeover: true,
            ..Default::default()
        };
        let mut client = ws::Connection::new(
            ws::Role::Client,
            ws::Config {
                max_frame_size: 1 << 20,
                max_message_size: 1 << 20,
            },
            Some(params),
            1,
        );
        for frame in [a, b] {
            let mut buf = frame.to_vec();
            client.read(&mut buf);
            match client.poll_event() {
                Some(ws::Event::Message { data, .. }) => assert_eq!(data, text.to_vec()),
                other => panic!("{other:?}"),
            }
        }
    }
}
