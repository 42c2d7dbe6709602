//! The application layer's copies and allocations, proven on the in-memory wire
//! (`sluice::drivers::loopback`: the stack driver exactly as AF_XDP runs it, over
//! `MemDevice`), counting the server's work alone:
//!
//! - payload copies at the copy sites (the `copy-count` features of `tcp` and `ws`, on
//!   for this test only), and where the bytes handed to the application lie (inside the
//!   RX frame, or not): a 64 B WebSocket echo costs 2 copies (RX frame -> send buffer ->
//!   TX frame), a publication 1 per subscriber (its shared frame -> TX frame);
//! - heap allocations with a counting global allocator (`dhat`): none per echoed message
//!   after warm-up; for a publication to 100 subscribers, none per subscriber;
//! - the same over wss:// (the gateway behind the TLS layer, a rustls client): the echo's
//!   plaintext decrypted inside the RX frame, the answer written in its record's place in
//!   the send buffer and sealed there (the same 2 copies), a publication copied into each
//!   subscriber's record and sealed there (one lend each) then into the TX frame, and no
//!   allocation either way.
//!
//! Each count is exact, so a copy or an allocation added on these paths fails the test.
//!
//! The allocator counts every thread of the process, so this test runs without the
//! libtest harness (`harness = false` in bin/Cargo.toml): one thread, the cases in turn,
//! nothing else allocating inside a measured window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use std::io::{Read, Write};

use sluice::app::tls::{Listeners, Tls};
use sluice::app::{App, ConnId, Refusal, TcpView, Tx};
use sluice::config::{Config, TlsListener, TlsVersion};
use sluice::drivers::loopback::{Loopback, Meter};
use sluice::gateway::worker::Worker;
use sluice::gateway::{Publication, WorkerMsg};
use sluice::metrics::Metrics;
use tcp::stack::ConnHandle;
use tcp::Instant;
use ws::{Event, MessageKind};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Keepalive pings and idle closes are off: they are timer work (a ping frame per
/// connection per interval), not per message, and would land at random in the counts.
const CONFIG: &str = r#"
[listen]
ports = [7]
[control]
enabled = false
[limits]
ping_interval_ms = 0
idle_timeout_ms = 0
[[route]]
path = "/echo"
kind = "echo"
[[route]]
path = "/ps"
kind = "pubsub"
max_queued_bytes = 1048576
"#;

/// How long (virtual clock) a connection is exercised before counting: several of the
/// stack driver's 100 ms ticks.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(350);

/// The gateway worker, recording where the bytes it is handed lie.
#[derive(Debug)]
struct Probe {
    inner: Worker,
    /// `(start, end)` addresses of every `receive` input since the last check.
    inputs: Vec<(usize, usize)>,
}

impl App for Probe {
    type Message = WorkerMsg;

    fn accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Result<(), Refusal> {
        self.inner.accept(id, peer, now)
    }
    fn remove(&mut self, id: ConnId) {
        App::remove(&mut self.inner, id);
    }
    fn receive<T: Tx>(&mut self, id: ConnId, data: &mut [u8], tx: &mut T, now: Instant) {
        let range = data.as_ptr_range();
        if self.inputs.len() < self.inputs.capacity() {
            self.inputs.push((range.start as usize, range.end as usize));
        }
        App::receive(&mut self.inner, id, data, tx, now);
    }
    fn peer_closed(&mut self, id: ConnId) {
        App::peer_closed(&mut self.inner, id);
    }
    fn flush<T: Tx>(&mut self, id: ConnId, tx: &mut T) {
        App::flush(&mut self.inner, id, tx);
    }
    fn wants_read(&self, id: ConnId) -> bool {
        App::wants_read(&self.inner, id)
    }
    fn is_finished(&self, id: ConnId) -> bool {
        App::is_finished(&self.inner, id)
    }
    fn take_dirty(&mut self, out: &mut Vec<ConnId>) {
        App::take_dirty(&mut self.inner, out);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        App::poll_timeout(&self.inner)
    }
    fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        App::handle_timeout(&mut self.inner, now, expired);
    }
    fn shutdown(&mut self, now: Instant, deadline: Instant) {
        App::shutdown(&mut self.inner, now, deadline);
    }
    fn live(&self) -> usize {
        App::live(&self.inner)
    }
    fn handle_message(&mut self, msg: WorkerMsg, now: Instant, tcp: TcpView<'_>) {
        App::handle_message(&mut self.inner, msg, now, tcp);
    }
}

