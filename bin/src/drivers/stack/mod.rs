//! The per-queue worker body: a [`tcp::stack::Stack`] driven by the dataplane's poll loop,
//! serving one of the simple TCP applications on every listening port.
//!
//! [`StackWorker`] implements [`dataplane::Handler`]: each received frame goes to
//! [`Stack::handle_frame_with`] (discard and source consume in-order payload straight from
//! the frame), and after each batch [`StackWorker::poll`] runs due timers, hands events to
//! the application and builds every segment due into the device's TX buffers.

use std::collections::HashMap;

pub mod gateway;

use dataplane::Handler;

pub use crate::app::tcp::{source_byte, Kind as TcpApp};
use gateway::GatewayApp;
use tcp::iface::TxQueue as StackTxQueue;
use tcp::stack::{ConnHandle, Event, Stack};
use tcp::Instant;

/// Length of the precomputed pattern: whole periods, so any offset's slice starts inside.
const PATTERN_LEN: usize = 251 * 64;
/// Copy buffer for echo (bytes moved from the receive to the send buffer per call).
const ECHO_CHUNK: usize = 64 * 1024;

/// Adapts the device's transmit half to the engine's [`StackTxQueue`], counting frames.
#[derive(Debug)]
pub struct DeviceTx<'a, T> {
    inner: &'a mut T,
    /// Frames handed to the device so far.
    pub frames: usize,
}

impl<'a, T: dataplane::TxQueue> DeviceTx<'a, T> {
    /// Wraps `inner`.
    pub fn new(inner: &'a mut T) -> DeviceTx<'a, T> {
        DeviceTx { inner, frames: 0 }
    }
}

impl<T: dataplane::TxQueue> StackTxQueue for DeviceTx<'_, T> {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        let sent = self.inner.transmit(len, fill);
        if sent {
            self.frames += 1;
        }
        sent
    }
}

/// What the application remembers about one connection.
#[derive(Debug, Clone, Copy, Default)]
struct ConnState {
    /// `tcp-source`: bytes of the pattern queued so far.
    offset: u64,
    /// Our FIN has been requested (`shutdown`).
    shut: bool,
}

/// One worker's stack and application.
#[derive(Debug)]
pub struct StackWorker {
    stack: Stack,
    app: TcpApp,
    ports: Vec<u16>,
    conns: HashMap<ConnHandle, ConnState>,
    scratch: Vec<u8>,
    pattern: Vec<u8>,
    stopping: bool,
    /// An active open still to make on the next poll.
    connect: Option<std::net::SocketAddrV4>,
    /// Its local port, chosen so the answers reach this worker's queue (`None`: the
    /// stack's next ephemeral port).
    connect_port: Option<u16>,
    /// The WebSocket gateway (or ws-echo), served instead of `app` when set.
    gateway: Option<Box<GatewayApp>>,
}

impl StackWorker {
    /// A worker serving `app` on `ports` (already listening or not: `listen` is called here).
    pub fn new(mut stack: Stack, app: TcpApp, ports: &[u16]) -> Result<StackWorker, String> {
        for &port in ports {
            stack
                .listen(port, 0)
                .map_err(|e| format!("cannot listen on port {port}: {e:?}"))?;
        }
        Ok(StackWorker {
            stack,
            app,
            ports: ports.to_vec(),
            conns: HashMap::new(),
            scratch: vec![0; ECHO_CHUNK],
            pattern: (0..PATTERN_LEN as u64).map(source_byte).collect(),
            stopping: false,
            connect: None,
            connect_port: None,
            gateway: None,
        })
    }

    /// Serves the WebSocket gateway (or ws-echo) on every listening port instead of the
    /// TCP application.
    pub fn serve_gateway(&mut self, gateway: GatewayApp) {
        self.gateway = Some(Box::new(gateway));
    }

    /// Opens one connection to `remote` on the next poll and serves the application on it.
    pub fn connect_to(&mut self, remote: Option<std::net::SocketAddrV4>) {
        self.connect = remote;
    }

