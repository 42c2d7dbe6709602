//! One driver per transport, each serving any [`crate::app::App`]:
//!
//! - [`stack`]: Sluice's own TCP stack (`tcp::Stack`) over any `dataplane::Device`
//!   (AF_XDP, DPDK, the in-memory device in tests), one per worker; [`bypass`] starts the
//!   kernel-bypass backends' workers (AF_XDP, DPDK) with it;
//! - [`kernel`]: kernel sockets on one mio (epoll) thread.
//!
//! [`upstream`] holds the kernel sockets of the gateway's proxy routes, which both drivers
//! poll on their worker thread.

pub mod bypass;
pub mod gateway;
pub mod kernel;
pub mod loopback;
pub mod stack;
pub mod upstream;
