//! The connection state machine (RFC 6455 5, 7): frames in, events out, frames queued.
//!
//! Drive it with [`Connection::read_with`] (messages handed to a callback, whole ones
//! borrowed from the input) or [`Connection::read`] (messages as owned events) on received
//! bytes (unmasked in place), take [`Event`]s with [`Connection::poll_event`], queue
//! messages with [`Connection::send`] (or write them yourself after
//! [`Connection::write_message_header`]), and write [`Connection::pending_output`] to the
//! transport, then [`Connection::consume_output`]. Once [`Connection::is_closed`] and the output is drained,
//! close the transport.

use std::collections::VecDeque;

use crate::close::{parse_close_payload, CloseCode};
use crate::deflate::{DeflateError, DeflateParams, Deflater, Inflater};
use crate::frame::{encode_frame, FrameHeader, OpCode};
use crate::mask::{apply_mask, mask_copy_blocks, mask_copy_pairs};
use crate::utf8::Utf8Validator;

/// See [`Connection::small_shape`].
#[derive(Clone, Copy, Debug)]
struct SmallShape {
    mask_bit: u8,
    at: usize,
    limit: usize,
}

/// What [`Connection::reflect_small`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reflected {
    /// Bytes of the input taken.
    pub consumed: usize,
    /// Bytes of answers written to the output.
    pub written: usize,
    /// Messages answered.
    pub messages: u64,
}

/// A small whole data frame at the start of `buf`, checked on its first two bytes without
/// the general parse: FIN, no RSV bits, Text or Binary, the mask bit as `shape` requires,
/// a 7-bit length within `shape.limit`, all of it in `buf`. Returns its kind and payload
/// length; `None` sends the frame down the general path (which also reports every error).
#[inline]
fn small_frame(buf: &[u8], shape: SmallShape) -> Option<(MessageKind, usize)> {
    let [b0, b1, ..] = *buf else {
        return None;
    };
    let len = usize::from(b1 & 0x7f);
    // Text (0x81) or Binary (0x82): final, no RSV bits.
    if b0.wrapping_sub(0x81) > 1
        || b1 & 0x80 != shape.mask_bit
        || len > shape.limit
        || shape.at + len > buf.len()
    {
        return None;
    }
    let kind = if b0 == 0x81 {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    Some((kind, len))
}

/// Which end of the connection this engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Sends masked frames, receives unmasked ones.
    Client,
}

/// Per-connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest frame payload accepted (1009 beyond it).
    pub max_frame_size: usize,
    /// Largest (decompressed) message accepted (1009 beyond it).
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
        }
    }
}

/// The type of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text (validated before delivery).
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the first frame of such a message.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// Something that happened on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message; for `Text` the bytes are valid UTF-8.
    Message {
        /// Text or binary.
        kind: MessageKind,
        /// The (decompressed) payload.
        data: Vec<u8>,
    },
    /// A ping arrived; the pong is already queued.
    Ping(Vec<u8>),
    /// A pong arrived.
    Pong(Vec<u8>),
    /// The peer sent a Close frame; our answer (if due) is queued.
    Close {
        /// The peer's code, `None` when its Close frame had no payload.
        code: Option<CloseCode>,
        /// The peer's reason.
        reason: String,
    },
    /// The peer broke the protocol; a Close frame with `code` is queued and the
    /// connection is failed (RFC 6455 7.1.7).
    Failed {
        /// The code sent to the peer (1002, 1007, 1009, ...).
        code: CloseCode,
        /// What went wrong.
        reason: &'static str,
    },
}

/// Why a send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A Close frame was already sent (RFC 6455 5.5.1: no data after Close).
    #[error("close already sent")]
    Closing,
    /// A control frame payload over 125 bytes.
    #[error("control frame payload too long")]
    ControlTooLong,
    /// Compressing the message failed.
    #[error("compression failed")]
    Compress,
    /// [`Connection::write_message_header`]: queued output (a pong, a close) must be
    /// written to the transport first, to keep the order of frames.
    #[error("queued output must be written first")]
    OutputPending,
    /// [`Connection::write_message_header`] on a client: client frames are masked, so
    /// the payload cannot be written as is (use [`crate::frame::write_header`] with a
    /// key and mask the payload, or [`Connection::send`]).
    #[error("client frames must be masked")]
    MaskRequired,
    /// [`Connection::write_message_header`]: the buffer is shorter than the header.
    #[error("buffer too small for the frame header")]
    BufferTooSmall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxState {
    /// Collecting a header; `hdr_len` bytes of it are in `hdr`.
    Header,
    /// Inside a payload: `remaining` bytes to go, `phase` into the mask.
    Payload { remaining: u64, phase: usize },
    /// No more input is processed (close received or connection failed).
    Done,
}

