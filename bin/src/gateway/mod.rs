//! The WebSocket gateway application (`--app gateway`).
//!
//! The core is sans-IO: a [`worker::Worker`] implements [`crate::app::App`] (it takes the
//! bytes each connection receives and hands back the bytes to send), so the kernel-socket
//! driver and the stack driver (`crate::drivers`) serve the same code. Publishing goes through one [`broker`] thread, which frames
//! each message once and fans the same bytes out to every worker over bounded crossbeam
//! queues; per-topic order is the broker's order.

pub mod auth;
pub mod broker;
mod deadlines;
mod echo;
pub mod forwarded;
mod handshake;
mod limits;
pub mod protocol;
pub mod proxy;
mod pubsub;
pub mod session;
pub mod worker;

use std::sync::Arc;

pub use crate::app::{ConnId, TcpInfo};
pub use pubsub::{Ack, Publication};

/// One row of `sluice stat`'s per-connection table.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnInfo {
    /// Worker index.
    pub worker: usize,
    /// Peer address.
    pub peer: String,
    /// Route path, or `-` before the handshake.
    pub route: String,
    /// `handshake`, `open`, `closing`.
    pub state: String,
    /// Subscribed topics.
    pub topics: usize,
    /// Messages received.
    pub msgs_in: u64,
    /// Messages queued out.
    pub msgs_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes queued for sending now.
    pub queued: usize,
    /// Messages dropped by the slow-consumer policy.
    pub drops: u64,
    /// Seconds since accept.
    pub age_s: u64,
    /// The TCP engine's view (AF_XDP backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpInfo>,
}

/// Messages to a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Queue a publication to the local subscribers of its topic.
    Deliver(Arc<Publication>, Option<Arc<Ack>>),
    /// Reply with the per-connection table.
    Snapshot(crossbeam_channel::Sender<Vec<ConnInfo>>),
    /// Cluster mode: a report of this worker's topics was lost; send them all.
    InterestResync,
}

/// How to reach one worker: its bounded queue and a wake-up for its poll loop.
#[derive(Clone)]
pub struct WorkerHandle {
    /// The worker's queue.
    pub tx: crossbeam_channel::Sender<WorkerMsg>,
    /// Wakes the worker's poll loop after a send.
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

/// What became of a message offered to a worker's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued (and the worker woken).
    Queued,
    /// The queue is full: the worker is behind. Nothing waits for it.
    Full,
    /// The worker is gone (shutting down).
    Gone,
}

impl WorkerHandle {
    /// Queues `msg` without blocking: a slow worker never holds up the caller (the
    /// broker's policy for a full queue is in docs/GATEWAY.md).
    pub fn offer(&self, msg: WorkerMsg) -> Offer {
        match self.tx.try_send(msg) {
            Ok(()) => {
                (self.wake)();
                Offer::Queued
            }
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                // Wake it anyway: it is behind.
                (self.wake)();
                Offer::Full
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Offer::Gone,
        }
    }
}
