//! Benchmarks for Sluice: criterion micro-benchmarks (`benches/`) and the load generator
//! `sluice-load` with its loopback responder and the kernel-socket reference servers.

pub mod bulk;
pub mod bypass;
pub mod ceiling;
pub mod client;
pub mod cpustat;
pub mod fanout;
pub mod floor;
pub mod handshakes;
pub mod report;
pub mod responder;
pub mod scale;
pub mod settings;
pub mod tls;
pub mod wsframe;

pub use ceiling::{ceiling, CeilingOptions};
pub use client::run;
pub use report::{ErrorKind, Report, WorkerStats};
pub use settings::{Mode, Proto, Settings};