/// A WebSocket connection engine (sans-IO).
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    rx: RxState,
    hdr: [u8; FrameHeader::MAX_LEN],
    hdr_len: usize,
    frame: FrameHeader,
    /// Opcode of the message being assembled, if a fragmented message is in progress.
    msg_kind: Option<MessageKind>,
    msg_compressed: bool,
    msg: Vec<u8>,
    /// Bytes of `msg` already UTF-8 validated (compressed text).
    msg_checked: usize,
    utf8: Utf8Validator,
    control: Vec<u8>,
    events: VecDeque<Event>,
    out: Vec<u8>,
    out_start: usize,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    compress_min: usize,
    mask_state: u64,
    scratch: Vec<u8>,
    /// A data message was just completed: return from `read` so it is answered in order.
    message_ready: bool,
    /// Inside `read_with`: completed messages stay in `msg` for the callback
    /// (`pending_msg`) instead of becoming events.
    borrow_mode: bool,
    /// Kind of the completed message waiting in `msg` for the `read_with` callback.
    pending_msg: Option<MessageKind>,
    /// Inside `read_with`: a frame was queued on the output (pong, close): return so
    /// that it is written before any answer the application writes itself.
    output_ready: bool,
}

/// Above this capacity the assembly buffer is freed after a message (not kept for the
/// next one), so a connection that once received a large message does not keep it.
const KEEP_MSG_CAPACITY: usize = 64 * 1024;

impl Connection {
    /// A connection after a successful handshake; `deflate` as negotiated.
    ///
    /// A client masks with keys from a generator seeded by `mask_seed`; seed it from a
    /// good random source (RFC 6455 5.3 asks for unpredictable keys).
    pub fn new(role: Role, config: Config, deflate: Option<DeflateParams>, mask_seed: u64) -> Self {
        let (deflater, inflater) = match deflate {
            Some(p) => {
                let (our_bits, our_reset, peer_reset) = match role {
                    Role::Server => (
                        p.server_max_window_bits,
                        p.server_no_context_takeover,
                        p.client_no_context_takeover,
                    ),
                    Role::Client => (
                        p.client_max_window_bits,
                        p.client_no_context_takeover,
                        p.server_no_context_takeover,
                    ),
                };
                (
                    Some(Deflater::new(our_bits, p.level, our_reset)),
                    Some(Inflater::new(peer_reset)),
                )
            }
            None => (None, None),
        };
        Connection {
            role,
            config,
            rx: RxState::Header,
            hdr: [0; FrameHeader::MAX_LEN],
            hdr_len: 0,
            frame: FrameHeader::new(OpCode::Binary, 0),
            msg_kind: None,
            msg_compressed: false,
            msg: Vec::new(),
            msg_checked: 0,
            utf8: Utf8Validator::new(),
            control: Vec::new(),
            events: VecDeque::new(),
            out: Vec::new(),
            out_start: 0,
            close_sent: false,
            close_received: false,
            failed: false,
            compress_min: deflate.map_or(0, |p| p.min_size),
            deflater,
            inflater,
            mask_state: mask_seed | 1,
            scratch: Vec::new(),
            message_ready: false,
            borrow_mode: false,
            pending_msg: None,
            output_ready: false,
        }
    }

    /// Processes received bytes, unmasking payloads in place.
    ///
    /// Returns how many bytes were consumed. Partial headers are kept internally (at most
    /// 14 bytes) and partial payloads are appended to the message being assembled
    /// (bounded by the size limits), so input is only left unconsumed in two cases:
    /// - a data message was completed: handle the events (e.g. answer the message), then
    ///   call `read` again with the rest, so answers keep the order of the requests;
    /// - input processing stopped because a Close frame arrived or the connection failed
    ///   ([`Connection::is_reading`] is false): discard the rest.
    pub fn read(&mut self, input: &mut [u8]) -> usize {
        self.borrow_mode = false;
        self.read_inner(input, &mut |_, _| {})
    }

