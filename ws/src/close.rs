//! Close codes and close frame payloads (RFC 6455 5.5.1, 7.4).

/// A close status code (RFC 6455 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed abnormally (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: message data inconsistent with its type (invalid UTF-8 in a text message).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: unexpected server condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS: CloseCode = CloseCode(1015);

    /// Whether an endpoint may send this code in a Close frame.
    ///
    /// RFC 6455 7.4.1/7.4.2: 1005, 1006 and 1015 MUST NOT be sent; 0-999 are unused;
    /// 1000-2999 are reserved for the RFC and its extensions (IANA registered 1012-1014);
    /// 3000-4999 are for libraries, frameworks and applications.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Why a received Close frame payload is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseFrameError {
    /// A 1-byte payload: too short to hold a status code.
    #[error("close payload of one byte")]
    Truncated,
    /// The status code may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCode(u16),
    /// The reason is not valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidReason,
}

/// Parses a Close frame payload: `None` code when the payload is empty (RFC 6455 5.5.1).
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<CloseCode>, &str), CloseFrameError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(CloseFrameError::Truncated),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(CloseFrameError::InvalidCode(code.0));
            }
            // RFC 6455 5.5.1: the reason is UTF-8-encoded data.
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| CloseFrameError::InvalidReason)?;
            Ok((Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_empty_no_code() {
        assert_eq!(parse_close_payload(&[]), Ok((None, "")));
    }

    #[test]
    fn close_payload_one_byte_truncated() {
        assert_eq!(parse_close_payload(&[3]), Err(CloseFrameError::Truncated));
    }

    #[test]
    fn close_payload_reserved_codes_rejected() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                parse_close_payload(&code.to_be_bytes()),
                Err(CloseFrameError::InvalidCode(code))
            );
        }
    }

    #[test]
    fn close_payload_valid_codes_accepted() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("bye".as_bytes());
            assert_eq!(parse_close_payload(&p), Ok((Some(CloseCode(code)), "bye")));
        }
    }

    #[test]
    fn close_payload_invalid_reason_rejected() {
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xff]),
            Err(CloseFrameError::InvalidReason)
        );
    }
}
