//! Minimal RFC 6455 framing for the load generator.
//!
//! The client side (upgrade request, `Sec-WebSocket-Accept` check, masked frames) drives the
//! servers under test; the server side (upgrade request parsing, unmasking) serves the
//! generator's own loopback responder and the fastwebsockets reference server's handshake.
//! Parsing never panics and returns typed errors.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID appended to the key before hashing (RFC 6455 1.3).
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest opening-handshake message accepted from a peer, in bytes.
pub const MAX_HANDSHAKE_LEN: usize = 8 * 1024;

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// What was wrong with an opening handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The message is not valid HTTP/1.1.
    #[error("malformed HTTP message")]
    Malformed,
    /// The message is larger than [`MAX_HANDSHAKE_LEN`].
    #[error("handshake longer than {MAX_HANDSHAKE_LEN} bytes")]
    TooLarge,
    /// The server answered with a status other than 101.
    #[error("server answered status {0} instead of 101")]
    Status(u16),
    /// The request was not a GET.
    #[error("request method is not GET")]
    Method,
    /// `Upgrade: websocket` is missing.
    #[error("missing or wrong Upgrade header")]
    Upgrade,
    /// `Connection: Upgrade` is missing.
    #[error("missing or wrong Connection header")]
    Connection,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    #[error("missing or wrong Sec-WebSocket-Accept")]
    Accept,
    /// `Sec-WebSocket-Key` is missing or not 16 bytes in base64.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported Sec-WebSocket-Version")]
    Version,
    /// The server selected an extension or subprotocol that was not offered.
    #[error("server selected an extension or subprotocol that was not offered")]
    NotOffered,
}

/// What was wrong with a frame header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame longer than 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    ControlFragmented,
    /// The most significant bit of a 64-bit length is set.
    #[error("64-bit payload length with the most significant bit set")]
    LengthMsb,
    /// The payload is larger than the configured bound.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// Configured bound.
        max: u64,
    },
    /// A masked frame where an unmasked one is required (server to client).
    #[error("masked frame from the server")]
    UnexpectedMask,
    /// An unmasked frame where a masked one is required (client to server).
    #[error("unmasked frame from the client")]
    MissingMask,
}

/// Frame opcodes (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text data.
    Text,
    /// Binary data.
    Binary,
    /// Close control frame.
    Close,
    /// Ping control frame.
    Ping,
    /// Pong control frame.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Result<Self, FrameError> {
        match bits {
            0x0 => Ok(Self::Continuation),
            0x1 => Ok(Self::Text),
            0x2 => Ok(Self::Binary),
            0x8 => Ok(Self::Close),
            0x9 => Ok(Self::Ping),
            0xA => Ok(Self::Pong),
            other => Err(FrameError::ReservedOpcode(other)),
        }
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Which side of the connection is parsing, which decides the masking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Parsing frames from a server: they must be unmasked.
    Client,
    /// Parsing frames from a client: they must be masked.
    Server,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// Frame type.
    pub opcode: Opcode,
    /// Masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Header length in bytes (payload starts here).
    pub header_len: usize,
}