    /// Makes that active open from `port` (see `dataplane::PortChooser`).
    pub fn connect_from_port(&mut self, port: Option<u16>) {
        self.connect_port = port;
    }

    /// The stack, e.g. for its counters.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Accepted { conn, .. } | Event::Established(conn) => {
                if self.stopping {
                    let _ = self.stack.abort(conn);
                    return;
                }
                self.conns.insert(conn, ConnState::default());
                self.serve(conn);
            }
            Event::Readable(conn) | Event::Writable(conn) | Event::PeerClosed(conn) => {
                self.serve(conn)
            }
            Event::Closed(conn) => {
                // Anything still buffered is read (and for echo, there is nobody left to
                // send it to): release the handle.
                self.conns.remove(&conn);
                let _ = self.stack.close(conn);
            }
            Event::Reset(conn) | Event::TimedOut(conn) => {
                self.conns.remove(&conn);
            }
        }
    }

    /// Moves data for one connection as far as the buffers allow.
    fn serve(&mut self, conn: ConnHandle) {
        let Some(mut state) = self.conns.get(&conn).copied() else {
            return;
        };
        let done = match self.app {
            TcpApp::Echo => self.serve_echo(conn, &mut state),
            TcpApp::Discard => self.serve_discard(conn),
            TcpApp::Source => self.serve_source(conn, &mut state),
        };
        match done {
            Ok(false) => {
                self.conns.insert(conn, state);
            }
            // Finished (closed by us) or the handle went stale.
            Ok(true) | Err(_) => {
                self.conns.remove(&conn);
            }
        }
    }

    /// Echo: copy receive buffer to send buffer while both allow; after the peer's FIN and
    /// the last byte echoed, send our FIN (the connection then closes in order).
    fn serve_echo(
        &mut self,
        conn: ConnHandle,
        state: &mut ConnState,
    ) -> Result<bool, tcp::stack::Error> {
        loop {
            let room = self.stack.send_capacity(conn)?.min(self.scratch.len());
            if room == 0 {
                return Ok(false);
            }
            let Some(buf) = self.scratch.get_mut(..room) else {
                return Ok(false);
            };
            let n = self.stack.recv(conn, buf)?;
            if n == 0 {
                break;
            }
            let data = self.scratch.get(..n).unwrap_or_default();
            let queued = self.stack.send(conn, data)?;
            debug_assert_eq!(queued, n, "send capacity was checked");
        }
        if self.stack.at_eof(conn)? && !state.shut {
            // RFC 9293 3.6: the peer's FIN closes only its direction; ours follows the
            // echoed data.
            self.stack.shutdown(conn)?;
            state.shut = true;
        }
        Ok(false)
    }

    /// Discard: drop whatever is buffered; close once the peer has closed.
    fn serve_discard(&mut self, conn: ConnHandle) -> Result<bool, tcp::stack::Error> {
        while self.stack.recv_with(conn, |data| data.len())? > 0 {}
        if self.stack.at_eof(conn)? {
            self.stack.close(conn)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Source: keep the send buffer full of the pattern; drop what the peer sends; close
    /// once the peer has closed.
    fn serve_source(
        &mut self,
        conn: ConnHandle,
        state: &mut ConnState,
    ) -> Result<bool, tcp::stack::Error> {
        while self.stack.recv_with(conn, |data| data.len())? > 0 {}
        if self.stack.at_eof(conn)? {
            self.stack.close(conn)?;
            return Ok(true);
        }
        loop {
            let room = self.stack.send_capacity(conn)?;
            if room == 0 {
                return Ok(false);
            }
            let start = (state.offset % 251) as usize;
            let end = (start + room).min(self.pattern.len());
            let Some(chunk) = self.pattern.get(start..end) else {
                return Ok(false);
            };
            let n = self.stack.send(conn, chunk)?;
            if n == 0 {
                return Ok(false);
            }
            state.offset += n as u64;
        }
    }
}

impl Handler for StackWorker {
    type Message = ();

    fn on_frame<T: dataplane::TxQueue>(&mut self, now: Instant, frame: &mut [u8], tx: &mut T) {
        let _ = tx;
        if let Some(g) = self.gateway.as_deref_mut() {
            g.note_frame();
            // In-order payload goes to the gateway straight from the frame.
            self.stack
                .handle_frame_with(now, frame, &mut |conn, data| g.sink(conn, data));
            return;
        }
        match self.app {
            // Consumed in place from the frame: nothing is copied into receive buffers.
            TcpApp::Discard | TcpApp::Source => {
                self.stack
                    .handle_frame_with(now, frame, &mut |_, data| data.len())
            }
            TcpApp::Echo => self.stack.handle_frame(now, frame),
        }
    }

    fn poll<T: dataplane::TxQueue>(&mut self, now: Instant, tx: &mut T) -> bool {
        let mut worked = false;
        if let Some(g) = self.gateway.as_deref_mut() {
            g.tick_clock();
        }
        if let Some(remote) = self.connect.take() {
            let opened = match self.connect_port {
                Some(port) => self
                    .stack
                    .connect_from(now, port, *remote.ip(), remote.port()),
                None => self.stack.connect(now, *remote.ip(), remote.port()),
            };
            match opened {
                Ok(conn) => {
                    tracing::info!(%remote, local_port = ?self.connect_port, ?conn, "connecting")
                }
                Err(e) => tracing::warn!(%remote, error = ?e, "cannot connect"),
            }
            worked = true;
        }
        if self.stack.poll_timeout().is_some_and(|at| at <= now) {
            self.stack.handle_timeout(now);
        }
        while let Some(event) = self.stack.poll_event() {
            match self.gateway.as_deref_mut() {
                Some(g) => g.on_event(&mut self.stack, event),
                None => self.on_event(event),
            }
            worked = true;
        }
        if let Some(g) = self.gateway.as_deref_mut() {
            worked |= g.poll(&mut self.stack);
        }
        let mut tx = DeviceTx::new(tx);
        self.stack.poll_transmit(now, &mut tx);
        worked || tx.frames > 0
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.gateway.as_deref().is_some_and(GatewayApp::has_pending) {
            // Publications are waiting: do not sleep.
            return Some(Instant::from_micros(0));
        }
        self.stack.poll_timeout()
    }

    fn on_stop(&mut self, _now: Instant) {
        // Stop accepting, then close every connection in order (queued data is still
        // delivered; unread data turns a close into a reset).
        self.stopping = true;
        if let Some(g) = self.gateway.as_deref_mut() {
            g.stop(&mut self.stack);
            return;
        }
        for &port in &self.ports {
            self.stack.unlisten(port);
        }
        for (conn, _) in self.conns.drain() {
            let _ = self.stack.close(conn);
        }
    }

    fn drained(&self) -> bool {
        if let Some(g) = self.gateway.as_deref() {
            return g.drained();
        }
        let time_wait = usize::try_from(self.stack.counters().time_wait).unwrap_or(usize::MAX);
        self.stack.connection_count() <= time_wait
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use core::net::Ipv4Addr;
    use dataplane::{Device, MemConfig, MemDevice};
    use tcp::iface::InterfaceConfig;
    use tcp::stack::StackConfig;
    use tcp::wire::EthernetAddress;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn stack(mac: u8, addr: Ipv4Addr, seed: u8) -> Stack {
        let iface = InterfaceConfig::new(EthernetAddress([2, 0, 0, 0, 0, mac]), addr, 24);
        Stack::new(StackConfig::new(iface, [seed; 16]))
    }

    /// A client stack and a worker over two joined in-memory devices, stepped by hand with
    /// a virtual clock (1 ms per step).
    struct Pair {
        client: Stack,
        worker: StackWorker,
        client_dev: MemDevice,
        worker_dev: MemDevice,
        now: Instant,
    }

    impl Pair {
        fn new(app: TcpApp) -> Pair {
            let (client_dev, worker_dev) = MemDevice::pair(MemConfig {
                tx_buffers: 4096,
                rx_capacity: 8192,
                frame_size: 2048,
            });
            Pair {
                client: stack(1, CLIENT, 1),
                worker: StackWorker::new(stack(2, SERVER, 2), app, &[7]).unwrap(),
                client_dev,
                worker_dev,
                now: Instant::from_micros(1_000),
            }
        }

        /// One step: client out, worker in and out, client in; returns client events.
        fn step(&mut self) -> Vec<Event> {
            let now = self.now;
            self.now += core::time::Duration::from_millis(1);
            if self.client.poll_timeout().is_some_and(|at| at <= now) {
                self.client.handle_timeout(now);
            }
            self.client_dev.reclaim();
            self.client
                .poll_transmit(now, &mut DeviceTx::new(self.client_dev.tx()));
            self.client_dev.submit().unwrap();
            self.worker_dev.reclaim();
            let worker = &mut self.worker;
            self.worker_dev
                .receive(4096, |f, tx| worker.on_frame(now, f, tx))
                .unwrap();
            self.worker.poll(now, self.worker_dev.tx());
            self.worker_dev.submit().unwrap();
            let client = &mut self.client;
            self.client_dev
                .receive(4096, |f, _| client.handle_frame(now, f))
                .unwrap();
            let mut events = Vec::new();
            while let Some(e) = self.client.poll_event() {
                events.push(e);
            }
            events
        }

        fn connect(&mut self) -> ConnHandle {
            let conn = self.client.connect(self.now, SERVER, 7).unwrap();
            for _ in 0..3000 {
                if self.step().contains(&Event::Established(conn)) {
                    return conn;
                }
            }
            panic!("no handshake");
        }
    }

    #[test]
    fn echo_half_close_after_data_all_echoed_then_fin() {
        let mut p = Pair::new(TcpApp::Echo);
        let conn = p.connect();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut shut = false;
        for _ in 0..20_000 {
            if sent < data.len() {
                sent += p.client.send(conn, &data[sent..]).unwrap();
            } else if !shut {
                p.client.shutdown(conn).unwrap();
                shut = true;
            }
            p.step();
            loop {
                let n = p.client.recv(conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if shut && got.len() == data.len() && p.client.at_eof(conn).unwrap_or(true) {
                break;
            }
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echo differs");
        assert!(
            p.client.at_eof(conn).unwrap_or(true),
            "no FIN after the echo"
        );
    }

    #[test]
    fn source_peer_reads_then_closes_pattern_exact_conn_released() {
        let mut p = Pair::new(TcpApp::Source);
        let conn = p.connect();
        let got = read_client(&mut p, conn, 200_000, 20_000);
        assert!(got.len() >= 200_000, "only {} bytes", got.len());
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, source_byte(i as u64), "offset {i}");
        }
        // The peer closes: the source closes too and the worker forgets the connection.
        p.client.close(conn).unwrap();
        for _ in 0..5_000 {
            p.step();
            if p.worker.conns.is_empty() {
                break;
            }
        }
        assert!(p.worker.conns.is_empty());
    }

    #[test]
    fn worker_stop_connections_closed_and_drained() {
        let mut p = Pair::new(TcpApp::Discard);
        let conn = p.connect();
        p.client.send(conn, b"dropped").unwrap();
        for _ in 0..50 {
            p.step();
        }
        p.worker.on_stop(p.now);
        let mut closed = false;
        for _ in 0..5_000 {
            let events = p.step();
            if events.contains(&Event::PeerClosed(conn)) {
                p.client.close(conn).unwrap();
                closed = true;
            }
            if closed && p.worker.drained() {
                break;
            }
        }
        assert!(closed, "the worker never sent FIN");
        assert!(p.worker.drained());
    }

    /// A worker serving ws-echo (the gateway `Worker` with one echo route) on port 7.
    fn ws_echo_pair() -> Pair {
        use crate::config::{Config, Route, RouteKind};
        let mut p = Pair::new(TcpApp::Echo);
        let mut config = Config::default();
        config.listen.ports = vec![7];
        config.control.enabled = false;
        config.routes = vec![Route {
            path: "/".to_string(),
            kind: RouteKind::Echo,
            compression: false,
            ..Route::default()
        }];
        let mut shared = gateway::Shared::start(config, 1, true).unwrap();
        p.worker
            .serve_gateway(GatewayApp::new(shared.part(0), &[7]));
        p
    }

    /// Steps until the client has `want` bytes or more, at most `steps` times.
    fn read_client(p: &mut Pair, conn: ConnHandle, want: usize, steps: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..steps {
            p.step();
            loop {
                let n = p.client.recv(conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() >= want {
                break;
            }
        }
        got
    }

    #[test]
    fn gateway_ws_echo_over_stack_message_echoed_then_1001_on_stop() {
        use ws::{ClientHandshake, CloseCode, Connection, DeflateConfig, MessageKind, Role};
        let mut p = ws_echo_pair();
        let conn = p.connect();
        let hs = ClientHandshake::new(
            [3; 16],
            Vec::new(),
            DeflateConfig {
                enabled: false,
                ..DeflateConfig::default()
            },
        );
        p.client
            .send(conn, &hs.request("sluice", "/any/path"))
            .unwrap();
        let head = read_client(&mut p, conn, 1, 5_000);
        let acc = hs
            .parse_response(&head)
            .unwrap()
            .expect("a whole 101 response");
        let mut ws = Connection::new(
            Role::Client,
            ws::Config {
                max_frame_size: 1 << 20,
                max_message_size: 1 << 20,
            },
            None,
            5,
        );
        let msg = vec![b'z'; 100_000];
        ws.send(MessageKind::Binary, &msg).unwrap();
        let out = ws.pending_output().to_vec();
        ws.consume_output(out.len());
        let mut sent = 0;
        let mut echo = head[acc.head_len..].to_vec();
        for _ in 0..5_000 {
            if sent < out.len() {
                sent += p.client.send(conn, &out[sent..]).unwrap();
            }
            echo.extend(read_client(&mut p, conn, 0, 5_000));
            if echo.len() >= msg.len() + 4 {
                break;
            }
        }
        ws.read(&mut echo);
        match ws.poll_event() {
            Some(ws::Event::Message { kind, data }) => {
                assert_eq!(kind, MessageKind::Binary);
                assert!(data == msg, "echo differs");
            }
            other => panic!("{other:?}"),
        }
        // A stop closes the WebSocket with 1001 (going away).
        p.worker.on_stop(p.now);
        let mut close = read_client(&mut p, conn, 2, 5_000);
        ws.read(&mut close);
        match ws.poll_event() {
            Some(ws::Event::Close { code, .. }) => assert_eq!(code, Some(CloseCode::GOING_AWAY)),
            other => panic!("{other:?}"),
        }
        // Our answering Close lets the worker finish the connection and drain.
        let answer = ws.pending_output().to_vec();
        p.client.send(conn, &answer).unwrap();
        for _ in 0..5_000 {
            let events = p.step();
            if events.contains(&Event::PeerClosed(conn)) {
                p.client.close(conn).unwrap();
            }
            if p.worker.drained() {
                break;
            }
        }
        assert!(p.worker.drained());
    }

    #[test]
    fn source_byte_period_251() {
        assert_eq!(source_byte(0), 0);
        assert_eq!(source_byte(250), 250);
        assert_eq!(source_byte(251), 0);
        assert_eq!(source_byte(251 * 1000 + 7), 7);
    }
}
