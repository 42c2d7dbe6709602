//! Per-connection deadlines (handshake, idle, ping keepalive, close) and the graceful
//! shutdown.

use std::time::Duration;

use tcp::Instant;
use ws::CloseCode;

use super::session::Phase;
use tcp::timer::TimerId;

use super::session::Session;
use super::worker::Worker;
use super::ConnId;
use crate::config::Limits;
use crate::metrics::{Auth, Drop, Handshake};

/// The next instant `s` has deadline work under `limits` (`None`: none): its close
/// deadline, the handshake timeout, and while open the idle timeout and the next ping.
fn next_deadline(limits: &Limits, s: &Session) -> Option<Instant> {
    let ping = Duration::from_millis(limits.ping_interval_ms);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let phase = match &s.phase {
        Phase::Handshake(_) => Some(s.accepted + limits.handshake_timeout()),
        Phase::Open(ws) if !ws.close_sent() => {
            let idle_at = (!idle.is_zero()).then(|| s.last_rx + idle);
            let ping_at = (!ping.is_zero() && !s.ping_sent).then(|| s.last_rx + ping);
            let at = [idle_at, ping_at].into_iter().flatten().min();
            match s.auth_deadline {
                None => at,
                Some(expiry) => Some(at.map_or(expiry, |a| a.min(expiry))),
            }
        }
        Phase::Open(_) | Phase::Refused | Phase::Lent => None,
    };
    [s.close_deadline, phase].into_iter().flatten().min()
}

impl Worker {
    /// Arms (or brings forward) the timer of connection `id` on the worker's timer wheel
    /// for its next deadline. A later deadline leaves the armed timer: when it fires, the
    /// connection is checked and re-armed (so a received byte costs no reschedule).
    pub(super) fn arm(&mut self, id: ConnId) {
        let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let Some(at) = next_deadline(&self.config.limits, s) else {
            return;
        };
        match s.timer {
            Some(t) if self.timers.deadline(t).is_some_and(|d| d <= at) => {}
            Some(t) if self.timers.reschedule(t, at) => {}
            _ => s.timer = Some(self.timers.insert(at, id)),
        }
    }

    /// Cancels the timer of a connection being removed.
    pub(super) fn disarm(&mut self, timer: Option<TimerId>) {
        if let Some(t) = timer {
            self.timers.cancel(t);
        }
    }

    /// The earliest armed deadline (for `App::poll_timeout`).
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs the deadlines due at `now` (handshake, idle, ping, close) of the connections
    /// whose timers fired on the worker's timer wheel (no scan of every connection);
    /// returns the connections the transport must drop at once.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ConnId> {
        let limits = &self.config.limits;
        let handshake = limits.handshake_timeout();
        let ping = Duration::from_millis(limits.ping_interval_ms);
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let deadline = now + Duration::from_millis(limits.close_timeout_ms);
        let mut fired = std::mem::take(&mut self.fired);
        while let Some((_, id)) = self.timers.pop_expired(now) {
            fired.push(id);
        }
        let mut expired = Vec::new();
        for &id in &fired {
            let Some(s) = self.sessions.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            s.timer = None;
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
                        continue;
                    }
                }
                Phase::Open(ws) if !ws.close_sent() => {
                    if s.auth_deadline.is_some_and(|at| now >= at) {
                        // The token expired: the client reconnects with a fresh one.
                        self.stats.auth(Auth::ExpiredOpen);
                        s.close(CloseCode::POLICY, "token expired", deadline);
                    } else if !idle.is_zero() && silent >= idle {
                        self.stats.dropped(Drop::IdleTimeout);
                        s.close(CloseCode::GOING_AWAY, "idle timeout", deadline);
                    } else if !ping.is_zero() && silent >= ping && !s.ping_sent {
                        // RFC 6455 5.5.2: a Ping as a keepalive; the client answers Pong.
                        let _ = ws.ping(b"sluice");
                        s.ping_sent = true;
                        s.pull_engine_output();
                    }
                }
                Phase::Open(_) | Phase::Refused | Phase::Lent => {}
            }
            // Queues what changed (if anything) and re-arms for the next deadline.
            self.mark_dirty(id);
        }
        fired.clear();
        self.fired = fired;
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
