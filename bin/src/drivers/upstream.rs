//! The kernel-socket side of `proxy` routes, shared by both backends: one non-blocking mio
//! `TcpStream` per proxied client, connected, written and read on behalf of the
//! [`App`] (the gateway's `Worker`). The caller owns the mio `Poll`: it registers each upstream under the token
//! it picks in [`Upstreams::open`] and calls [`Upstreams::drive`] when that token fires
//! (and whenever the worker has new upstream output).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::ToSocketAddrs;
use tcp::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tracing::warn;

use crate::app::{App, ConnId};

/// Size of the receive buffer for upstream reads.
const READ_BUF: usize = 64 * 1024;

/// The upstream socket of one proxy connection.
#[derive(Debug)]
struct UpConn {
    stream: TcpStream,
    connected: bool,
}

/// Every upstream socket of one worker, by client connection id.
#[derive(Debug)]
pub struct Upstreams {
    conns: HashMap<ConnId, UpConn>,
    buf: Vec<u8>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

impl Upstreams {
    /// No upstreams yet.
    pub fn new() -> Upstreams {
        Upstreams {
            conns: HashMap::new(),
            buf: vec![0u8; READ_BUF],
        }
    }

    /// Whether client `id` has an upstream socket.
    pub fn contains(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Whether there is no upstream socket at all.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Starts a non-blocking connect to `authority` for client `id`, registered as `token`.
    /// A failure is reported to the worker at once ([`App::upstream_lost`]).
    pub fn open<A: App + ?Sized>(
        &mut self,
        registry: &Registry,
        token: Token,
        worker: &mut A,
        id: ConnId,
        authority: &str,
        now: Instant,
    ) {
        let addr = authority.to_socket_addrs().ok().and_then(|mut a| a.next());
        let stream = addr.and_then(|a| TcpStream::connect(a).ok());
        let Some(mut stream) = stream else {
            warn!(authority, "upstream connect failed");
            worker.upstream_lost(id, now);
            return;
        };
        stream.set_nodelay(true).ok();
        if registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            worker.upstream_lost(id, now);
            return;
        }
        self.conns.insert(
            id,
            UpConn {
                stream,
                connected: false,
            },
        );
    }

    /// Writes and reads the upstream socket of client `id` as far as it goes now.
    pub fn drive<A: App + ?Sized>(
        &mut self,
        registry: &Registry,
        worker: &mut A,
        id: ConnId,
        now: Instant,
    ) {
        let Some(u) = self.conns.get_mut(&id) else {
            return;
        };
        if !u.connected {
            if !matches!(u.stream.take_error(), Ok(None)) {
                worker.upstream_lost(id, now);
                return self.remove(registry, id);
            }
            match u.stream.peer_addr() {
                Ok(_) => {
                    u.connected = true;
                    worker.upstream_connected(id);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => {
                    worker.upstream_lost(id, now);
                    return self.remove(registry, id);
                }
            }
        }
        loop {
            loop {
                let out = worker.upstream_output(id);
                if out.is_empty() {
                    break;
                }
                match u.stream.write(out) {
                    Ok(0) => {
                        worker.upstream_lost(id, now);
                        return self.remove(registry, id);
                    }
                    Ok(n) => worker.upstream_consume(id, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        worker.upstream_lost(id, now);
                        return self.remove(registry, id);
                    }
                }
            }
            if worker.upstream_finished(id) {
                return self.remove(registry, id);
            }
            if !worker.wants_upstream_read(id) {
                return;
            }
            match u.stream.read(&mut self.buf) {
                Ok(0) => {
                    worker.upstream_lost(id, now);
                    return self.remove(registry, id);
                }
                Ok(n) => {
                    let data = self.buf.get_mut(..n).unwrap_or_default();
                    worker.upstream_receive(id, data, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    worker.upstream_lost(id, now);
                    return self.remove(registry, id);
                }
            }
        }
    }

    /// Closes and forgets the upstream socket of client `id` (if any).
    pub fn remove(&mut self, registry: &Registry, id: ConnId) {
        if let Some(mut u) = self.conns.remove(&id) {
            registry.deregister(&mut u.stream).ok();
        }
    }
}
