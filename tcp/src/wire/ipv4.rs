//! IPv4 header (RFC 791), without reassembly: fragments are reported, not rebuilt.

use core::fmt;
use core::net::Ipv4Addr;

use super::checksum;
use super::{read_ipv4, read_u16, write_ipv4, write_u16, WireError};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Default TTL for datagrams we originate (Linux `net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The protocol carried in an IPv4 datagram.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// ICMP, 1.
    Icmp,
    /// TCP, 6.
    Tcp,
    /// UDP, 17.
    Udp,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> IpProtocol {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            o => IpProtocol::Unknown(o),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> u8 {
        match v {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(o) => o,
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("ICMP"),
            IpProtocol::Tcp => f.write_str("TCP"),
            IpProtocol::Udp => f.write_str("UDP"),
            IpProtocol::Unknown(v) => write!(f, "proto {v}"),
        }
    }
}

/// A checked view of an IPv4 datagram.
///
/// [`new_checked`](Self::new_checked) guarantees version 4, a header length of at least 20
/// bytes within the buffer, and a total length between the header length and the buffer
/// length. [`payload`](Ipv4Packet::payload) ends at the total length, so trailing Ethernet
/// padding is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors on a short buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps untrusted bytes, checking version and lengths (RFC 791 3.1, RFC 1122 3.2.1.1-2).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let p = Ipv4Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        // RFC 1122 3.2.1.1: a datagram whose version is not 4 MUST be silently discarded.
        if p.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if hl > len {
            return Err(WireError::Truncated);
        }
        let total = usize::from(p.total_len());
        if total < hl {
            return Err(WireError::BadLength);
        }
        if total > len {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.b().get(at).copied().unwrap_or(0)
    }

    /// Version (4).
    pub fn version(&self) -> u8 {
        self.byte(field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.byte(field::VER_IHL) & 0x0f) * 4
    }

    /// Type of service byte (DSCP << 2 | ECN).
    pub fn tos(&self) -> u8 {
        self.byte(field::TOS)
    }

    /// ECN codepoint (RFC 3168 5): 0 not-ECT, 1/2 ECT, 3 CE.
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Total length field (header + payload).
    pub fn total_len(&self) -> u16 {
        read_u16(self.b(), field::TOTAL_LEN)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        read_u16(self.b(), field::IDENT)
    }

    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(self.b(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        read_u16(self.b(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(read_u16(self.b(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// This datagram is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.byte(field::TTL)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.byte(field::PROTOCOL))
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.b(), field::SRC)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.b(), field::DST)
    }

    /// The header checksum verifies (RFC 791 3.1, RFC 1122 3.2.1.2: a host MUST verify it
    /// and silently discard a datagram that fails).
    pub fn verify_checksum(&self) -> bool {
        let hl = self.header_len();
        match self.b().get(..hl) {
            Some(h) if hl >= HEADER_LEN => checksum::header_checksum(h) == 0,
            _ => false,
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload, up to the total length (trailing link-layer padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        let hl = self.header_len();
        let total = usize::from(self.total_len());
        self.buffer.as_ref().get(hl..total).unwrap_or(&[])
    }

    /// The header bytes, options included.
    pub fn header(&self) -> &'a [u8] {
        let hl = self.header_len();
        self.buffer.as_ref().get(..hl).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn b_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(x) = self.b_mut().get_mut(at) {
            *x = v;
        }
    }

    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.set_byte(field::VER_IHL, 0x40 | ((header_len / 4) as u8 & 0x0f));
    }

    /// Sets the type of service byte.
    pub fn set_tos(&mut self, v: u8) {
        self.set_byte(field::TOS, v);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(self.b_mut(), field::TOTAL_LEN, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        write_u16(self.b_mut(), field::IDENT, v);
    }

    /// Sets flags and fragment offset: DF as given, MF clear, offset zero.
    pub fn set_dont_frag_unfragmented(&mut self, df: bool) {
        write_u16(
            self.b_mut(),
            field::FLAGS_FRAG,
            if df { FLAG_DF } else { 0 },
        );
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.set_byte(field::TTL, v);
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.set_byte(field::PROTOCOL, v.into());
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.b_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        write_ipv4(self.b_mut(), field::SRC, a);
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        write_ipv4(self.b_mut(), field::DST, a);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let ck = self
            .b()
            .get(..hl)
            .map(checksum::header_checksum)
            .unwrap_or(0);
        self.set_checksum(ck);
    }
}

/// A parsed IPv4 header (options are skipped on parse and never emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// Type of service byte (DSCP << 2 | ECN).
    pub tos: u8,
}

impl Ipv4Repr {
    /// Parses a checked datagram. With `verify_checksum`, a bad header checksum is
    /// [`WireError::BadChecksum`]; a fragment is [`WireError::Fragmented`] (this stack
    /// does not reassemble; TCP sets DF, RFC 9293 3.7.2 / RFC 1191). Options are skipped.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Ipv4Packet<T>,
        verify_checksum: bool,
    ) -> Result<Ipv4Repr, WireError> {
        // Re-run the length checks: the view may have been built unchecked.
        let p = Ipv4Packet::new_checked(packet.buffer.as_ref())?;
        if verify_checksum && !p.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        if p.is_fragment() {
            return Err(WireError::Fragmented);
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()).saturating_sub(p.header_len()),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            tos: p.tos(),
        })
    }

    /// Header length emitted (20: no options).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 20-byte header (with checksum) at the start of `buf`; the payload is the
    /// caller's. Returns 20. A payload that does not fit the 16-bit total length is
    /// [`WireError::BadValue`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total =
            u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::BadValue)?;
        let hdr = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut p = Ipv4Packet::new_unchecked(hdr);
        p.set_version_and_header_len(HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_dont_frag_unfragmented(self.dont_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(198, 18, 0, 1),
            dst_addr: Ipv4Addr::new(198, 18, 0, 2),
            protocol: IpProtocol::Tcp,
            payload_len: 8,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
            tos: 0,
        }
    }

    fn datagram() -> Vec<u8> {
        let r = repr();
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b).unwrap();
        b[20..].copy_from_slice(b"payload!");
        b
    }

    #[test]
    fn datagram_with_ethernet_padding_payload_cut_to_total_len() {
        let mut b = datagram();
        b.extend_from_slice(&[0u8; 18]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"payload!");
        assert_eq!(Ipv4Repr::parse(&p, true).unwrap(), repr());
    }

    #[test]
    fn datagram_bad_checksum_rejected() {
        let mut b = datagram();
        b[8] = 63; // TTL changed, checksum not updated
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p, true), Err(WireError::BadChecksum));
        assert!(Ipv4Repr::parse(&p, false).is_ok());
    }

    #[test]
    fn datagram_ttl_rewrite_incremental_checksum_verifies() {
        let mut b = datagram();
        let old = u16::from_be_bytes([b[8], b[9]]);
        b[8] -= 1;
        let new = u16::from_be_bytes([b[8], b[9]]);
        let ck = checksum::incremental_update(u16::from_be_bytes([b[10], b[11]]), old, new);
        b[10..12].copy_from_slice(&ck.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
    }

    #[test]
    fn datagram_fragments_fragmented() {
        for flags_frag in [0x2000u16, 0x0001, 0x3fff] {
            let mut b = datagram();
            b[6..8].copy_from_slice(&flags_frag.to_be_bytes());
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.fill_checksum();
            let p = Ipv4Packet::new_checked(&b[..]).unwrap();
            assert!(p.is_fragment());
            assert_eq!(Ipv4Repr::parse(&p, true), Err(WireError::Fragmented));
        }
    }

    #[test]
    fn datagram_with_options_skipped() {
        // IHL 6: one option word (NOP NOP NOP EOL) before the payload.
        let mut b = [0u8; 24 + 4];
        b[0] = 0x46;
        b[2..4].copy_from_slice(&28u16.to_be_bytes());
        b[8] = 64;
        b[9] = 6;
        b[12..16].copy_from_slice(&[198, 18, 0, 1]);
        b[16..20].copy_from_slice(&[198, 18, 0, 2]);
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        b[24..28].copy_from_slice(b"data");
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        let r = Ipv4Repr::parse(&p, true).unwrap();
        assert_eq!(r.payload_len, 4);
        assert_eq!(p.payload(), b"data");
    }

    #[test]
    fn datagram_bad_lengths_rejected() {
        let b = datagram();
        assert_eq!(Ipv4Packet::new_checked(&b[..19]), Err(WireError::Truncated));
        assert_eq!(Ipv4Packet::new_checked(&b[..27]), Err(WireError::Truncated));
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&v6[..]), Err(WireError::BadVersion));
        let mut ihl = b.clone();
        ihl[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&ihl[..]), Err(WireError::BadLength));
        let mut tl = b.clone();
        tl[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&tl[..]), Err(WireError::BadLength));
        let mut ihl15 = b;
        ihl15[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl15[..]),
            Err(WireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn repr_arbitrary_roundtrips(
            src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(),
            payload_len in 0usize..(65535 - 20), ttl in any::<u8>(), ident in any::<u16>(),
            dont_frag in any::<bool>(), tos in any::<u8>(),
        ) {
            let r = Ipv4Repr {
                src_addr: Ipv4Addr::from(src), dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto), payload_len, ttl, ident, dont_frag, tos,
            };
            let mut buf = vec![0u8; r.buffer_len()];
            prop_assert_eq!(r.emit(&mut buf).unwrap(), 20);
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&p, true).unwrap(), r);
        }

        #[test]
        fn datagram_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = Ipv4Repr::parse(&p, true);
                let _ = Ipv4Repr::parse(&p, false);
                let _ = p.payload();
            }
        }
    }
}