    /// Processes received bytes, unmasking payloads in place, and hands every complete
    /// data message to `on_message(kind, payload)` (text already validated as UTF-8)
    /// instead of queuing an [`Event::Message`]:
    /// - a whole, unfragmented, uncompressed message whose frame lies entirely in `input`
    ///   is handed out borrowed from `input` itself (unmasked there; no copy, no
    ///   allocation);
    /// - fragmented or compressed messages, and frames split across calls, are
    ///   assembled (bounded by the size limits, as with [`Connection::read`]) and handed
    ///   out borrowed from the connection's assembly buffer.
    ///
    /// Messages are handed out in order within one call, so answers written in the
    /// callback keep the order of the requests. Control frames still become events
    /// (their answers, a pong or a close, are queued on [`Connection::pending_output`]),
    /// and `read_with` returns right after a frame that queued output, so the caller can
    /// write that first and call again with the rest; [`Connection::write_message_header`]
    /// refuses while output is pending. Returns how many bytes were consumed: less than
    /// `input.len()` only after queued output or when input processing stopped (a Close
    /// arrived or the connection failed, [`Connection::is_reading`] is false: discard the
    /// rest). Errors (1002, 1007 for invalid UTF-8 in text, 1009) behave as with
    /// [`Connection::read`].
    pub fn read_with(
        &mut self,
        input: &mut [u8],
        on_message: &mut impl FnMut(MessageKind, &[u8]),
    ) -> usize {
        self.borrow_mode = true;
        self.output_ready = false;
        let n = self.read_inner(input, on_message);
        self.borrow_mode = false;
        n
    }

    /// A whole data frame the borrowed path can hand out without assembly: final, not
    /// compressed, not inside a fragmented message, masked as the role requires, within
    /// the limits. Anything else takes the general path (which also reports errors).
    fn borrowable(&self, h: &FrameHeader) -> bool {
        let masked_ok = match self.role {
            Role::Server => h.mask.is_some(),
            Role::Client => h.mask.is_none(),
        };
        h.fin
            && !(h.rsv1 || h.rsv2 || h.rsv3)
            && matches!(h.opcode, OpCode::Text | OpCode::Binary)
            && self.msg_kind.is_none()
            && masked_ok
            && h.payload_len <= self.config.max_frame_size as u64
            && h.payload_len <= self.config.max_message_size as u64
    }

    /// What makes a frame small enough for the borrowed path's common case: the mask bit
    /// the role requires, the header length (with the masking key), and the largest
    /// payload (under 126: a 7-bit length; within the limits). `None` inside a
    /// fragmented message, where every frame takes the general path.
    #[inline]
    fn small_shape(&self) -> Option<SmallShape> {
        if self.msg_kind.is_some() {
            return None;
        }
        let (mask_bit, at) = match self.role {
            Role::Server => (0x80, 6),
            Role::Client => (0, 2),
        };
        let limit = 125
            .min(self.config.max_frame_size)
            .min(self.config.max_message_size);
        Some(SmallShape {
            mask_bit,
            at,
            limit,
        })
    }

