//! ARP: parsing arbitrary bytes never panics; a parsed packet round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::{ArpPacket, ArpRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = ArpPacket::new_checked(data) else {
        return;
    };
    if let Ok(repr) = ArpRepr::parse(&packet) {
        let mut out = [0u8; 28];
        assert_eq!(repr.emit(&mut out), Ok(28));
        let back = ArpRepr::parse(&ArpPacket::new_checked(&out[..]).unwrap()).unwrap();
        assert_eq!(back, repr);
    }
});