/// The gateway of [`CONFIG`] on the wire, with its message queue.
fn gateway() -> (Loopback<Probe>, Sender<WorkerMsg>) {
    let config = Arc::new(Config::parse(CONFIG).unwrap());
    let worker = Worker::new(0, config, Arc::new(Metrics::new()), None);
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let probe = Probe {
        inner: worker,
        inputs: Vec::with_capacity(4096),
    };
    (Loopback::new(probe, Some(rx)).unwrap(), tx)
}

/// Copy counters summed over the server's work, and the RX frames it was handed.
#[derive(Default)]
struct Copies {
    tcp: tcp::copy_count::Copies,
    ws: ws::copy_count::Copies,
    frames: Vec<(usize, usize)>,
}

impl Meter for Copies {
    fn start(&mut self) {
        tcp::copy_count::reset();
        ws::copy_count::reset();
    }
    fn stop(&mut self) {
        let (t, w) = (tcp::copy_count::snapshot(), ws::copy_count::snapshot());
        self.tcp.send_buffer += t.send_buffer;
        self.tcp.send_buffer_bytes += t.send_buffer_bytes;
        self.tcp.recv_buffer += t.recv_buffer;
        self.tcp.recv_read += t.recv_read;
        self.tcp.tx_frame += t.tx_frame;
        self.tcp.tx_frame_bytes += t.tx_frame_bytes;
        self.ws.message += w.message;
        self.ws.output += w.output;
        self.ws.transmit += w.transmit;
    }
    fn frame(&mut self, frame: &[u8]) {
        let r = frame.as_ptr_range();
        self.frames.push((r.start as usize, r.end as usize));
    }
}

/// Heap allocations counted over the server's work.
#[derive(Default)]
struct Allocations {
    blocks: u64,
    at_start: u64,
}

impl Meter for Allocations {
    fn start(&mut self) {
        self.at_start = dhat::HeapStats::get().total_blocks;
    }
    fn stop(&mut self) {
        self.blocks += dhat::HeapStats::get().total_blocks - self.at_start;
    }
}

/// Steps until the client engine `ws` has `want` whole messages, returning them.
fn receive_messages<M: Meter>(
    lb: &mut Loopback<Probe>,
    conn: ConnHandle,
    ws: &mut ws::Connection,
    want: usize,
    meter: &mut M,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..2_000 {
        lb.step_metered(meter);
        let mut bytes = lb.take_received(conn, &mut buf);
        let mut pos = 0;
        while pos < bytes.len() {
            pos += ws.read(&mut bytes[pos..]);
            while let Some(ev) = ws.poll_event() {
                if let Event::Message { data, .. } = ev {
                    got.push(data);
                }
            }
        }
        if got.len() >= want {
            return got;
        }
    }
    panic!("only {} of {want} messages arrived", got.len());
}

/// Sends `batch` 64 B binary messages in one segment and waits for their echoes.
fn echo_round<M: Meter>(
    lb: &mut Loopback<Probe>,
    conn: ConnHandle,
    ws: &mut ws::Connection,
    batch: usize,
    round: usize,
    meter: &mut M,
) {
    let payload = [round as u8; 64];
    for _ in 0..batch {
        ws.send(MessageKind::Binary, &payload).unwrap();
    }
    assert!(lb.send_pending(conn, ws));
    let got = receive_messages(lb, conn, ws, batch, meter);
    assert_eq!(got.len(), batch);
    assert!(got.iter().all(|m| m == &payload), "echo differs");
}

/// Every input the application was handed lies inside an RX frame of the same step.
fn assert_inputs_in_frames(lb: &mut Loopback<Probe>, copies: &mut Copies) {
    let inputs = std::mem::take(&mut lb.server.app_mut().inputs);
    assert!(!inputs.is_empty());
    for (start, end) in &inputs {
        assert!(
            copies
                .frames
                .iter()
                .any(|(fs, fe)| fs <= start && end <= fe),
            "input {start:#x}..{end:#x} is not inside an RX frame: it was copied"
        );
    }
    copies.frames.clear();
    lb.server.app_mut().inputs = Vec::with_capacity(4096);
}

