//! Packet I/O for Sluice: the batched `Device` abstraction, AF_XDP sockets and the XDP
//! steering program, an in-memory device for tests, and pinned per-queue workers.
//!
//! This is the only crate of the workspace allowed `unsafe`; every block states its
//! `// SAFETY:` reason.
