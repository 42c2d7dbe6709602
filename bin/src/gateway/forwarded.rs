//! The real client behind a load balancer: the PROXY protocol v2 header
//! (`listen.proxy_protocol`) and `X-Forwarded-For`, both believed only from
//! `listen.trusted_proxies`. What they name becomes the session's peer, for the per-IP
//! limit, logs and `sluice stat`.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use ppp::v2::{Addresses, Header, ParseError};
use tcp::Instant;

use super::handshake::http_refusal;
use super::session::Phase;
use super::worker::Worker;
use super::ConnId;
use crate::config::Listen;
use crate::metrics::{Handshake, Refused};

/// Largest PROXY v2 header taken (addresses and TLVs); a longer one is refused.
const MAX_PROXY_HEADER: usize = 1024;

/// What the PROXY header step left to do.
pub(super) enum ProxyStep {
    /// Not (all) here yet.
    Wait,
    /// Taken (or not expected): the HTTP request follows.
    Done,
    /// Refused: the connection is closing.
    Refused,
}

/// The client an `X-Forwarded-For` list names: the rightmost entry that is not a trusted
/// proxy (entries to its left could be made up by the client), or the leftmost when all
/// are trusted. `None` when an entry on the way is not an address.
pub fn forwarded_client(entries: &[&str], listen: &Listen) -> Option<IpAddr> {
    let mut last = None;
    for e in entries.iter().rev() {
        let ip = parse_entry(e)?;
        last = Some(ip);
        if !listen.trusted(ip) {
            return Some(ip);
        }
    }
    last
}

/// `1.2.3.4`, `1.2.3.4:port`, `::1`, `[::1]:port`.
fn parse_entry(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

impl Worker {
    /// Takes the PROXY v2 header from the head of `id`'s handshake bytes when one is due.
    pub(super) fn take_proxy_header(&mut self, id: ConnId, now: Instant) -> ProxyStep {
        let deadline = self.close_deadline(now);
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return ProxyStep::Refused;
        };
        if !s.proxy_header {
            return ProxyStep::Done;
        }
        let Phase::Handshake(head) = &mut s.phase else {
            return ProxyStep::Done;
        };
        let taken = match Header::try_from(head.as_slice()) {
            Ok(h) => {
                let addr = match h.addresses {
                    Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    // LOCAL (the proxy's own health check), UNSPEC, UNIX: the proxy itself.
                    Addresses::Unspecified | Addresses::Unix(_) => None,
                };
                Ok((h.len(), addr))
            }
            Err(ParseError::Incomplete(_)) => return ProxyStep::Wait,
            Err(ParseError::Partial(_, need)) if need <= MAX_PROXY_HEADER => {
                return ProxyStep::Wait
            }
            Err(e) => Err(e),
        };
        match taken {
            Ok((len, addr)) => {
                head.drain(..len.min(head.len()));
                s.proxy_header = false;
                match addr {
                    Some(a) if !self.adopt_client(id, a, now) => ProxyStep::Refused,
                    _ => ProxyStep::Done,
                }
            }
            Err(_) => {
                // No HTTP answer: the bytes are not from a client we can speak to.
                s.phase = Phase::Refused;
                s.close_deadline = Some(deadline);
                self.stats.handshake(Handshake::BadProxyHeader);
                ProxyStep::Refused
            }
        }
    }

    /// Makes `addr`, the client a trusted proxy names, the peer of `id`, under the same
    /// rules as a direct client at accept: refused by the source rules, HTTP 403; over
    /// `limits.max_connections_per_ip`, HTTP 503 (both counted). False when refused (the
    /// connection is closing).
    pub(super) fn adopt_client(&mut self, id: ConnId, addr: SocketAddr, now: Instant) -> bool {
        let refusal = if self.source_refusal(addr.ip(), now).is_some() {
            Some(http_refusal(403, "Forbidden"))
        } else if !self.rebind_peer(id, addr) {
            self.stats.refused(Refused::MaxPerIp);
            Some(http_refusal(503, "Service Unavailable"))
        } else {
            None
        };
        let Some(response) = refusal else {
            return true;
        };
        let deadline = self.close_deadline(now);
        if let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) {
            s.out.push(Bytes::from(response));
            s.phase = Phase::Refused;
            s.close_deadline = Some(deadline);
        }
        false
    }

    /// Makes `addr` the peer of `id` (the per-IP count moves with it); false when `addr`
    /// is at `limits.max_connections_per_ip` already.
    fn rebind_peer(&mut self, id: ConnId, addr: SocketAddr) -> bool {
        let max = self.config.limits.max_connections_per_ip;
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return false;
        };
        let old = s.peer.ip();
        if old == addr.ip() {
            s.peer = addr;
            return true;
        }
        if self.per_ip.get(&addr.ip()).copied().unwrap_or(0) >= max {
            return false;
        }
        if let Some(c) = self.per_ip.get_mut(&old) {
            *c -= 1;
            if *c == 0 {
                self.per_ip.remove(&old);
            }
        }
        *self.per_ip.entry(addr.ip()).or_insert(0) += 1;
        s.peer = addr;
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn listen(trusted: &[&str]) -> Listen {
        Listen {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..Listen::default()
        }
    }

    #[test]
    fn forwarded_rightmost_untrusted_wins() {
        let l = listen(&["198.18.0.0/24", "10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The client wrote the first entry itself: not believed.
        assert_eq!(
            forwarded_client(&["6.6.6.6", "203.0.113.7", "10.1.2.3"], &l),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            forwarded_client(&["203.0.113.7:5555"], &l),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            forwarded_client(&["[2001:db8::1]:80"], &l),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            forwarded_client(&["198.18.0.5", "10.0.0.1"], &l),
            Some(ip("198.18.0.5")),
            "all trusted: the leftmost"
        );
        assert_eq!(
            forwarded_client(&["garbage", "203.0.113.7"], &l),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(forwarded_client(&["203.0.113.7", "garbage"], &l), None);
        assert_eq!(forwarded_client(&[], &l), None);
    }

    #[test]
    fn trusted_matches_v4_mapped_v6() {
        let l = listen(&["198.18.0.0/24"]);
        assert!(l.trusted("198.18.0.7".parse().unwrap()));
        assert!(l.trusted("::ffff:198.18.0.7".parse().unwrap()));
        assert!(!l.trusted("198.18.1.7".parse().unwrap()));
    }
}
