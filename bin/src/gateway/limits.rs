//! Connection limits: `limits.max_connections` and `limits.max_connections_per_ip`,
//! checked at accept, released at remove.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tcp::Instant;

use super::session::Session;
use super::worker::{Refusal, Worker};
use super::ConnId;
use crate::metrics::Refused;

impl Worker {
    /// A new TCP connection in slot `id` (chosen by the transport, unused until
    /// [`Worker::remove`]). On `Err` the transport closes it at once.
    pub fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        let limits = &self.config.limits;
        if self.draining || self.live >= limits.max_connections {
            self.stats.refused(Refused::MaxConnections);
            return Err(Refusal::MaxConnections);
        }
        // A trusted proxy carries many clients: its connections are limited per client
        // once the PROXY header or X-Forwarded-For names it (`forwarded`).
        let proxied = self.config.listen.trusted(peer.ip());
        if !proxied {
            if let Some(why) = self.source_refusal(peer.ip(), now) {
                return Err(why);
            }
        }
        let max_per_ip = self.config.limits.max_connections_per_ip;
        let count = self.per_ip.entry(peer.ip()).or_insert(0);
        if *count >= max_per_ip && !proxied {
            self.stats.refused(Refused::MaxPerIp);
            return Err(Refusal::MaxPerIp);
        }
        *count += 1;
        if self.sessions.len() <= id {
            self.sessions.resize_with(id + 1, || None);
        }
        let mut session = Session::new(peer, now);
        session.proxy_header = proxied && self.config.listen.proxy_protocol;
        self.sessions[id] = Some(session);
        // The handshake deadline.
        self.arm(id);
        self.live += 1;
        self.stats.accepted();
        Ok(())
    }

    /// Why a new connection from `ip` is refused by the source rules (`deny_sources`,
    /// `allow_sources`, `new_connections_per_ip_per_s`), counted; `None`: let it in.
    pub(super) fn source_refusal(&mut self, ip: IpAddr, now: Instant) -> Option<Refusal> {
        let limits = &self.config.limits;
        if !limits.source_allowed(ip) {
            self.stats.refused(Refused::SourceDenied);
            return Some(Refusal::SourceDenied);
        }
        let rate = limits.new_connections_per_ip_per_s;
        if rate > 0 && !self.connect_rates.take(ip, rate, now) {
            self.stats.refused(Refused::ConnectionRate);
            return Some(Refusal::ConnectionRate);
        }
        None
    }

    /// Forgets connection `id` (closed by the transport).
    pub fn remove(&mut self, id: ConnId) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.disarm(s.timer);
        for t in &s.topics {
            self.leave_topic(t, id);
        }
        if let Some(c) = self.per_ip.get_mut(&s.peer.ip()) {
            *c -= 1;
            if *c == 0 {
                self.per_ip.remove(&s.peer.ip());
            }
        }
        self.live -= 1;
        self.stats.closed();
    }
}

/// A token bucket: `rate` tokens per second, at most `rate` stored.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: u32,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(super) fn full(rate: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: rate,
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let ms = now.saturating_since(self.at).as_millis();
        let add = ms.saturating_mul(u128::from(rate)) / 1000;
        if add > 0 {
            let tokens = (u128::from(self.tokens) + add).min(u128::from(rate));
            self.tokens = u32::try_from(tokens).unwrap_or(rate);
            // Keep the remainder: advance only by the time the added tokens took.
            let used_ms = add.saturating_mul(1000) / u128::from(rate.max(1));
            self.at = if self.tokens == rate {
                now
            } else {
                self.at + Duration::from_millis(u64::try_from(used_ms).unwrap_or(u64::MAX))
            };
        }
    }

    /// Takes `n` tokens at `now`; false (nothing taken) when there are not that many.
    pub(super) fn take(&mut self, n: u32, rate: u32, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            self.tokens = 0;
            false
        }
    }

    fn is_full(&mut self, rate: u32, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens == rate
    }
}

/// Sources tracked by the new-connection rate limit (one worker), bounded.
#[derive(Debug, Default)]
pub(super) struct ConnectRates {
    buckets: HashMap<IpAddr, Bucket>,
}

/// Most sources tracked at once per worker; beyond it, sources whose bucket has refilled
/// are forgotten first.
const MAX_TRACKED: usize = 65_536;

impl ConnectRates {
    /// Whether `ip` may open one more connection at `now` (`rate` per second).
    pub(super) fn take(&mut self, ip: IpAddr, rate: u32, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED {
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= MAX_TRACKED {
                // Every tracked source is busy: a new one is refused until some calm down
                // (an address flood cannot grow the table).
                return false;
            }
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(1, rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_rate_per_second_with_a_burst_of_rate() {
        let t0 = Instant::from_millis(1_000);
        let mut b = Bucket::full(10, t0);
        assert!(b.take(10, 10, t0), "the burst");
        assert!(!b.take(1, 10, t0));
        assert!(
            !b.take(1, 10, t0 + Duration::from_millis(50)),
            "half a token"
        );
        assert!(b.take(1, 10, t0 + Duration::from_millis(150)));
        assert!(
            b.take(10, 10, t0 + Duration::from_secs(5)),
            "refilled, capped at 10"
        );
        assert!(!b.take(1, 10, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn connect_rates_bounded_table() {
        let t0 = Instant::from_millis(1_000);
        let mut r = ConnectRates::default();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(i));
        assert!(r.take(ip(1), 2, t0) && r.take(ip(1), 2, t0));
        assert!(!r.take(ip(1), 2, t0), "third in the same instant");
        assert!(r.take(ip(2), 2, t0), "other sources unaffected");
        for i in 10..(10 + MAX_TRACKED as u32) {
            r.take(ip(i), 2, t0);
        }
        assert!(r.buckets.len() <= MAX_TRACKED);
        // A second later every bucket has refilled: the table makes room.
        assert!(r.take(ip(999_999), 2, t0 + Duration::from_secs(1)));
        assert!(r.buckets.len() <= MAX_TRACKED);
    }
}