/// An echo connection, upgraded and warmed up.
fn echo_conn() -> (Loopback<Probe>, ConnHandle, ws::Connection) {
    let (mut lb, _) = gateway();
    let conn = lb.connect().unwrap();
    let mut ws = lb.upgrade(conn, "/echo").unwrap();
    // Warm-up: buffers and pools sized, and the driver's first ticks (100 ms of the
    // virtual clock each: per-state metric names are made once) behind us.
    let warm = lb.now + WARM_UP;
    let mut round = 0;
    while lb.now < warm {
        echo_round(&mut lb, conn, &mut ws, 1, round, &mut ());
        round += 1;
    }
    lb.server.app_mut().inputs.clear();
    (lb, conn, ws)
}

fn ws_echo_64b_two_payload_copies_input_in_rx_frame() {
    let (mut lb, conn, mut ws) = echo_conn();
    const N: usize = 200;
    let mut copies = Copies::default();
    for round in 0..N {
        echo_round(&mut lb, conn, &mut ws, 1, round, &mut copies);
        assert_inputs_in_frames(&mut lb, &mut copies);
    }
    let n = N as u64;
    // RX frame -> send buffer (header and payload written in place) -> TX frame.
    assert_eq!(copies.tcp.send_buffer, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.send_buffer_bytes, n * 66);
    assert_eq!(copies.tcp.tx_frame, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.tx_frame_bytes, n * 66);
    // Nothing buffered on receive, nothing assembled or queued by the codec.
    assert_eq!(copies.tcp.recv_buffer, 0);
    assert_eq!(copies.tcp.recv_read, 0);
    assert_eq!(copies.ws.total(), 0, "{:?}", copies.ws);
}

fn ws_echo_16_pipelined_in_one_segment_each_payload_copied_twice() {
    let (mut lb, conn, mut ws) = echo_conn();
    const N: usize = 50;
    let mut copies = Copies::default();
    for round in 0..N {
        echo_round(&mut lb, conn, &mut ws, 16, round, &mut copies);
        assert_inputs_in_frames(&mut lb, &mut copies);
    }
    let n = N as u64;
    // The 16 answers are written in place in one lend of the send buffer (a copy
    // operation for all of them), each payload byte once.
    assert_eq!(copies.tcp.send_buffer, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.send_buffer_bytes, 16 * n * 66);
    // The 16 answers leave together: one TX copy of each byte.
    assert_eq!(copies.tcp.tx_frame_bytes, 16 * n * 66);
    assert_eq!(copies.tcp.tx_frame, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.recv_buffer + copies.tcp.recv_read, 0);
    assert_eq!(copies.ws.total(), 0, "{:?}", copies.ws);
}

