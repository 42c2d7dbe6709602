//! Frame header codec (RFC 6455 5.2): parse and emit over byte slices.

use crate::mask::apply_mask;

/// A frame's opcode (RFC 6455 5.2, 11.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode; `None` for the reserved values 0x3-0x7 and 0xB-0xF.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are Close, Ping and Pong (RFC 6455 5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// What was wrong with a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The opcode is one of the reserved values.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// The payload length was not encoded in the minimal number of bytes.
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// The most significant bit of a 64-bit payload length was set.
    #[error("64-bit payload length with the most significant bit set")]
    LengthTooLarge,
    /// The output buffer is too small for the header.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// A parsed frame header; the payload follows it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1 (used by permessage-deflate on the first frame of a message).
    pub rsv1: bool,
    /// RSV2, always 0 without an extension that defines it.
    pub rsv2: bool,
    /// RSV3, always 0 without an extension that defines it.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The longest possible header: 2 + 8 (length) + 4 (mask) bytes.
    pub const MAX_LEN: usize = 14;

    /// A header with FIN set, no RSV bits and no mask.
    pub fn new(opcode: OpCode, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header, otherwise the header and
    /// its length in bytes. Never panics.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::ReservedOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([bytes[0], bytes[1]]) as u64;
                // RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length".
                if len < 126 {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut raw = [0u8; 8];
                raw.copy_from_slice(bytes);
                let len = u64::from_be_bytes(raw);
                // RFC 6455 5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(FrameError::LengthTooLarge);
                }
                if len <= u16::MAX as u64 {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        let mask = if masked {
            let Some(bytes) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                rsv2: b0 & 0x20 != 0,
                rsv3: b0 & 0x10 != 0,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// The encoded length of this header in bytes (2 to 14).
    pub fn header_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header into the start of `buf` with the minimal length encoding.
    ///
    /// Returns the number of bytes written, or [`FrameError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, FrameError> {
        let n = self.header_len();
        if buf.len() < n {
            return Err(FrameError::BufferTooSmall);
        }
        if self.payload_len >> 63 != 0 {
            return Err(FrameError::LengthTooLarge);
        }
        buf[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            len @ 0..=125 => {
                buf[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                buf[1] = mask_bit | 126;
                buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                buf[1] = mask_bit | 127;
                buf[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            buf[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        Ok(pos)
    }
}

/// The length of the header of a final, RSV-free frame with `payload_len` bytes of
/// payload (2 to 14 bytes): size the buffer for [`write_header`] plus the payload.
#[inline]
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let len = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    if masked {
        len + 4
    } else {
        len
    }
}

/// Writes the header of a final (FIN), RSV-free frame of `opcode` carrying `payload_len`
/// bytes into the start of `buf`, masked with `mask` if given (a client's frames; the
/// caller then masks the payload with [`crate::mask::apply_mask`] at phase 0), and
/// returns its length: the payload goes right after it. Server frames are unmasked
/// (`mask: None`). This lets an application write header and payload straight into a
/// transport buffer (e.g. `tcp::Stack::send_with`) without an intermediate copy.
#[inline]
pub fn write_header(
    buf: &mut [u8],
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> Result<usize, FrameError> {
    // The common case (a server's small frame), written directly.
    if let (None, 0..=125, [b0, b1, ..]) = (mask, payload_len, &mut *buf) {
        *b0 = 0x80 | opcode.bits();
        *b1 = payload_len as u8;
        return Ok(2);
    }
    let mut h = FrameHeader::new(opcode, payload_len as u64);
    h.mask = mask;
    h.emit(buf)
}

/// Appends a whole frame (header and payload, masked if `header.mask` is set) to `out`.
///
/// The payload is copied once, straight into its place in `out`, and masked there.
/// `header.payload_len` is overwritten with `payload.len()`.
pub fn encode_frame(out: &mut Vec<u8>, mut header: FrameHeader, payload: &[u8]) {
    header.payload_len = payload.len() as u64;
    let start = out.len();
    let hlen = header.header_len();
    out.resize(start + hlen, 0);
    // The buffer was sized to header_len just above, so emit cannot fail.
    let _ = header.emit(&mut out[start..]);
    let body = out.len();
    out.extend_from_slice(payload);
    crate::copy_count::record(crate::copy_count::Site::Output, payload.len());
    if let Some(key) = header.mask {
        apply_mask(&mut out[body..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_len_matches_emitted_header() {
        for len in [0usize, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut buf = [0u8; 14];
                let n = write_header(&mut buf, OpCode::Binary, len, mask).unwrap();
                assert_eq!(
                    header_len(len, mask.is_some()),
                    n,
                    "len {len} mask {mask:?}"
                );
                let (h, parsed) = FrameHeader::parse(&buf[..n]).unwrap().unwrap();
                assert_eq!((parsed, h.payload_len, h.mask), (n, len as u64, mask));
                assert!(h.fin && h.opcode == OpCode::Binary);
            }
        }
    }

    #[test]
    fn header_partial_returns_none() {
        assert_eq!(FrameHeader::parse(&[]), Ok(None));
        assert_eq!(FrameHeader::parse(&[0x81]), Ok(None));
        assert_eq!(FrameHeader::parse(&[0x81, 126, 0]), Ok(None));
        assert_eq!(FrameHeader::parse(&[0x81, 127, 0, 0, 0]), Ok(None));
        assert_eq!(FrameHeader::parse(&[0x81, 0x85, 1, 2]), Ok(None));
    }

    #[test]
    fn header_reserved_opcode_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(FrameError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn header_non_minimal_length_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 126, 0, 125]),
            Err(FrameError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(FrameError::NonMinimalLength)
        );
    }

    #[test]
    fn header_length_msb_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 1, 0, 0]),
            Err(FrameError::LengthTooLarge)
        );
    }

    #[test]
    fn header_rfc_masked_hello_parsed() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = FrameHeader::parse(&wire).unwrap().unwrap();
        assert_eq!(n, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn emit_small_buffer_error() {
        let h = FrameHeader::new(OpCode::Binary, 70000);
        assert_eq!(h.emit(&mut [0u8; 9]), Err(FrameError::BufferTooSmall));
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    fn length() -> impl Strategy<Value = u64> {
        // One value from each length class: 7-bit, 16-bit and 64-bit.
        prop_oneof![0u64..=125, 126u64..=0xffff, 0x1_0000u64..=(u64::MAX >> 1)]
    }

    proptest! {
        #[test]
        fn header_roundtrip_every_opcode_and_length_class(
            op in opcode(), len in length(), fin: bool, rsv1: bool, rsv2: bool, rsv3: bool,
            mask in proptest::option::of(any::<[u8; 4]>()),
        ) {
            let h = FrameHeader { fin, rsv1, rsv2, rsv3, opcode: op, mask, payload_len: len };
            let mut buf = [0u8; FrameHeader::MAX_LEN];
            let n = h.emit(&mut buf).unwrap();
            prop_assert_eq!(n, h.header_len());
            prop_assert_eq!(FrameHeader::parse(&buf[..n]).unwrap(), Some((h, n)));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..n {
                prop_assert_eq!(FrameHeader::parse(&buf[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn frame_roundtrip_payload_unmasked(
            op in opcode(),
            payload in proptest::collection::vec(any::<u8>(), 0..70_000usize),
            mask in proptest::option::of(any::<[u8; 4]>()),
        ) {
            let mut out = Vec::new();
            let mut h = FrameHeader::new(op, 0);
            h.mask = mask;
            encode_frame(&mut out, h, &payload);
            let (parsed, n) = FrameHeader::parse(&out).unwrap().unwrap();
            prop_assert_eq!(parsed.payload_len as usize, payload.len());
            let body = &mut out[n..];
            if let Some(key) = parsed.mask {
                apply_mask(body, key, 0);
            }
            prop_assert_eq!(&*body, &payload[..]);
        }

        #[test]
        fn header_parse_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::parse(&bytes);
        }
    }
}
