//! The stack driver on two joined in-memory devices, stepped by hand with a virtual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::app::tcp::{source_byte, Kind, TcpApp};
use crate::drivers::loopback::Loopback;
use crate::gateway::worker::Worker;

fn tcp_pair(kind: Kind) -> Loopback<TcpApp> {
    Loopback::new(TcpApp::new(kind, 100, 1 << 20), None).unwrap()
}

#[test]
fn echo_half_close_after_data_all_echoed_then_fin() {
    let mut p = tcp_pair(Kind::Echo);
    let conn = p.connect().unwrap();
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
    let conn = p.connect().unwrap();
    let got = p.read(conn, 200_000, 20_000);
    assert!(got.len() >= 200_000, "only {} bytes", got.len());
    for (i, &b) in got.iter().enumerate() {
        assert_eq!(b, source_byte(i as u64), "offset {i}");
    }
    // The peer closes: the source closes too and the worker forgets the connection.
    p.client.close(conn).unwrap();
    for _ in 0..5_000 {
        p.step();
        if p.server.connections() == 0 {
            break;
        }
    }
    assert_eq!(p.server.connections(), 0);
}

#[test]
fn worker_stop_connections_closed_and_drained() {
    let mut p = tcp_pair(Kind::Discard);
    let conn = p.connect().unwrap();
    p.client.send(conn, b"dropped").unwrap();
    for _ in 0..50 {
        p.step();
    }
    p.server.on_stop(p.now);
    let mut closed = false;
    for _ in 0..5_000 {
        let events = p.step();
        if events.contains(&Event::PeerClosed(conn)) {
            p.client.close(conn).unwrap();
            closed = true;
        }
        if closed && p.server.drained() {
            break;
        }
    }
    assert!(closed, "the worker never sent FIN");
    assert!(p.server.drained());
}

/// A worker serving ws-echo (the gateway `Worker` with one echo route) on port 7.
fn ws_echo_pair() -> Loopback<crate::app::tls::Tls<Worker>> {
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
    Loopback::new(worker, rx).unwrap()
}

#[test]
fn gateway_ws_echo_over_stack_message_echoed_then_1001_on_stop() {
    use ws::{ClientHandshake, CloseCode, Connection, DeflateConfig, MessageKind, Role};
    let mut p = ws_echo_pair();
    let conn = p.connect().unwrap();
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
    let head = p.read(conn, 1, 5_000);
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
        echo.extend(p.read(conn, 0, 5_000));
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
    p.server.on_stop(p.now);
    let mut close = p.read(conn, 2, 5_000);
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
        if p.server.drained() {
            break;
        }
    }
    assert!(p.server.drained());
}

#[test]
fn source_byte_period_251() {
    assert_eq!(source_byte(0), 0);
    assert_eq!(source_byte(250), 250);
    assert_eq!(source_byte(251), 0);
    assert_eq!(source_byte(251 * 1000 + 7), 7);
}

/// Every event of the client's engine for `bytes` (`read` stops after each message).
fn read_events(ws: &mut ws::Connection, mut bytes: Vec<u8>) -> Vec<ws::Event> {
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let n = ws.read(&mut bytes[pos..]);
        while let Some(ev) = ws.poll_event() {
            events.push(ev);
        }
        if n == 0 {
            break;
        }
        pos += n;
    }
    events
}

#[test]
fn gateway_ws_echo_pipelined_small_frames_then_invalid_utf8_answers_then_1007() {
    use ws::{CloseCode, Event as WsEvent, MessageKind};
    let mut p = ws_echo_pair();
    let conn = p.connect().unwrap();
    let mut ws = p.upgrade(conn, "/").unwrap();
    // 20 small messages in one segment (the fixed-size and the exact path), each answered
    // in order.
    let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10 + 5 * i as usize]).collect();
    for m in &msgs {
        ws.send(MessageKind::Binary, m).unwrap();
    }
    assert!(p.send_pending(conn, &mut ws));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..100 {
        p.step();
        for ev in read_events(&mut ws, p.take_received(conn, &mut buf)) {
            match ev {
                WsEvent::Message { data, .. } => got.push(data),
                other => panic!("{other:?}"),
            }
        }
        if got.len() == msgs.len() {
            break;
        }
    }
    assert_eq!(got, msgs);
    // Two answered, then a text frame with invalid UTF-8 (the rest is never answered): the
    // answers, then Close 1007.
    ws.send(MessageKind::Binary, b"one").unwrap();
    ws.send(MessageKind::Binary, &[2; 100]).unwrap();
    let mut bad = Vec::new();
    let mut h = ws::FrameHeader::new(ws::OpCode::Text, 0);
    h.mask = Some([1, 2, 3, 4]);
    ws::frame::encode_frame(&mut bad, h, b"\xff\xfe");
    ws.send(MessageKind::Binary, &[3; 100]).unwrap();
    let mut wire = ws.pending_output().to_vec();
    ws.consume_output(wire.len());
    let at = (2 + 4 + 3) + (2 + 4 + 100);
    wire.splice(at..at, bad);
    assert_eq!(p.client.send(conn, &wire).unwrap(), wire.len());
    let mut events = Vec::new();
    for _ in 0..100 {
        p.step();
        events.extend(read_events(&mut ws, p.take_received(conn, &mut buf)));
        if events.iter().any(|e| matches!(e, WsEvent::Close { .. })) {
            break;
        }
    }
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(&events[0], WsEvent::Message { data, .. } if data == b"one"));
    assert!(matches!(&events[1], WsEvent::Message { data, .. } if data == &[2; 100]));
    assert!(matches!(
        events[2],
        WsEvent::Close {
            code: Some(CloseCode::INVALID_PAYLOAD),
            ..
        }
    ));
    // No Close comes back: the worker ends the connection at its close deadline (2 s).
    let mut ended = false;
    for _ in 0..3_000 {
        let tcp_events = p.step();
        if tcp_events.iter().any(|e| {
            matches!(e, Event::PeerClosed(c) | Event::Reset(c) | Event::Closed(c) if *c == conn)
        }) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the connection outlived the close deadline");
}
