//! The TCP segment as the state machine sees it: header fields, options and payload,
//! independent of the wire layout (the stack converts to and from `wire` types).

use crate::seq::SeqNumber;

/// TCP control bits (RFC 9293 3.1), same bit positions as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Flags = Flags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Flags = Flags(0x02);
    /// Reset the connection.
    pub const RST: Flags = Flags(0x04);
    /// Push function.
    pub const PSH: Flags = Flags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: Flags = Flags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: Flags = Flags(0x20);
    /// No bits set.
    pub const NONE: Flags = Flags(0);

    /// Every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` added.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// `self` with the bits of `other` removed.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(Flags::SYN)
    }
    /// FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(Flags::FIN)
    }
    /// RST is set.
    pub const fn rst(self) -> bool {
        self.contains(Flags::RST)
    }
    /// ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(Flags::ACK)
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.with(rhs)
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::ACK, "ACK"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
            (Flags::PSH, "PSH"),
            (Flags::URG, "URG"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// RFC 7323 timestamps option values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timestamps {
    /// Sender's timestamp clock value.
    pub tsval: u32,
    /// Echo of the most recent timestamp received from the peer.
    pub tsecr: u32,
}

/// Up to four SACK blocks (RFC 2018), each `[left, right)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SackList {
    blocks: [(SeqNumber, SeqNumber); 4],
    len: u8,
}

impl SackList {
    /// Appends a block; returns false when the list is full.
    pub fn push(&mut self, left: SeqNumber, right: SeqNumber) -> bool {
        let i = usize::from(self.len);
        match self.blocks.get_mut(i) {
            Some(slot) => {
                *slot = (left, right);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The blocks present.
    pub fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..usize::from(self.len).min(4)]
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// No blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The TCP options the engine understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Options {
    /// Maximum segment size (SYN only).
    pub mss: Option<u16>,
    /// Window scale shift (SYN only, RFC 7323 2).
    pub window_scale: Option<u8>,
    /// SACK permitted (SYN only, RFC 2018).
    pub sack_permitted: bool,
    /// Timestamps (RFC 7323 3).
    pub timestamps: Option<Timestamps>,
    /// SACK blocks (RFC 2018).
    pub sack: SackList,
}

impl Options {
    /// Bytes these options take in a header, in Linux's layout (the one `wire`
    /// emits): MSS 4, SACK-permitted + timestamps 12 (or NOP NOP + either), NOP +
    /// window scale 4, NOP NOP + SACK blocks 4 + 8n; at most 40.
    pub fn wire_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() {
            n += 12;
        } else if self.sack_permitted {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4;
        }
        if !self.sack.is_empty() {
            n += 4 + 8 * self.sack.len();
        }
        n.min(40)
    }
}

/// An incoming segment, borrowed from the received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment<'a> {
    /// SEG.SEQ.
    pub seq: SeqNumber,
    /// SEG.ACK (meaningful only with ACK set).
    pub ack: SeqNumber,
    /// Control bits.
    pub flags: Flags,
    /// SEG.WND as carried on the wire (unscaled).
    pub window: u16,
    /// Options.
    pub options: Options,
    /// Payload.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// SEG.LEN: payload plus one for each of SYN and FIN (RFC 9293 3.4).
    pub fn len(&self) -> u32 {
        let n = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        n.saturating_add(u32::from(self.flags.syn()))
            .saturating_add(u32::from(self.flags.fin()))
    }

    /// SEG.LEN is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An outgoing segment's header; its payload (`payload_len` bytes) was written into
/// the buffer handed to [`super::Tcb::dispatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutSegment {
    /// SEG.SEQ.
    pub seq: SeqNumber,
    /// SEG.ACK.
    pub ack: SeqNumber,
    /// Control bits.
    pub flags: Flags,
    /// Window field as it goes on the wire (already scaled down).
    pub window: u16,
    /// Options.
    pub options: Options,
    /// Payload bytes written into the caller's buffer.
    pub payload_len: usize,
}

/// The reset to send in answer to `seg` when no connection (or a non-synchronized one)
/// wants it, per RFC 9293 3.10.7.1 and 3.10.7.2. `None` if `seg` is itself a RST.
pub fn reset_for(seg: &Segment<'_>) -> Option<OutSegment> {
    // RFC 9293 3.10.7.1: an incoming segment containing a RST is discarded.
    if seg.flags.rst() {
        return None;
    }
    Some(if seg.flags.ack() {
        // <SEQ=SEG.ACK><CTL=RST>
        OutSegment {
            seq: seg.ack,
            flags: Flags::RST,
            ..OutSegment::default()
        }
    } else {
        // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
        OutSegment {
            seq: SeqNumber(0),
            ack: seg.seq + seg.len(),
            flags: Flags::RST | Flags::ACK,
            ..OutSegment::default()
        }
    })
}
