//! RTT estimation and congestion control.
//!
//! - [`Rtt`]: RFC 6298 SRTT/RTTVAR/RTO (12 bytes per connection).
//! - [`CongestionControl`]: the hooks a connection calls; implemented by
//!   [`NewReno`] (RFC 5681 + RFC 6582) and [`Cubic`] (RFC 9438, the default), and by the
//!   [`Congestion`] enum, which the connection holds so calls dispatch statically.
//!
//! # How a connection drives it (all sizes in bytes)
//!
//! - Each ACK that advances SND.UNA outside recovery: [`on_ack`](CongestionControl::on_ack)
//!   with the bytes newly acknowledged, the flight size before the ACK and the current
//!   smoothed RTT. The window grows only while the sender is using it (flight before
//!   the ACK at least half of cwnd, the RFC 7661 / Linux "cwnd-limited" idea).
//! - Third duplicate ACK (or the RFC 6675 loss trigger): fast retransmit, then
//!   [`on_congestion_event`](CongestionControl::on_congestion_event) sets ssthresh and
//!   cwnd = ssthresh (the RFC 6675 SACK recovery start). A non-SACK RFC 6582 sender then
//!   calls [`on_dup_acks_in_recovery(3)`](CongestionControl::on_dup_acks_in_recovery)
//!   for cwnd = ssthresh + 3*SMSS, and `(1)` for each further duplicate ACK.
//! - During recovery, an ACK below the recovery point:
//!   [`on_partial_ack`](CongestionControl::on_partial_ack); at or above it:
//!   [`on_recovery_exit`](CongestionControl::on_recovery_exit). No `on_ack` in recovery.
//! - Retransmission timeout: [`on_rto`](CongestionControl::on_rto).
//! - Sending after an idle period longer than the RTO (RFC 5681 4.1):
//!   [`on_idle_restart`](CongestionControl::on_idle_restart).

use crate::time::Instant;

pub mod cubic;
pub mod newreno;
pub mod rtt;

pub use cubic::Cubic;
pub use newreno::NewReno;
pub use rtt::Rtt;

/// Which congestion control algorithm a connection uses (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// RFC 5681 / RFC 6582 NewReno.
    NewReno,
    /// RFC 9438 CUBIC (the default, as in Linux).
    #[default]
    Cubic,
}

/// The congestion-control hooks a connection calls (see the module docs for when).
pub trait CongestionControl {
    /// Congestion window in bytes.
    fn cwnd(&self) -> u32;
    /// Slow-start threshold in bytes (`u32::MAX` until the first congestion event).
    fn ssthresh(&self) -> u32;
    /// Sender maximum segment size in bytes.
    fn mss(&self) -> u32;
    /// Sets SMSS; before any data is acknowledged this also re-derives the initial window.
    fn set_mss(&mut self, mss: u32);
    /// New data acknowledged outside recovery: `acked` bytes by `acks` ACKs (more than
    /// one when the stack coalesced a burst's pure ACKs of the connection into its last:
    /// slow start's per-ACK limit applies to each), `in_flight_before` bytes outstanding
    /// before the first of them, `srtt_us` the current smoothed RTT in microseconds (0
    /// while unknown: integers on the per-ACK path).
    fn on_ack(&mut self, now: Instant, acked: u32, acks: u32, in_flight_before: u32, srtt_us: u32);
    /// Loss detected by duplicate ACKs or SACK: enter fast recovery (sets ssthresh,
    /// cwnd = ssthresh).
    fn on_congestion_event(&mut self, now: Instant, in_flight: u32);
    /// Non-SACK fast recovery window inflation: `count` more duplicate ACKs arrived
    /// (RFC 5681 3.2 steps 3 and 4: cwnd += count * SMSS).
    fn on_dup_acks_in_recovery(&mut self, count: u32);
    /// A partial ACK in recovery acknowledged `acked` bytes (RFC 6582 3.2 step 5).
    fn on_partial_ack(&mut self, acked: u32);
    /// A full ACK ended recovery; `in_flight` is the flight size after it
    /// (RFC 6582 3.2 step 6).
    fn on_recovery_exit(&mut self, now: Instant, in_flight: u32);
    /// Retransmission timeout: cwnd falls to the loss window of 1 SMSS.
    fn on_rto(&mut self, now: Instant, in_flight: u32);
    /// Sending resumes after an idle period longer than the RTO (RFC 5681 4.1).
    fn on_idle_restart(&mut self, now: Instant);
}

