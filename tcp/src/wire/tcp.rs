//! TCP header (RFC 9293 3.1) with options MSS, window scale, SACK-permitted, SACK and
//! timestamps (RFC 9293 3.2, RFC 7323, RFC 2018).

use core::fmt;
use core::net::Ipv4Addr;
use core::ops::{BitOr, BitOrAssign};

use super::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, WireError};
use crate::seq::SeqNumber;

/// IP protocol number of TCP.
pub const IP_PROTOCOL_TCP: u8 = 6;

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Longest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Most option bytes a header can carry.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;
/// Largest window scale shift (RFC 7323 2.3).
pub const MAX_WINDOW_SCALE: u8 = 14;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// The TCP control bits (RFC 9293 3.1, RFC 3168 for ECE/CWR).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flags set.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// Flags from the raw header byte.
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// The raw header byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// All flags in `other` are set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any flag in `other` is set in `self`.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags in `other`.
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }

    /// No flag set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// SYN is set.
    pub const fn syn(self) -> bool {
        self.contains(TcpFlags::SYN)
    }

    /// FIN is set.
    pub const fn fin(self) -> bool {
        self.contains(TcpFlags::FIN)
    }

    /// RST is set.
    pub const fn rst(self) -> bool {
        self.contains(TcpFlags::RST)
    }

    /// ACK is set.
    pub const fn ack(self) -> bool {
        self.contains(TcpFlags::ACK)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
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

/// One SACK block: the bytes `[left, right)` have been received (RFC 2018 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SackBlock {
    /// First sequence number of the block.
    pub left: SeqNumber,
    /// Sequence number just past the block.
    pub right: SeqNumber,
}

/// Up to four SACK blocks, in the order they appear on the wire (the first is the most
/// recently changed one, RFC 2018 4). Fixed size, no allocation.
#[derive(Clone, Copy, Default)]
pub struct SackBlocks {
    blocks: [SackBlock; SackBlocks::CAPACITY],
    len: u8,
}

impl SackBlocks {
    /// Most blocks one option can carry (40 option bytes: 2 + 4 * 8).
    pub const CAPACITY: usize = 4;

    /// No blocks.
    pub const fn new() -> SackBlocks {
        SackBlocks {
            blocks: [SackBlock {
                left: SeqNumber(0),
                right: SeqNumber(0),
            }; SackBlocks::CAPACITY],
            len: 0,
        }
    }

    /// Appends a block; returns false (and drops it) when all four slots are used.
    pub fn push(&mut self, block: SackBlock) -> bool {
        match self.blocks.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = block;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Removes all blocks.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Number of blocks.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// No blocks.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The blocks as a slice.
    pub fn as_slice(&self) -> &[SackBlock] {
        self.blocks.get(..self.len()).unwrap_or(&[])
    }

    /// Iterates over the blocks in wire order.
    pub fn iter(&self) -> core::slice::Iter<'_, SackBlock> {
        self.as_slice().iter()
    }

    /// Keeps only the first `n` blocks.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.len = n as u8;
        }
    }
}

