//! permessage-deflate (RFC 7692): negotiation and per-connection compression contexts.
//!
//! Compression uses flate2's pure-Rust miniz_oxide backend, which only compresses with a
//! 32 KiB (15-bit) window. When the peer limits our window to fewer bits, messages are
//! sent as stored (uncompressed) deflate blocks, which reference no earlier data and so
//! honour any window size. Decompression accepts every window size.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Local permessage-deflate settings (the config switch and our requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Negotiate permessage-deflate at all.
    pub enabled: bool,
    /// Compression level 0-9 for outgoing messages.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed (RSV1 clear).
    pub min_size: usize,
    /// As server: ask the client to reset its context per message (saves our memory).
    pub request_client_no_context_takeover: bool,
    /// As server: reset our own compression context per message.
    pub server_no_context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            level: 1,
            min_size: 0,
            request_client_no_context_takeover: false,
            server_no_context_takeover: false,
        }
    }
}

/// The parameters agreed in the handshake (RFC 7692 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, 8-15 bits.
    pub server_max_window_bits: u8,
    /// The client's LZ77 window, 8-15 bits.
    pub client_max_window_bits: u8,
    /// Compression level for our side.
    pub level: u32,
    /// Messages shorter than this are sent uncompressed.
    pub min_size: usize,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            min_size: 0,
        }
    }
}

/// One extension from a `Sec-WebSocket-Extensions` header: a name and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// Parameters in order: name and optional value (quotes removed).
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

/// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 9.1): a comma-separated list of
/// extensions, each with `;`-separated `name[=value]` parameters. `None` if malformed.
pub fn parse_extensions(value: &str) -> Option<Vec<Extension<'_>>> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().map(str::trim).unwrap_or_default();
        if name.is_empty() {
            // Empty list elements are allowed by the #rule; skip them.
            if item.trim().is_empty() {
                continue;
            }
            return None;
        }
        if !is_token(name) {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .unwrap_or(v);
                    if !is_token(v) {
                        return None;
                    }
                    (k.trim(), Some(v))
                }
                None => (p.trim(), None),
            };
            if !is_token(k) {
                return None;
            }
            params.push((k, v));
        }
        out.push(Extension { name, params });
    }
    Some(out)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn window_bits(v: &str) -> Option<u8> {
    // RFC 7692 7.1.2.1: a decimal integer 8-15 with no leading zeros.
    if v.starts_with('0') {
        return None;
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Some(n),
        _ => None,
    }
}

