//! Ethernet II: parsing arbitrary bytes never panics, and a parsed header re-emits to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::{EthernetFrame, EthernetRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let _ = frame.payload();
    if let Ok(repr) = EthernetRepr::parse(&frame) {
        let mut out = [0u8; 14];
        assert_eq!(repr.emit(&mut out), Ok(14));
        assert_eq!(&out[..], &data[..14]);
    }
});