/// `subscribers` WebSockets on `/ps`, each subscribed to topic `t`.
fn subscribed(
    subscribers: usize,
) -> (
    Loopback<Probe>,
    Sender<WorkerMsg>,
    Vec<(ConnHandle, ws::Connection)>,
) {
    let (mut lb, tx) = gateway();
    let mut conns = Vec::new();
    for _ in 0..subscribers {
        let conn = lb.connect().unwrap();
        let mut ws = lb.upgrade(conn, "/ps").unwrap();
        ws.send(MessageKind::Text, br#"{"op":"subscribe","topic":"t"}"#)
            .unwrap();
        assert!(lb.send_pending(conn, &mut ws));
        let reply = receive_messages(&mut lb, conn, &mut ws, 1, &mut ());
        assert!(String::from_utf8_lossy(&reply[0]).contains("subscribed"));
        conns.push((conn, ws));
    }
    (lb, tx, conns)
}

/// Publishes until [`WARM_UP`] of the virtual clock has passed.
fn warm_up_publications(
    lb: &mut Loopback<Probe>,
    tx: &Sender<WorkerMsg>,
    conns: &mut [(ConnHandle, ws::Connection)],
) {
    let warm = lb.now + WARM_UP;
    let mut round = 0;
    while lb.now < warm || round < 3 {
        publish_round(lb, tx, conns, publication(round), &mut ());
        round += 1;
    }
}

/// A publication to topic `t`, framed once (outside the server's work).
fn publication(round: usize) -> Arc<Publication> {
    let text = format!(r#"{{"op":"message","topic":"t","data":"{round:040}"}}"#);
    Arc::new(Publication::new(Arc::from("t"), Bytes::from(text), 1))
}

/// Delivers one publication and steps until every subscriber has it.
fn publish_round<M: Meter>(
    lb: &mut Loopback<Probe>,
    tx: &Sender<WorkerMsg>,
    conns: &mut [(ConnHandle, ws::Connection)],
    p: Arc<Publication>,
    meter: &mut M,
) {
    tx.send(WorkerMsg::Deliver(p, None)).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    for _ in 0..2_000 {
        lb.step_metered(meter);
        pending.retain(|&i| {
            let (conn, ws) = &mut conns[i];
            let mut bytes = lb.take_received(*conn, &mut buf);
            ws.read(&mut bytes);
            !matches!(ws.poll_event(), Some(Event::Message { .. }))
        });
        if pending.is_empty() {
            return;
        }
    }
    panic!("{} subscribers missed the publication", pending.len());
}

fn publish_to_100_subscribers_one_copy_each() {
    let (mut lb, tx, mut conns) = subscribed(100);
    warm_up_publications(&mut lb, &tx, &mut conns);
    const N: usize = 10;
    let mut copies = Copies::default();
    let mut frame_len = 0;
    for round in 0..N {
        let p = publication(round);
        frame_len = p.frame(None).len() as u64;
        publish_round(&mut lb, &tx, &mut conns, p, &mut copies);
    }
    let n = N as u64;
    // The shared frame is queued by reference, then copied once into each TX frame.
    assert_eq!(copies.tcp.send_buffer, 0, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.tx_frame, 100 * n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.tx_frame_bytes, 100 * n * frame_len);
    assert_eq!(copies.ws.total(), 0, "{:?}", copies.ws);
}

fn ws_echo_64b_no_allocation_per_message() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (mut lb, conn, mut ws) = echo_conn();
    let mut allocations = Allocations::default();
    for round in 0..200 {
        echo_round(&mut lb, conn, &mut ws, 1, round, &mut allocations);
    }
    assert_eq!(allocations.blocks, 0, "allocations in 200 echoes");
    for round in 0..50 {
        echo_round(&mut lb, conn, &mut ws, 16, round, &mut allocations);
    }
    assert_eq!(
        allocations.blocks, 0,
        "allocations in 50 x 16 pipelined echoes"
    );
}

fn publish_to_100_subscribers_no_allocation_per_subscriber() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (mut lb, tx, mut conns) = subscribed(100);
    warm_up_publications(&mut lb, &tx, &mut conns);
    const N: u64 = 10;
    let mut allocations = Allocations::default();
    for round in 0..N as usize {
        publish_round(
            &mut lb,
            &tx,
            &mut conns,
            publication(round),
            &mut allocations,
        );
    }
    // The publication's own allocations (its text, its frame, the Arc) are made before
    // it reaches the worker; delivering it to 100 subscribers allocates nothing.
    assert_eq!(allocations.blocks, 0, "allocations in {N} publications");
}

// ---- wss:// -------------------------------------------------------------------------------

/// The wss port's TLS settings (a throw-away certificate made here), on the wire's port.
fn tls_listeners() -> (Listeners, rustls::pki_types::CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-zc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut config = Config::parse(CONFIG).unwrap();
    config.listen.tls = vec![TlsListener {
        port: sluice::drivers::loopback::PORT,
        cert: cert.to_str().unwrap().to_string(),
        key: key.to_str().unwrap().to_string(),
        min_version: TlsVersion::V12,
        resumption: true,
        sni: Vec::new(),
    }];
    config.validate().unwrap();
    let listeners = Listeners::from_config(&config).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (listeners, ck.cert.der().clone())
}

