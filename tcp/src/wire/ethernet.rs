//! Ethernet II frames (IEEE 802.3 clause 3.2.6 "Length/Type" >= 0x0600).

use core::fmt;

use super::{read_u16, write_u16, EthernetAddress, WireError};

/// Length of an Ethernet II header (destination, source, EtherType).
pub const HEADER_LEN: usize = 14;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// The EtherType (protocol of the payload).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// IPv4, 0x0800.
    Ipv4,
    /// ARP, 0x0806.
    Arp,
    /// IEEE 802.1Q VLAN tag, 0x8100.
    Vlan,
    /// IEEE 802.1ad (QinQ) service tag, 0x88a8.
    QinQ,
    /// IPv6, 0x86dd.
    Ipv6,
    /// Anything else (including 802.3 length values below 0x0600).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> EtherType {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtherType::Ipv4 => f.write_str("IPv4"),
            EtherType::Arp => f.write_str("ARP"),
            EtherType::Vlan => f.write_str("802.1Q"),
            EtherType::QinQ => f.write_str("802.1ad"),
            EtherType::Ipv6 => f.write_str("IPv6"),
            EtherType::Unknown(v) => write!(f, "0x{v:04x}"),
        }
    }
}

/// A checked view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it; accessors on a short buffer read zeros.
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps untrusted bytes, checking that the header is present.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(self.buffer.as_ref().get(field::DST..).unwrap_or(&[]))
            .unwrap_or_default()
    }

    /// Source address.
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(self.buffer.as_ref().get(field::SRC..).unwrap_or(&[]))
            .unwrap_or_default()
    }

    /// EtherType.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EthernetFrame<&'a T> {
    /// The payload (may include trailing padding of short frames).
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        if let Some(d) = self.buffer.as_mut().get_mut(field::DST..field::DST + 6) {
            d.copy_from_slice(&a.0);
        }
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        if let Some(d) = self.buffer.as_mut().get_mut(field::SRC..field::SRC + 6) {
            d.copy_from_slice(&a.0);
        }
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, t: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, t.into());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

/// A parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source address.
    pub src_addr: EthernetAddress,
    /// Destination address.
    pub dst_addr: EthernetAddress,
    /// EtherType: [`EtherType::Ipv4`] or [`EtherType::Arp`] after a successful parse.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses a checked frame. VLAN-tagged frames (802.1Q/802.1ad) and 802.3 length frames
    /// are [`WireError::Unsupported`]; so is any EtherType other than IPv4 and ARP.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, WireError> {
        if frame.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let ethertype = frame.ethertype();
        match ethertype {
            EtherType::Ipv4 | EtherType::Arp => Ok(EthernetRepr {
                src_addr: frame.src_addr(),
                dst_addr: frame.dst_addr(),
                ethertype,
            }),
            _ => Err(WireError::Unsupported),
        }
    }

    /// Header length (14).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 14-byte header at the start of `buf`; returns 14.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let hdr = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut f = EthernetFrame::new_unchecked(hdr);
        f.set_dst_addr(self.dst_addr);
        f.set_src_addr(self.src_addr);
        f.set_ethertype(self.ethertype);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_ipv4_parses() {
        let mut b = [0u8; 20];
        b[..6].copy_from_slice(&[0xff; 6]);
        b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        b[12] = 0x08;
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.dst_addr, EthernetAddress::BROADCAST);
        assert_eq!(r.src_addr, EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(r.ethertype, EtherType::Ipv4);
        assert_eq!(f.payload().len(), 6);
    }

    #[test]
    fn frame_vlan_unsupported() {
        let mut b = [0u8; 18];
        b[12] = 0x81;
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f), Err(WireError::Unsupported));
        b[12] = 0x88;
        b[13] = 0xa8;
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&f), Err(WireError::Unsupported));
    }

    #[test]
    fn frame_short_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&[0u8; 13][..]),
            Err(WireError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn repr_arbitrary_roundtrips(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), arp in any::<bool>()) {
            let r = EthernetRepr {
                src_addr: EthernetAddress(src),
                dst_addr: EthernetAddress(dst),
                ethertype: if arp { EtherType::Arp } else { EtherType::Ipv4 },
            };
            let mut buf = [0u8; 14];
            prop_assert_eq!(r.emit(&mut buf).unwrap(), r.buffer_len());
            let f = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&f).unwrap(), r);
        }

        #[test]
        fn frame_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = EthernetRepr::parse(&f);
                let _ = f.payload();
            }
        }
    }
}
