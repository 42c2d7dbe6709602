//! Packet I/O for Sluice: the batched [`Device`] abstraction, AF_XDP sockets
//! ([`XskDevice`]) and the XDP steering program ([`XdpProgram`]), an in-memory device for
//! tests ([`MemDevice`]), pinned per-queue workers ([`worker`]), RSS-aware source-port
//! choice ([`rss`]) with software steering as its fallback ([`steer`]), and packet capture
//! ([`PcapDevice`]); with the cargo feature `dpdk`, a DPDK device (`dpdk::DpdkDevice`).
//!
//! This is the only crate of the workspace allowed `unsafe`; every block states its
//! `// SAFETY:` reason. See `docs/AFXDP.md` for how the layer fits together.

pub mod device;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod error;
pub mod health;
pub mod mem;
pub mod pcap;
pub mod rss;
pub mod steer;
pub mod sys;
pub mod worker;
pub mod xdp;
pub mod xsk;

pub use device::{Device, DeviceError, DeviceStats, TxQueue};
pub use error::StartError;
pub use health::{Fault, FaultKind, Heartbeat, Heartbeats, WorkerStatus};
pub use mem::{MemConfig, MemDevice, MemTx};
pub use pcap::PcapDevice;
pub use rss::{PortChooser, RssTable};
pub use steer::SteerDevice;
pub use worker::{Backoff, Clock, Control, Handler, WorkerConfig, WorkerHandle};
pub use xdp::{XdpConfig, XdpCounters, XdpMode, XdpModeRequest, XdpProgram};
pub use xsk::{CopyMode, XskConfig, XskDevice, XskTx, ZeroCopy};