/// The gateway of [`CONFIG`] behind TLS on the wire's port, with its message queue, and
/// the certificate a client must trust.
fn wss_gateway() -> (
    Loopback<Tls<Probe>>,
    Sender<WorkerMsg>,
    rustls::pki_types::CertificateDer<'static>,
) {
    let config = Arc::new(Config::parse(CONFIG).unwrap());
    let worker = Worker::new(0, config, Arc::new(Metrics::new()), None);
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let probe = Probe {
        inner: worker,
        inputs: Vec::with_capacity(4096),
    };
    let (listeners, cert) = tls_listeners();
    let app = Tls::new(probe, listeners.for_worker(), None);
    (Loopback::new(app, Some(rx)).unwrap(), tx, cert)
}

/// A wss client on the wire: rustls (TLS 1.3, AES-128-GCM) under the `ws` client engine.
struct WssClient {
    conn: ConnHandle,
    tls: rustls::ClientConnection,
    ws: ws::Connection,
}

impl WssClient {
    /// Connects, completes the TLS handshake and the upgrade to `path`.
    fn open(
        lb: &mut Loopback<Tls<Probe>>,
        cert: &rustls::pki_types::CertificateDer<'static>,
        path: &str,
    ) -> WssClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let conn = lb.connect().unwrap();
        let hs = ws::ClientHandshake::new(
            [3; 16],
            Vec::new(),
            ws::DeflateConfig {
                enabled: false,
                ..ws::DeflateConfig::default()
            },
        );
        let mut tls = tls;
        tls.writer().write_all(&hs.request("sluice", path)).unwrap();
        let mut head = Vec::new();
        for _ in 0..5_000 {
            head.extend(tls_step(lb, conn, &mut tls, &mut ()));
            if let Some(acc) = hs.parse_response(&head).unwrap() {
                let mut engine = ws::Connection::new(
                    ws::Role::Client,
                    ws::Config {
                        max_frame_size: 1 << 20,
                        max_message_size: 1 << 20,
                    },
                    acc.deflate,
                    5,
                );
                let mut rest = head[acc.head_len..].to_vec();
                engine.read(&mut rest);
                return WssClient {
                    conn,
                    tls,
                    ws: engine,
                };
            }
        }
        panic!("no wss upgrade");
    }

    /// Sends what rustls has, steps the wire once, and returns the plaintext received.
    fn step<M: Meter>(&mut self, lb: &mut Loopback<Tls<Probe>>, meter: &mut M) -> Vec<u8> {
        tls_step(lb, self.conn, &mut self.tls, meter)
    }

    /// Hands the engine's pending frames to rustls.
    fn send_pending(&mut self) {
        let out = self.ws.pending_output().to_vec();
        self.tls.writer().write_all(&out).unwrap();
        self.ws.consume_output(out.len());
    }

    /// Steps until `want` whole messages arrived; returns them.
    fn messages<M: Meter>(
        &mut self,
        lb: &mut Loopback<Tls<Probe>>,
        want: usize,
        meter: &mut M,
    ) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..2_000 {
            let mut bytes = self.step(lb, meter);
            let mut pos = 0;
            while pos < bytes.len() {
                pos += self.ws.read(&mut bytes[pos..]);
                while let Some(ev) = self.ws.poll_event() {
                    if let Event::Message { data, .. } = ev {
                        got.push(data);
                    }
                }
            }
            if got.len() >= want {
                return got;
            }
        }
        panic!("only {} of {want} messages arrived over wss", got.len());
    }
}

/// Sends what `tls` has on `conn`, steps the wire once (metered), and returns the
/// plaintext received.
fn tls_step<M: Meter>(
    lb: &mut Loopback<Tls<Probe>>,
    conn: ConnHandle,
    tls: &mut rustls::ClientConnection,
    meter: &mut M,
) -> Vec<u8> {
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out).unwrap();
    }
    if !out.is_empty() {
        assert_eq!(lb.client.send(conn, &out).unwrap(), out.len());
    }
    lb.step_metered(meter);
    tls_read(lb, conn, tls)
}

