//! TCP: parsing arbitrary segments (and option blocks) never panics; a parsed segment
//! re-emits to one that parses to the same Repr (options may be laid out differently).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp::wire::{Ipv4Addr, TcpOptions, TcpRepr};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fuzz_target!(|data: &[u8]| {
    let _ = TcpOptions::parse(data);
    for verify in [true, false] {
        let Ok(repr) = TcpRepr::parse_bytes(data, SRC, DST, verify) else {
            continue;
        };
        assert!(repr.segment_len() >= repr.payload.len());
        let mut out = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut out, SRC, DST), Ok(repr.buffer_len()));
        let back = TcpRepr::parse_bytes(&out, SRC, DST, true).unwrap();
        // SACK blocks that do not fit next to the other options are left out on emit.
        let mut expected = repr;
        expected
            .options
            .sack_blocks
            .truncate(back.options.sack_blocks.len());
        assert_eq!(back, expected);
    }
});
