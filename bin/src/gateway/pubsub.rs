//! The `pubsub` route: subscribe / unsubscribe / publish requests from clients, and the
//! delivery of the broker's publications to this worker's subscribers under the route's
//! slow-consumer policy.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ws::deflate::Deflater;
use ws::frame::encode_frame;
use ws::{FrameHeader, OpCode};

use tcp::Instant;
use ws::{CloseCode, MessageKind};

use super::protocol::{Reply, Request};
use super::worker::Worker;
use super::ConnId;
use crate::app::Tx;
use crate::config::SlowConsumer;
use crate::metrics::{Auth, Drop};

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

impl Worker {
    /// Answers one client request of `id` (replies through `tx`, or queued behind what is).
    pub(super) fn pubsub_request<T: Tx>(
        &mut self,
        id: ConnId,
        kind: MessageKind,
        data: &[u8],
        tx: &mut T,
    ) {
        let req = if kind == MessageKind::Text {
            Request::parse(data).map_err(|e| e.to_string())
        } else {
            Err("binary messages are not part of the protocol".to_string())
        };
        let max_subs = self.config.limits.max_subscriptions;
        let reply = match req {
            Err(e) => Reply::Error {
                error: &e,
                id: None,
            }
            .to_json(),
            Ok(Request::Subscribe { topic, id: rid }) => {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    return;
                };
                if s.grant.as_ref().is_some_and(|g| !g.may_subscribe(&topic)) {
                    self.stats.auth(Auth::DeniedSubscribe);
                    Reply::Error {
                        error: "forbidden: the token does not allow this topic",
                        id: rid.as_ref(),
                    }
                    .to_json()
                } else if !s.topics.contains(topic.as_str()) && s.topics.len() >= max_subs {
                    Reply::Error {
                        error: "too many subscriptions",
                        id: rid.as_ref(),
                    }
                    .to_json()
                } else {
                    let key: Arc<str> = self
                        .topics
                        .get_key_value(topic.as_str())
                        .map_or_else(|| Arc::from(topic.as_str()), |(k, _)| Arc::clone(k));
                    s.topics.insert(Arc::clone(&key));
                    let subs = self.topics.entry(Arc::clone(&key)).or_default();
                    let first = subs.is_empty();
                    subs.insert(id);
                    if first {
                        self.interest_changed(&key, true);
                    }
                    Reply::Subscribed {
                        topic: &topic,
                        id: rid.as_ref(),
                    }
                    .to_json()
                }
            }
            Ok(Request::Unsubscribe { topic, id: rid }) => {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    return;
                };
                s.topics.remove(topic.as_str());
                self.leave_topic(&topic, id);
                Reply::Unsubscribed {
                    topic: &topic,
                    id: rid.as_ref(),
                }
                .to_json()
            }
            Ok(Request::Publish {
                topic,
                data,
                id: rid,
            }) => {
                let refusal = self
                    .sessions
                    .get(id)
                    .and_then(Option::as_ref)
                    .and_then(|s| {
                        let route = s.route.and_then(|r| self.routes.get(r))?;
                        if !route.cfg.client_publish {
                            Some("forbidden: publishing is not allowed on this route")
                        } else if s.grant.as_ref().is_some_and(|g| !g.may_publish(&topic)) {
                            Some("forbidden: the token does not allow publishing to this topic")
                        } else {
                            None
                        }
                    });
                if let Some(error) = refusal {
                    self.stats.auth(Auth::DeniedPublish);
                    let reply = Reply::Error {
                        error,
                        id: rid.as_ref(),
                    }
                    .to_json();
                    self.reply(id, &reply, tx);
                    return;
                }
                let ok = self
                    .publisher
                    .as_ref()
                    .is_some_and(|p| p.try_publish(topic.clone(), data));
                if ok {
                    Reply::Published {
                        topic: &topic,
                        id: rid.as_ref(),
                    }
                    .to_json()
                } else {
                    self.stats.dropped(Drop::PublishQueueFull);
                    Reply::Error {
                        error: "publish queue full, try again",
                        id: rid.as_ref(),
                    }
                    .to_json()
                }
            }
        };
        self.reply(id, &reply, tx);
    }

    /// `id` no longer subscribes to `topic` (the worker's table; the session's own set is
    /// the caller's); the topic's last local subscriber is reported to the cluster link.
    pub(super) fn leave_topic(&mut self, topic: &str, id: ConnId) {
        if let Some(set) = self.topics.get_mut(topic) {
            set.remove(&id);
            if set.is_empty() {
                if let Some((key, _)) = self.topics.remove_entry(topic) {
                    self.interest_changed(&key, false);
                }
            }
        }
    }

    /// Sends one protocol reply to `id` (through `tx`, or queued behind what is).
    fn reply<T: Tx>(&mut self, id: ConnId, reply: &str, tx: &mut T) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
            return;
        };
        let sent = if s.deflate_bits.is_some() {
            let sent = s
                .ws()
                .is_some_and(|ws| ws.send(MessageKind::Text, reply.as_bytes()).is_ok());
            s.pull_engine_output();
            sent
        } else {
            s.send_message(tx, MessageKind::Text, reply.as_bytes())
        };
        if sent {
            s.msgs_out += 1;
            route.stats().msgs_out.add(1);
        }
    }

    /// Queues a publication to this worker's subscribers of its topic.
    pub fn deliver(&mut self, p: &Publication, ack: Option<&Ack>, now: Instant) {
        let deadline = self.close_deadline(now);
        let mut delivered = 0;
        // The worker's reused list (no allocation per publication).
        let mut touched = std::mem::take(&mut self.touched);
        if let Some(ids) = self.topics.get(&p.topic) {
            for &id in ids {
                let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                    continue;
                };
                let Some(route) = s.route.and_then(|r| self.routes.get(r)) else {
                    continue;
                };
                if s.is_closing() {
                    continue;
                }
                let frame = p.frame(s.deflate_bits);
                if s.out.len() + frame.len() > route.cfg.max_queued_bytes {
                    s.drops += 1;
                    match route.cfg.slow_consumer {
                        SlowConsumer::DropNewest => self.stats.dropped(Drop::SlowConsumerDropped),
                        SlowConsumer::Close => {
                            self.stats.dropped(Drop::SlowConsumerClosed);
                            s.out.truncate_unstarted();
                            s.close(
                                CloseCode(route.cfg.slow_close_code),
                                "slow consumer",
                                deadline,
                            );
                            touched.push(id);
                        }
                    }
                    continue;
                }
                s.out.push(frame);
                s.msgs_out += 1;
                route.stats().msgs_out.add(1);
                delivered += 1;
                touched.push(id);
            }
        }
        for &id in &touched {
            self.mark_dirty(id);
        }
        touched.clear();
        self.touched = touched;
        if let Some(a) = ack {
            a.worker_done(delivered);
        }
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
