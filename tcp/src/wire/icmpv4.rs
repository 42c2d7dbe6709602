//! ICMPv4 (RFC 792): echo request/reply and destination unreachable, including
//! fragmentation needed with the next-hop MTU (RFC 1191 4).

use core::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{read_ipv4, read_u16, write_u16, WireError};

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;
/// How much of the offending datagram an error message carries at most: RFC 1812 4.3.2.3
/// says as much as fits in 576 bytes (576 - 20 IP - 8 ICMP).
pub const MAX_ORIGINAL_LEN: usize = 576 - 20 - HEADER_LEN;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ_NO: usize = 6;
    pub const NEXT_HOP_MTU: usize = 6;
}

mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
}

/// Destination unreachable codes (RFC 792, RFC 1122 3.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DstUnreachable {
    /// 0: net unreachable.
    NetUnreachable,
    /// 1: host unreachable.
    HostUnreachable,
    /// 2: protocol unreachable.
    ProtoUnreachable,
    /// 3: port unreachable.
    PortUnreachable,
    /// 4: fragmentation needed and DF set (carries the next-hop MTU, RFC 1191).
    FragRequired,
    /// Any other code.
    Other(u8),
}

impl From<u8> for DstUnreachable {
    fn from(v: u8) -> DstUnreachable {
        match v {
            0 => DstUnreachable::NetUnreachable,
            1 => DstUnreachable::HostUnreachable,
            2 => DstUnreachable::ProtoUnreachable,
            3 => DstUnreachable::PortUnreachable,
            4 => DstUnreachable::FragRequired,
            o => DstUnreachable::Other(o),
        }
    }
}

impl From<DstUnreachable> for u8 {
    fn from(v: DstUnreachable) -> u8 {
        match v {
            DstUnreachable::NetUnreachable => 0,
            DstUnreachable::HostUnreachable => 1,
            DstUnreachable::ProtoUnreachable => 2,
            DstUnreachable::PortUnreachable => 3,
            DstUnreachable::FragRequired => 4,
            DstUnreachable::Other(o) => o,
        }
    }
}

/// A checked view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; accessors on a short buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wraps untrusted bytes, checking the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.b().get(field::TYPE).copied().unwrap_or(0)
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.b().get(field::CODE).copied().unwrap_or(0)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.b(), field::IDENT)
    }

    /// Echo sequence number.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.b(), field::SEQ_NO)
    }

    /// Next-hop MTU of a fragmentation-needed message (RFC 1191 4).
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.b(), field::NEXT_HOP_MTU)
    }

    /// The checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.b()) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// The data after the 8-byte header.
    pub fn data(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(x) = self.buffer.as_mut().get_mut(at) {
            *x = v;
        }
    }

    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.set_byte(field::TYPE, v);
    }

    /// Sets the code.
    pub fn set_msg_code(&mut self, v: u8) {
        self.set_byte(field::CODE, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the 4-byte rest-of-header as two words (ident/seq, or unused/next-hop MTU).
    pub fn set_rest(&mut self, hi: u16, lo: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, hi);
        write_u16(self.buffer.as_mut(), field::SEQ_NO, lo);
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let ck = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(ck);
    }

    /// The data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

/// A parsed ICMPv4 message of a kind this stack handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
    /// Echo request (type 8).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data, echoed back unchanged in the reply (RFC 792, RFC 1122 3.2.2.6).
        data: &'a [u8],
    },
    /// Echo reply (type 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 3).
    DstUnreachable {
        /// The code.
        reason: DstUnreachable,
        /// Next-hop MTU for [`DstUnreachable::FragRequired`] (RFC 1191 4), else 0.
        next_hop_mtu: u16,
        /// The offending datagram's IP header and leading payload bytes (at least 8,
        /// RFC 792). See [`OriginalDatagram::parse`].
        original: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses a checked message. With `verify_checksum`, a bad checksum is
    /// [`WireError::BadChecksum`]. Types other than echo request/reply and destination
    /// unreachable are [`WireError::Unsupported`].
    pub fn parse(
        packet: &Icmpv4Packet<&'a [u8]>,
        verify_checksum: bool,
    ) -> Result<Icmpv4Repr<'a>, WireError> {
        if packet.b().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if verify_checksum && !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        match (packet.msg_type(), packet.msg_code()) {
            (msg_type::ECHO_REQUEST, 0) => Ok(Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            (msg_type::ECHO_REPLY, 0) => Ok(Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: packet.data(),
            }),
            (msg_type::DST_UNREACHABLE, code) => {
                let reason = DstUnreachable::from(code);
                let next_hop_mtu = if reason == DstUnreachable::FragRequired {
                    packet.next_hop_mtu()
                } else {
                    0
                };
                Ok(Icmpv4Repr::DstUnreachable {
                    reason,
                    next_hop_mtu,
                    original: packet.data(),
                })
            }
            _ => Err(WireError::Unsupported),
        }
    }

    /// Message length (header plus data).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                    data.len()
                }
                Icmpv4Repr::DstUnreachable { original, .. } => original.len(),
            }
    }

    /// Writes the message with its checksum at the start of `buf`; returns the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let mut p = Icmpv4Packet::new_unchecked(out);
        let (ty, code, hi, lo, data) = match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REQUEST, 0, ident, seq_no, data),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (msg_type::ECHO_REPLY, 0, ident, seq_no, data),
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                original,
            } => (
                msg_type::DST_UNREACHABLE,
                u8::from(reason),
                0,
                next_hop_mtu,
                original,
            ),
        };
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.set_rest(hi, lo);
        p.data_mut().copy_from_slice(data);
        p.fill_checksum();
        Ok(len)
    }
}