/// Initial window for an SMSS (RFC 6928 2: min(10*MSS, max(2*MSS, 14600))).
pub fn initial_window(mss: u32) -> u32 {
    (10 * mss).min((2 * mss).max(14_600))
}

/// Window state shared by the algorithms.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) cwnd: u32,
    pub(crate) ssthresh: u32,
    pub(crate) mss: u32,
    /// Bytes acknowledged in congestion avoidance not yet turned into growth
    /// (RFC 3465 2.1 byte counting).
    pub(crate) bytes_acked: u32,
    /// No data acknowledged and no event yet: cwnd is still the initial window.
    pub(crate) pristine: bool,
    /// An RTO happened and no ACK has advanced since (repeated timeouts keep ssthresh).
    pub(crate) in_loss: bool,
}

/// RFC 3465 2.2 limit L on slow-start growth per ACK, in segments.
const ABC_L: u32 = 2;

impl Window {
    pub(crate) fn new(mss: u32) -> Self {
        let mss = mss.max(1);
        Window {
            cwnd: initial_window(mss),
            ssthresh: u32::MAX,
            mss,
            bytes_acked: 0,
            pristine: true,
            in_loss: false,
        }
    }

    pub(crate) fn set_mss(&mut self, mss: u32) {
        self.mss = mss.max(1);
        if self.pristine {
            self.cwnd = initial_window(self.mss);
        }
    }

    /// The sender is using its window (flight at least half of cwnd).
    #[inline]
    pub(crate) fn cwnd_limited(&self, in_flight_before: u32) -> bool {
        u64::from(in_flight_before) * 2 >= u64::from(self.cwnd)
    }

    pub(crate) fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// Slow start (RFC 5681 3.1, RFC 3465 2.2 with L = 2 SMSS per ACK, for `acks`
    /// ACKs), capped at ssthresh; returns the acknowledged bytes left over for
    /// congestion avoidance.
    pub(crate) fn slow_start(&mut self, acked: u32, acks: u32) -> u32 {
        let limit = acks.saturating_mul(ABC_L).saturating_mul(self.mss);
        let grow = acked.min(limit).min(self.ssthresh - self.cwnd);
        self.cwnd = self.cwnd.saturating_add(grow);
        acked - grow.min(acked)
    }

    /// RFC 6582 3.2 step 5: deflate by the amount acknowledged, add back one SMSS if at
    /// least one SMSS was acknowledged.
    pub(crate) fn partial_ack(&mut self, acked: u32) {
        let back = if acked >= self.mss { self.mss } else { 0 };
        self.cwnd = self
            .cwnd
            .saturating_sub(acked)
            .saturating_add(back)
            .max(self.mss);
    }

    /// RFC 6582 3.2 step 6 option 1: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS).
    pub(crate) fn recovery_exit(&mut self, in_flight: u32) {
        self.cwnd = self
            .ssthresh
            .min(in_flight.max(self.mss).saturating_add(self.mss));
        self.bytes_acked = 0;
    }

    /// RFC 5681 3.2 steps 3-4: inflate by one SMSS per duplicate ACK.
    pub(crate) fn inflate(&mut self, count: u32) {
        self.cwnd = self.cwnd.saturating_add(count.saturating_mul(self.mss));
    }

    /// RFC 5681 4.1: restart window RW = min(IW, cwnd).
    pub(crate) fn idle_restart(&mut self) {
        self.cwnd = self.cwnd.min(initial_window(self.mss));
        self.bytes_acked = 0;
    }

    /// Sets ssthresh after a loss and cwnd to `cwnd`; ssthresh is at least 2 SMSS.
    pub(crate) fn reduce(&mut self, ssthresh: u32, cwnd: u32) {
        self.ssthresh = ssthresh.max(2 * self.mss);
        self.cwnd = cwnd;
        self.bytes_acked = 0;
        self.pristine = false;
    }
}

