//! The opening handshake (RFC 6455 4), server and client side, over byte slices.
//!
//! The server parses the upgrade request in place with httparse and answers with either a
//! `101 Switching Protocols` response or a 4xx response after which the caller closes the
//! connection. The caller enforces a deadline for the whole handshake.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::deflate::{self, DeflateConfig, DeflateParams};

/// RFC 6455 1.3: the GUID appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Server handshake settings and limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request head accepted, in bytes (431 beyond it).
    pub max_header_bytes: usize,
    /// Most header lines accepted (431 beyond it).
    pub max_headers: usize,
    /// Subprotocols we speak, in order of preference.
    pub protocols: Vec<String>,
    /// permessage-deflate settings.
    pub deflate: DeflateConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_header_bytes: 8192,
            max_headers: 64,
            protocols: Vec::new(),
            deflate: DeflateConfig::default(),
        }
    }
}

/// Why an upgrade request was refused; each maps to an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request is not valid HTTP/1.1.
    #[error("malformed HTTP request")]
    Malformed,
    /// The request head exceeds the size or header-count limit.
    #[error("request header too large")]
    TooLarge,
    /// The method is not GET.
    #[error("method is not GET")]
    Method,
    /// A required header is missing or wrong; the name says which.
    #[error("missing or invalid header {0}")]
    Header(&'static str),
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version")]
    Version,
    /// The caller's policy (path, Origin) refused the request, with this HTTP status.
    #[error("refused by policy with status {0}")]
    Refused(u16),
    /// Client side: the server's response is invalid.
    #[error("invalid server response: {0}")]
    BadResponse(&'static str),
}

impl HandshakeError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Malformed | HandshakeError::Header(_) => 400,
            HandshakeError::TooLarge => 431,
            HandshakeError::Method => 405,
            HandshakeError::Version => 426,
            HandshakeError::Refused(s) => *s,
            HandshakeError::BadResponse(_) => 502,
        }
    }

    /// The complete HTTP response refusing the upgrade; close the connection after it.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let reason = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let mut r =
            format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n");
        if status == 426 {
            // RFC 6455 4.2.2: answer an unsupported version with the versions we support.
            r.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n");
        }
        if status == 405 {
            r.push_str("Allow: GET\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// A validated upgrade request, borrowing from the received bytes.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The request target (path and query).
    pub path: &'a str,
    /// The Host header.
    pub host: &'a str,
    /// The Origin header, if any (browsers always send it).
    pub origin: Option<&'a str>,
    /// The Sec-WebSocket-Key value.
    pub key: &'a str,
    /// Offered subprotocols, in the client's order.
    pub protocols: Vec<&'a str>,
    /// Offered extensions, in the client's order.
    pub extensions: Vec<deflate::Extension<'a>>,
    /// The `X-Forwarded-For` entries of every such header, in order (client first,
    /// nearest proxy last); whether to believe them is the server's decision.
    pub forwarded_for: Vec<&'a str>,
    /// The `Authorization` header, if any (the first one).
    pub authorization: Option<&'a str>,
    /// Length of the request head in bytes; WebSocket frames follow it.
    pub head_len: usize,
}

/// The server's answer to an accepted request.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The `101 Switching Protocols` response to send.
    pub response: Vec<u8>,
    /// The chosen subprotocol.
    pub protocol: Option<String>,
    /// permessage-deflate parameters if negotiated.
    pub deflate: Option<DeflateParams>,
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses and validates an upgrade request at the start of `buf` (RFC 6455 4.2.1).
///
/// `Ok(None)`: incomplete, read more (up to `config.max_header_bytes`). On `Err`, send
/// [`HandshakeError::response`] and close. Never panics.
pub fn parse_request<'a>(
    buf: &'a [u8],
    config: &ServerConfig,
) -> Result<Option<Request<'a>>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > config.max_header_bytes {
                return Err(HandshakeError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    if head_len > config.max_header_bytes {
        return Err(HandshakeError::TooLarge);
    }
    // RFC 6455 4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if req.method != Some("GET") {
        return Err(HandshakeError::Method);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::Malformed);
    }
    let path = req.path.ok_or(HandshakeError::Malformed)?;
    let mut host = None;
    let mut origin = None;
    let mut key = None;
    let mut upgrade = false;
    let mut connection = false;
    let mut version = None;
    let mut protocols = Vec::new();
    let mut extensions = Vec::new();
    let mut forwarded_for = Vec::new();
    let mut authorization = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| HandshakeError::Malformed)?;
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host = Some(value.trim());
        } else if name.eq_ignore_ascii_case("upgrade") {
            // RFC 6455 4.2.1 item 3: contains "websocket", case-insensitive.
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            // RFC 6455 4.2.1 item 4: a token list containing "Upgrade", case-insensitive.
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if key.is_some() {
                return Err(HandshakeError::Header("Sec-WebSocket-Key"));
            }
            key = Some(value.trim());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value.trim());
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value.trim());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocols.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            let parsed = deflate::parse_extensions(value)
                .ok_or(HandshakeError::Header("Sec-WebSocket-Extensions"))?;
            extensions.extend(parsed);
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = authorization.or(Some(value.trim()));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.extend(value.split(',').map(str::trim).filter(|v| !v.is_empty()));
        }
    }
    // RFC 6455 4.2.1 item 2: a Host header field.
    let host = host
        .filter(|h| !h.is_empty())
        .ok_or(HandshakeError::Header("Host"))?;
    if !upgrade {
        return Err(HandshakeError::Header("Upgrade"));
    }
    if !connection {
        return Err(HandshakeError::Header("Connection"));
    }
    // RFC 6455 4.2.1 item 5: a key that base64-decodes to 16 bytes.
    let key = key.ok_or(HandshakeError::Header("Sec-WebSocket-Key"))?;
    match STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HandshakeError::Header("Sec-WebSocket-Key")),
    }
    // RFC 6455 4.2.1 item 6 and 4.4: version 13, else 426 with the supported version.
    if version != Some("13") {
        return Err(HandshakeError::Version);
    }
    Ok(Some(Request {
        path,
        host,
        origin,
        key,
        protocols,
        extensions,
        forwarded_for,
        authorization,
        head_len,
    }))
}