/// The leading part of the datagram an ICMP error refers to: its addresses, protocol and
/// the first bytes of its payload (for TCP: ports and sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalDatagram<'a> {
    /// Source of the original datagram (normally our address).
    pub src_addr: Ipv4Addr,
    /// Destination of the original datagram.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the original datagram.
    pub protocol: IpProtocol,
    /// The payload bytes quoted (at least 8 when the sender followed RFC 792).
    pub payload: &'a [u8],
}

impl<'a> OriginalDatagram<'a> {
    /// Parses the quoted datagram leniently: the IPv4 header must be complete (version 4,
    /// IHL >= 5) but the payload is whatever was quoted, possibly shorter than its total
    /// length says. Fewer than 8 quoted payload bytes is [`WireError::Truncated`].
    pub fn parse(original: &'a [u8]) -> Result<OriginalDatagram<'a>, WireError> {
        let first = *original.first().ok_or(WireError::Truncated)?;
        if first >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(first & 0x0f) * 4;
        if hl < 20 {
            return Err(WireError::BadLength);
        }
        let payload = original.get(hl..).ok_or(WireError::Truncated)?;
        if payload.len() < 8 {
            return Err(WireError::Truncated);
        }
        Ok(OriginalDatagram {
            src_addr: read_ipv4(original, 12),
            dst_addr: read_ipv4(original, 16),
            protocol: IpProtocol::from(original.get(9).copied().unwrap_or(0)),
            payload,
        })
    }

    /// Source and destination ports of a quoted TCP or UDP header.
    pub fn ports(&self) -> (u16, u16) {
        (read_u16(self.payload, 0), read_u16(self.payload, 2))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::wire::ipv4::Ipv4Repr;
    use proptest::prelude::*;

    // `ping -c1` payload start: type 8, code 0, checksum, id 0x1c46, seq 1, "abcd".
    #[test]
    fn echo_request_emit_parse_verifies() {
        let r = Icmpv4Repr::EchoRequest {
            ident: 0x1c46,
            seq_no: 1,
            data: b"abcd",
        };
        let mut b = [0u8; 12];
        assert_eq!(r.emit(&mut b).unwrap(), 12);
        assert_eq!(b[0], 8);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Icmpv4Repr::parse(&p, true).unwrap(), r);
        b[11] ^= 1;
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p, true), Err(WireError::BadChecksum));
    }

    #[test]
    fn frag_required_carries_mtu_and_original() {
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(198, 18, 0, 1),
            dst_addr: Ipv4Addr::new(198, 18, 0, 2),
            protocol: IpProtocol::Tcp,
            payload_len: 1460,
            ttl: 64,
            ident: 7,
            dont_frag: true,
            tos: 0,
        };
        let mut orig = [0u8; 28];
        ip.emit(&mut orig).unwrap();
        orig[20..24].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]); // ports 40000 -> 80
        let r = Icmpv4Repr::DstUnreachable {
            reason: DstUnreachable::FragRequired,
            next_hop_mtu: 1400,
            original: &orig,
        };
        let mut b = [0u8; 36];
        r.emit(&mut b).unwrap();
        assert_eq!(&b[..2], &[3, 4]);
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), 1400);
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        let back = Icmpv4Repr::parse(&p, true).unwrap();
        assert_eq!(back, r);
        let Icmpv4Repr::DstUnreachable { original, .. } = back else {
            panic!("not unreachable");
        };
        let o = OriginalDatagram::parse(original).unwrap();
        assert_eq!(o.protocol, IpProtocol::Tcp);
        assert_eq!(o.dst_addr, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(o.ports(), (40000, 80));
    }

    #[test]
    fn original_short_quote_truncated() {
        let mut orig = [0u8; 27];
        orig[0] = 0x45;
        assert_eq!(OriginalDatagram::parse(&orig), Err(WireError::Truncated));
        assert_eq!(OriginalDatagram::parse(&[]), Err(WireError::Truncated));
        orig[0] = 0x44;
        assert_eq!(OriginalDatagram::parse(&orig), Err(WireError::BadLength));
    }

    #[test]
    fn message_other_type_unsupported() {
        let mut b = [0u8; 8];
        b[0] = 11; // time exceeded
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p, true), Err(WireError::Unsupported));
        assert_eq!(
            Icmpv4Packet::new_checked(&b[..7]),
            Err(WireError::Truncated)
        );
    }

    fn make_repr(kind: u8, a: u16, b: u16, code: u8, data: &[u8]) -> Icmpv4Repr<'_> {
        match kind {
            0 => Icmpv4Repr::EchoRequest {
                ident: a,
                seq_no: b,
                data,
            },
            1 => Icmpv4Repr::EchoReply {
                ident: a,
                seq_no: b,
                data,
            },
            _ => {
                let reason = DstUnreachable::from(code);
                Icmpv4Repr::DstUnreachable {
                    reason,
                    next_hop_mtu: if reason == DstUnreachable::FragRequired {
                        b
                    } else {
                        0
                    },
                    original: data,
                }
            }
        }
    }

    proptest! {
        #[test]
        fn repr_arbitrary_roundtrips(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            kind in 0u8..3, a in any::<u16>(), b in any::<u16>(), code in any::<u8>(),
        ) {
            let r = make_repr(kind, a, b, code, &data);
            let mut buf = vec![0u8; r.buffer_len()];
            prop_assert_eq!(r.emit(&mut buf).unwrap(), r.buffer_len());
            let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&p, true).unwrap(), r);
        }

        #[test]
        fn message_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = Icmpv4Repr::parse(&p, true);
                if let Ok(Icmpv4Repr::DstUnreachable { original, .. }) = Icmpv4Repr::parse(&p, false) {
                    let _ = OriginalDatagram::parse(original).map(|o| o.ports());
                }
            }
        }
    }
}
