//! Sans-IO TCP/IP engine for Sluice.
//!
//! The engine is driven, it does not drive: frames and timestamps go in, frames come out.
//! It never opens a file descriptor and never reads a clock (see `DESIGN.md`, Contracts).
//!
//! Layout:
//! - [`wire`]: zero-copy checked views and `Repr`s for Ethernet, ARP, IPv4, ICMPv4, TCP.
//! - [`seq`], [`time`]: sequence-number arithmetic and the caller-supplied clock.
//! - [`timer`]: the hierarchical timer wheel holding every per-connection timer.
//! - [`storage`]: send/receive ring buffers and the out-of-order assembler.
//! - [`cc`]: RTT estimation (RFC 6298) and congestion control (NewReno, CUBIC).
//! - [`table`]: the per-core connection table keyed by 4-tuple.
//! - [`conn`]: the RFC 9293 connection state machine.
//! - [`iface`]: the per-core `Stack`: Ethernet/ARP/ICMP/IPv4 and the socket API.
#![forbid(unsafe_code)]

pub mod cc;
pub mod conn;
pub mod cookie;
pub mod iface;
pub mod seq;
pub mod storage;
pub mod table;
pub mod time;
pub mod timer;
pub mod wire;

pub use seq::SeqNumber;
pub use time::Instant;
