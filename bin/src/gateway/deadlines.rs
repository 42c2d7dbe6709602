//! Per-connection deadlines (handshake, idle, ping keepalive, close) and the graceful
//! shutdown.

use std::time::Duration;

use tcp::Instant;
use ws::CloseCode;

use super::session::Phase;
use super::worker::{Worker, SCAN};
use super::ConnId;
use crate::metrics::{Drop, Handshake};

impl Worker {
    /// Runs deadlines (handshake, idle, ping, close) at `now`; returns connections the
    /// transport must drop at once. Call every ~100 ms.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ConnId> {
        self.next_scan = now + SCAN;
        let limits = &self.config.limits;
        let handshake = limits.handshake_timeout();
        let ping = Duration::from_millis(limits.ping_interval_ms);
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let deadline = now + Duration::from_millis(limits.close_timeout_ms);
        let mut expired = Vec::new();
        let mut touched = Vec::new();
        for (id, slot) in self.sessions.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else {
                continue;
            };
            if s.close_deadline.is_some_and(|d| now >= d) {
                self.stats.dropped(Drop::CloseTimeout);
                expired.push(id);
                continue;
            }
            let silent = now.saturating_since(s.last_rx);
            match &mut s.phase {
                Phase::Handshake(_) => {
                    if now.saturating_since(s.accepted) >= handshake {
                        self.stats.handshake(Handshake::Timeout);
                        expired.push(id);
                    }
                }
                Phase::Open(ws) if !ws.close_sent() => {
                    if !idle.is_zero() && silent >= idle {
                        self.stats.dropped(Drop::IdleTimeout);
                        s.close(CloseCode::GOING_AWAY, "idle timeout", deadline);
                        touched.push(id);
                    } else if !ping.is_zero() && silent >= ping && !s.ping_sent {
                        // RFC 6455 5.5.2: a Ping as a keepalive; the client answers Pong.
                        let _ = ws.ping(b"sluice");
                        s.ping_sent = true;
                        s.pull_engine_output();
                        touched.push(id);
                    }
                }
                Phase::Open(_) | Phase::Refused => {}
            }
        }
        for id in touched {
            self.mark_dirty(id);
        }
        expired
    }

    /// Graceful shutdown: refuse new connections and close every WebSocket with 1001
    /// behind its queued messages (RFC 6455 7.4.1: 1001, going away).
    pub fn shutdown(&mut self, now: Instant, deadline: Instant) {
        self.draining = true;
        let _ = now;
        let mut touched = Vec::new();
        for (id, slot) in self.sessions.iter_mut().enumerate() {
            if let Some(s) = slot.as_mut() {
                s.close(CloseCode::GOING_AWAY, "server shutting down", deadline);
                touched.push(id);
            }
        }
        for id in touched {
            self.mark_dirty(id);
        }
    }
}