/// Parses a frame header at the start of `buf`; `Ok(None)` means more bytes are needed.
///
/// `max_payload` bounds the payload of data frames; control frames are bounded to 125.
pub fn parse_header(
    buf: &[u8],
    role: Role,
    max_payload: usize,
) -> Result<Option<FrameHeader>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    // RFC 6455 5.2: RSV1-3 MUST be 0 unless an extension defines them.
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        // RFC 6455 5.1: a client MUST close on a masked frame from the server.
        (Role::Client, true) => return Err(FrameError::UnexpectedMask),
        // RFC 6455 5.1: a server MUST close on an unmasked frame from the client.
        (Role::Server, false) => return Err(FrameError::MissingMask),
        _ => {}
    }
    let len7 = b1 & 0x7F;
    let (len, mut pos): (u64, usize) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                // RFC 6455 5.2: the most significant bit MUST be 0.
                if len >> 63 != 0 {
                    return Err(FrameError::LengthMsb);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        // RFC 6455 5.5: control frames MUST have a payload of at most 125 bytes and
        // MUST NOT be fragmented.
        if len > 125 {
            return Err(FrameError::ControlTooLong);
        }
        if !fin {
            return Err(FrameError::ControlFragmented);
        }
    } else if len > max_payload as u64 {
        return Err(FrameError::TooLarge {
            len,
            max: max_payload as u64,
        });
    }
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(b) => {
                pos += 4;
                Some([b[0], b[1], b[2], b[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    // Bounded above by max_payload or 125, so it fits in usize.
    let payload_len = usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: max_payload as u64,
    })?;
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// Appends a frame header to `out`.
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: usize,
) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    // RFC 6455 5.2: the minimal number of bytes MUST be used to encode the length.
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends a whole frame; with `mask`, the payload is masked as it is copied.
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, mask: Option<[u8; 4]>, payload: &[u8]) {
    write_header(out, true, opcode, mask, payload.len());
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// XORs `buf` with `mask` (RFC 6455 5.3); `offset` is the position of `buf[0]` in the payload.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = [0u8; 4];
    for (i, r) in rotated.iter_mut().enumerate() {
        *r = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(rotated);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(a) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= rotated[i % 4];
    }
}

/// The `Sec-WebSocket-Accept` value for a key (RFC 6455 4.2.2, step 5.4).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(h.finalize())
}

/// A fresh `Sec-WebSocket-Key` from 16 random bytes (RFC 6455 4.1).
pub fn new_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

/// The client's opening handshake for path `/`.
pub fn upgrade_request(host: &str, key: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

fn header_has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value)
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// Checks the server's answer to [`upgrade_request`]; `Ok(Some(n))` when complete, with `n`
/// the handshake's length (frames may follow in the same buffer), `Ok(None)` when more bytes
/// are needed.
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HANDSHAKE_LEN => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    // RFC 6455 4.1: a status other than 101 means the handshake has not completed.
    match resp.code {
        Some(101) => {}
        Some(code) => return Err(HandshakeError::Status(code)),
        None => return Err(HandshakeError::Malformed),
    }
    let find = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    // RFC 6455 4.1: the client MUST fail the connection if Upgrade is not "websocket",
    // Connection lacks "Upgrade", or Sec-WebSocket-Accept is not the expected value.
    if !find("upgrade").is_some_and(|v| header_has_token(v, "websocket")) {
        return Err(HandshakeError::Upgrade);
    }
    if !find("connection").is_some_and(|v| header_has_token(v, "upgrade")) {
        return Err(HandshakeError::Connection);
    }
    let expected = accept_key(key);
    if find("sec-websocket-accept").map(|v| v.trim_ascii()) != Some(expected.as_bytes()) {
        return Err(HandshakeError::Accept);
    }
    // RFC 6455 4.1: extensions or a subprotocol not offered MUST fail the connection.
    if find("sec-websocket-extensions").is_some() || find("sec-websocket-protocol").is_some() {
        return Err(HandshakeError::NotOffered);
    }
    Ok(Some(n))
}

/// A parsed client opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Length of the request in bytes.
    pub len: usize,
    /// The `Sec-WebSocket-Key` value.
    pub key: String,
}

/// Parses a client's opening handshake (RFC 6455 4.2.1); `Ok(None)` when more bytes are needed.
pub fn parse_upgrade_request(buf: &[u8]) -> Result<Option<UpgradeRequest>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HANDSHAKE_LEN => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    // RFC 6455 4.2.1: the method MUST be GET.
    if req.method != Some("GET") {
        return Err(HandshakeError::Method);
    }
    let find = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !find("upgrade").is_some_and(|v| header_has_token(v, "websocket")) {
        return Err(HandshakeError::Upgrade);
    }
    if !find("connection").is_some_and(|v| header_has_token(v, "upgrade")) {
        return Err(HandshakeError::Connection);
    }
    if find("sec-websocket-version").map(|v| v.trim_ascii()) != Some(b"13".as_slice()) {
        return Err(HandshakeError::Version);
    }
    let key = find("sec-websocket-key")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .ok_or(HandshakeError::Key)?;
    // RFC 6455 4.2.1: the key, base64-decoded, MUST be 16 bytes long.
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(Some(UpgradeRequest {
        len: n,
        key: key.to_string(),
    }))
}