/// Equal when the used blocks are equal (unused slots are ignored).
impl PartialEq for SackBlocks {
    fn eq(&self, other: &SackBlocks) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SackBlocks {}

impl core::hash::Hash for SackBlocks {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a SackBlocks {
    type Item = &'a SackBlock;
    type IntoIter = core::slice::Iter<'a, SackBlock>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The timestamps option (RFC 7323 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpTimestamps {
    /// TSval: the sender's timestamp clock.
    pub tsval: u32,
    /// TSecr: the echoed TSval (meaningful when ACK is set).
    pub tsecr: u32,
}

/// The TCP options this stack understands. Unknown options are skipped on parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpOptions {
    /// Maximum segment size (RFC 9293 3.7.1); meaningful on SYN segments.
    pub mss: Option<u16>,
    /// Window scale shift (RFC 7323 2); parse clamps it to 14.
    pub window_scale: Option<u8>,
    /// SACK-permitted (RFC 2018 2); meaningful on SYN segments.
    pub sack_permitted: bool,
    /// Timestamps (RFC 7323 3).
    pub timestamps: Option<TcpTimestamps>,
    /// SACK blocks (RFC 2018 3).
    pub sack_blocks: SackBlocks,
}

impl TcpOptions {
    /// Parses the option bytes of a header (everything after the 20 fixed bytes).
    ///
    /// Unknown options are skipped by their length; known options with a wrong length are
    /// ignored, as Linux does. A length byte that is missing, below 2 or runs past the
    /// header is [`WireError::BadOption`] (RFC 9293 3.1: options must be parsed safely).
    #[inline]
    pub fn parse(opts: &[u8]) -> Result<TcpOptions, WireError> {
        // RFC 7323 Appendix A: the predicted layout of an established connection's
        // segments, NOP NOP TS as the only option, read with one compare.
        if let Ok(&[kind::NOP, kind::NOP, kind::TIMESTAMPS, 10, ref ts @ ..]) =
            <&[u8; 12]>::try_from(opts)
        {
            return Ok(TcpOptions {
                timestamps: Some(TcpTimestamps {
                    tsval: read_u32(ts, 0),
                    tsecr: read_u32(ts, 4),
                }),
                ..TcpOptions::default()
            });
        }
        TcpOptions::parse_general(opts)
    }

    fn parse_general(mut opts: &[u8]) -> Result<TcpOptions, WireError> {
        let mut out = TcpOptions::default();
        while let Some((&k, rest)) = opts.split_first() {
            match k {
                kind::EOL => break,
                kind::NOP => {
                    opts = rest;
                    continue;
                }
                _ => {}
            }
            let len = usize::from(*rest.first().ok_or(WireError::BadOption)?);
            if len < 2 || len > opts.len() {
                return Err(WireError::BadOption);
            }
            let (option, next) = opts.split_at(len);
            let data = option.get(2..).unwrap_or(&[]);
            match (k, len) {
                (kind::MSS, 4) => out.mss = Some(read_u16(data, 0)),
                (kind::WINDOW_SCALE, 3) => {
                    let shift = data.first().copied().unwrap_or(0);
                    // RFC 7323 2.3: a shift above 14 MUST be treated as 14.
                    out.window_scale = Some(shift.min(MAX_WINDOW_SCALE));
                }
                (kind::SACK_PERMITTED, 2) => out.sack_permitted = true,
                (kind::TIMESTAMPS, 10) => {
                    out.timestamps = Some(TcpTimestamps {
                        tsval: read_u32(data, 0),
                        tsecr: read_u32(data, 4),
                    })
                }
                (kind::SACK, _) if (len - 2) % 8 == 0 && len > 2 => {
                    out.sack_blocks.clear();
                    for b in data.chunks_exact(8) {
                        out.sack_blocks.push(SackBlock {
                            left: SeqNumber(read_u32(b, 0)),
                            right: SeqNumber(read_u32(b, 4)),
                        });
                    }
                }
                _ => {} // unknown, or a known kind with a wrong length: skipped
            }
            opts = next;
        }
        Ok(out)
    }

    /// How many SACK blocks fit in the header next to the other options.
    fn sack_blocks_that_fit(&self) -> usize {
        let base = self.fixed_len();
        let room = MAX_OPTIONS_LEN.saturating_sub(base);
        // NOP NOP kind len + 8 per block
        let fit = room.saturating_sub(4) / 8;
        fit.min(self.sack_blocks.len())
    }

    /// Bytes used by everything but the SACK blocks, in the emitted layout.
    fn fixed_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamps.is_some() {
            n += 12; // (SACK-perm | NOP NOP) + TS
        } else if self.sack_permitted {
            n += 4; // NOP NOP SACK-perm
        }
        if self.window_scale.is_some() {
            n += 4; // NOP WS
        }
        n
    }

    /// Length of the emitted options, a multiple of 4 and at most 40. SACK blocks that do
    /// not fit next to the other options are left out (the first ones are kept).
    pub fn emitted_len(&self) -> usize {
        let blocks = self.sack_blocks_that_fit();
        let sack = if blocks > 0 { 4 + 8 * blocks } else { 0 };
        (self.fixed_len() + sack).min(MAX_OPTIONS_LEN)
    }

