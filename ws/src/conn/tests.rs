//! Connection state machine tests, grouped by state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

fn client_frame(op: OpCode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut h = FrameHeader::new(op, 0);
    h.fin = fin;
    h.rsv1 = rsv1;
    h.mask = Some([0x11, 0x22, 0x33, 0x44]);
    let mut out = Vec::new();
    encode_frame(&mut out, h, payload);
    out
}

fn server() -> Connection {
    Connection::new(Role::Server, Config::default(), None, 1)
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Decodes every server frame in `c`'s output: (opcode, fin, rsv1, payload).
fn sent_frames(c: &mut Connection) -> Vec<(OpCode, bool, bool, Vec<u8>)> {
    let mut out = c.pending_output().to_vec();
    c.consume_output(out.len());
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let (h, n) = FrameHeader::parse(&out[pos..]).unwrap().unwrap();
        let body = &mut out[pos + n..pos + n + h.payload_len as usize];
        if let Some(k) = h.mask {
            apply_mask(body, k, 0);
        }
        frames.push((h.opcode, h.fin, h.rsv1, body.to_vec()));
        pos += n + h.payload_len as usize;
    }
    frames
}

/// Feeds all of `bytes`, as a caller would: again after each message, until the engine
/// stops reading. Returns the bytes consumed.
fn feed(c: &mut Connection, mut bytes: Vec<u8>) -> usize {
    read_all(c, &mut bytes)
}

fn read_all(c: &mut Connection, bytes: &mut [u8]) -> usize {
    let mut pos = 0;
    while pos < bytes.len() && c.is_reading() {
        pos += c.read(&mut bytes[pos..]);
    }
    pos
}

#[test]
fn open_text_frame_delivered() {
    let mut c = server();
    let n = feed(&mut c, client_frame(OpCode::Text, true, false, b"hello"));
    assert_eq!(n, 11);
    assert_eq!(
        events(&mut c),
        vec![Event::Message {
            kind: MessageKind::Text,
            data: b"hello".to_vec()
        }]
    );
}

#[test]
fn open_byte_by_byte_delivered() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, false, &[9u8; 300]);
    for i in 0..wire.len() {
        assert_eq!(c.read(&mut wire[i..i + 1]), 1);
    }
    assert_eq!(
        events(&mut c),
        vec![Event::Message {
            kind: MessageKind::Binary,
            data: vec![9u8; 300]
        }]
    );
}

#[test]
fn open_fragmented_with_interleaved_ping_delivered() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, false, false, b"fra");
    wire.extend(client_frame(OpCode::Ping, true, false, b"p"));
    wire.extend(client_frame(OpCode::Continuation, false, false, b"gme"));
    wire.extend(client_frame(OpCode::Continuation, true, false, b"nts"));
    feed(&mut c, wire);
    assert_eq!(
        events(&mut c),
        vec![
            Event::Ping(b"p".to_vec()),
            Event::Message {
                kind: MessageKind::Text,
                data: b"fragments".to_vec()
            }
        ]
    );
    assert_eq!(
        sent_frames(&mut c),
        vec![(OpCode::Pong, true, false, b"p".to_vec())]
    );
}

#[test]
fn open_unmasked_frame_fails_1002() {
    let mut c = server();
    let mut wire = Vec::new();
    encode_frame(&mut wire, FrameHeader::new(OpCode::Text, 0), b"hi");
    feed(&mut c, wire);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
    assert_eq!(
        sent_frames(&mut c),
        vec![(OpCode::Close, true, false, vec![3, 0xea])]
    );
    assert!(c.is_closed());
}

#[test]
fn open_rsv_without_extension_fails_1002() {
    for bits in [0x40u8, 0x20, 0x10] {
        let mut c = server();
        let mut wire = client_frame(OpCode::Text, true, false, b"x");
        wire[0] |= bits;
        feed(&mut c, wire);
        assert!(matches!(
            events(&mut c)[..],
            [Event::Failed {
                code: CloseCode::PROTOCOL_ERROR,
                ..
            }]
        ));
    }
}

#[test]
fn open_reserved_opcode_fails_1002() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, true, false, b"x");
    wire[0] = 0x83;
    feed(&mut c, wire);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn open_continuation_without_message_fails_1002() {
    let mut c = server();
    feed(
        &mut c,
        client_frame(OpCode::Continuation, true, false, b"x"),
    );
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn fragmented_new_text_fails_1002() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, false, false, b"a");
    wire.extend(client_frame(OpCode::Text, true, false, b"b"));
    feed(&mut c, wire);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn open_long_ping_fails_1002() {
    let mut c = server();
    feed(&mut c, client_frame(OpCode::Ping, true, false, &[0; 126]));
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn open_fragmented_ping_fails_1002() {
    let mut c = server();
    feed(&mut c, client_frame(OpCode::Ping, false, false, b"x"));
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn open_invalid_utf8_fails_fast_1007() {
    let mut c = server();
    // The invalid byte is in the first fragment; the message never finishes.
    let n = feed(
        &mut c,
        client_frame(OpCode::Text, false, false, &[b'a', 0xff, b'b']),
    );
    assert_eq!(n, 9);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::INVALID_PAYLOAD,
            ..
        }]
    ));
}