impl Request<'_> {
    /// Builds the `101` response: the accept key, the first of our protocols the client
    /// offered, and permessage-deflate if an offer can be honoured.
    pub fn accept(&self, config: &ServerConfig) -> Accepted {
        // RFC 6455 4.2.2 item 5.3: at most one of the client's subprotocols, ours by preference.
        let protocol = config
            .protocols
            .iter()
            .find(|ours| self.protocols.iter().any(|p| p == ours))
            .cloned();
        let negotiated = deflate::negotiate_server(&self.extensions, &config.deflate);
        let mut r = String::with_capacity(256);
        r.push_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        r.push_str("Sec-WebSocket-Accept: ");
        r.push_str(&accept_key(self.key.as_bytes()));
        r.push_str("\r\n");
        if let Some(p) = &protocol {
            r.push_str("Sec-WebSocket-Protocol: ");
            r.push_str(p);
            r.push_str("\r\n");
        }
        if let Some((_, ext)) = &negotiated {
            r.push_str("Sec-WebSocket-Extensions: ");
            r.push_str(ext);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        Accepted {
            response: r.into_bytes(),
            protocol,
            deflate: negotiated.map(|(p, _)| p),
        }
    }
}

/// Client side of the handshake: builds the request and checks the response.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    key: String,
    deflate: DeflateConfig,
    protocols: Vec<String>,
}

/// The result of a successful client handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAccepted {
    /// Length of the response head; frames follow it.
    pub head_len: usize,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// permessage-deflate parameters if the server accepted our offer.
    pub deflate: Option<DeflateParams>,
}

impl ClientHandshake {
    /// Starts a handshake with a 16-byte nonce the caller drew from a good random source
    /// (RFC 6455 4.1: "randomly selected").
    pub fn new(nonce: [u8; 16], protocols: Vec<String>, deflate: DeflateConfig) -> ClientHandshake {
        ClientHandshake {
            key: STANDARD.encode(nonce),
            deflate,
            protocols,
        }
    }

