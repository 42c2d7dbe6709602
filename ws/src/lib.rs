//! Sans-IO WebSocket engine for Sluice (RFC 6455, RFC 7692).
//!
//! Bytes in, bytes out: the engine never touches a socket or a clock.
#![forbid(unsafe_code)]