/// Server side: picks the first permessage-deflate offer we can honour.
///
/// Returns the agreed parameters and the response extension string, or `None` to decline.
pub fn negotiate_server(
    offers: &[Extension<'_>],
    config: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    if !config.enabled {
        return None;
    }
    'offers: for offer in offers.iter().filter(|e| e.name == "permessage-deflate") {
        let mut params = DeflateParams {
            level: config.level,
            min_size: config.min_size,
            server_no_context_takeover: config.server_no_context_takeover,
            client_no_context_takeover: config.request_client_no_context_takeover,
            ..DeflateParams::default()
        };
        let mut seen = [false; 4];
        let mut server_bits_offered = false;
        for &(k, v) in &offer.params {
            let idx = match k {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                // RFC 7692 7.1: decline an offer with an unknown parameter.
                _ => continue 'offers,
            };
            // RFC 7692 7.1: decline an offer with a duplicated parameter.
            if seen[idx] {
                continue 'offers;
            }
            seen[idx] = true;
            match (idx, v) {
                (0, None) => params.server_no_context_takeover = true,
                (1, None) => params.client_no_context_takeover = true,
                (2, Some(v)) => match window_bits(v) {
                    Some(bits) => {
                        params.server_max_window_bits = bits;
                        server_bits_offered = true;
                    }
                    None => continue 'offers,
                },
                (3, None) => {}
                // We decompress any window size, so the client keeps the value it offered;
                // RFC 7692 7.1.2.2 lets the server omit client_max_window_bits.
                (3, Some(v)) => match window_bits(v) {
                    Some(bits) => params.client_max_window_bits = bits,
                    None => continue 'offers,
                },
                _ => continue 'offers,
            }
        }
        let mut response = String::from("permessage-deflate");
        if params.server_no_context_takeover {
            response.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if server_bits_offered {
            // RFC 7692 7.1.2.1: we MUST use a window no larger than the offered value.
            response.push_str(&format!(
                "; server_max_window_bits={}",
                params.server_max_window_bits
            ));
        }
        return Some((params, response));
    }
    None
}

/// The offer a client sends: plain permessage-deflate, telling the server that it may limit
/// our window (RFC 7692 7.1.2.2).
pub fn client_offer(config: &DeflateConfig) -> Option<String> {
    config
        .enabled
        .then(|| String::from("permessage-deflate; client_max_window_bits"))
}

/// Client side: checks the server's response to our offer (RFC 7692 7.1).
///
/// `Err(())` means the response is invalid and the client MUST fail the connection.
#[allow(clippy::result_unit_err)]
pub fn accept_client(ext: &Extension<'_>, config: &DeflateConfig) -> Result<DeflateParams, ()> {
    if ext.name != "permessage-deflate" {
        return Err(());
    }
    let mut params = DeflateParams {
        level: config.level,
        min_size: config.min_size,
        ..DeflateParams::default()
    };
    let mut seen = [false; 4];
    for &(k, v) in &ext.params {
        let idx = match k {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err(()),
        };
        if seen[idx] {
            return Err(());
        }
        seen[idx] = true;
        match (idx, v) {
            (0, None) => params.server_no_context_takeover = true,
            (1, None) => params.client_no_context_takeover = true,
            (2, Some(v)) => params.server_max_window_bits = window_bits(v).ok_or(())?,
            (3, Some(v)) => params.client_max_window_bits = window_bits(v).ok_or(())?,
            _ => return Err(()),
        }
    }
    Ok(params)
}

/// Compression or decompression failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeflateError {
    /// The compressed data is not valid deflate.
    #[error("invalid compressed data")]
    Corrupt,
    /// The decompressed message exceeds the size limit (RFC 6455 7.4.1: 1009).
    #[error("decompressed message exceeds the limit")]
    TooBig,
}

/// RFC 7692 7.2.1: the four octets every sync flush ends with.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty stored block after a byte-aligned sync flush: header byte, LEN, NLEN.
const EMPTY_STORED_BLOCK: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

/// Our outgoing compression context.
#[derive(Debug)]
pub struct Deflater {
    compress: Compress,
    reset_per_message: bool,
}

impl Deflater {
    /// A compressor for a window of `window_bits` (stored blocks below 15) and `level`.
    pub fn new(window_bits: u8, level: u32, no_context_takeover: bool) -> Deflater {
        let level = if window_bits < 15 {
            Compression::none()
        } else {
            Compression::new(level.min(9))
        };
        Deflater {
            compress: Compress::new(level, false),
            reset_per_message: no_context_takeover,
        }
    }

    /// Compresses one whole message and appends it to `out` (RFC 7692 7.2.1).
    pub fn compress_message(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeflateError> {
        let start = out.len();
        let mut consumed = 0usize;
        while consumed < input.len() {
            if out.capacity() - out.len() < 1024 {
                out.reserve((input.len() - consumed) / 2 + 1024);
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&input[consumed..], out, FlushCompress::None)
                .map_err(|_| DeflateError::Corrupt)?;
            consumed += (self.compress.total_in() - before) as usize;
        }
        // miniz may return from a flush with the flush still pending (input consumed into
        // its lookahead). Flush until a call yields nothing but an empty stored block
        // (00 00 00 ff ff): everything before it is then out, and the stream ends in the
        // sync marker either way. This costs one extra byte on the wire per message.
        let mut rounds = 0;
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(64 * 1024);
            }
            let before = out.len();
            self.compress
                .compress_vec(&[], out, FlushCompress::Sync)
                .map_err(|_| DeflateError::Corrupt)?;
            if out[before..] == EMPTY_STORED_BLOCK {
                break;
            }
            rounds += 1;
            if rounds > 4096 {
                return Err(DeflateError::Corrupt);
            }
        }
        // RFC 7692 7.2.1: remove the 0x00 0x00 0xff 0xff tail of the sync flush.
        out.truncate(out.len() - SYNC_TAIL.len());
        if out.len() == start {
            // RFC 7692 7.2.3.6: an empty message compresses to a single 0x00 octet.
            out.push(0);
        }
        if self.reset_per_message {
            // RFC 7692 7.1.1.1: no context takeover - start each message afresh.
            self.compress.reset();
        }
        Ok(())
    }
}

