//! Deterministic simulation support: a seeded RNG, an in-memory lossy link with a
//! virtual clock, and harnesses that run two engines against each other.
//!
//! `sack_peer` runs a sender against a model receiver that keeps every out-of-order
//! range, with chosen segments dropped (SACK recovery with many holes).
//!
//! Used by the `tcp/tests/sim_*.rs` tests and by benches; not part of the stable API.

pub mod conn_sim;
pub mod fastpath;
pub mod link;
pub mod sack_peer;
pub mod stack_sim;

pub use link::{Link, LinkConfig, LinkStats, Packet};

/// The environment variable `name` as a `u64`, or `default` when unset or not a number
/// (the knobs of the simulation soaks, e.g. `SLUICE_SIM_SEEDS`).
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The connection settings of one loss-matrix cell (the `sim_*` tests and the
/// `sim_matrix_report` example): `alg`, SACK on or off, and 12 SYN retries, since at 20 %
/// loss each way a handshake round fails with p = 0.36 and the default 6 retries give up
/// once in ~1,300 connections.
pub fn matrix_conn(alg: crate::conn::Algorithm, sack: bool) -> crate::conn::ConnConfig {
    crate::conn::ConnConfig {
        congestion: alg,
        sack,
        syn_retries: 12,
        ..crate::conn::ConnConfig::default()
    }
}

/// The link of one loss-matrix cell: `loss` each way, 5 % reordering when `reorder`,
/// 5 ms one-way delay.
pub fn matrix_link(loss: f64, reorder: bool) -> LinkConfig {
    LinkConfig {
        loss,
        reorder: if reorder { 0.05 } else { 0.0 },
        delay: std::time::Duration::from_millis(5),
        ..LinkConfig::default()
    }
}

/// SplitMix64: a tiny, fast, seedable generator. Deterministic across platforms and
/// versions, which is what a reproducible simulation needs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `[0, n)` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A deterministic byte stream of known length whose content is checked on arrival
/// (byte-exact: each byte is compared, and a running FNV-1a hash is kept for reports).
#[derive(Debug, Clone)]
pub struct Stream {
    rng: Rng,
    /// Bytes produced (sender) or verified (receiver) so far.
    pub pos: u64,
    /// Total length of the stream.
    pub total: u64,
    /// FNV-1a 64 over the bytes so far.
    pub hash: u64,
    block: [u8; 8],
}

impl Stream {
    /// A stream of `total` bytes derived from `seed`.
    pub fn new(seed: u64, total: u64) -> Stream {
        Stream {
            rng: Rng::new(seed),
            pos: 0,
            total,
            hash: 0xcbf2_9ce4_8422_2325,
            block: [0; 8],
        }
    }

    fn byte(&mut self) -> u8 {
        let i = (self.pos % 8) as usize;
        if i == 0 {
            self.block = self.rng.next_u64().to_le_bytes();
        }
        let b = self.block[i];
        self.pos += 1;
        self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        b
    }

    /// Produces up to `buf.len()` next bytes; returns how many.
    pub fn produce(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min((self.total - self.pos) as usize);
        for b in &mut buf[..n] {
            *b = self.byte();
        }
        n
    }

    /// Checks received bytes; returns the offset of the first mismatch or overrun.
    pub fn verify(&mut self, data: &[u8]) -> Result<(), u64> {
        for &d in data {
            if self.pos >= self.total || self.byte() != d {
                return Err(self.pos);
            }
        }
        Ok(())
    }

    /// Everything produced / verified.
    pub fn done(&self) -> bool {
        self.pos >= self.total
    }
}
