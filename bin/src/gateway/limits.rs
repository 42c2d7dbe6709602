//! Connection limits: `limits.max_connections` and `limits.max_connections_per_ip`,
//! checked at accept, released at remove.

use std::net::SocketAddr;

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
        let count = self.per_ip.entry(peer.ip()).or_insert(0);
        if *count >= limits.max_connections_per_ip && !proxied {
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

    /// Forgets connection `id` (closed by the transport).
    pub fn remove(&mut self, id: ConnId) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.disarm(s.timer);
        for t in &s.topics {
            if let Some(set) = self.topics.get_mut(t) {
                set.remove(&id);
                if set.is_empty() {
                    self.topics.remove(t);
                    self.interest_changed(t, false);
                }
            }
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