/// The server's `101 Switching Protocols` answer for a client key.
pub fn upgrade_response(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc_sample_matches() {
        // RFC 6455 1.3 example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_valid_accept_completes() {
        let key = new_key([7; 16]);
        let mut resp = upgrade_response(&key);
        let n = resp.len();
        resp.extend_from_slice(&[0x82, 0]);
        assert_eq!(parse_upgrade_response(&resp, &key), Ok(Some(n)));
    }

    #[test]
    fn response_partial_needs_more() {
        let key = new_key([7; 16]);
        let resp = upgrade_response(&key);
        assert_eq!(parse_upgrade_response(&resp[..20], &key), Ok(None));
    }

    #[test]
    fn response_wrong_accept_rejected() {
        let resp = upgrade_response(&new_key([1; 16]));
        assert_eq!(
            parse_upgrade_response(&resp, &new_key([2; 16])),
            Err(HandshakeError::Accept)
        );
    }

    #[test]
    fn response_status_403_rejected() {
        let resp = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(resp, "x"),
            Err(HandshakeError::Status(403))
        );
    }

    #[test]
    fn request_roundtrip_yields_key() {
        let key = new_key([9; 16]);
        let req = upgrade_request("h:1", &key);
        let parsed = parse_upgrade_request(&req).unwrap().unwrap();
        assert_eq!(parsed.key, key);
        assert_eq!(parsed.len, req.len());
    }

    #[test]
    fn request_short_key_rejected() {
        let req = upgrade_request("h", "c2hvcnQ=");
        assert_eq!(parse_upgrade_request(&req), Err(HandshakeError::Key));
    }

    #[test]
    fn header_masked_from_server_rejected() {
        assert_eq!(
            parse_header(&[0x82, 0x80, 1, 2, 3, 4], Role::Client, 100),
            Err(FrameError::UnexpectedMask)
        );
    }

    #[test]
    fn header_unmasked_from_client_rejected() {
        assert_eq!(
            parse_header(&[0x82, 0x00], Role::Server, 100),
            Err(FrameError::MissingMask)
        );
    }

    #[test]
    fn header_reserved_bits_rejected() {
        assert_eq!(
            parse_header(&[0xC2, 0x00], Role::Client, 100),
            Err(FrameError::ReservedBits)
        );
    }

    #[test]
    fn header_oversized_rejected() {
        assert!(matches!(
            parse_header(&[0x82, 126, 0x10, 0x00], Role::Client, 100),
            Err(FrameError::TooLarge { len: 4096, .. })
        ));
    }

    #[test]
    fn header_fragmented_ping_rejected() {
        assert_eq!(
            parse_header(&[0x09, 0x00], Role::Client, 100),
            Err(FrameError::ControlFragmented)
        );
    }

    #[test]
    fn header_msb_length_rejected() {
        let mut b = vec![0x82, 127];
        b.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            parse_header(&b, Role::Client, usize::MAX),
            Err(FrameError::LengthMsb)
        );
    }

    #[test]
    fn header_truncated_needs_more() {
        assert_eq!(
            parse_header(&[0x82, 127, 0], Role::Client, 1 << 20),
            Ok(None)
        );
        assert_eq!(parse_header(&[0x82], Role::Client, 100), Ok(None));
    }

    #[test]
    fn frame_masked_roundtrip_restores_payload() {
        for len in [0usize, 1, 7, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, Opcode::Binary, Some([1, 2, 3, 4]), &payload);
            let h = parse_header(&out, Role::Server, 1 << 20).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(h.header_len + len, out.len());
            let body = &mut out[h.header_len..];
            apply_mask(body, h.mask.unwrap(), 0);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn mask_split_offsets_match_whole() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let orig: Vec<u8> = (0..37u8).collect();
        let mut whole = orig.clone();
        apply_mask(&mut whole, mask, 0);
        let mut split = orig.clone();
        let (a, b) = split.split_at_mut(13);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 13);
        assert_eq!(whole, split);
    }
}
