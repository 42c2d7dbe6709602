//! ARP for Ethernet and IPv4 (RFC 826).

use core::net::Ipv4Addr;

use super::{read_ipv4, read_u16, write_ipv4, write_u16, EthernetAddress, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Length of the fixed part preceding the addresses.
const FIXED_LEN: usize = 8;

/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;
/// Protocol type IPv4.
const PTYPE_IPV4: u16 = 0x0800;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    // Ethernet/IPv4 layout
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
    /// Any other code (RARP etc.).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> ArpOperation {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            o => ArpOperation::Unknown(o),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(v: ArpOperation) -> u16 {
        match v {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(o) => o,
        }
    }
}

/// A checked view of an ARP packet.
///
/// `new_checked` accepts any hardware/protocol type whose addresses fit in the buffer;
/// the address accessors assume the Ethernet/IPv4 layout, which [`ArpRepr::parse`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it; accessors on a short buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps untrusted bytes, checking the fixed part and the address lengths it declares.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        let p = ArpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < FIXED_LEN {
            return Err(WireError::Truncated);
        }
        let need = FIXED_LEN + 2 * (usize::from(p.hardware_len()) + usize::from(p.protocol_len()));
        if len < need {
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

    /// Hardware type (1 = Ethernet).
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.b(), field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.b(), field::PTYPE)
    }

    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.b().get(field::HLEN).copied().unwrap_or(0)
    }

    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.b().get(field::PLEN).copied().unwrap_or(0)
    }

    /// Operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(self.b(), field::OPER))
    }

    fn mac_at(&self, at: usize) -> EthernetAddress {
        EthernetAddress::from_bytes(self.b().get(at..).unwrap_or(&[])).unwrap_or_default()
    }

    /// Sender hardware address (Ethernet layout).
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        self.mac_at(field::SHA)
    }

    /// Sender protocol address (IPv4 layout).
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.b(), field::SPA)
    }

    /// Target hardware address (Ethernet layout).
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        self.mac_at(field::THA)
    }

    /// Target protocol address (IPv4 layout).
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.b(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn set_mac_at(&mut self, at: usize, a: EthernetAddress) {
        if let Some(d) = self.buffer.as_mut().get_mut(at..at + 6) {
            d.copy_from_slice(&a.0);
        }
    }

    /// Writes the Ethernet/IPv4 fixed part and the operation.
    pub fn set_ethernet_ipv4(&mut self, op: ArpOperation) {
        let b = self.buffer.as_mut();
        write_u16(b, field::HTYPE, HTYPE_ETHERNET);
        write_u16(b, field::PTYPE, PTYPE_IPV4);
        if let Some(x) = b.get_mut(field::HLEN) {
            *x = 6;
        }
        if let Some(x) = b.get_mut(field::PLEN) {
            *x = 4;
        }
        write_u16(b, field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    pub fn set_source_hardware_addr(&mut self, a: EthernetAddress) {
        self.set_mac_at(field::SHA, a);
    }

    /// Sets the sender protocol address.
    pub fn set_source_protocol_addr(&mut self, a: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::SPA, a);
    }

    /// Sets the target hardware address.
    pub fn set_target_hardware_addr(&mut self, a: EthernetAddress) {
        self.set_mac_at(field::THA, a);
    }

    /// Sets the target protocol address.
    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        write_ipv4(self.buffer.as_mut(), field::TPA, a);
    }
}

/// An Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub source_hardware_addr: EthernetAddress,
    /// Sender protocol address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_hardware_addr: EthernetAddress,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Parses a checked packet. Other hardware/protocol types and operations other than
    /// request and reply are [`WireError::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        if packet.buffer.as_ref().len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != PTYPE_IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(WireError::Unsupported);
        }
        let operation = packet.operation();
        if let ArpOperation::Unknown(_) = operation {
            return Err(WireError::Unsupported);
        }
        Ok(ArpRepr {
            operation,
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// Packet length (28).
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet at the start of `buf`; returns 28.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = buf.get_mut(..PACKET_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut p = ArpPacket::new_unchecked(out);
        p.set_ethernet_ipv4(self.operation);
        p.set_source_hardware_addr(self.source_hardware_addr);
        p.set_source_protocol_addr(self.source_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    // An ARP request "who has 198.18.0.2? tell 198.18.0.1".
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198,
        18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2,
    ];

    #[test]
    fn request_bytes_parse() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(r.source_hardware_addr, EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.source_protocol_addr, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r.target_protocol_addr, Ipv4Addr::new(198, 18, 0, 2));
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn packet_other_protocol_unsupported() {
        let mut b = REQUEST;
        b[2] = 0x86;
        b[3] = 0xdd;
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported));
        let mut b = REQUEST;
        b[7] = 3; // RARP request
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported));
    }

    #[test]
    fn packet_short_truncated() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..7]),
            Err(WireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn repr_arbitrary_roundtrips(
            reply in any::<bool>(), sha in any::<[u8; 6]>(), spa in any::<u32>(),
            tha in any::<[u8; 6]>(), tpa in any::<u32>(),
        ) {
            let r = ArpRepr {
                operation: if reply { ArpOperation::Reply } else { ArpOperation::Request },
                source_hardware_addr: EthernetAddress(sha),
                source_protocol_addr: Ipv4Addr::from(spa),
                target_hardware_addr: EthernetAddress(tha),
                target_protocol_addr: Ipv4Addr::from(tpa),
            };
            let mut buf = [0u8; 28];
            prop_assert_eq!(r.emit(&mut buf).unwrap(), r.buffer_len());
            let p = ArpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ArpRepr::parse(&p).unwrap(), r);
        }

        #[test]
        fn packet_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = ArpRepr::parse(&p);
            }
        }
    }
}