    /// Unmasks (server role), validates (text) and lends the small frame at the start of
    /// `input` ([`small_frame`]); returns its length in bytes. Invalid UTF-8 in a text
    /// message fails the connection (1007) instead.
    #[inline]
    fn lend_small(
        &mut self,
        input: &mut [u8],
        shape: SmallShape,
        (kind, len): (MessageKind, usize),
        on_message: &mut impl FnMut(MessageKind, &[u8]),
    ) -> usize {
        let end = shape.at + len;
        let Some((head, payload)) = input.get_mut(..end).map(|f| f.split_at_mut(shape.at)) else {
            return 0;
        };
        if let [_, _, k0, k1, k2, k3] = *head {
            apply_mask(payload, [k0, k1, k2, k3], 0);
        }
        // RFC 6455 8.1: invalid UTF-8 in a text message fails the connection (1007).
        if kind == MessageKind::Text && simdutf8::basic::from_utf8(payload).is_err() {
            self.fail(CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text message");
        } else {
            on_message(kind, payload);
        }
        end
    }

    /// Takes the leading run of small whole data frames of `input` — final, uncompressed
    /// Text or Binary frames outside a fragmented message, payload under 126 bytes,
    /// masked as the role requires, each entirely in `input` — unmasking each in place
    /// and lending it to `on_message` as [`Connection::read_with`] does, and stops at the
    /// first frame that is anything else (call `read_with` with the rest). Returns how
    /// many bytes it consumed (0 when the engine is not between frames).
    ///
    /// For answers sized by their requests: each such frame is at least as long as the
    /// same payload framed by this end (2 header bytes, no mask), so an echo of
    /// everything taken fits in as many bytes as were consumed.
    pub fn read_small_with(
        &mut self,
        input: &mut [u8],
        on_message: &mut impl FnMut(MessageKind, &[u8]),
    ) -> usize {
        if self.rx != RxState::Header || self.hdr_len != 0 {
            return 0;
        }
        let Some(shape) = self.small_shape() else {
            return 0;
        };
        let mut pos = 0;
        while let Some(rest) = input.get_mut(pos..) {
            let Some(frame) = small_frame(rest, shape) else {
                break;
            };
            let n = self.lend_small(rest, shape, frame, on_message);
            pos += n;
            if n == 0 || self.rx != RxState::Header {
                break;
            }
        }
        pos
    }

    /// Answers the leading run of small whole data frames of `input` (those
    /// [`Connection::read_small_with`] takes) with the same messages, framed by this end,
    /// written one after another into `out`: each 2-byte header and its payload unmasked
    /// straight from `input` in one pass, without touching `input` or lending the payload.
    /// For a server engine (a client's answers would need masks of their own: it takes
    /// nothing). Stops at the first frame that is anything else (call `read_with` with the
    /// rest of `input`), or that does not fit in `out`; a text frame with invalid UTF-8
    /// fails the connection (1007) and ends the run, consumed but not answered. Each answer
    /// is 4 bytes shorter than its frame, so `out` as long as `input` takes them all.
    pub fn reflect_small(&mut self, input: &[u8], out: &mut [u8]) -> Reflected {
        let mut r = Reflected::default();
        if self.role != Role::Server || self.rx != RxState::Header || self.hdr_len != 0 {
            return r;
        }
        let Some(shape) = self.small_shape() else {
            return r;
        };
        // Most of a pipelined run: both sides have room for the largest small frame, so
        // the frame is read and its answer written through fixed-size views (whole 32-byte
        // pairs of blocks; the excess is the next frame's bytes read, and answer bytes
        // overwritten by the next answer or not sent).
        while let Some(frame) = input
            .get(r.consumed..)
            .and_then(|s| s.first_chunk::<{ 6 + 128 }>())
        {
            let Some(answer) = out
                .get_mut(r.written..)
                .and_then(|s| s.first_chunk_mut::<{ 2 + 128 }>())
            else {
                break;
            };
            let Some((kind, len)) = small_frame(frame, shape) else {
                break;
            };
            let [b0, _, k0, k1, k2, k3, ..] = *frame;
            // Whole 32-byte pairs of blocks (at most 4: the views have 128 bytes of room).
            let pairs = 32 * len.div_ceil(32);
            if let (Some(src), Some(dst)) = (frame.get(6..6 + pairs), answer.get_mut(2..2 + pairs))
            {
                mask_copy_pairs(dst, src, [k0, k1, k2, k3]);
            }
            // The frame's first byte is the answer's (FIN and the same opcode).
            answer[0] = b0;
            answer[1] = len as u8;
            r.consumed += 6 + len;
            // RFC 6455 8.1: invalid UTF-8 in a text message fails the connection (1007).
            if kind == MessageKind::Text && simdutf8::basic::from_utf8(&answer[2..2 + len]).is_err()
            {
                self.fail(CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text message");
                return r;
            }
            r.written += 2 + len;
            r.messages += 1;
        }
        // The last frames, exactly.
        while let Some(rest) = input.get(r.consumed..) {
            let Some((kind, len)) = small_frame(rest, shape) else {
                break;
            };
            let [_, _, k0, k1, k2, k3, ..] = *rest else {
                break;
            };
            let Some(answer) = out.get_mut(r.written..) else {
                break;
            };
            // Whole blocks where both sides have the room for them (a frame alone in its
            // segment), else exactly the payload.
            let blocks = 16 * len.div_ceil(16);
            match (rest.get(6..6 + blocks), answer.get_mut(2..2 + blocks)) {
                (Some(src), Some(dst)) => mask_copy_blocks(dst, src, [k0, k1, k2, k3]),
                _ => match (rest.get(6..6 + len), answer.get_mut(2..2 + len)) {
                    (Some(src), Some(dst)) => {
                        dst.copy_from_slice(src);
                        apply_mask(dst, [k0, k1, k2, k3], 0);
                    }
                    _ => break,
                },
            }
            let Some(frame) = answer.get_mut(..2 + len) else {
                break;
            };
            frame[0] = 0x80 | kind.opcode().bits();
            frame[1] = len as u8;
            r.consumed += 6 + len;
            // RFC 6455 8.1: invalid UTF-8 in a text message fails the connection (1007).
            if kind == MessageKind::Text && simdutf8::basic::from_utf8(&frame[2..]).is_err() {
                self.fail(CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text message");
                break;
            }
            r.written += 2 + len;
            r.messages += 1;
        }
        r
    }

    /// Hands an assembled message waiting in `msg` to the `read_with` callback.
    fn deliver_assembled(&mut self, on_message: &mut impl FnMut(MessageKind, &[u8])) {
        if let Some(kind) = self.pending_msg.take() {
            on_message(kind, &self.msg);
            if self.msg.capacity() > KEEP_MSG_CAPACITY {
                self.msg = Vec::new();
            } else {
                self.msg.clear();
            }
        }
    }

    fn read_inner(
        &mut self,
        input: &mut [u8],
        on_message: &mut impl FnMut(MessageKind, &[u8]),
    ) -> usize {
        let mut pos = 0;
        self.message_ready = false;
        while pos < input.len() && !self.message_ready && !self.output_ready {
            match self.rx {
                RxState::Done => break,
                RxState::Header => {
                    if let (true, 0, Some(shape)) =
                        (self.borrow_mode, self.hdr_len, self.small_shape())
                    {
                        if let Some(frame) = small_frame(&input[pos..], shape) {
                            // The common case, without the general header parse.
                            let n = self.lend_small(&mut input[pos..], shape, frame, on_message);
                            if n > 0 {
                                pos += n;
                                continue;
                            }
                        }
                    }
                    let take = (FrameHeader::MAX_LEN - self.hdr_len).min(input.len() - pos);
                    let parsed = if self.hdr_len == 0 {
                        FrameHeader::parse(&input[pos..])
                    } else {
                        self.hdr[self.hdr_len..self.hdr_len + take]
                            .copy_from_slice(&input[pos..pos + take]);
                        FrameHeader::parse(&self.hdr[..self.hdr_len + take])
                    };
                    match parsed {
                        Ok(Some((h, n))) => {
                            pos += n - self.hdr_len;
                            self.hdr_len = 0;
                            let avail = (input.len() - pos) as u64;
                            if self.borrow_mode && self.borrowable(&h) && h.payload_len <= avail {
                                // The whole frame is here: unmask in place, validate, lend.
                                let len = h.payload_len as usize;
                                let payload = &mut input[pos..pos + len];
                                pos += len;
                                if let Some(key) = h.mask {
                                    apply_mask(payload, key, 0);
                                }
                                let kind = if h.opcode == OpCode::Text {
                                    MessageKind::Text
                                } else {
                                    MessageKind::Binary
                                };
                                // RFC 6455 8.1: invalid UTF-8 in a text message fails
                                // the connection (1007).
                                if kind == MessageKind::Text
                                    && simdutf8::basic::from_utf8(payload).is_err()
                                {
                                    self.frame = h;
                                    self.fail(
                                        CloseCode::INVALID_PAYLOAD,
                                        "invalid UTF-8 in text message",
                                    );
                                    continue;
                                }
                                on_message(kind, payload);
                                continue;
                            }
                            self.start_frame(h);
                        }
                        Ok(None) => {
                            if self.hdr_len == 0 {
                                let rest = input.len() - pos;
                                self.hdr[..rest].copy_from_slice(&input[pos..]);
                                self.hdr_len = rest;
                            } else {
                                self.hdr_len += take;
                            }
                            pos = input.len();
                        }
                        Err(_) => {
                            // RFC 6455 5.2: reserved opcodes and bad lengths fail the connection.
                            self.fail(CloseCode::PROTOCOL_ERROR, "invalid frame header");
                        }
                    }
                }
                RxState::Payload { remaining, phase } => {
                    let n = remaining.min((input.len() - pos) as u64) as usize;
                    let chunk = &mut input[pos..pos + n];
                    let phase = match self.frame.mask {
                        Some(key) => apply_mask(chunk, key, phase),
                        None => phase,
                    };
                    pos += n;
                    let remaining = remaining - n as u64;
                    self.rx = RxState::Payload { remaining, phase };
                    self.payload(&input[pos - n..pos]);
                    if remaining == 0 && self.rx != RxState::Done {
                        self.end_frame();
                    }
                }
            }
            self.deliver_assembled(on_message);
        }
        pos
    }

    fn start_frame(&mut self, h: FrameHeader) {
        self.frame = h;
        // RFC 6455 5.2: RSV bits MUST be 0 unless an extension defines them; RFC 7692 6:
        // RSV1 marks the first frame of a compressed data message.
        if h.rsv2 || h.rsv3 {
            return self.fail(CloseCode::PROTOCOL_ERROR, "RSV2/RSV3 set");
        }
        if h.rsv1
            && (self.inflater.is_none()
                || h.opcode.is_control()
                || h.opcode == OpCode::Continuation)
        {
            return self.fail(
                CloseCode::PROTOCOL_ERROR,
                "RSV1 set without permessage-deflate",
            );
        }
        // RFC 6455 5.1: a server MUST close on an unmasked frame; a client on a masked one.
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => {
                return self.fail(CloseCode::PROTOCOL_ERROR, "unmasked client frame")
            }
            (Role::Client, true) => {
                return self.fail(CloseCode::PROTOCOL_ERROR, "masked server frame")
            }
            _ => {}
        }
        if h.opcode.is_control() {
            // RFC 6455 5.5: control frames have payloads of at most 125 bytes and MUST NOT
            // be fragmented.
            if h.payload_len > 125 {
                return self.fail(
                    CloseCode::PROTOCOL_ERROR,
                    "control frame payload over 125 bytes",
                );
            }
            if !h.fin {
                return self.fail(CloseCode::PROTOCOL_ERROR, "fragmented control frame");
            }
            self.control.clear();
        } else {
            match (h.opcode, self.msg_kind) {
                // RFC 6455 5.4: continuation frames only inside a fragmented message.
                (OpCode::Continuation, None) => {
                    return self.fail(CloseCode::PROTOCOL_ERROR, "continuation without a message");
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return self.fail(
                        CloseCode::PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    );
                }
                (OpCode::Text, None) => self.begin_message(MessageKind::Text, h.rsv1),
                (OpCode::Binary, None) => self.begin_message(MessageKind::Binary, h.rsv1),
                _ => {}
            }
            if h.payload_len > self.config.max_frame_size as u64 {
                return self.fail(CloseCode::TOO_BIG, "frame too big");
            }
            if !self.msg_compressed
                && self.msg.len() as u64 + h.payload_len > self.config.max_message_size as u64
            {
                return self.fail(CloseCode::TOO_BIG, "message too big");
            }
            if !self.msg_compressed {
                // Reserve what the header promises, but never trust it for more than 64 KiB.
                self.msg.reserve((h.payload_len as usize).min(64 * 1024));
            }
        }
        self.rx = RxState::Payload {
            remaining: h.payload_len,
            phase: 0,
        };
        if h.payload_len == 0 {
            self.end_frame();
        }
    }

    fn begin_message(&mut self, kind: MessageKind, compressed: bool) {
        self.msg_kind = Some(kind);
        self.msg_compressed = compressed;
        self.msg.clear();
        self.msg_checked = 0;
        self.utf8.reset();
    }

    fn payload(&mut self, data: &[u8]) {
        if self.frame.opcode.is_control() {
            self.control.extend_from_slice(data);
            crate::copy_count::record(crate::copy_count::Site::Message, data.len());
            return;
        }
        let text = self.msg_kind == Some(MessageKind::Text);
        if self.msg_compressed {
            let limit = self.config.max_message_size;
            let Some(inflater) = self.inflater.as_mut() else {
                return self.fail(
                    CloseCode::PROTOCOL_ERROR,
                    "compressed frame without deflate",
                );
            };
            let before = self.msg.len();
            if let Err(e) = inflater.feed(data, &mut self.msg, limit) {
                return self.fail_deflate(e);
            }
            crate::copy_count::record(
                crate::copy_count::Site::Message,
                self.msg.len().saturating_sub(before),
            );
            if text {
                self.check_new_text();
            }
        } else {
            // RFC 6455 8.1: fail fast on the first invalid byte of a text message.
            if text && self.utf8.feed(data).is_err() {
                return self.fail(CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text message");
            }
            self.msg.extend_from_slice(data);
            crate::copy_count::record(crate::copy_count::Site::Message, data.len());
        }
    }

    fn check_new_text(&mut self) {
        let new = self.msg.get(self.msg_checked..).unwrap_or_default();
        if self.utf8.feed(new).is_err() {
            return self.fail(CloseCode::INVALID_PAYLOAD, "invalid UTF-8 in text message");
        }
        self.msg_checked = self.msg.len();
    }

    fn fail_deflate(&mut self, e: DeflateError) {
        match e {
            DeflateError::TooBig => self.fail(CloseCode::TOO_BIG, "decompressed message too big"),
            DeflateError::Corrupt => {
                self.fail(CloseCode::INVALID_PAYLOAD, "invalid compressed data")
            }
        }
    }

    fn end_frame(&mut self) {
        self.rx = RxState::Header;
        match self.frame.opcode {
            OpCode::Ping => {
                let payload = std::mem::take(&mut self.control);
                // RFC 6455 5.5.2: answer a Ping with a Pong carrying the same payload,
                // unless we already sent Close.
                if !self.close_sent {
                    self.queue_frame(OpCode::Pong, true, false, &payload);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => {
                let payload = std::mem::take(&mut self.control);
                self.events.push_back(Event::Pong(payload));
            }
            OpCode::Close => self.on_close(),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if self.frame.fin {
                    self.end_message();
                }
            }
        }
    }

    fn end_message(&mut self) {
        let Some(kind) = self.msg_kind else {
            return;
        };
        if self.msg_compressed {
            let limit = self.config.max_message_size;
            if let Some(inflater) = self.inflater.as_mut() {
                if let Err(e) = inflater.finish_message(&mut self.msg, limit) {
                    return self.fail_deflate(e);
                }
            }
            if kind == MessageKind::Text {
                self.check_new_text();
                if self.failed {
                    return;
                }
            }
        }
        if kind == MessageKind::Text && self.utf8.finish().is_err() {
            return self.fail(
                CloseCode::INVALID_PAYLOAD,
                "text message ends inside a code point",
            );
        }
        self.msg_kind = None;
        if self.borrow_mode {
            // `read_with` hands it to its callback from `msg`.
            self.pending_msg = Some(kind);
            return;
        }
        let data = std::mem::take(&mut self.msg);
        self.events.push_back(Event::Message { kind, data });
        self.message_ready = true;
    }

    fn on_close(&mut self) {
        let payload = std::mem::take(&mut self.control);
        match parse_close_payload(&payload) {
            Ok((code, reason)) => {
                self.close_received = true;
                self.rx = RxState::Done;
                if !self.close_sent {
                    // RFC 6455 5.5.1: reply with a Close frame, typically echoing the code.
                    let echo = code.map(|c| c.0.to_be_bytes().to_vec()).unwrap_or_default();
                    self.queue_frame(OpCode::Close, true, false, &echo);
                    self.close_sent = true;
                }
                self.events.push_back(Event::Close {
                    code,
                    reason: reason.to_string(),
                });
            }
            // RFC 6455 7.4.1/5.5.1: invalid codes and reasons are protocol errors.
            Err(_) => self.fail(CloseCode::PROTOCOL_ERROR, "invalid close frame"),
        }
    }

    /// Fails the connection (RFC 6455 7.1.7): queue a Close with `code`, stop reading.
    fn fail(&mut self, code: CloseCode, reason: &'static str) {
        if self.rx == RxState::Done {
            return;
        }
        self.rx = RxState::Done;
        self.failed = true;
        if !self.close_sent {
            self.queue_frame(OpCode::Close, true, false, &code.0.to_be_bytes());
            self.close_sent = true;
        }
        self.msg = Vec::new();
        self.events.push_back(Event::Failed { code, reason });
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*: cheap, seeded by the caller from a good random source.
        let mut x = self.mask_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.mask_state = x;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let b = (v >> 32) as u32;
        b.to_ne_bytes()
    }

    fn queue_frame(&mut self, opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8]) {
        let mut h = FrameHeader::new(opcode, payload.len() as u64);
        h.fin = fin;
        h.rsv1 = rsv1;
        if self.role == Role::Client {
            // RFC 6455 5.3: a client MUST mask every frame it sends.
            h.mask = Some(self.next_mask());
        }
        if self.out_start > 0 && self.out_start * 2 >= self.out.len() {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        encode_frame(&mut self.out, h, payload);
        // In `read_with`: stop so that this goes out before the application's answers.
        self.output_ready |= self.borrow_mode;
    }

    /// Queues a message as one frame (compressed when negotiated and large enough).
    pub fn send(&mut self, kind: MessageKind, data: &[u8]) -> Result<(), SendError> {
        self.send_fragmented(kind, data, usize::MAX)
    }

    /// Queues a message split into frames carrying at most `fragment_size` payload bytes
    /// each (of the compressed payload, when compressing).
    pub fn send_fragmented(
        &mut self,
        kind: MessageKind,
        data: &[u8],
        fragment_size: usize,
    ) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closing);
        }
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let (payload, compressed) = match self.deflater.as_mut() {
            Some(d) if data.len() >= self.compress_min => {
                if d.compress_message(data, &mut scratch).is_err() {
                    self.scratch = scratch;
                    return Err(SendError::Compress);
                }
                (&scratch[..], true)
            }
            _ => (data, false),
        };
        let size = fragment_size.max(1);
        if payload.is_empty() {
            self.queue_frame(opcode, true, compressed, &[]);
        } else {
            let count = payload.len().div_ceil(size);
            for (i, chunk) in payload.chunks(size).enumerate() {
                let op = if i == 0 { opcode } else { OpCode::Continuation };
                // RFC 7692 6: RSV1 only on the first frame of a compressed message.
                self.queue_frame(op, i + 1 == count, compressed && i == 0, chunk);
            }
        }
        self.scratch = scratch;
        Ok(())
    }

    /// Queues a Ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.control_frame(OpCode::Ping, payload)
    }

