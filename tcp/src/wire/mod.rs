//! Wire formats: zero-copy checked views (`XxxPacket<T: AsRef<[u8]>>`) and plain `XxxRepr`
//! types with `parse`/`emit`/`buffer_len` for Ethernet II, ARP, IPv4, ICMPv4 and TCP, plus
//! the Internet checksum.
//!
//! Every checked constructor accepts untrusted bytes and either returns a view whose field
//! accessors cannot go out of bounds or a [`WireError`] saying what was wrong. Nothing in
//! this module panics on any input.

use core::fmt;

pub use core::net::Ipv4Addr;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr};
pub use icmpv4::{DstUnreachable, Icmpv4Packet, Icmpv4Repr, OriginalDatagram};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use tcp::{SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpPacket, TcpRepr, TcpTimestamps};

/// What was wrong with a packet (on parse) or with a buffer (on emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the fixed header, or shorter than a length field says.
    Truncated,
    /// A length field is impossible (e.g. a header length below the minimum, or a total
    /// length smaller than the header).
    BadLength,
    /// A checksum did not verify.
    BadChecksum,
    /// A version field has a value we do not speak (e.g. IP version not 4).
    BadVersion,
    /// A TCP (or IP) option has a malformed length (0/1, or running past the header).
    BadOption,
    /// An IPv4 fragment (MF set or a non-zero offset); the stack does not reassemble, the
    /// caller drops and counts it.
    Fragmented,
    /// A well-formed packet of a kind this stack does not handle (e.g. a VLAN-tagged frame,
    /// an ARP for another hardware/protocol type, an unknown ICMP type).
    Unsupported,
    /// The output buffer given to an `emit` is too small for the packet.
    BufferTooSmall,
    /// A field value cannot be represented (e.g. a payload larger than a 16-bit length).
    BadValue,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WireError::Truncated => "truncated packet",
            WireError::BadLength => "bad length field",
            WireError::BadChecksum => "bad checksum",
            WireError::BadVersion => "unsupported version",
            WireError::BadOption => "malformed option",
            WireError::Fragmented => "fragmented packet",
            WireError::Unsupported => "unsupported packet kind",
            WireError::BufferTooSmall => "output buffer too small",
            WireError::BadValue => "field value out of range",
        };
        f.write_str(s)
    }
}

impl std::error::Error for WireError {}

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    /// The all-zero address (used as the unknown target hardware address in ARP requests).
    pub const UNSPECIFIED: EthernetAddress = EthernetAddress([0; 6]);

    /// Builds an address from the first six bytes of `bytes`, `None` if fewer.
    pub fn from_bytes(bytes: &[u8]) -> Option<EthernetAddress> {
        let arr: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(EthernetAddress(arr))
    }

    /// The six address bytes.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The group bit (I/G) is set; broadcast is also multicast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// An individual (unicast), non-zero address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::UNSPECIFIED
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Reads a big-endian u16 at `at`; callers have checked the bounds, out of range reads 0.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian u32 at `at`; callers have checked the bounds, out of range reads 0.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Writes a big-endian u16 at `at`; callers have checked the bounds, out of range is a no-op.
#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = buf.get_mut(at..at + 2) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes a big-endian u32 at `at`; callers have checked the bounds, out of range is a no-op.
#[inline]
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Reads an IPv4 address at `at`; out of range reads 0.0.0.0.
#[inline]
pub(crate) fn read_ipv4(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(read_u32(buf, at))
}

/// Writes an IPv4 address at `at`; out of range is a no-op.
#[inline]
pub(crate) fn write_ipv4(buf: &mut [u8], at: usize, addr: Ipv4Addr) {
    write_u32(buf, at, u32::from(addr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_address_display_is_colon_hex() {
        let a = EthernetAddress([0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(a.to_string(), "02:00:5e:10:ab:ff");
        assert_eq!(format!("{a:?}"), "02:00:5e:10:ab:ff");
        assert!(a.is_unicast());
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::UNSPECIFIED.is_unicast());
    }

    #[test]
    fn read_helpers_out_of_range_read_zero() {
        let b = [1u8, 2, 3];
        assert_eq!(read_u16(&b, 0), 0x0102);
        assert_eq!(read_u16(&b, 2), 0);
        assert_eq!(read_u32(&b, 0), 0);
        assert_eq!(EthernetAddress::from_bytes(&b), None);
    }
}