    /// Writes the options in Linux's order and padding (`tcp_options_write`): MSS,
    /// SACK-permitted + timestamps (or NOP NOP + timestamps, or NOP NOP + SACK-permitted),
    /// NOP + window scale, NOP NOP + SACK blocks. `buf` must be at least
    /// [`emitted_len`](Self::emitted_len) long. Returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = self.emitted_len();
        let out = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[kind::MSS, 4, m[0], m[1]]);
        }
        if let Some(ts) = self.timestamps {
            if self.sack_permitted {
                put(&[kind::SACK_PERMITTED, 2]);
            } else {
                put(&[kind::NOP, kind::NOP]);
            }
            put(&[kind::TIMESTAMPS, 10]);
            put(&ts.tsval.to_be_bytes());
            put(&ts.tsecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[kind::NOP, kind::NOP, kind::SACK_PERMITTED, 2]);
        }
        if let Some(ws) = self.window_scale {
            put(&[kind::NOP, kind::WINDOW_SCALE, 3, ws]);
        }
        let blocks = self.sack_blocks_that_fit();
        if blocks > 0 {
            put(&[kind::NOP, kind::NOP, kind::SACK, (2 + 8 * blocks) as u8]);
            for b in self.sack_blocks.iter().take(blocks) {
                put(&b.left.0.to_be_bytes());
                put(&b.right.0.to_be_bytes());
            }
        }
        debug_assert_eq!(at, total);
        Ok(total)
    }
}

/// A checked view of a TCP header and payload in a byte buffer.
///
/// [`new_checked`](Self::new_checked) guarantees the fixed header is present, the data
/// offset is at least 5 and the whole header (with options) lies within the buffer; every
/// accessor is then in bounds. The view ends where the buffer ends: the caller (IPv4) cuts
/// the buffer to the IP payload length first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; accessors on a short buffer read zeros.
    /// Use for buffers about to be filled by `emit`.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps untrusted bytes, checking the lengths.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let p = TcpPacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the fixed header and the options fit in the buffer.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if hl > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.bytes(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.bytes(), field::DST_PORT)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.bytes(), field::SEQ))
    }

    /// Acknowledgment number (meaningful when ACK is set).
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.bytes(), field::ACK))
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        let b = self.bytes().get(field::DATA_OFFSET).copied().unwrap_or(0);
        usize::from(b >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.bytes().get(field::FLAGS).copied().unwrap_or(0))
    }

    /// Window field (unscaled).
    pub fn window_len(&self) -> u16 {
        read_u16(self.bytes(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.bytes(), field::CHECKSUM)
    }

    /// Urgent pointer field.
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.bytes(), field::URGENT)
    }

    /// Length of the whole segment (header + payload) in the buffer.
    pub fn total_len(&self) -> usize {
        self.bytes().len()
    }

    /// Verifies the checksum over the pseudo-header and the whole buffer (RFC 9293 3.1).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.bytes();
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        checksum::pseudo_header_and_data_verify(src, dst, IP_PROTOCOL_TCP, len, data)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The option bytes (between the fixed header and the payload).
    pub fn options(&self) -> &'a [u8] {
        let hl = self.header_len();
        self.buffer.as_ref().get(HEADER_LEN..hl).unwrap_or(&[])
    }

    /// The payload bytes.
    pub fn payload(&self) -> &'a [u8] {
        let hl = self.header_len();
        self.buffer.as_ref().get(hl..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::DST_PORT, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: SeqNumber) {
        write_u32(self.bytes_mut(), field::SEQ, v.0);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: SeqNumber) {
        write_u32(self.bytes_mut(), field::ACK, v.0);
    }

    /// Sets the data offset from a header length (a multiple of 4, 20..=60); the reserved
    /// bits are cleared.
    pub fn set_header_len(&mut self, len: usize) {
        let off = ((len / 4) as u8 & 0x0f) << 4;
        if let Some(b) = self.bytes_mut().get_mut(field::DATA_OFFSET) {
            *b = off;
        }
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        if let Some(b) = self.bytes_mut().get_mut(field::FLAGS) {
            *b = flags.0;
        }
    }

    /// Sets the window field.
    pub fn set_window_len(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::WINDOW, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::URGENT, v);
    }

    /// Computes and stores the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), WireError> {
        let len = u16::try_from(self.bytes().len()).map_err(|_| WireError::BadValue)?;
        self.set_checksum(0);
        let sum = checksum::pseudo_header_and_sum(src, dst, IP_PROTOCOL_TCP, len, self.bytes());
        self.set_checksum(checksum::finish(sum));
        Ok(())
    }

    /// The payload bytes, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.bytes_mut().get_mut(hl..).unwrap_or(&mut [])
    }
}

