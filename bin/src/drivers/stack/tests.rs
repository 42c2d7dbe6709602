//! The stack driver on two joined in-memory devices, stepped by hand with a virtual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::app::tcp::{source_byte, Kind, TcpApp};
use crate::gateway::worker::Worker;
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
struct Pair<A: App> {
    client: Stack,
    worker: StackDriver<A>,
    client_dev: MemDevice,
    worker_dev: MemDevice,
    now: Instant,
}

fn tcp_pair(kind: Kind) -> Pair<TcpApp> {
    Pair::new(TcpApp::new(kind, 100, 1 << 20), None)
}

impl<A: App> Pair<A> {
    fn new(app: A, rx: Option<Receiver<A::Message>>) -> Pair<A> {
        let (client_dev, worker_dev) = MemDevice::pair(MemConfig {
            tx_buffers: 4096,
            rx_capacity: 8192,
            frame_size: 2048,
        });
        Pair {
            client: stack(1, CLIENT, 1),
            worker: StackDriver::new(stack(2, SERVER, 2), app, rx, &[7]).unwrap(),
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
    let mut p = tcp_pair(Kind::Echo);
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
    let mut p = tcp_pair(Kind::Source);
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
        if p.worker.connections() == 0 {
            break;
        }
    }
    assert_eq!(p.worker.connections(), 0);
}

#[test]
fn worker_stop_connections_closed_and_drained() {
    let mut p = tcp_pair(Kind::Discard);
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
fn ws_echo_pair() -> Pair<Worker> {
    use crate::config::{Config, Route, RouteKind};
    let mut config = Config::default();
    config.listen.ports = vec![7];
    config.control.enabled = false;
    config.routes = vec![Route {
        path: "/".to_string(),
        kind: RouteKind::Echo,
        compression: false,
        ..Route::default()
    }];
    let health = crate::control::health::Health::new(
        vec!["q0".to_string()],
        dataplane::Clock::new(),
        config.control.worker_stall(),
    );
    let mut shared = crate::drivers::gateway::Shared::start(config, 1, true, health).unwrap();
    let (worker, rx) = shared.part(0).into_worker();
    Pair::new(worker, rx)
}

/// Steps until the client has `want` bytes or more, at most `steps` times.
fn read_client<A: App>(p: &mut Pair<A>, conn: ConnHandle, want: usize, steps: usize) -> Vec<u8> {
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
