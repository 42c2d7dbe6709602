//! Sans-IO WebSocket engine for Sluice (RFC 6455, RFC 7692).
//!
//! Bytes in, bytes out: the engine never touches a socket or a clock.
//!
//! - [`handshake`]: the opening handshake, server ([`handshake::parse_request`],
//!   [`handshake::Request::accept`]) and client ([`handshake::ClientHandshake`]).
//! - [`Connection`]: the frame-level state machine. Feed it received bytes with
//!   [`Connection::read_with`] (payloads are unmasked in place; a whole, unfragmented,
//!   uncompressed message is handed to the application borrowed from the input, others
//!   after assembly; [`Connection::read_small_with`] takes just the leading run of small
//!   whole frames, checked on two header bytes) or [`Connection::read`] (every message as
//!   an owned [`Event::Message`]),
//!   take [`Event`]s, queue messages with [`Connection::send`] and write out
//!   [`Connection::pending_output`]. An application that writes its answers itself (e.g.
//!   straight into the TCP send buffer) frames them with
//!   [`Connection::write_message_header`] (or [`frame::write_header`]) and copies the
//!   payload right after the header: no intermediate buffer.
//! - [`frame`], [`mask`], [`utf8`], [`close`], [`deflate`]: the building blocks.
#![forbid(unsafe_code)]

pub mod close;
pub mod conn;
pub mod copy_count;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::CloseCode;
pub use conn::{Config, Connection, Event, MessageKind, Reflected, Role, SendError};
pub use deflate::{DeflateConfig, DeflateParams};
pub use frame::{header_len, write_header, FrameError, FrameHeader, OpCode};
pub use handshake::{Accepted, ClientHandshake, HandshakeError, Request, ServerConfig};
