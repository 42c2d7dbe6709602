//! The Sluice application layer, as a library the `sluice` binary, the tests and `bench/`
//! drive:
//!
//! - [`app`]: the one sans-IO application trait ([`app::App`]) and the TCP applications;
//! - [`gateway`]: the WebSocket gateway (and ws-echo) as an [`app::App`], by route, with
//!   its broker;
//! - [`drivers`]: one driver per transport (the stack driver over any `dataplane::Device`,
//!   the kernel-socket driver on mio);
//! - [`control`]: the control plane (HTTP: metrics, health, publish, stat);
//! - [`metrics`]: the gateway's metrics;
//! - [`config`], [`cli`] and [`run`]: configuration, the command line and its dispatch.
//!
//! Module dependencies point one way: `run` -> `drivers` -> `control` -> `gateway` ->
//! `app`, `metrics`, `config` -> `cli`.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod drivers;
pub mod gateway;
pub mod metrics;
pub mod run;