#[test]
fn open_text_split_code_point_across_fragments_delivered() {
    let mut c = server();
    let s = "€uro".as_bytes();
    let mut wire = client_frame(OpCode::Text, false, false, &s[..1]);
    wire.extend(client_frame(OpCode::Continuation, false, false, &s[1..2]));
    wire.extend(client_frame(OpCode::Continuation, true, false, &s[2..]));
    feed(&mut c, wire);
    assert_eq!(
        events(&mut c),
        vec![Event::Message {
            kind: MessageKind::Text,
            data: s.to_vec()
        }]
    );
}

#[test]
fn open_text_truncated_code_point_fails_1007() {
    let mut c = server();
    feed(
        &mut c,
        client_frame(OpCode::Text, true, false, &[0xe2, 0x82]),
    );
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::INVALID_PAYLOAD,
            ..
        }]
    ));
}

#[test]
fn open_oversized_frame_fails_1009() {
    let mut c = Connection::new(
        Role::Server,
        Config {
            max_frame_size: 100,
            max_message_size: 1000,
        },
        None,
        1,
    );
    // Only the header is needed to refuse it.
    let wire = client_frame(OpCode::Binary, true, false, &[0; 101]);
    let n = feed(&mut c, wire[..6].to_vec());
    assert_eq!(n, 6);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::TOO_BIG,
            ..
        }]
    ));
}

#[test]
fn fragmented_oversized_message_fails_1009() {
    let mut c = Connection::new(
        Role::Server,
        Config {
            max_frame_size: 100,
            max_message_size: 150,
        },
        None,
        1,
    );
    let mut wire = client_frame(OpCode::Binary, false, false, &[0; 100]);
    wire.extend(client_frame(OpCode::Continuation, true, false, &[0; 100]));
    feed(&mut c, wire);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::TOO_BIG,
            ..
        }]
    ));
}

#[test]
fn open_close_echoed_and_closed() {
    let mut c = server();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    let mut wire = client_frame(OpCode::Close, true, false, &payload);
    wire.extend(client_frame(OpCode::Text, true, false, b"after"));
    let n = feed(&mut c, wire);
    assert_eq!(n, 6 + 5);
    assert_eq!(
        events(&mut c),
        vec![Event::Close {
            code: Some(CloseCode::NORMAL),
            reason: "bye".into()
        }]
    );
    assert_eq!(
        sent_frames(&mut c),
        vec![(OpCode::Close, true, false, vec![3, 0xe8])]
    );
    assert!(c.is_closed());
}

#[test]
fn open_empty_close_echoed_empty() {
    let mut c = server();
    feed(&mut c, client_frame(OpCode::Close, true, false, &[]));
    assert_eq!(
        sent_frames(&mut c),
        vec![(OpCode::Close, true, false, vec![])]
    );
}

#[test]
fn open_close_invalid_code_fails_1002() {
    let mut c = server();
    feed(
        &mut c,
        client_frame(OpCode::Close, true, false, &1005u16.to_be_bytes()),
    );
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

#[test]
fn close_sent_reply_closes_and_no_pong() {
    let mut c = server();
    c.close(CloseCode::GOING_AWAY, "shutdown").unwrap();
    assert_eq!(c.send(MessageKind::Text, b"x"), Err(SendError::Closing));
    let mut wire = client_frame(OpCode::Ping, true, false, b"p");
    wire.extend(client_frame(
        OpCode::Close,
        true,
        false,
        &1001u16.to_be_bytes(),
    ));
    feed(&mut c, wire);
    let frames = sent_frames(&mut c);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Close);
    assert!(c.is_closed());
}

#[test]
fn open_message_then_bad_frame_answer_precedes_close() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, true, false, b"first");
    wire.extend(client_frame(OpCode::Text, true, false, b"x"));
    wire[11] |= 0x20;
    let n = c.read(&mut wire);
    assert_eq!(n, 11);
    let ev = events(&mut c);
    let [Event::Message { kind, data }] = &ev[..] else {
        panic!("{ev:?}")
    };
    c.send(*kind, data).unwrap();
    assert_eq!(c.read(&mut wire[n..]), 6);
    let frames = sent_frames(&mut c);
    assert_eq!(frames[0], (OpCode::Text, true, false, b"first".to_vec()));
    assert_eq!(frames[1], (OpCode::Close, true, false, vec![3, 0xea]));
}

#[test]
fn open_send_fragmented_frames() {
    let mut c = server();
    c.send_fragmented(MessageKind::Binary, b"abcdefg", 3)
        .unwrap();
    assert_eq!(
        sent_frames(&mut c),
        vec![
            (OpCode::Binary, false, false, b"abc".to_vec()),
            (OpCode::Continuation, false, false, b"def".to_vec()),
            (OpCode::Continuation, true, false, b"g".to_vec()),
        ]
    );
}

