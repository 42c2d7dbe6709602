//! ICMPv4: parsing arbitrary bytes never panics; a parsed message round-trips, and the
//! quoted datagram of an error parses safely.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::{Icmpv4Packet, Icmpv4Repr, OriginalDatagram};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    for verify in [true, false] {
        if let Ok(repr) = Icmpv4Repr::parse(&packet, verify) {
            if let Icmpv4Repr::DstUnreachable { original, .. } = repr {
                if let Ok(o) = OriginalDatagram::parse(original) {
                    let _ = o.ports();
                }
            }
            let mut out = vec![0u8; repr.buffer_len()];
            assert_eq!(repr.emit(&mut out), Ok(repr.buffer_len()));
            let back = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&out[..]).unwrap(), true);
            assert_eq!(back, Ok(repr));
        }
    }
});
