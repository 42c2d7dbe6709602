//! An in-memory wire for the stack driver: a client [`Stack`] and a [`StackDriver`]
//! serving any [`App`] over two joined [`MemDevice`]s, stepped by hand with a virtual
//! clock (1 ms per step). The tests and the benchmarks drive an application through it
//! exactly as the AF_XDP worker loop does (frames in through
//! [`dataplane::Handler::on_frame`], a [`dataplane::Handler::poll`] per batch), and
//! measure the server's work alone: a [`Meter`] brackets every call into the driver
//! (copy counters, allocation counters, instruction counts), and nothing of the client
//! or the wire is inside those brackets.

use core::net::Ipv4Addr;
use crossbeam_channel::Receiver;
use dataplane::{Device, Handler, MemConfig, MemDevice};
use tcp::iface::InterfaceConfig;
use tcp::stack::{ConnHandle, Event, Stack, StackConfig};
use tcp::wire::EthernetAddress;
use tcp::Instant;

use super::stack::{DeviceTx, StackDriver};
use crate::app::App;

/// The server's address on the wire.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client's address on the wire.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The port the server listens on.
pub const PORT: u16 = 7;

/// Brackets the server's work in [`Loopback::step_metered`].
pub trait Meter {
    /// The driver is about to run (a frame's processing or a batch's poll).
    fn start(&mut self);
    /// It returned.
    fn stop(&mut self);
    /// A received frame, before the driver gets it (e.g. to check that the bytes the
    /// application is handed lie inside it).
    fn frame(&mut self, frame: &[u8]) {
        let _ = frame;
    }
}

/// No measurement.
impl Meter for () {
    fn start(&mut self) {}
    fn stop(&mut self) {}
}

/// The server's processing of one received frame: kept out of line so an instruction
/// counter can collect exactly the server's work (`valgrind --tool=callgrind
/// --toggle-collect='*serve_frame*' --toggle-collect='*serve_poll*'`).
#[inline(never)]
fn serve_frame<A: App, T: dataplane::TxQueue>(
    server: &mut StackDriver<A>,
    now: Instant,
    frame: &mut [u8],
    tx: &mut T,
) {
    server.on_frame(now, frame, tx);
}

/// The server's per-batch poll (out of line, as [`serve_frame`]).
#[inline(never)]
fn serve_poll<A: App, T: dataplane::TxQueue>(
    server: &mut StackDriver<A>,
    now: Instant,
    tx: &mut T,
) {
    server.poll(now, tx);
}

fn stack(mac: u8, addr: Ipv4Addr, seed: u8) -> Stack {
    let iface = InterfaceConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), addr, 24);
    Stack::new(StackConfig::new(iface, [seed; 16]))
}

/// A client stack and a server driver joined by an in-memory wire.
#[derive(Debug)]
pub struct Loopback<A: App> {
    /// The client's TCP stack (the test's or benchmark's side).
    pub client: Stack,
    /// The server: the stack driver serving the application on [`PORT`].
    pub server: StackDriver<A>,
    client_dev: MemDevice,
    server_dev: MemDevice,
    /// The virtual clock; [`Loopback::step`] advances it by 1 ms.
    pub now: Instant,
}

impl<A: App> Loopback<A> {
    /// Serves `app` (with its message queue `rx`) on [`SERVER`]:[`PORT`].
    pub fn new(app: A, rx: Option<Receiver<A::Message>>) -> Result<Loopback<A>, String> {
        let (client_dev, server_dev) = MemDevice::pair(MemConfig {
            tx_buffers: 4096,
            rx_capacity: 8192,
            frame_size: 2048,
        });
        Ok(Loopback {
            client: stack(1, CLIENT, 1),
            server: StackDriver::new(stack(2, SERVER, 2), app, rx, &[PORT])?,
            client_dev,
            server_dev,
            now: Instant::from_micros(1_000),
        })
    }

    /// One step: the client transmits, the server takes every frame and polls once, the
    /// client takes the answers. Returns the client's events.
    pub fn step(&mut self) -> Vec<Event> {
        self.step_metered(&mut ())
    }

