//! Initial sequence numbers (RFC 6528) and SYN cookies (as Linux encodes them).
//!
//! Both are keyed with a caller-supplied 128-bit secret (the engine has no RNG: the
//! worker fills it from the OS at start-up) and use SipHash-2-4 as the keyed hash.

use core::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::seq::SeqNumber;
use crate::table::FourTuple;
use crate::time::Instant;

/// Hashes the 4-tuple and `extra` under `key`, with `domain` separating the uses.
fn keyed_hash(key: &[u8; 16], domain: u8, tuple: &FourTuple, extra: u32) -> u32 {
    let mut h = SipHasher24::new_with_key(key);
    h.write_u8(domain);
    h.write_u32(tuple.local_addr.to_bits());
    h.write_u16(tuple.local_port);
    h.write_u32(tuple.remote_addr.to_bits());
    h.write_u16(tuple.remote_port);
    h.write_u32(extra);
    h.finish() as u32
}

/// RFC 6528 initial sequence number generator.
#[derive(Clone)]
pub struct IsnGenerator {
    secret: [u8; 16],
}

impl core::fmt::Debug for IsnGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IsnGenerator { .. }")
    }
}

impl IsnGenerator {
    /// A generator keyed with a random 128-bit `secret` (from the OS, never a constant).
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator { secret }
    }

    /// The ISN for a new connection on `tuple` at `now`.
    pub fn isn(&self, now: Instant, tuple: &FourTuple) -> SeqNumber {
        // RFC 6528 3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
        // M a timer ticking every 4 microseconds (RFC 9293 3.4.1), F a keyed hash.
        let m = (now.total_micros() / 4) as u32;
        SeqNumber(m.wrapping_add(keyed_hash(&self.secret, 0, tuple, 0)))
    }
}

/// MSS values a SYN cookie can carry (3-bit index); the largest not above the peer's
/// MSS is chosen.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1360, 1400, 1440, 1452, 1460];

/// Length of one cookie time slot in microseconds (64 s, as Linux).
const SLOT_MICROS: u64 = 64_000_000;
/// Bits of the cookie below the time counter.
const COUNT_SHIFT: u32 = 24;
const LOW_MASK: u32 = (1 << COUNT_SHIFT) - 1;
/// Position of the 3-bit MSS index inside the low 24 bits; below it, 21 MAC bits.
const INDEX_SHIFT: u32 = 21;
const MAC_MASK: u32 = (1 << INDEX_SHIFT) - 1;
/// TSval low bits carrying options: wscale (4 bits; 0xf = none), SACK, ECN.
const TS_OPT_BITS: u32 = 6;
const TS_OPT_MASK: u32 = (1 << TS_OPT_BITS) - 1;
const TS_WSCALE_MASK: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;
const TS_ECN: u32 = 1 << 5;
/// RFC 7323 2.3: the largest window scale shift.
const MAX_WSCALE: u8 = 14;

/// The SYN's options that the cookie should remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The peer's window scale shift, if it sent the option.
    pub wscale: Option<u8>,
    /// The peer sent SACK-permitted.
    pub sack_permitted: bool,
    /// The SYN negotiated ECN.
    pub ecn: bool,
    /// Our timestamp clock now, if the SYN carried timestamps (only then can wscale,
    /// SACK and ECN be remembered: they ride in the low bits of our TSval).
    pub ts_clock: Option<u32>,
}

/// What a valid cookie ACK restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedCookie {
    /// The MSS to use (from [`MSS_TABLE`]).
    pub mss: u16,
    /// The peer's window scale shift, if negotiated.
    pub wscale: Option<u8>,
    /// SACK was permitted.
    pub sack_permitted: bool,
    /// ECN was negotiated.
    pub ecn: bool,
    /// Timestamps were negotiated (the ACK echoed one).
    pub timestamps: bool,
}