/// A parsed TCP segment: header fields, options and a borrowed payload. This is also
/// the segment the connection state machine (`conn`) consumes: parsing borrows the
/// payload from the received frame, so the in-order fast path copies payload bytes only
/// into the receive buffer (or not at all, with `Stack::recv_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: SeqNumber,
    /// Acknowledgment number (zero on emit when ACK is not set is up to the caller).
    pub ack: SeqNumber,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window field (unscaled).
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options.
    pub options: TcpOptions,
    /// Payload, borrowed from the received frame (or the caller's data on emit).
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses a checked view. With `verify_checksum`, a segment whose checksum does not
    /// verify is [`WireError::BadChecksum`] (RFC 9293 3.1: the checksum covers the
    /// pseudo-header, header and data).
    pub fn parse(
        packet: &TcpPacket<&'a [u8]>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        packet.check_len()?;
        TcpRepr::parse_len_checked(packet, src, dst, verify_checksum)
    }

    /// [`TcpRepr::parse`] after `check_len` passed (not repeated on the receive path).
    #[inline]
    fn parse_len_checked(
        packet: &TcpPacket<&'a [u8]>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        if verify_checksum && !packet.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        let options = TcpOptions::parse(packet.options())?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window_len(),
            urgent: packet.urgent_at(),
            options,
            payload: packet.payload(),
        })
    }

    /// Parses raw segment bytes (header + payload, cut to the IP payload length).
    ///
    /// The receive path's parse: the same checks and result as [`TcpRepr::parse`] of
    /// [`TcpPacket::new_checked`], the fixed header read from one 20-byte array.
    pub fn parse_bytes(
        bytes: &'a [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>, WireError> {
        let h = bytes
            .first_chunk::<HEADER_LEN>()
            .ok_or(WireError::Truncated)?;
        let hl = usize::from(h[12] >> 4) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        let (head, payload) = bytes.split_at_checked(hl).ok_or(WireError::Truncated)?;
        if verify_checksum {
            let len = u16::try_from(bytes.len()).map_err(|_| WireError::BadChecksum)?;
            if !checksum::pseudo_header_and_data_verify(src, dst, IP_PROTOCOL_TCP, len, bytes) {
                return Err(WireError::BadChecksum);
            }
        }
        let options = TcpOptions::parse(head.get(HEADER_LEN..).unwrap_or_default())?;
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(TcpRepr {
            src_port: be16(0),
            dst_port: be16(2),
            seq: SeqNumber(be32(4)),
            ack: SeqNumber(be32(8)),
            flags: TcpFlags(h[13]),
            window: be16(14),
            urgent: be16(18),
            options,
            payload,
        })
    }

    /// The timestamps when they are the only option (an established connection's
    /// segments without SACK blocks: NOP NOP TS, the layout Linux sends).
    #[inline]
    fn timestamps_only(&self) -> Option<TcpTimestamps> {
        match self.options {
            TcpOptions {
                mss: None,
                window_scale: None,
                sack_permitted: false,
                timestamps: Some(ts),
                sack_blocks,
            } if sack_blocks.is_empty() => Some(ts),
            _ => None,
        }
    }

    /// [`TcpRepr::emit_header`] for [`TcpRepr::timestamps_only`]: the 32-byte header
    /// composed whole and stored at once (the same bytes the general path writes).
    #[inline]
    fn emit_header_ts(
        &self,
        ts: TcpTimestamps,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        const HL: usize = HEADER_LEN + 12;
        let total = HL + payload_len;
        let len = u16::try_from(total).map_err(|_| WireError::BadValue)?;
        let out = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        let mut h = [0u8; HL];
        h[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        h[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        h[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        h[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        h[12] = ((HL / 4) as u8) << 4;
        h[13] = self.flags.0;
        h[14..16].copy_from_slice(&self.window.to_be_bytes());
        // h[16..18]: the checksum, zero while summing.
        h[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        h[20..24].copy_from_slice(&[kind::NOP, kind::NOP, kind::TIMESTAMPS, 10]);
        h[24..28].copy_from_slice(&ts.tsval.to_be_bytes());
        h[28..32].copy_from_slice(&ts.tsecr.to_be_bytes());
        let (head, _) = out.split_at_mut(HL);
        head.copy_from_slice(&h);
        let sum = checksum::pseudo_header_and_sum(src, dst, IP_PROTOCOL_TCP, len, out);
        if let Some(c) = out.get_mut(16..18) {
            c.copy_from_slice(&checksum::finish(sum).to_be_bytes());
        }
        Ok(total)
    }

    /// The same header without the payload (e.g. to quote it in an ICMP error).
    pub fn header(&self) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            urgent: self.urgent,
            options: self.options,
            payload: &[],
        }
    }

    /// Header length: 20 bytes plus the emitted options, padded to a multiple of 4.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.emitted_len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// SEG.LEN as a sequence-space distance (RFC 9293 3.4), saturating.
    pub fn seq_len(&self) -> u32 {
        u32::try_from(self.segment_len()).unwrap_or(u32::MAX)
    }

    /// Length in sequence space: payload plus one for SYN and one for FIN (RFC 9293 3.4).
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags.contains(TcpFlags::SYN))
            + usize::from(self.flags.contains(TcpFlags::FIN))
    }

    /// Writes header, payload and checksum into `buf`; returns the length written
    /// ([`buffer_len`](Self::buffer_len)).
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, WireError> {
        let hl = self.header_len();
        let total = hl + self.payload.len();
        let out = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        if let Some(dst_payload) = out.get_mut(hl..) {
            dst_payload.copy_from_slice(self.payload);
        }
        self.emit_header(out, self.payload.len(), src, dst)
    }

    /// Writes the header and checksum for a payload of `payload_len` bytes that the caller
    /// already placed at `buf[header_len()..]` (zero-copy build); `self.payload` is
    /// ignored. Returns the segment length (`header_len() + payload_len`).
    pub fn emit_header(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        match self.timestamps_only() {
            Some(ts) => self.emit_header_ts(ts, buf, payload_len, src, dst),
            None => self.emit_header_general(buf, payload_len, src, dst),
        }
    }

    /// [`TcpRepr::emit_header`] field by field, for any options.
    fn emit_header_general(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, WireError> {
        let hl = self.header_len();
        let total = hl + payload_len;
        if total > usize::from(u16::MAX) {
            return Err(WireError::BadValue);
        }
        let out = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
        let mut p = TcpPacket::new_unchecked(&mut *out);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq);
        p.set_ack_number(self.ack);
        p.set_header_len(hl);
        p.set_flags(self.flags);
        p.set_window_len(self.window);
        p.set_urgent_at(self.urgent);
        if let Some(opts) = out.get_mut(HEADER_LEN..hl) {
            self.options.emit(opts)?;
        }
        TcpPacket::new_unchecked(out).fill_checksum(src, dst)?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn syn() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq: SeqNumber(0x1234_5678),
            ack: SeqNumber(0),
            flags: TcpFlags::SYN,
            window: 64240,
            urgent: 0,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                timestamps: Some(TcpTimestamps {
                    tsval: 1000,
                    tsecr: 0,
                }),
                sack_blocks: SackBlocks::new(),
            },
            payload: &[],
        }
    }

    #[test]
    fn options_syn_linux_layout_is_compact() {
        let r = syn();
        assert_eq!(r.header_len(), 40);
        let mut buf = [0u8; 40];
        r.emit(&mut buf, SRC, DST).unwrap();
        assert_eq!(
            &buf[20..],
            &[
                2, 4, 0x05, 0xb4, // MSS 1460
                4, 2, // SACK-permitted
                8, 10, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, // TS
                1, 3, 3, 7 // NOP WS 7
            ]
        );
        assert_eq!(r.segment_len(), 1);
    }

    #[test]
    fn repr_seq_len_flags_and_header_for_the_state_machine() {
        let data = [1u8, 2, 3];
        let r = TcpRepr {
            flags: TcpFlags::FIN | TcpFlags::ACK | TcpFlags::ECE,
            payload: &data,
            ..syn()
        };
        // SEG.LEN counts FIN; ECE does not hide the RFC 9293 bits.
        assert_eq!(r.seq_len(), 4);
        assert!(r.flags.fin() && r.flags.ack() && !r.flags.syn() && !r.flags.rst());
        assert_eq!(syn().seq_len(), 1);
        let h = r.header();
        assert!(h.payload.is_empty());
        assert_eq!(
            TcpRepr {
                payload: &data,
                ..h
            },
            r
        );
    }

    #[test]
    fn repr_syn_emit_parse_roundtrips() {
        let r = syn();
        let mut buf = [0u8; 64];
        let n = r.emit(&mut buf, SRC, DST).unwrap();
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(TcpRepr::parse(&p, SRC, DST, true).unwrap(), r);
    }

    #[test]
    fn repr_corrupted_byte_bad_checksum() {
        let mut r = syn();
        r.payload = b"hello";
        r.flags = TcpFlags::ACK | TcpFlags::PSH;
        let mut buf = [0u8; 64];
        let n = r.emit(&mut buf, SRC, DST).unwrap();
        buf[n - 1] ^= 0x40;
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(
            TcpRepr::parse(&p, SRC, DST, true),
            Err(WireError::BadChecksum)
        );
        // Wrong pseudo-header also fails.
        buf[n - 1] ^= 0x40;
        let p = TcpPacket::new_checked(&buf[..n]).unwrap();
        assert!(TcpRepr::parse(&p, SRC, DST, true).is_ok());
        assert_eq!(
            TcpRepr::parse(&p, SRC, Ipv4Addr::new(198, 18, 0, 3), true),
            Err(WireError::BadChecksum)
        );
    }

    #[test]
    fn repr_emit_header_zero_copy_matches_emit() {
        let mut r = syn();
        r.flags = TcpFlags::ACK;
        r.options = TcpOptions::default();
        r.payload = b"zero-copy payload";
        let mut a = [0u8; 128];
        let n = r.emit(&mut a, SRC, DST).unwrap();
        let mut b = [0u8; 128];
        let hl = r.header_len();
        b[hl..hl + r.payload.len()].copy_from_slice(r.payload);
        let header_only = TcpRepr { payload: &[], ..r };
        let m = header_only
            .emit_header(&mut b, r.payload.len(), SRC, DST)
            .unwrap();
        assert_eq!(n, m);
        assert_eq!(a[..n], b[..m]);
    }

    #[test]
    fn repr_emit_short_buffer_too_small() {
        let r = syn();
        let mut buf = [0u8; 39];
        assert_eq!(r.emit(&mut buf, SRC, DST), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn packet_short_buffer_truncated() {
        assert_eq!(
            TcpPacket::new_checked(&[0u8; 19][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 20];
        b[12] = 0x40; // data offset 4
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::BadLength
        );
        b[12] = 0x60; // data offset 6 but only 20 bytes
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn options_predicted_timestamps_only() {
        let opts = [1, 1, 8, 10, 0, 0, 0, 7, 0xff, 0, 0, 1];
        let parsed = TcpOptions::parse(&opts).unwrap();
        let want = TcpOptions {
            timestamps: Some(TcpTimestamps {
                tsval: 7,
                tsecr: 0xff00_0001,
            }),
            ..TcpOptions::default()
        };
        assert_eq!(parsed, want);
        assert_eq!(TcpOptions::parse_general(&opts).unwrap(), want);
        // Not the prediction (TS then NOP NOP, or a wrong TS length): the general parser.
        let other = [8, 10, 0, 0, 0, 7, 0xff, 0, 0, 1, 1, 1];
        assert_eq!(TcpOptions::parse(&other).unwrap(), want);
        let bad = [1, 1, 8, 11, 0, 0, 0, 7, 0xff, 0, 0, 1];
        assert_eq!(TcpOptions::parse(&bad), Err(WireError::BadOption));
    }

    #[test]
    fn options_bad_lengths_bad_option() {
        assert_eq!(TcpOptions::parse(&[2]), Err(WireError::BadOption));
        assert_eq!(TcpOptions::parse(&[2, 0, 0, 0]), Err(WireError::BadOption));
        assert_eq!(TcpOptions::parse(&[2, 1, 0, 0]), Err(WireError::BadOption));
        assert_eq!(TcpOptions::parse(&[1, 2, 5, 0]), Err(WireError::BadOption));
        assert_eq!(TcpOptions::parse(&[99, 8, 0, 0]), Err(WireError::BadOption));
    }

    #[test]
    fn options_unknown_skipped_and_eol_stops() {
        let o = TcpOptions::parse(&[99, 4, 0xaa, 0xbb, 2, 4, 0x02, 0x18, 0, 3, 3, 9]).unwrap();
        assert_eq!(o.mss, Some(536));
        assert_eq!(o.window_scale, None); // after EOL
    }

    #[test]
    fn options_window_scale_above_14_clamped() {
        let o = TcpOptions::parse(&[3, 3, 20, 1]).unwrap();
        assert_eq!(o.window_scale, Some(14));
    }

    #[test]
    fn options_wrong_length_known_kind_ignored() {
        let o = TcpOptions::parse(&[2, 3, 5, 1, 8, 6, 0, 0, 0, 0]).unwrap();
        assert_eq!(o.mss, None);
        assert_eq!(o.timestamps, None);
    }

    #[test]
    fn options_sack_blocks_parsed_in_order() {
        let mut opts = vec![1, 1, 5, 18];
        for v in [10u32, 20, 30, 40] {
            opts.extend_from_slice(&v.to_be_bytes());
        }
        let o = TcpOptions::parse(&opts).unwrap();
        let blocks: Vec<_> = o.sack_blocks.iter().copied().collect();
        assert_eq!(
            blocks,
            vec![
                SackBlock {
                    left: SeqNumber(10),
                    right: SeqNumber(20)
                },
                SackBlock {
                    left: SeqNumber(30),
                    right: SeqNumber(40)
                }
            ]
        );
    }

    #[test]
    fn options_ts_with_four_sack_blocks_keeps_three() {
        let mut o = TcpOptions {
            timestamps: Some(TcpTimestamps { tsval: 1, tsecr: 2 }),
            ..Default::default()
        };
        for i in 0..4u32 {
            assert!(o.sack_blocks.push(SackBlock {
                left: SeqNumber(i * 100),
                right: SeqNumber(i * 100 + 50)
            }));
        }
        assert!(!o.sack_blocks.push(SackBlock::default()));
        assert_eq!(o.emitted_len(), 12 + 4 + 24);
        let mut buf = [0u8; 40];
        o.emit(&mut buf).unwrap();
        let back = TcpOptions::parse(&buf).unwrap();
        assert_eq!(back.sack_blocks.len(), 3);
        assert_eq!(back.sack_blocks.as_slice(), &o.sack_blocks.as_slice()[..3]);
    }

    #[test]
    fn flags_ops_and_debug() {
        let mut f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::SYN));
        assert!(!f.contains(TcpFlags::SYN | TcpFlags::FIN));
        f.insert(TcpFlags::FIN);
        f.remove(TcpFlags::SYN);
        assert_eq!(f.bits(), 0x11);
        assert_eq!(format!("{f:?}"), "FIN|ACK");
        assert!(TcpFlags::empty().is_empty());
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=14),
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
        )
            .prop_map(|(mss, ws, sp, ts, sacks)| {
                let mut o = TcpOptions {
                    mss,
                    window_scale: ws,
                    sack_permitted: sp,
                    timestamps: ts.map(|(tsval, tsecr)| TcpTimestamps { tsval, tsecr }),
                    sack_blocks: SackBlocks::new(),
                };
                for (l, r) in sacks {
                    o.sack_blocks.push(SackBlock {
                        left: SeqNumber(l),
                        right: SeqNumber(r),
                    });
                }
                let fit = o.sack_blocks_that_fit();
                o.sack_blocks.truncate(fit);
                o
            })
    }

    proptest! {
        #[test]
        fn repr_parse_bytes_same_as_parse_of_checked_view(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            data_offset in 0u8..16, fix_checksum in any::<bool>(), verify in any::<bool>(),
        ) {
            if let Some(b) = bytes.get_mut(12) {
                *b = (data_offset << 4) | (*b & 0x0f);
            }
            if fix_checksum && bytes.len() >= HEADER_LEN {
                let _ = TcpPacket::new_unchecked(&mut bytes[..]).fill_checksum(SRC, DST);
            }
            let general = TcpPacket::new_checked(&bytes[..])
                .and_then(|p| TcpRepr::parse(&p, SRC, DST, verify));
            prop_assert_eq!(TcpRepr::parse_bytes(&bytes, SRC, DST, verify), general);
        }

        #[test]
        fn repr_timestamps_only_header_composed_whole_same_bytes_as_field_by_field(
            seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(),
            window in any::<u16>(), urgent in any::<u16>(), ports in any::<(u16, u16)>(),
            ts in any::<(u32, u32)>(), payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let r = TcpRepr {
                src_port: ports.0,
                dst_port: ports.1,
                seq: SeqNumber(seq),
                ack: SeqNumber(ack),
                flags: TcpFlags(flags),
                window,
                urgent,
                options: TcpOptions {
                    timestamps: Some(TcpTimestamps { tsval: ts.0, tsecr: ts.1 }),
                    ..TcpOptions::default()
                },
                payload: &[],
            };
            prop_assert!(r.timestamps_only().is_some());
            let mut fast = vec![0xee; 32 + payload.len() + 3];
            let mut general = fast.clone();
            fast[32..32 + payload.len()].copy_from_slice(&payload);
            general[32..32 + payload.len()].copy_from_slice(&payload);
            let a = r.emit_header(&mut fast, payload.len(), SRC, DST).unwrap();
            let b = r.emit_header_general(&mut general, payload.len(), SRC, DST).unwrap();
            prop_assert_eq!(a, b);
            prop_assert_eq!(fast, general);
        }

        #[test]
        fn repr_arbitrary_emit_parse_roundtrips(
            src_port in any::<u16>(), dst_port in any::<u16>(),
            seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(),
            window in any::<u16>(), urgent in any::<u16>(),
            options in arb_options(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let r = TcpRepr {
                src_port, dst_port, seq: SeqNumber(seq), ack: SeqNumber(ack),
                flags: TcpFlags(flags), window, urgent, options, payload: &payload,
            };
            let mut buf = vec![0u8; r.buffer_len()];
            let n = r.emit(&mut buf, SRC, DST).unwrap();
            prop_assert_eq!(n, r.buffer_len());
            prop_assert_eq!(r.header_len() % 4, 0);
            let back = TcpRepr::parse_bytes(&buf, SRC, DST, true).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn options_predicted_path_agrees_with_general_parse(
            tail in proptest::collection::vec(any::<u8>(), 0..=12),
            predicted in any::<bool>(),
        ) {
            // Half the cases start with the predicted NOP NOP TS prefix.
            let mut opts = if predicted { vec![1, 1, 8, 10] } else { Vec::new() };
            opts.extend_from_slice(&tail);
            prop_assert_eq!(TcpOptions::parse(&opts), TcpOptions::parse_general(&opts));
        }

        #[test]
        fn repr_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = TcpRepr::parse_bytes(&data, SRC, DST, true);
            let _ = TcpRepr::parse_bytes(&data, SRC, DST, false);
            let _ = TcpOptions::parse(&data);
        }
    }
}