    /// [`Loopback::step`], with `meter` around every call into the server.
    pub fn step_metered<M: Meter>(&mut self, meter: &mut M) -> Vec<Event> {
        let now = self.now;
        self.now += core::time::Duration::from_millis(1);
        if self.client.poll_timeout().is_some_and(|at| at <= now) {
            self.client.handle_timeout(now);
        }
        self.client_dev.reclaim();
        self.client
            .poll_transmit(now, &mut DeviceTx::new(self.client_dev.tx()));
        // The wire only fails when a frame exceeds its buffers, which the stack's MSS
        // rules out: a step that cannot send sends nothing.
        let _ = self.client_dev.submit();
        self.server_dev.reclaim();
        let server = &mut self.server;
        let _ = self.server_dev.receive(4096, |f, tx| {
            meter.frame(f);
            meter.start();
            serve_frame(server, now, f, tx);
            meter.stop();
        });
        meter.start();
        serve_poll(&mut self.server, now, self.server_dev.tx());
        meter.stop();
        let _ = self.server_dev.submit();
        let client = &mut self.client;
        let _ = self
            .client_dev
            .receive(4096, |f, _| client.handle_frame(now, f));
        let mut events = Vec::new();
        while let Some(e) = self.client.poll_event() {
            events.push(e);
        }
        events
    }

    /// Opens a client connection to the server; `None` if no handshake within 3 s.
    pub fn connect(&mut self) -> Option<ConnHandle> {
        let conn = self.client.connect(self.now, SERVER, PORT).ok()?;
        for _ in 0..3000 {
            if self.step().contains(&Event::Established(conn)) {
                return Some(conn);
            }
        }
        None
    }

    /// Steps until the client has read `want` bytes or more on `conn` (at most `steps`
    /// steps) and returns them.
    pub fn read(&mut self, conn: ConnHandle, want: usize, steps: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..steps {
            self.step();
            got.extend(self.take_received(conn, &mut buf));
            if got.len() >= want {
                break;
            }
        }
        got
    }

    /// Upgrades `conn` to a WebSocket on `path` (no compression) and returns the client's
    /// engine, fed whatever followed the 101 response.
    pub fn upgrade(&mut self, conn: ConnHandle, path: &str) -> Result<ws::Connection, String> {
        let hs = ws::ClientHandshake::new(
            [3; 16],
            Vec::new(),
            ws::DeflateConfig {
                enabled: false,
                ..ws::DeflateConfig::default()
            },
        );
        let request = hs.request("sluice", path);
        let sent = self
            .client
            .send(conn, &request)
            .map_err(|e| format!("send: {e}"))?;
        if sent != request.len() {
            return Err("the upgrade request does not fit the send buffer".to_string());
        }
        let mut head = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..5_000 {
            self.step();
            head.extend(self.take_received(conn, &mut buf));
            if let Some(acc) = hs.parse_response(&head).map_err(|e| format!("{e:?}"))? {
                let mut client = ws::Connection::new(
                    ws::Role::Client,
                    ws::Config {
                        max_frame_size: 1 << 20,
                        max_message_size: 1 << 20,
                    },
                    acc.deflate,
                    5,
                );
                let mut rest = head.get(acc.head_len..).unwrap_or_default().to_vec();
                client.read(&mut rest);
                return Ok(client);
            }
        }
        Err("no upgrade response".to_string())
    }

    /// Queues every frame `ws` has pending on `conn` (sent with the next step).
    pub fn send_pending(&mut self, conn: ConnHandle, ws: &mut ws::Connection) -> bool {
        let n = self.client.send(conn, ws.pending_output()).unwrap_or(0);
        ws.consume_output(n);
        ws.pending_output().is_empty()
    }

    /// What the client has received on `conn` so far (read through `buf`).
    pub fn take_received(&mut self, conn: ConnHandle, buf: &mut [u8]) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let n = self.client.recv(conn, buf).unwrap_or(0);
            if n == 0 {
                return got;
            }
            got.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    }
}