/// What the client received on `conn` so far, decrypted by `tls`.
fn tls_read(
    lb: &mut Loopback<Tls<Probe>>,
    conn: ConnHandle,
    tls: &mut rustls::ClientConnection,
) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let bytes = lb.take_received(conn, &mut buf);
    let mut rd = bytes.as_slice();
    let mut plain = Vec::new();
    loop {
        let mut chunk = [0u8; 16384];
        while let Ok(n) = tls.reader().read(&mut chunk) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&chunk[..n]);
        }
        if rd.is_empty() {
            return plain;
        }
        tls.read_tls(&mut rd).unwrap();
        tls.process_new_packets().unwrap();
    }
}

/// One 64 B binary message to the wss echo route and its answer.
fn wss_echo_round<M: Meter>(
    lb: &mut Loopback<Tls<Probe>>,
    c: &mut WssClient,
    round: usize,
    meter: &mut M,
) {
    let payload = [round as u8; 64];
    c.ws.send(MessageKind::Binary, &payload).unwrap();
    c.send_pending();
    let got = c.messages(lb, 1, meter);
    assert_eq!(got, vec![payload.to_vec()], "wss echo differs");
}

/// A wss echo connection, upgraded and warmed up.
fn wss_echo_conn() -> (Loopback<Tls<Probe>>, WssClient) {
    let (mut lb, _, cert) = wss_gateway();
    let mut c = WssClient::open(&mut lb, &cert, "/echo");
    let warm = lb.now + WARM_UP;
    let mut round = 0;
    while lb.now < warm {
        wss_echo_round(&mut lb, &mut c, round, &mut ());
        round += 1;
    }
    lb.server.app_mut().inner_mut().inputs.clear();
    (lb, c)
}

fn wss_echo_64b_decrypted_in_the_rx_frame_two_copies() {
    let (mut lb, mut c) = wss_echo_conn();
    const N: usize = 200;
    let mut copies = Copies::default();
    for round in 0..N {
        wss_echo_round(&mut lb, &mut c, round, &mut copies);
        // The plaintext the gateway read lies inside an RX frame: decrypted in place.
        let inputs = std::mem::take(&mut lb.server.app_mut().inner_mut().inputs);
        assert!(!inputs.is_empty());
        for (start, end) in &inputs {
            assert!(
                copies
                    .frames
                    .iter()
                    .any(|(fs, fe)| fs <= start && end <= fe),
                "wss input {start:#x}..{end:#x} is not inside an RX frame: it was copied"
            );
        }
        copies.frames.clear();
        lb.server.app_mut().inner_mut().inputs = Vec::with_capacity(4096);
    }
    let n = N as u64;
    // The answer (2-byte header, 64 B) written in place in its record's place in the send
    // buffer and sealed there (5 + 66 + 1 + 16 bytes), then the TX frame copy: as for ws.
    assert_eq!(copies.tcp.send_buffer, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.send_buffer_bytes, n * 88);
    assert_eq!(copies.tcp.tx_frame, n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.tx_frame_bytes, n * 88);
    assert_eq!(copies.tcp.recv_buffer + copies.tcp.recv_read, 0);
    assert_eq!(copies.ws.total(), 0, "{:?}", copies.ws);
}

fn wss_echo_64b_no_allocation_per_message() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (mut lb, mut c) = wss_echo_conn();
    let mut allocations = Allocations::default();
    for round in 0..200 {
        wss_echo_round(&mut lb, &mut c, round, &mut allocations);
    }
    assert_eq!(allocations.blocks, 0, "allocations in 200 wss echoes");
}

