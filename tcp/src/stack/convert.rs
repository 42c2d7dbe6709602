//! Between wire `TcpRepr`s and the state machine's `Segment`s.

use crate::conn::{Flags, OutSegment, SackList, Segment, Timestamps};
use crate::wire::tcp::{SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpRepr, TcpTimestamps};

/// The state machine's view of a received segment (borrowing the frame's payload).
pub fn segment_from_repr<'a>(r: &TcpRepr<'a>) -> Segment<'a> {
    let mut sack = SackList::default();
    for b in r.options.sack_blocks.iter() {
        sack.push(b.left, b.right);
    }
    Segment {
        seq: r.seq,
        ack: r.ack,
        // Only the six RFC 9293 bits; ECE/CWR are ignored (no ECN).
        flags: Flags(r.flags.bits() & 0x3f),
        window: r.window,
        options: crate::conn::Options {
            mss: r.options.mss,
            window_scale: r.options.window_scale,
            sack_permitted: r.options.sack_permitted,
            timestamps: r.options.timestamps.map(|t| Timestamps {
                tsval: t.tsval,
                tsecr: t.tsecr,
            }),
            sack,
        },
        payload: r.payload,
    }
}

/// The wire header for an outgoing segment (payload filled in separately).
pub fn repr_from_out(o: &OutSegment, src_port: u16, dst_port: u16) -> TcpRepr<'static> {
    let mut blocks = SackBlocks::new();
    for &(left, right) in o.options.sack.as_slice() {
        blocks.push(SackBlock { left, right });
    }
    TcpRepr {
        src_port,
        dst_port,
        seq: o.seq,
        ack: o.ack,
        flags: TcpFlags::from_bits(o.flags.0),
        window: o.window,
        urgent: 0,
        options: TcpOptions {
            mss: o.options.mss,
            window_scale: o.options.window_scale,
            sack_permitted: o.options.sack_permitted,
            timestamps: o.options.timestamps.map(|t| TcpTimestamps {
                tsval: t.tsval,
                tsecr: t.tsecr,
            }),
            sack_blocks: blocks,
        },
        payload: &[],
    }
}

/// A received segment's header as a `TcpRepr` (payload left out), e.g. to quote it in
/// an ICMP error.
pub fn repr_from_segment(s: &Segment<'_>, src_port: u16, dst_port: u16) -> TcpRepr<'static> {
    let out = OutSegment {
        seq: s.seq,
        ack: s.ack,
        flags: s.flags,
        window: s.window,
        options: s.options,
        payload_len: 0,
    };
    repr_from_out(&out, src_port, dst_port)
}