/// Our incoming decompression context with a bound on the output size.
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    reset_per_message: bool,
    stream_ended: bool,
}

impl Inflater {
    /// A decompressor; any window size from 8 to 15 bits is accepted.
    pub fn new(no_context_takeover: bool) -> Inflater {
        Inflater {
            decompress: Decompress::new(false),
            reset_per_message: no_context_takeover,
            stream_ended: false,
        }
    }

    /// Decompresses the next piece of a message's payload, appending to `out` and failing
    /// with [`DeflateError::TooBig`] once `out` would exceed `limit` bytes.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DeflateError> {
        self.run(input, out, limit, FlushDecompress::None)
    }

    /// Ends a message: feeds the sync tail the sender stripped (RFC 7692 7.2.2).
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), DeflateError> {
        let result = self.run(&SYNC_TAIL, out, limit, FlushDecompress::Sync);
        if self.reset_per_message || self.stream_ended {
            self.decompress.reset(false);
            self.stream_ended = false;
        }
        result
    }

    fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        flush: FlushDecompress,
    ) -> Result<(), DeflateError> {
        let mut consumed = 0usize;
        loop {
            if self.stream_ended {
                // A final block ended the stream; anything after it is ignored.
                return Ok(());
            }
            if out.len() > limit {
                return Err(DeflateError::TooBig);
            }
            if out.capacity() == out.len() {
                let want = ((input.len() - consumed) * 4).clamp(1024, 256 * 1024);
                out.reserve_exact(want.min(limit + 1 - out.len()));
            }
            let before_in = self.decompress.total_in();
            let before_out = self.decompress.total_out();
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, flush)
                .map_err(|_| DeflateError::Corrupt)?;
            let used = (self.decompress.total_in() - before_in) as usize;
            let made = self.decompress.total_out() - before_out;
            consumed += used;
            if out.len() > limit {
                return Err(DeflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                return Ok(());
            }
            let full = out.len() == out.capacity();
            if consumed >= input.len() && !full {
                return Ok(());
            }
            if used == 0 && made == 0 && !full {
                // No progress possible without more input.
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn roundtrip(bits: u8, data: &[u8]) -> Vec<u8> {
        let mut d = Deflater::new(bits, 6, false);
        let mut c = Vec::new();
        d.compress_message(data, &mut c).unwrap();
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        i.feed(&c, &mut out, 1 << 24).unwrap();
        i.finish_message(&mut out, 1 << 24).unwrap();
        out
    }

    #[test]
    fn deflater_message_roundtrip_default_window() {
        let data: Vec<u8> = b"hello hello hello websocket ".repeat(1000);
        assert_eq!(roundtrip(15, &data), data);
        assert_eq!(roundtrip(15, b""), b"");
    }

    #[test]
    fn deflater_small_window_stored_blocks_roundtrip() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(roundtrip(9, &data), data);
    }

    #[test]
    fn deflater_reused_large_buffer_random_messages_roundtrip() {
        // Regression: with a large output buffer miniz returned from the sync flush with
        // the flush still pending, truncating the message and corrupting the next one.
        let mut d = Deflater::new(15, 1, false);
        let mut i = Inflater::new(false);
        let mut c = Vec::with_capacity(4 << 20);
        let mut x = 12345u64;
        for n in [1usize, 125, 126, 65535, 65536, 1 << 20, 1 << 20] {
            let data: Vec<u8> = (0..n)
                .map(|k| {
                    if k % 3 == 0 {
                        b'a'
                    } else {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    }
                })
                .collect();
            c.clear();
            d.compress_message(&data, &mut c).unwrap();
            let mut out = Vec::new();
            for ch in c.chunks(1000) {
                i.feed(ch, &mut out, 1 << 24).unwrap();
            }
            i.finish_message(&mut out, 1 << 24).unwrap();
            assert!(out == data, "n={n}");
        }
    }

    #[test]
    fn inflater_rfc_example_hello_decoded() {
        // RFC 7692 7.2.3.1: "Hello" compressed without the tail.
        let c = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        i.feed(&c, &mut out, 100).unwrap();
        i.finish_message(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn inflater_context_takeover_second_message_decoded() {
        let mut d = Deflater::new(15, 6, false);
        let mut i = Inflater::new(false);
        for _ in 0..3 {
            let mut c = Vec::new();
            d.compress_message(b"Hello Hello Hello", &mut c).unwrap();
            let mut out = Vec::new();
            i.feed(&c, &mut out, 100).unwrap();
            i.finish_message(&mut out, 100).unwrap();
            assert_eq!(out, b"Hello Hello Hello");
        }
    }

    #[test]
    fn inflater_zip_bomb_too_big() {
        let data = vec![0u8; 10 << 20];
        let mut d = Deflater::new(15, 9, false);
        let mut c = Vec::new();
        d.compress_message(&data, &mut c).unwrap();
        assert!(c.len() < 64 * 1024);
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        assert_eq!(i.feed(&c, &mut out, 1 << 20), Err(DeflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + 64 * 1024);
    }

    #[test]
    fn inflater_garbage_corrupt() {
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        let r = i
            .feed(&[0xff; 32], &mut out, 1000)
            .and_then(|_| i.finish_message(&mut out, 1000));
        assert_eq!(r, Err(DeflateError::Corrupt));
    }

    #[test]
    fn negotiate_server_default_offer_accepted() {
        let offers = parse_extensions("permessage-deflate; client_max_window_bits").unwrap();
        let (p, resp) = negotiate_server(&offers, &DeflateConfig::default()).unwrap();
        assert_eq!(resp, "permessage-deflate");
        assert_eq!(p.server_max_window_bits, 15);
    }

    #[test]
    fn negotiate_server_window_bits_answered() {
        let offers = parse_extensions(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9",
        )
        .unwrap();
        let (p, resp) = negotiate_server(&offers, &DeflateConfig::default()).unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 9);
        assert_eq!(
            resp,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
    }

    #[test]
    fn negotiate_server_bad_offer_falls_to_next() {
        let offers = parse_extensions(
            "permessage-deflate; foo, permessage-deflate; server_max_window_bits=7, \
             permessage-deflate; client_no_context_takeover",
        )
        .unwrap();
        let (p, resp) = negotiate_server(&offers, &DeflateConfig::default()).unwrap();
        assert!(p.client_no_context_takeover);
        assert_eq!(resp, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn negotiate_server_duplicate_param_declined() {
        let offers = parse_extensions(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        )
        .unwrap();
        assert!(negotiate_server(&offers, &DeflateConfig::default()).is_none());
    }

    #[test]
    fn negotiate_server_disabled_declined() {
        let offers = parse_extensions("permessage-deflate").unwrap();
        let cfg = DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        };
        assert!(negotiate_server(&offers, &cfg).is_none());
    }

    #[test]
    fn parse_extensions_quoted_value_unquoted() {
        let e = parse_extensions("permessage-deflate; client_max_window_bits=\"10\", foo").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].params, vec![("client_max_window_bits", Some("10"))]);
        assert_eq!(e[1].name, "foo");
    }

    #[test]
    fn accept_client_unknown_param_rejected() {
        let e = parse_extensions("permessage-deflate; bogus").unwrap();
        assert!(accept_client(&e[0], &DeflateConfig::default()).is_err());
    }
}