    /// Queues an unsolicited Pong (a heartbeat, RFC 6455 5.5.3).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.control_frame(OpCode::Pong, payload)
    }

    fn control_frame(&mut self, op: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closing);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlTooLong);
        }
        self.queue_frame(op, true, false, payload);
        Ok(())
    }

    /// Starts the closing handshake with `code` and a reason (truncated to fit 125 bytes).
    ///
    /// Codes that may not appear on the wire (1005, 1006, 1015, ...) send an empty Close.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closing);
        }
        let mut payload = Vec::with_capacity(125);
        if code.is_valid_on_wire() {
            payload.extend_from_slice(&code.0.to_be_bytes());
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            payload.extend_from_slice(&reason.as_bytes()[..end]);
        }
        self.queue_frame(OpCode::Close, true, false, &payload);
        self.close_sent = true;
        Ok(())
    }

    /// The next event, if any. Call after each [`Connection::read`] until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written to the transport.
    pub fn pending_output(&self) -> &[u8] {
        self.out.get(self.out_start..).unwrap_or_default()
    }

    /// Marks `n` bytes of [`Connection::pending_output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
    }

    /// Copies pending output into `buf`, consuming it; returns the bytes written.
    /// Call whenever the transport can take data.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> usize {
        let pending = self.pending_output();
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        crate::copy_count::record(crate::copy_count::Site::Transmit, n);
        self.consume_output(n);
        n
    }

    /// Writes the header of a whole, uncompressed data message of `payload_len` bytes
    /// into the start of `buf` and returns its length; the caller writes the payload
    /// right after it (e.g. both straight into the TCP send buffer with
    /// `tcp::Stack::send_with`, sized with [`crate::frame::header_len`]), so an echo
    /// needs no intermediate buffer. Server frames are unmasked (RFC 6455 5.1).
    ///
    /// Refused with [`SendError::Closing`] after a Close was sent (RFC 6455 5.5.1),
    /// [`SendError::OutputPending`] while [`Connection::pending_output`] is not empty
    /// (write that first, to keep the frame order), [`SendError::MaskRequired`] for a
    /// client, and [`SendError::BufferTooSmall`].
    pub fn write_message_header(
        &self,
        buf: &mut [u8],
        kind: MessageKind,
        payload_len: usize,
    ) -> Result<usize, SendError> {
        if self.close_sent {
            return Err(SendError::Closing);
        }
        if !self.pending_output().is_empty() {
            return Err(SendError::OutputPending);
        }
        if self.role == Role::Client {
            return Err(SendError::MaskRequired);
        }
        crate::frame::write_header(buf, kind.opcode(), payload_len, None)
            .map_err(|_| SendError::BufferTooSmall)
    }

    /// Whether the closing handshake is complete or the connection failed: no more
    /// frames will be read. Close the transport once the output is drained
    /// (RFC 6455 7.1.1: the server closes the TCP connection first).
    pub fn is_closed(&self) -> bool {
        self.failed || (self.close_sent && self.close_received)
    }

    /// Whether [`Connection::read`] still processes input (no Close received, not failed).
    pub fn is_reading(&self) -> bool {
        self.rx != RxState::Done
    }

    /// Whether we sent a Close frame.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The role this engine plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether permessage-deflate is active.
    pub fn compression(&self) -> bool {
        self.deflater.is_some()
    }
}

#[cfg(test)]
mod read_with_tests;
#[cfg(test)]
mod tests;
