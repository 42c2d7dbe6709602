//! IPv4: parsing arbitrary bytes never panics; the payload stays within the buffer and
//! a parsed header round-trips through emit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::{Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let payload = packet.payload();
    assert!(payload.len() + packet.header_len() <= data.len());
    for verify in [true, false] {
        if let Ok(repr) = Ipv4Repr::parse(&packet, verify) {
            assert_eq!(repr.payload_len, payload.len());
            let mut out = vec![0u8; repr.buffer_len()];
            assert_eq!(repr.emit(&mut out), Ok(20));
            let back = Ipv4Repr::parse(&Ipv4Packet::new_checked(&out[..]).unwrap(), true).unwrap();
            assert_eq!(back, repr);
        }
    }
});