/// Stateless SYN cookies, laid out like Linux's: ISN = hash(tuple) + peer ISN +
/// (8-bit time counter of 64 s slots) << 24 + (3-bit MSS index << 21 | 21-bit MAC);
/// options ride in the low 6 bits of TSval. A blind forgery succeeds with probability
/// 2^-21 per try, as with Linux's encoding.
#[derive(Clone)]
pub struct SynCookies {
    secret: [u8; 16],
    max_age: u32,
}

impl core::fmt::Debug for SynCookies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SynCookies")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl SynCookies {
    /// Cookies keyed with a random 128-bit `secret`, valid in the current and the
    /// previous 64 s slot (64-128 s, as Linux).
    pub fn new(secret: [u8; 16]) -> Self {
        SynCookies { secret, max_age: 2 }
    }

    /// Accept cookies from the current and the `slots - 1` previous 64 s slots
    /// (clamped to 1..=255).
    pub fn with_max_age_slots(mut self, slots: u8) -> Self {
        self.max_age = u32::from(slots.max(1));
        self
    }

    /// The low 24 bits: the MSS index and a 21-bit MAC over tuple, time slot and index
    /// (so, unlike Linux's additive encoding, the index cannot be altered undetected).
    fn low_bits(secret: &[u8; 16], tuple: &FourTuple, count: u32, index: u32) -> u32 {
        let mac = keyed_hash(secret, 2, tuple, (count << 3) | index) & MAC_MASK;
        ((index << INDEX_SHIFT) | mac) & LOW_MASK
    }

    fn counter(now: Instant) -> u32 {
        (now.total_micros() / SLOT_MICROS) as u32
    }

    /// The cookie ISN for a SYN from `tuple` with sequence number `peer_isn` and MSS
    /// option `mss`, and the TSval to send if the SYN carried timestamps.
    pub fn encode(
        &self,
        now: Instant,
        tuple: &FourTuple,
        peer_isn: SeqNumber,
        mss: u16,
        opts: &SynOptions,
    ) -> (SeqNumber, Option<u32>) {
        let index = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let count = Self::counter(now);
        let cookie = keyed_hash(&self.secret, 1, tuple, 0)
            .wrapping_add(peer_isn.0)
            .wrapping_add(count << COUNT_SHIFT)
            .wrapping_add(Self::low_bits(&self.secret, tuple, count, index));
        let tsval = opts.ts_clock.map(|ts| {
            let wscale = opts
                .wscale
                .filter(|&w| w <= MAX_WSCALE)
                .map_or(TS_WSCALE_MASK, u32::from);
            let mut options = wscale;
            if opts.sack_permitted {
                options |= TS_SACK;
            }
            if opts.ecn {
                options |= TS_ECN;
            }
            // Keep TSval at or before the clock (RFC 7323 5.4: TSval must not run ahead).
            let v = (ts & !TS_OPT_MASK) | options;
            if SeqNumber(v) > SeqNumber(ts) {
                v.wrapping_sub(TS_OPT_MASK + 1)
            } else {
                v
            }
        });
        (SeqNumber(cookie), tsval)
    }

    /// Checks the ACK completing a cookie handshake: `our_isn` is SEG.ACK - 1,
    /// `peer_isn` is SEG.SEQ - 1, `tsecr` the echoed timestamp if the ACK had one.
    /// `None` if the cookie is forged, for another tuple, or expired.
    pub fn decode(
        &self,
        now: Instant,
        tuple: &FourTuple,
        our_isn: SeqNumber,
        peer_isn: SeqNumber,
        tsecr: Option<u32>,
    ) -> Option<DecodedCookie> {
        let count = Self::counter(now);
        let cookie = our_isn
            .0
            .wrapping_sub(keyed_hash(&self.secret, 1, tuple, 0))
            .wrapping_sub(peer_isn.0);
        let age = count.wrapping_sub(cookie >> COUNT_SHIFT) & 0xff;
        if age >= self.max_age {
            return None;
        }
        let issued = count.wrapping_sub(age);
        let low = cookie & LOW_MASK;
        let index = low >> INDEX_SHIFT;
        if low != Self::low_bits(&self.secret, tuple, issued, index) {
            return None;
        }
        let mss = *MSS_TABLE.get(index as usize)?;
        let mut decoded = DecodedCookie {
            mss,
            wscale: None,
            sack_permitted: false,
            ecn: false,
            timestamps: false,
        };
        if let Some(tsecr) = tsecr {
            let wscale = tsecr & TS_WSCALE_MASK;
            if wscale != TS_WSCALE_MASK {
                // RFC 7323 2.3: a shift above 14 is invalid (4 bits leave only 15, which
                // means "none", but keep the check should the encoding change).
                let wscale = u8::try_from(wscale).ok().filter(|&w| w <= MAX_WSCALE)?;
                decoded.wscale = Some(wscale);
            }
            decoded.sack_permitted = tsecr & TS_SACK != 0;
            decoded.ecn = tsecr & TS_ECN != 0;
            decoded.timestamps = true;
        }
        Some(decoded)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    const SECRET: [u8; 16] = *b"0123456789abcdef";

    fn tuple(port: u16) -> FourTuple {
        FourTuple {
            local_addr: Ipv4Addr::new(198, 18, 0, 1),
            local_port: 80,
            remote_addr: Ipv4Addr::new(198, 19, 3, 4),
            remote_port: port,
        }
    }

    fn secs(n: u64) -> Instant {
        Instant::from_millis(n * 1000)
    }

    #[test]
    fn isn_later_time_advances_by_4us_ticks() {
        let g = IsnGenerator::new(SECRET);
        let a = g.isn(Instant::from_micros(1_000), &tuple(1000));
        let b = g.isn(Instant::from_micros(1_400), &tuple(1000));
        assert_eq!(b - a, 100);
    }

    #[test]
    fn isn_other_tuple_or_secret_differs() {
        let g = IsnGenerator::new(SECRET);
        let now = Instant::from_millis(5);
        assert_ne!(g.isn(now, &tuple(1000)), g.isn(now, &tuple(1001)));
        let h = IsnGenerator::new(*b"fedcba9876543210");
        assert_ne!(g.isn(now, &tuple(1000)), h.isn(now, &tuple(1000)));
    }

    #[test]
    fn cookie_roundtrip_restores_mss_and_options() {
        let c = SynCookies::new(SECRET);
        let now = Instant::from_millis(1_000_000);
        let opts = SynOptions {
            wscale: Some(7),
            sack_permitted: true,
            ecn: false,
            ts_clock: Some(123_456),
        };
        let peer = SeqNumber(0xdead_beef);
        let (isn, tsval) = c.encode(now, &tuple(5000), peer, 1460, &opts);
        let tsval = tsval.unwrap();
        assert!(tsval <= 123_456 && 123_456 - tsval < 64);
        let d = c.decode(now, &tuple(5000), isn, peer, Some(tsval)).unwrap();
        assert_eq!(
            d,
            DecodedCookie {
                mss: 1460,
                wscale: Some(7),
                sack_permitted: true,
                ecn: false,
                timestamps: true
            }
        );
    }

    #[test]
    fn cookie_without_timestamps_loses_options() {
        let c = SynCookies::new(SECRET);
        let now = Instant::from_millis(7);
        let opts = SynOptions {
            wscale: Some(3),
            sack_permitted: true,
            ..SynOptions::default()
        };
        let (isn, tsval) = c.encode(now, &tuple(1), SeqNumber(5), 1300, &opts);
        assert_eq!(tsval, None);
        let d = c.decode(now, &tuple(1), isn, SeqNumber(5), None).unwrap();
        assert_eq!(
            (d.mss, d.wscale, d.sack_permitted, d.timestamps),
            (1300, None, false, false)
        );
    }

    #[test]
    fn cookie_mss_rounds_down_to_table() {
        let c = SynCookies::new(SECRET);
        let now = Instant::ZERO;
        for (mss, want) in [(1459, 1452), (9000, 1460), (100, 536), (1360, 1360)] {
            let (isn, _) = c.encode(now, &tuple(9), SeqNumber(1), mss, &SynOptions::default());
            let d = c.decode(now, &tuple(9), isn, SeqNumber(1), None).unwrap();
            assert_eq!(d.mss, want);
        }
    }

    #[test]
    fn cookie_old_slot_expired() {
        let c = SynCookies::new(SECRET);
        let sent = secs(64 * 1000 + 63);
        let (isn, _) = c.encode(sent, &tuple(2), SeqNumber(9), 1460, &SynOptions::default());
        // Next slot still accepted, the one after rejected.
        let next = secs(64 * 1001 + 63);
        assert!(c.decode(next, &tuple(2), isn, SeqNumber(9), None).is_some());
        let later = secs(64 * 1002);
        assert!(c
            .decode(later, &tuple(2), isn, SeqNumber(9), None)
            .is_none());
        let longer = c.clone().with_max_age_slots(4);
        assert!(longer
            .decode(later, &tuple(2), isn, SeqNumber(9), None)
            .is_some());
    }

    #[test]
    fn cookie_tampered_rejected() {
        let c = SynCookies::new(SECRET);
        let now = Instant::from_millis(123_456_789);
        let peer = SeqNumber(77);
        let (isn, _) = c.encode(now, &tuple(3), peer, 1460, &SynOptions::default());
        for bit in 0..32 {
            let forged = SeqNumber(isn.0 ^ (1 << bit));
            assert!(
                c.decode(now, &tuple(3), forged, peer, None).is_none(),
                "bit {bit}"
            );
        }
        assert!(c.decode(now, &tuple(4), isn, peer, None).is_none());
        assert!(c.decode(now, &tuple(3), isn, peer + 1u32, None).is_none());
        let other = SynCookies::new(*b"fedcba9876543210");
        assert!(other.decode(now, &tuple(3), isn, peer, None).is_none());
    }

    #[test]
    fn cookie_tsecr_option_bits_decoded() {
        let c = SynCookies::new(SECRET);
        let now = Instant::ZERO;
        let (isn, _) = c.encode(now, &tuple(3), SeqNumber(0), 1460, &SynOptions::default());
        let d = c
            .decode(now, &tuple(3), isn, SeqNumber(0), Some(0x3f))
            .unwrap();
        // wscale 0xf means "none"; bits 4 and 5 are SACK and ECN.
        assert_eq!((d.wscale, d.sack_permitted, d.ecn), (None, true, true));
        let d = c
            .decode(now, &tuple(3), isn, SeqNumber(0), Some(0x0e))
            .unwrap();
        assert_eq!(
            (d.wscale, d.sack_permitted, d.ecn),
            (Some(14), false, false)
        );
    }

    proptest! {
        // Any SYN round-trips through encode/decode within the validity window.
        #[test]
        fn cookie_any_syn_roundtrips(
            secs in 0u64..(1 << 40),
            delay in 0u64..64_000_000,
            port in any::<u16>(),
            peer in any::<u32>(),
            mss in any::<u16>(),
            wscale in proptest::option::of(0u8..=14),
            sack in any::<bool>(),
            ecn in any::<bool>(),
            ts in any::<u32>(),
        ) {
            let c = SynCookies::new(SECRET);
            let now = Instant::from_micros(secs);
            let opts = SynOptions { wscale, sack_permitted: sack, ecn, ts_clock: Some(ts) };
            let (isn, tsval) = c.encode(now, &tuple(port), SeqNumber(peer), mss, &opts);
            let later = Instant::from_micros(secs + delay);
            let d = c.decode(later, &tuple(port), isn, SeqNumber(peer), tsval).unwrap();
            prop_assert_eq!(d.wscale, wscale);
            prop_assert_eq!(d.sack_permitted, sack);
            prop_assert_eq!(d.ecn, ecn);
            prop_assert!(d.mss <= mss.max(536));
            prop_assert!(ts.wrapping_sub(tsval.unwrap()) < 64);
        }
    }
}