fn pair(deflate: Option<DeflateParams>) -> (Connection, Connection) {
    (
        Connection::new(Role::Client, Config::default(), deflate, 42),
        Connection::new(Role::Server, Config::default(), deflate, 0),
    )
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Vec<Event> {
    let mut bytes = from.pending_output().to_vec();
    from.consume_output(bytes.len());
    assert_eq!(read_all(to, &mut bytes), bytes.len());
    events(to)
}

#[test]
fn client_server_compressed_messages_roundtrip() {
    let (mut client, mut server) = pair(Some(DeflateParams::default()));
    for i in 0..5 {
        let text = format!("message {i} ").repeat(100);
        client
            .send_fragmented(MessageKind::Text, text.as_bytes(), 37)
            .unwrap();
        let got = transfer(&mut client, &mut server);
        assert_eq!(
            got,
            vec![Event::Message {
                kind: MessageKind::Text,
                data: text.clone().into_bytes()
            }]
        );
        server.send(MessageKind::Binary, text.as_bytes()).unwrap();
        assert!(server.pending_output().len() < text.len());
        let back = transfer(&mut server, &mut client);
        assert_eq!(
            back,
            vec![Event::Message {
                kind: MessageKind::Binary,
                data: text.into_bytes()
            }]
        );
    }
}

#[test]
fn client_server_no_context_takeover_small_window_roundtrip() {
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 9,
        client_max_window_bits: 10,
        ..DeflateParams::default()
    };
    let (mut client, mut server) = pair(Some(params));
    for _ in 0..3 {
        client.send(MessageKind::Binary, &[7u8; 5000]).unwrap();
        let got = transfer(&mut client, &mut server);
        assert_eq!(got.len(), 1);
        server.send(MessageKind::Binary, &[8u8; 5000]).unwrap();
        let back = transfer(&mut server, &mut client);
        assert_eq!(
            back,
            vec![Event::Message {
                kind: MessageKind::Binary,
                data: vec![8u8; 5000]
            }]
        );
    }
}

#[test]
fn compressed_zip_bomb_fails_1009() {
    let (mut client, _) = pair(Some(DeflateParams::default()));
    let mut server = Connection::new(
        Role::Server,
        Config {
            max_frame_size: 1 << 20,
            max_message_size: 1 << 20,
        },
        Some(DeflateParams::default()),
        0,
    );
    client
        .send(MessageKind::Binary, &vec![0u8; 8 << 20])
        .unwrap();
    let got = transfer(&mut client, &mut server);
    assert!(matches!(
        got[..],
        [Event::Failed {
            code: CloseCode::TOO_BIG,
            ..
        }]
    ));
}

#[test]
fn compressed_invalid_utf8_fails_1007() {
    let (mut client, mut server) = pair(Some(DeflateParams::default()));
    // A binary payload sent as compressed "text": bypass the sender's type by hand.
    let mut d = Deflater::new(15, 6, false);
    let mut c = Vec::new();
    d.compress_message(&[b'o', b'k', 0xc0, 0xaf], &mut c)
        .unwrap();
    let _ = &mut client;
    feed(&mut server, client_frame(OpCode::Text, true, true, &c));
    assert!(matches!(
        events(&mut server)[..],
        [Event::Failed {
            code: CloseCode::INVALID_PAYLOAD,
            ..
        }]
    ));
}

#[test]
fn client_masked_server_frame_fails_1002() {
    let (mut client, _) = pair(None);
    feed(&mut client, client_frame(OpCode::Text, true, false, b"x"));
    assert!(matches!(
        events(&mut client)[..],
        [Event::Failed {
            code: CloseCode::PROTOCOL_ERROR,
            ..
        }]
    ));
}

proptest! {
    #[test]
    fn connection_arbitrary_splits_same_events(
        msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..3000), 1usize..2000), 1..5),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        deflate: bool,
    ) {
        let params = deflate.then(DeflateParams::default);
        let (mut client, _) = pair(params);
        let mut expected = Vec::new();
        for (text, data, frag) in &msgs {
            let (kind, data) = if *text {
                (MessageKind::Text, String::from_utf8_lossy(data).into_owned().into_bytes())
            } else {
                (MessageKind::Binary, data.clone())
            };
            client.send_fragmented(kind, &data, *frag).unwrap();
            client.ping(b"hb").unwrap();
            expected.push(Event::Message { kind, data });
            expected.push(Event::Ping(b"hb".to_vec()));
        }
        let mut wire = client.pending_output().to_vec();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut server = Connection::new(Role::Server, Config::default(), params, 0);
        let mut prev = 0;
        for p in points.into_iter().chain(std::iter::once(wire.len())) {
            prop_assert_eq!(read_all(&mut server, &mut wire[prev..p]), p - prev);
            prev = p;
        }
        let got = events(&mut server);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn connection_arbitrary_bytes_never_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
        deflate: bool,
    ) {
        let mut server = Connection::new(Role::Server, Config::default(), deflate.then(DeflateParams::default), 0);
        let n = read_all(&mut server, &mut bytes);
        prop_assert!(n <= bytes.len());
        while server.poll_event().is_some() {}
    }
}