/// Static dispatch over the algorithms; what a connection holds.
#[derive(Debug, Clone)]
pub enum Congestion {
    /// RFC 5681 / RFC 6582 NewReno.
    NewReno(NewReno),
    /// RFC 9438 CUBIC.
    Cubic(Cubic),
}

impl Congestion {
    /// A controller of the given algorithm for an SMSS of `mss` bytes.
    pub fn new(algorithm: Algorithm, mss: u32) -> Self {
        match algorithm {
            Algorithm::NewReno => Congestion::NewReno(NewReno::new(mss)),
            Algorithm::Cubic => Congestion::Cubic(Cubic::new(mss)),
        }
    }

    /// Which algorithm this is.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Congestion::NewReno(_) => Algorithm::NewReno,
            Congestion::Cubic(_) => Algorithm::Cubic,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $cc:ident => $e:expr) => {
        match $self {
            Congestion::NewReno($cc) => $e,
            Congestion::Cubic($cc) => $e,
        }
    };
}

impl CongestionControl for Congestion {
    fn cwnd(&self) -> u32 {
        dispatch!(self, cc => cc.cwnd())
    }
    fn ssthresh(&self) -> u32 {
        dispatch!(self, cc => cc.ssthresh())
    }
    fn mss(&self) -> u32 {
        dispatch!(self, cc => cc.mss())
    }
    fn set_mss(&mut self, mss: u32) {
        dispatch!(self, cc => cc.set_mss(mss))
    }
    #[inline]
    fn on_ack(&mut self, now: Instant, acked: u32, acks: u32, in_flight_before: u32, srtt_us: u32) {
        dispatch!(self, cc => cc.on_ack(now, acked, acks, in_flight_before, srtt_us))
    }
    fn on_congestion_event(&mut self, now: Instant, in_flight: u32) {
        dispatch!(self, cc => cc.on_congestion_event(now, in_flight))
    }
    fn on_dup_acks_in_recovery(&mut self, count: u32) {
        dispatch!(self, cc => cc.on_dup_acks_in_recovery(count))
    }
    fn on_partial_ack(&mut self, acked: u32) {
        dispatch!(self, cc => cc.on_partial_ack(acked))
    }
    fn on_recovery_exit(&mut self, now: Instant, in_flight: u32) {
        dispatch!(self, cc => cc.on_recovery_exit(now, in_flight))
    }
    fn on_rto(&mut self, now: Instant, in_flight: u32) {
        dispatch!(self, cc => cc.on_rto(now, in_flight))
    }
    fn on_idle_restart(&mut self, now: Instant) {
        dispatch!(self, cc => cc.on_idle_restart(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congestion_state_size_within_budget() {
        // Per-connection state: keep it small (the engine aims at < 1 KiB per connection).
        assert!(core::mem::size_of::<Congestion>() <= 96);
    }

    #[test]
    fn initial_window_matches_rfc6928() {
        assert_eq!(initial_window(1460), 14_600);
        assert_eq!(initial_window(536), 5_360);
        assert_eq!(initial_window(8960), 17_920);
    }

    #[test]
    fn congestion_default_algorithm_is_cubic() {
        let cc = Congestion::new(Algorithm::default(), 1460);
        assert_eq!(cc.algorithm(), Algorithm::Cubic);
        assert_eq!(cc.cwnd(), 14_600);
        assert_eq!(cc.ssthresh(), u32::MAX);
    }

    #[test]
    fn congestion_set_mss_before_data_resets_initial_window() {
        let mut cc = Congestion::new(Algorithm::NewReno, 536);
        cc.set_mss(1460);
        assert_eq!(cc.cwnd(), 14_600);
        cc.on_ack(Instant::ZERO, 1460, 1, 14_600, 0);
        cc.set_mss(1000);
        assert_eq!(cc.mss(), 1000);
        assert_eq!(cc.cwnd(), 14_600 + 1460);
    }
}