    /// The upgrade request for `host` and `path`.
    pub fn request(&self, host: &str, path: &str) -> Vec<u8> {
        let mut r = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            self.key
        );
        if !self.protocols.is_empty() {
            r.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                self.protocols.join(", ")
            ));
        }
        if let Some(offer) = deflate::client_offer(&self.deflate) {
            r.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }

    /// Checks the server's response at the start of `buf` (RFC 6455 4.1, client steps 1-6).
    ///
    /// `Ok(None)`: incomplete, read more. Any `Err` means: fail the connection.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<ClientAccepted>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > 16 * 1024 {
                    return Err(HandshakeError::TooLarge);
                }
                return Ok(None);
            }
            Err(_) => return Err(HandshakeError::BadResponse("malformed")),
        };
        if resp.code != Some(101) {
            return Err(HandshakeError::BadResponse("status is not 101"));
        }
        let expected = accept_key(self.key.as_bytes());
        let (mut upgrade, mut connection, mut accept) = (false, false, false);
        let mut protocol = None;
        let mut deflate_params = None;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HandshakeError::BadResponse("non-UTF-8 header"))?
                .trim();
            let name = h.name;
            if name.eq_ignore_ascii_case("upgrade") {
                upgrade |= value.eq_ignore_ascii_case("websocket");
            } else if name.eq_ignore_ascii_case("connection") {
                connection |= has_token(value, "upgrade");
            } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept |= value == expected;
            } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                // RFC 6455 4.1 client step 6: only a protocol we offered.
                if protocol.is_some() || !self.protocols.iter().any(|p| p == value) {
                    return Err(HandshakeError::BadResponse("unexpected subprotocol"));
                }
                protocol = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                let exts = deflate::parse_extensions(value)
                    .ok_or(HandshakeError::BadResponse("malformed extensions"))?;
                for ext in &exts {
                    // RFC 6455 4.1 client step 5: only extensions we offered, once.
                    if !self.deflate.enabled || deflate_params.is_some() {
                        return Err(HandshakeError::BadResponse("unexpected extension"));
                    }
                    deflate_params = Some(
                        deflate::accept_client(ext, &self.deflate)
                            .map_err(|_| HandshakeError::BadResponse("bad permessage-deflate"))?,
                    );
                }
            }
        }
        if !upgrade {
            return Err(HandshakeError::BadResponse("Upgrade"));
        }
        if !connection {
            return Err(HandshakeError::BadResponse("Connection"));
        }
        if !accept {
            return Err(HandshakeError::BadResponse("Sec-WebSocket-Accept"));
        }
        Ok(Some(ClientAccepted {
            head_len,
            protocol,
            deflate: deflate_params,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const REQ: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn accept_key_rfc_example_matches() {
        // RFC 6455 1.3 example.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn request_forwarded_for_entries_of_every_header_in_order() {
        let req = REQ.replace(
            "\r\n\r\n",
            "\r\nX-Forwarded-For: 203.0.113.7, 198.18.0.9\r\nx-forwarded-for: 10.0.0.1 ,\r\n\r\n",
        );
        let got = parse_request(req.as_bytes(), &ServerConfig::default())
            .unwrap()
            .unwrap();
        assert_eq!(got.forwarded_for, ["203.0.113.7", "198.18.0.9", "10.0.0.1"]);
        let plain = parse_request(REQ.as_bytes(), &ServerConfig::default())
            .unwrap()
            .unwrap();
        assert!(plain.forwarded_for.is_empty());
    }

    #[test]
    fn request_valid_accepted_with_protocol() {
        let cfg = ServerConfig {
            protocols: vec!["superchat".into()],
            ..ServerConfig::default()
        };
        let req = parse_request(REQ.as_bytes(), &cfg).unwrap().unwrap();
        assert_eq!(req.path, "/chat");
        assert_eq!(req.origin, Some("http://example.com"));
        assert_eq!(req.head_len, REQ.len());
        let acc = req.accept(&cfg);
        let text = String::from_utf8(acc.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: superchat\r\n"));
        assert_eq!(acc.protocol.as_deref(), Some("superchat"));
        assert!(acc.deflate.is_none());
    }

    #[test]
    fn request_partial_needs_more() {
        let cfg = ServerConfig::default();
        assert!(parse_request(&REQ.as_bytes()[..40], &cfg)
            .unwrap()
            .is_none());
    }

    #[test]
    fn request_oversized_rejected_431() {
        let cfg = ServerConfig {
            max_header_bytes: 64,
            ..ServerConfig::default()
        };
        let err = parse_request(&REQ.as_bytes()[..100], &cfg).unwrap_err();
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn request_too_many_headers_rejected_431() {
        let cfg = ServerConfig {
            max_headers: 3,
            ..ServerConfig::default()
        };
        assert_eq!(
            parse_request(REQ.as_bytes(), &cfg).unwrap_err().status(),
            431
        );
    }

    #[test]
    fn request_wrong_version_rejected_426() {
        let req = REQ.replace("Version: 13", "Version: 8");
        let err = parse_request(req.as_bytes(), &ServerConfig::default()).unwrap_err();
        assert_eq!(err, HandshakeError::Version);
        let resp = String::from_utf8(err.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426"));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn request_post_rejected_405() {
        let req = REQ.replace("GET", "POST");
        let err = parse_request(req.as_bytes(), &ServerConfig::default()).unwrap_err();
        assert_eq!(err.status(), 405);
    }

    #[test]
    fn request_http10_rejected_400() {
        let req = REQ.replace("HTTP/1.1", "HTTP/1.0");
        let err = parse_request(req.as_bytes(), &ServerConfig::default()).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn request_missing_headers_rejected_400() {
        for (from, to, which) in [
            ("Host: server.example.com\r\n", "", "Host"),
            ("Upgrade: websocket", "Upgrade: h2c", "Upgrade"),
            ("keep-alive, Upgrade", "keep-alive", "Connection"),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", "Sec-WebSocket-Key"),
        ] {
            let req = REQ.replace(from, to);
            let err = parse_request(req.as_bytes(), &ServerConfig::default()).unwrap_err();
            assert_eq!(err, HandshakeError::Header(which));
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn request_case_insensitive_tokens_accepted() {
        let req = REQ
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("keep-alive, Upgrade", "UPGRADE");
        assert!(parse_request(req.as_bytes(), &ServerConfig::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn request_garbage_rejected_400() {
        let err = parse_request(b"\x00\x01garbage\r\n\r\n", &ServerConfig::default()).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn request_deflate_offer_negotiated() {
        let req = REQ.replace(
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        let cfg = ServerConfig::default();
        let acc = parse_request(req.as_bytes(), &cfg)
            .unwrap()
            .unwrap()
            .accept(&cfg);
        assert!(acc.deflate.is_some());
        assert!(String::from_utf8(acc.response)
            .unwrap()
            .contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
    }

    #[test]
    fn client_server_handshake_roundtrip() {
        let client = ClientHandshake::new([7; 16], vec!["chat".into()], DeflateConfig::default());
        let req = client.request("localhost:9001", "/");
        let cfg = ServerConfig {
            protocols: vec!["chat".into()],
            ..ServerConfig::default()
        };
        let acc = parse_request(&req, &cfg).unwrap().unwrap().accept(&cfg);
        let got = client.parse_response(&acc.response).unwrap().unwrap();
        assert_eq!(got.head_len, acc.response.len());
        assert_eq!(got.protocol.as_deref(), Some("chat"));
        assert_eq!(got.deflate, acc.deflate.map(|p| DeflateParams { ..p }));
    }

    #[test]
    fn client_wrong_accept_rejected() {
        let client = ClientHandshake::new([7; 16], vec![], DeflateConfig::default());
        let resp =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: AAAA\r\n\r\n";
        assert_eq!(
            client.parse_response(resp).unwrap_err(),
            HandshakeError::BadResponse("Sec-WebSocket-Accept")
        );
    }
}
