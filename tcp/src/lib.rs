//! Sans-IO TCP/IP engine for Sluice.
//!
//! The engine is driven, it does not drive: frames and timestamps go in, frames come out.
//! It never opens a file descriptor and never reads a clock (see `DESIGN.md`, Contracts).
//!
//! The root exports what a driver and an application use ([`Stack`], [`StackConfig`],
//! [`ConnHandle`], [`ConnTx`], [`Event`], the errors, [`TxQueue`], [`FourTuple`],
//! [`Instant`], [`Bytes`], ...); the modules stay public for everything else.
//!
//! Zero-copy paths (see `docs/ARCHITECTURE.md`): received in-order payload is lent to the
//! application mutably inside the RX frame ([`Stack::handle_frame_with`],
//! [`Stack::handle_frame_with_tx`]); answers are written in place into the send buffer
//! ([`Stack::send_with`]) or queued as shared immutable chunks without a copy
//! ([`Stack::send_chunk`]); every segment's payload is copied once, into its TX frame.
//!
//! Layout:
//! - [`wire`]: zero-copy checked views and `Repr`s for Ethernet, ARP, IPv4, ICMPv4, TCP.
//! - [`seq`], [`time`]: sequence-number arithmetic and the caller-supplied clock.
//! - [`timer`]: the hierarchical timer wheel holding every per-connection timer.
//! - [`storage`]: the lazily allocated byte ring, the send queue (ring bytes plus shared
//!   chunks), the bounded out-of-order assembler, and the per-thread buffer pool.
//! - [`cc`]: RTT estimation (RFC 6298) and congestion control (NewReno, CUBIC).
//! - [`cookie`]: RFC 6528 initial sequence numbers and SYN cookies.
//! - [`table`]: the per-core connection table keyed by 4-tuple.
//! - [`ratelimit`]: token buckets for challenge ACKs and closed-port replies.
//! - [`conn`]: the per-connection RFC 9293 state machine (TCB), SACK, flow control.
//! - [`iface`]: the per-core L2/L3 interface: Ethernet, ARP cache and responder, ICMP echo,
//!   IPv4, closed-port policy, and the `TxQueue` trait frames are built into (the one
//!   transmit trait of the workspace; `dataplane` implements it).
//! - [`stack`]: the per-core `Stack`: interface + connection table + listeners + timer wheel
//!   + events, and the handle-based socket API.
//! - [`copy_count`]: test-only payload copy counters (cargo feature `copy-count`).
#![forbid(unsafe_code)]

pub mod cc;
pub mod conn;
pub mod cookie;
pub mod copy_count;
pub mod iface;
pub mod ratelimit;
pub mod seq;
pub mod stack;
pub mod storage;
pub mod table;
pub mod time;
pub mod timer;
pub mod wire;

// The curated API: what a driver or an application needs, at the root. The modules stay
// public for everything else (wire views, the TCB, the timer wheel, ...).
pub use bytes::Bytes;
pub use conn::{ConnConfig, ConnStats, SocketError, State};
pub use iface::{ClosedPortPolicy, InterfaceConfig, TxQueue, VecTxQueue};
pub use seq::SeqNumber;
pub use stack::{
    ChunkRefused, ConnHandle, ConnTx, ConnectError, Event, ListenError, Stack, StackConfig,
    StackStats,
};
pub use table::FourTuple;
pub use time::Instant;
pub use wire::{EthernetAddress, WireError};
#[doc(hidden)]
pub mod testing;
