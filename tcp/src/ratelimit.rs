//! Token buckets for the segments a stack sends on its own initiative, where an
//! attacker choosing the input would otherwise choose our output rate too: RFC 5961 7
//! challenge ACKs, and RSTs / ICMP port-unreachables for closed ports (Linux limits
//! both: `tcp_challenge_ack_limit`, `icmp_msgs_per_sec` / `icmp_msgs_burst`).
//!
//! One bucket per [`Stack`](crate::stack::Stack) and per kind, shared by every
//! connection, so the cost is a few bytes per core and not per connection.

use crate::time::Instant;

/// A rate: `per_sec` tokens per second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Average rate, tokens per second. `u32::MAX` means unlimited.
    pub per_sec: u32,
    /// Bucket size: the most tokens that can be taken at once after a quiet period.
    pub burst: u32,
    /// Charge a random 0.5 to 1.5 tokens per event (1 on average), so that the exact
    /// number allowed in a second cannot be counted by a blind attacker (the side
    /// channel of CVE-2016-5696; Linux randomises its per-second challenge-ACK budget).
    pub randomize: bool,
}

impl RateLimit {
    /// No limit at all.
    pub const UNLIMITED: RateLimit = RateLimit {
        per_sec: u32::MAX,
        burst: u32::MAX,
        randomize: false,
    };

    /// RFC 5961 7 challenge ACKs, stack-wide: Linux's `tcp_challenge_ack_limit`
    /// default of 1000 per second, randomised as Linux did.
    pub const CHALLENGE_ACK_DEFAULT: RateLimit = RateLimit {
        per_sec: 1000,
        burst: 1000,
        randomize: true,
    };

    /// RSTs and ICMP port-unreachables for closed ports: Linux's ICMP defaults
    /// (`icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50).
    pub const CLOSED_PORT_REPLY_DEFAULT: RateLimit = RateLimit {
        per_sec: 1000,
        burst: 50,
        randomize: false,
    };

    /// `per_sec` per second with a burst of the same size, not randomised.
    pub const fn per_second(per_sec: u32) -> RateLimit {
        RateLimit {
            per_sec,
            burst: per_sec,
            randomize: false,
        }
    }
}

/// One token, in the bucket's fixed-point unit (micro-tokens).
const UNIT: u64 = 1_000_000;

/// A token bucket enforcing a [`RateLimit`] on a caller-supplied clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Micro-tokens available (at most `burst * UNIT`).
    credit: u64,
    /// When `credit` was last refilled.
    last: Instant,
    /// xorshift64 state for the randomised cost (never zero).
    rng: u64,
}

impl TokenBucket {
    /// A full bucket; `seed` drives the randomised cost (any value).
    pub fn new(limit: RateLimit, seed: u64) -> TokenBucket {
        TokenBucket {
            limit,
            credit: u64::from(limit.burst).saturating_mul(UNIT),
            last: Instant::ZERO,
            rng: seed | 1,
        }
    }

    /// The limit enforced.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token if one is available at `now`; false means "rate limited".
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.limit.per_sec == u32::MAX {
            return true;
        }
        let cap = u64::from(self.limit.burst).saturating_mul(UNIT);
        if now > self.last {
            // Tokens earned since the last refill: micros * per_sec / 1e6 tokens, which
            // is micros * per_sec micro-tokens.
            let micros = now.total_micros() - self.last.total_micros();
            let earned = micros.saturating_mul(u64::from(self.limit.per_sec));
            self.credit = self.credit.saturating_add(earned).min(cap);
            self.last = now;
        }
        let cost = if self.limit.randomize {
            UNIT / 2 + self.next_random() % UNIT
        } else {
            UNIT
        };
        if self.credit >= cost {
            self.credit -= cost;
            true
        } else {
            false
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn count(b: &mut TokenBucket, now: Instant, tries: u32) -> u32 {
        (0..tries).filter(|_| b.allow(now)).count() as u32
    }

    #[test]
    fn bucket_full_burst_then_limited() {
        let mut b = TokenBucket::new(
            RateLimit {
                per_sec: 1000,
                burst: 50,
                randomize: false,
            },
            1,
        );
        assert_eq!(count(&mut b, ms(10_000), 100), 50);
        // 10 ms at 1000/s earns 10 tokens.
        assert_eq!(count(&mut b, ms(10_010), 100), 10);
        // A long pause refills to the burst, not beyond.
        assert_eq!(count(&mut b, ms(60_000), 1000), 50);
    }

    #[test]
    fn bucket_steady_rate_over_a_second() {
        let mut b = TokenBucket::new(RateLimit::per_second(1000), 7);
        let mut allowed = count(&mut b, ms(1), 5000);
        assert_eq!(allowed, 1000);
        for t in 2..=1001 {
            allowed += count(&mut b, ms(t), 10);
        }
        assert_eq!(allowed, 2000, "1000 burst + 1000 earned in 1 s");
    }

    #[test]
    fn bucket_randomized_cost_averages_one_token() {
        let limit = RateLimit {
            randomize: true,
            ..RateLimit::per_second(1000)
        };
        let mut seen = Vec::new();
        for seed in 0..20 {
            let mut b = TokenBucket::new(limit, seed);
            seen.push(count(&mut b, ms(5), 5000));
        }
        assert!(seen.iter().all(|&n| (800..=1300).contains(&n)), "{seen:?}");
        seen.dedup();
        assert!(seen.len() > 1, "the budget varies with the seed");
    }

    #[test]
    fn bucket_unlimited_always_allows() {
        let mut b = TokenBucket::new(RateLimit::UNLIMITED, 0);
        assert_eq!(count(&mut b, ms(0), 100_000), 100_000);
    }

    #[test]
    fn bucket_clock_going_backwards_earns_nothing() {
        let mut b = TokenBucket::new(RateLimit::per_second(10), 0);
        assert_eq!(count(&mut b, ms(5_000), 20), 10);
        assert_eq!(count(&mut b, ms(4_000), 20), 0);
    }
}