/// `subscribers` wss clients on `/ps`, each subscribed to topic `t`, warmed up.
fn wss_subscribed(subscribers: usize) -> (Loopback<Tls<Probe>>, Sender<WorkerMsg>, Vec<WssClient>) {
    let (mut lb, tx, cert) = wss_gateway();
    let mut conns = Vec::new();
    for _ in 0..subscribers {
        let mut c = WssClient::open(&mut lb, &cert, "/ps");
        c.ws.send(MessageKind::Text, br#"{"op":"subscribe","topic":"t"}"#)
            .unwrap();
        c.send_pending();
        let reply = c.messages(&mut lb, 1, &mut ());
        assert!(String::from_utf8_lossy(&reply[0]).contains("subscribed"));
        conns.push(c);
    }
    let warm = lb.now + WARM_UP;
    let mut round = 0;
    while lb.now < warm || round < 3 {
        wss_publish_round(&mut lb, &tx, &mut conns, publication(round), &mut ());
        round += 1;
    }
    (lb, tx, conns)
}

/// Delivers one publication and steps until every wss subscriber has it.
fn wss_publish_round<M: Meter>(
    lb: &mut Loopback<Tls<Probe>>,
    tx: &Sender<WorkerMsg>,
    conns: &mut [WssClient],
    p: Arc<Publication>,
    meter: &mut M,
) {
    tx.send(WorkerMsg::Deliver(p, None)).unwrap();
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    for _ in 0..2_000 {
        lb.step_metered(meter);
        pending.retain(|&i| {
            let c = &mut conns[i];
            let mut plain = tls_read(lb, c.conn, &mut c.tls);
            c.ws.read(&mut plain);
            !matches!(c.ws.poll_event(), Some(Event::Message { .. }))
        });
        if pending.is_empty() {
            return;
        }
    }
    panic!("{} wss subscribers missed the publication", pending.len());
}

fn wss_publish_to_100_subscribers_one_encryption_pass_each() {
    let (mut lb, tx, mut conns) = wss_subscribed(100);
    const N: usize = 10;
    let mut copies = Copies::default();
    let mut frame_len = 0;
    for round in 0..N {
        let p = publication(round);
        frame_len = p.frame(None).len() as u64;
        wss_publish_round(&mut lb, &tx, &mut conns, p, &mut copies);
    }
    let n = N as u64;
    let record = 5 + frame_len + 17;
    // The shared frame copied into each subscriber's record in its send buffer and
    // sealed there (one lend each: the encryption pass), then the TX frame copy.
    assert_eq!(copies.tcp.send_buffer, 100 * n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.send_buffer_bytes, 100 * n * record);
    assert_eq!(copies.tcp.tx_frame, 100 * n, "{:?}", copies.tcp);
    assert_eq!(copies.tcp.tx_frame_bytes, 100 * n * record);
    assert_eq!(copies.ws.total(), 0, "{:?}", copies.ws);
}

fn wss_publish_to_100_subscribers_no_allocation_per_subscriber() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (mut lb, tx, mut conns) = wss_subscribed(100);
    const N: usize = 10;
    let mut allocations = Allocations::default();
    for round in 0..N {
        wss_publish_round(
            &mut lb,
            &tx,
            &mut conns,
            publication(round),
            &mut allocations,
        );
    }
    assert_eq!(allocations.blocks, 0, "allocations in {N} wss publications");
}

fn main() {
    let cases: [(&str, fn()); 9] = [
        (
            "ws_echo_64b_two_payload_copies_input_in_rx_frame",
            ws_echo_64b_two_payload_copies_input_in_rx_frame,
        ),
        (
            "ws_echo_16_pipelined_in_one_segment_each_payload_copied_twice",
            ws_echo_16_pipelined_in_one_segment_each_payload_copied_twice,
        ),
        (
            "publish_to_100_subscribers_one_copy_each",
            publish_to_100_subscribers_one_copy_each,
        ),
        (
            "ws_echo_64b_no_allocation_per_message",
            ws_echo_64b_no_allocation_per_message,
        ),
        (
            "publish_to_100_subscribers_no_allocation_per_subscriber",
            publish_to_100_subscribers_no_allocation_per_subscriber,
        ),
        (
            "wss_echo_64b_decrypted_in_the_rx_frame_two_copies",
            wss_echo_64b_decrypted_in_the_rx_frame_two_copies,
        ),
        (
            "wss_echo_64b_no_allocation_per_message",
            wss_echo_64b_no_allocation_per_message,
        ),
        (
            "wss_publish_to_100_subscribers_one_encryption_pass_each",
            wss_publish_to_100_subscribers_one_encryption_pass_each,
        ),
        (
            "wss_publish_to_100_subscribers_no_allocation_per_subscriber",
            wss_publish_to_100_subscribers_no_allocation_per_subscriber,
        ),
    ];
    // `cargo test` passes libtest's flags (e.g. --include-ignored); a plain word filters.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        case();
        println!("test {name} ... ok");
    }
}
