//! The optimised checksum equals the RFC 1071 reference on any input and alignment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::checksum;

fuzz_target!(|data: &[u8]| {
    for off in 0..data.len().min(8) {
        let d = &data[off..];
        assert_eq!(checksum::checksum(d), checksum::reference_checksum(d));
    }
});
