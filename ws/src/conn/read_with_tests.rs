//! `read_with` (messages borrowed from the input) and `write_message_header`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

fn client_frame(op: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut h = FrameHeader::new(op, 0);
    h.fin = fin;
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

/// A message as the callback saw it, and whether it lay inside the input.
type Seen = (MessageKind, Vec<u8>, bool);

/// Feeds all of `bytes` through `read_with` as a caller would (again after queued output,
/// which it drains), collecting messages.
fn read_all_with(c: &mut Connection, bytes: &mut [u8]) -> (usize, Vec<Seen>) {
    let mut seen = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() && c.is_reading() {
        let range = bytes[pos..].as_ptr_range();
        pos += c.read_with(&mut bytes[pos..], &mut |kind, data| {
            let r = data.as_ptr_range();
            let inside = range.start <= r.start && r.end <= range.end;
            seen.push((kind, data.to_vec(), inside));
        });
        let n = c.pending_output().len();
        c.consume_output(n);
    }
    (pos, seen)
}

/// Feeds `wire` through `read_with`: nothing is lent and the connection fails with `code`.
fn fails_lending_nothing(c: &mut Connection, wire: &mut [u8], code: CloseCode) {
    let (_, seen) = read_all_with(c, wire);
    assert!(seen.is_empty());
    assert!(
        matches!(events(c)[..], [Event::Failed { code: got, .. }] if got == code),
        "expected a failure with {code:?}"
    );
}

#[test]
fn open_whole_binary_message_lent_from_input_unmasked_in_place() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, b"payload bytes");
    let (n, seen) = read_all_with(&mut c, &mut wire);
    assert_eq!(n, wire.len());
    assert_eq!(
        seen,
        vec![(MessageKind::Binary, b"payload bytes".to_vec(), true)]
    );
    // Unmasked in place: the payload now sits in the input in clear.
    assert_eq!(&wire[6..], b"payload bytes");
    assert!(events(&mut c).is_empty(), "no owned Message event");
}

#[test]
fn open_pipelined_messages_all_lent_in_one_call_in_order() {
    let mut c = server();
    let mut wire = Vec::new();
    for i in 0..16u8 {
        wire.extend(client_frame(OpCode::Binary, true, &[i; 64]));
    }
    let mut got = Vec::new();
    let n = c.read_with(&mut wire, &mut |_, d| got.push(d[0]));
    assert_eq!(n, wire.len(), "one call for the whole segment");
    assert_eq!(got, (0..16u8).collect::<Vec<_>>());
}

#[test]
fn open_text_invalid_utf8_lent_path_fails_1007() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, true, b"ok \xff\xfe");
    let (_, seen) = read_all_with(
        &mut c,
        &mut client_frame(OpCode::Text, true, "héllo".as_bytes()),
    );
    assert_eq!(
        seen,
        vec![(MessageKind::Text, "héllo".as_bytes().to_vec(), true)]
    );
    let mut delivered = 0;
    c.read_with(&mut wire, &mut |_, _| delivered += 1);
    assert_eq!(delivered, 0);
    assert!(matches!(
        events(&mut c)[..],
        [Event::Failed {
            code: CloseCode::INVALID_PAYLOAD,
            ..
        }]
    ));
    assert!(!c.is_reading());
    // The Close frame carries 1007.
    let out = c.pending_output();
    assert_eq!(&out[..4], &[0x88, 2, 0x03, 0xef]);
}

#[test]
fn open_message_split_across_reads_assembled_then_delivered() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, &[7u8; 300]);
    let (a, b) = wire.split_at_mut(100);
    let mut seen = Vec::new();
    assert_eq!(c.read_with(a, &mut |k, d| seen.push((k, d.len()))), 100);
    assert!(seen.is_empty());
    assert_eq!(c.read_with(b, &mut |k, d| seen.push((k, d.len()))), b.len());
    assert_eq!(seen, vec![(MessageKind::Binary, 300)]);
}

#[test]
fn fragmented_with_interleaved_ping_pong_written_before_message_answer() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, false, b"frag");
    wire.extend(client_frame(OpCode::Ping, true, b"p"));
    wire.extend(client_frame(OpCode::Continuation, true, b"ment"));
    let mut seen = Vec::new();
    // The ping's pong is queued: read_with returns so it can be written first.
    let n = c.read_with(&mut wire, &mut |k, d| seen.push((k, d.to_vec())));
    assert!(n < wire.len());
    assert!(seen.is_empty());
    assert_eq!(events(&mut c), vec![Event::Ping(b"p".to_vec())]);
    assert_eq!(
        c.write_message_header(&mut [0u8; 14], MessageKind::Text, 8),
        Err(SendError::OutputPending)
    );
    let pong = c.pending_output().to_vec();
    assert_eq!(pong, [0x8a, 1, b'p']);
    c.consume_output(pong.len());
    let m = c.read_with(&mut wire[n..], &mut |k, d| seen.push((k, d.to_vec())));
    assert_eq!(n + m, wire.len());
    assert_eq!(seen, vec![(MessageKind::Text, b"fragment".to_vec())]);
}

#[test]
fn compressed_message_assembled_and_delivered_to_callback() {
    let params = Some(DeflateParams::default());
    let mut client = Connection::new(Role::Client, Config::default(), params, 42);
    let mut server = Connection::new(Role::Server, Config::default(), params, 0);
    let text = "compress me ".repeat(50);
    client.send(MessageKind::Text, text.as_bytes()).unwrap();
    let mut wire = client.pending_output().to_vec();
    let (n, seen) = read_all_with(&mut server, &mut wire);
    assert_eq!(n, wire.len());
    assert_eq!(seen, vec![(MessageKind::Text, text.into_bytes(), false)]);
}

#[test]
fn open_oversized_frame_lent_path_still_fails_1009() {
    let mut c = Connection::new(
        Role::Server,
        Config {
            max_frame_size: 10,
            max_message_size: 10,
        },
        None,
        1,
    );
    let mut wire = client_frame(OpCode::Binary, true, &[0u8; 11]);
    fails_lending_nothing(&mut c, &mut wire, CloseCode::TOO_BIG);
}

#[test]
fn small_frames_lent_only_when_masked_as_the_role_requires() {
    // A client receives unmasked server frames on the small-frame path, whole and lent.
    let mut c = Connection::new(Role::Client, Config::default(), None, 1);
    let mut wire = Vec::new();
    for (i, op) in [OpCode::Binary, OpCode::Text, OpCode::Binary]
        .into_iter()
        .enumerate()
    {
        encode_frame(
            &mut wire,
            FrameHeader::new(op, 0),
            &vec![b'a' + i as u8; 125 - i],
        );
    }
    let (n, seen) = read_all_with(&mut c, &mut wire);
    assert_eq!(n, wire.len());
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1], (MessageKind::Text, vec![b'b'; 124], true));
    assert!(seen.iter().all(|(_, _, inside)| *inside));

    // A server given an unmasked small frame fails the connection (1002), lending nothing.
    let mut c = server();
    let mut wire = Vec::new();
    encode_frame(&mut wire, FrameHeader::new(OpCode::Binary, 0), b"unmasked");
    fails_lending_nothing(&mut c, &mut wire, CloseCode::PROTOCOL_ERROR);

    // A client given a masked frame fails too.
    let mut c = Connection::new(Role::Client, Config::default(), None, 1);
    let (_, seen) = read_all_with(&mut c, &mut client_frame(OpCode::Binary, true, b"x"));
    assert!(seen.is_empty());
    assert!(!c.is_reading());

    // Within a fragmented message, a small whole data frame is a protocol error, not a
    // message of its own.
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, false, b"first ");
    wire.extend(client_frame(OpCode::Binary, true, b"intruder"));
    fails_lending_nothing(&mut c, &mut wire, CloseCode::PROTOCOL_ERROR);
}

#[test]
fn read_small_with_takes_the_leading_small_frames_and_stops_at_anything_else() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, &[1; 64]);
    wire.extend(client_frame(OpCode::Text, true, b"hi"));
    let small = wire.len();
    // A ping, then a frame with a 16-bit length: both for the general path.
    wire.extend(client_frame(OpCode::Ping, true, b"p"));
    wire.extend(client_frame(OpCode::Binary, true, &[2; 200]));
    let range = wire.as_ptr_range();
    let mut seen = Vec::new();
    let n = c.read_small_with(&mut wire, &mut |k, d| {
        let r = d.as_ptr_range();
        seen.push((k, d.to_vec(), range.start <= r.start && r.end <= range.end));
    });
    assert_eq!(n, small);
    assert_eq!(
        seen,
        vec![
            (MessageKind::Binary, vec![1; 64], true),
            (MessageKind::Text, b"hi".to_vec(), true),
        ]
    );
    // Each small frame's echo (2 header bytes, no mask) is shorter than the frame.
    assert!(seen.iter().map(|(_, d, _)| 2 + d.len()).sum::<usize>() <= n);
    // Not between frames (a header split across reads): nothing taken.
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, b"abc");
    assert_eq!(c.read_with(&mut wire[..1], &mut |_, _| {}), 1);
    assert_eq!(c.read_small_with(&mut wire[1..], &mut |_, _| {}), 0);
    let (_, seen) = read_all_with(&mut c, &mut wire[1..]);
    assert_eq!(seen, vec![(MessageKind::Binary, b"abc".to_vec(), true)]);
    // Invalid UTF-8 stops the run and fails the connection (1007).
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, true, b"\xff");
    wire.extend(client_frame(OpCode::Binary, true, b"after"));
    let mut delivered = 0;
    let n = c.read_small_with(&mut wire, &mut |_, _| delivered += 1);
    assert_eq!((n, delivered), (7, 0));
    assert!(!c.is_reading());
}

/// What a server answers with: each message as one unmasked final frame.
fn server_frames(msgs: &[(MessageKind, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, data) in msgs {
        encode_frame(
            &mut out,
            FrameHeader::new(kind.opcode(), data.len() as u64),
            data,
        );
    }
    out
}

#[test]
fn reflect_small_answers_leading_small_frames_unmasked_input_untouched() {
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, &[1; 64]);
    wire.extend(client_frame(OpCode::Text, true, b"hi"));
    wire.extend(client_frame(OpCode::Binary, true, b""));
    wire.extend(client_frame(OpCode::Binary, true, &[9; 125]));
    let small = wire.len();
    // A ping, then a frame with a 16-bit length: both for the general path.
    wire.extend(client_frame(OpCode::Ping, true, b"p"));
    wire.extend(client_frame(OpCode::Binary, true, &[2; 200]));
    let before = wire.clone();
    let mut out = vec![0u8; wire.len()];
    let r = c.reflect_small(&wire, &mut out);
    let want = server_frames(&[
        (MessageKind::Binary, vec![1; 64]),
        (MessageKind::Text, b"hi".to_vec()),
        (MessageKind::Binary, Vec::new()),
        (MessageKind::Binary, vec![9; 125]),
    ]);
    assert_eq!(
        r,
        Reflected {
            consumed: small,
            written: want.len(),
            messages: 4
        }
    );
    assert_eq!(&out[..r.written], &want[..]);
    assert_eq!(wire, before, "the input is read, not unmasked in place");
    // The rest goes through the general path as usual.
    let (_, seen) = read_all_with(&mut c, &mut wire[small..]);
    assert_eq!(seen, vec![(MessageKind::Binary, vec![2; 200], true)]);
    assert!(matches!(events(&mut c)[..], [Event::Ping(_)]));
}

#[test]
fn reflect_small_stops_where_out_is_full_at_partial_frames_and_for_clients() {
    let mut wire = client_frame(OpCode::Binary, true, &[5; 40]);
    wire.extend(client_frame(OpCode::Binary, true, &[6; 40]));
    // Room for the first answer only (42 bytes; the second needs 42 more).
    for room in [42, 50, 83] {
        let mut c = server();
        let mut out = vec![0u8; room];
        let r = c.reflect_small(&wire, &mut out);
        assert_eq!(
            (r.consumed, r.written, r.messages),
            (46, 42, 1),
            "room {room}"
        );
        assert_eq!(
            &out[..42],
            &server_frames(&[(MessageKind::Binary, vec![5; 40])])[..]
        );
    }
    // The second frame cut short: only the first is taken.
    let mut c = server();
    let mut out = vec![0u8; wire.len()];
    let r = c.reflect_small(&wire[..wire.len() - 1], &mut out);
    assert_eq!((r.consumed, r.messages), (46, 1));
    // Not between frames (a header split across reads): nothing taken.
    let mut c = server();
    assert_eq!(c.read_with(&mut wire.clone()[..1], &mut |_, _| {}), 1);
    assert_eq!(c.reflect_small(&wire[1..], &mut out), Reflected::default());
    // A client engine's answers would need masks: nothing taken.
    let mut c = Connection::new(Role::Client, Config::default(), None, 1);
    let mut h = FrameHeader::new(OpCode::Binary, 0);
    h.fin = true;
    let mut plain = Vec::new();
    encode_frame(&mut plain, h, b"x");
    assert_eq!(c.reflect_small(&plain, &mut out), Reflected::default());
}

#[test]
fn reflect_small_invalid_utf8_fails_1007_consumed_not_answered() {
    // Followed by short frames (the exact path) and by long ones (the fixed-size path).
    for after in [5, 125] {
        let mut c = server();
        let mut wire = client_frame(OpCode::Binary, true, b"ok");
        wire.extend(client_frame(OpCode::Text, true, b"\xff"));
        wire.extend(client_frame(OpCode::Binary, true, &vec![1; after]));
        wire.extend(client_frame(OpCode::Binary, true, &vec![2; after]));
        let mut out = vec![0u8; wire.len()];
        let r = c.reflect_small(&wire, &mut out);
        assert_eq!(
            (r.consumed, r.written, r.messages),
            (8 + 7, 4, 1),
            "{after}"
        );
        assert!(!c.is_reading());
        assert!(matches!(
            events(&mut c)[..],
            [Event::Failed {
                code: CloseCode::INVALID_PAYLOAD,
                ..
            }]
        ));
    }
}

#[test]
fn write_message_header_server_unmasked_refused_after_close_and_for_client() {
    let mut c = server();
    let mut buf = [0u8; 200];
    let n = c
        .write_message_header(&mut buf, MessageKind::Binary, 130)
        .unwrap();
    assert_eq!(n, crate::frame::header_len(130, false));
    let (h, len) = FrameHeader::parse(&buf).unwrap().unwrap();
    assert_eq!(len, n);
    assert_eq!(
        (h.opcode, h.fin, h.mask, h.payload_len),
        (OpCode::Binary, true, None, 130)
    );
    assert_eq!(
        c.write_message_header(&mut buf[..1], MessageKind::Binary, 1),
        Err(SendError::BufferTooSmall)
    );
    c.close(CloseCode::NORMAL, "").unwrap();
    let out = c.pending_output().len();
    c.consume_output(out);
    assert_eq!(
        c.write_message_header(&mut buf, MessageKind::Text, 1),
        Err(SendError::Closing)
    );
    let client = Connection::new(Role::Client, Config::default(), None, 3);
    assert_eq!(
        client.write_message_header(&mut buf, MessageKind::Text, 1),
        Err(SendError::MaskRequired)
    );
}

#[test]
fn echo_header_and_payload_written_without_intermediate_buffer_parse_back() {
    // What an echo does with `tcp::Stack::send_with`: header then payload, in one slice.
    let mut c = server();
    let mut wire = client_frame(OpCode::Text, true, b"echo");
    let mut out = [0u8; 64];
    let mut used = 0;
    c.read_with(&mut wire, &mut |kind, d| {
        let h = c_header(&mut out[used..], kind, d.len());
        out[used + h..used + h + d.len()].copy_from_slice(d);
        used += h + d.len();
    });
    let (h, n) = FrameHeader::parse(&out[..used]).unwrap().unwrap();
    assert_eq!((h.opcode, h.mask), (OpCode::Text, None));
    assert_eq!(&out[n..used], b"echo");
}

fn c_header(buf: &mut [u8], kind: MessageKind, len: usize) -> usize {
    crate::frame::write_header(buf, kind.opcode(), len, None).unwrap()
}

#[cfg(feature = "copy-count")]
#[test]
fn copy_count_whole_message_lent_no_copy_split_message_one_copy() {
    use crate::copy_count::{reset, snapshot};
    let mut c = server();
    let mut wire = client_frame(OpCode::Binary, true, &[5u8; 64]);
    reset();
    c.read_with(&mut wire, &mut |_, _| {});
    assert_eq!(snapshot().total(), 0);
    let mut wire = client_frame(OpCode::Binary, true, &[5u8; 64]);
    let (a, b) = wire.split_at_mut(30);
    c.read_with(a, &mut |_, _| {});
    c.read_with(b, &mut |_, _| {});
    let s = snapshot();
    assert_eq!((s.message, s.message_bytes), (2, 64));
}

proptest! {
    // Oracle: `read` (owned events). Whatever the split points, `read_with` delivers the
    // same messages in the same order, and the control events are the same.
    #[test]
    fn read_with_arbitrary_splits_same_messages_as_read(
        msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..2000), 1usize..3000), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        deflate: bool,
    ) {
        let params = deflate.then(DeflateParams::default);
        let mut client = Connection::new(Role::Client, Config::default(), params, 42);
        let mut expected = Vec::new();
        for (text, data, frag) in &msgs {
            let (kind, data) = if *text {
                (MessageKind::Text, String::from_utf8_lossy(data).into_owned().into_bytes())
            } else {
                (MessageKind::Binary, data.clone())
            };
            client.send_fragmented(kind, &data, *frag).unwrap();
            client.ping(b"hb").unwrap();
            expected.push((kind, data));
        }
        let mut wire = client.pending_output().to_vec();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut server = Connection::new(Role::Server, Config::default(), params, 0);
        let mut prev = 0;
        let mut got = Vec::new();
        for p in points.into_iter().chain(std::iter::once(wire.len())) {
            let (n, seen) = read_all_with(&mut server, &mut wire[prev..p]);
            prop_assert_eq!(n, p - prev);
            got.extend(seen.into_iter().map(|(k, d, _)| (k, d)));
            prev = p;
        }
        prop_assert_eq!(got, expected);
        let pings = events(&mut server).into_iter().filter(|e| *e == Event::Ping(b"hb".to_vec())).count();
        prop_assert_eq!(pings, msgs.len());
    }

    // Oracle: `read_small_with`, whose lent payloads framed by the server are the answer.
    // Any run of small frames, followed by anything, into an output of any size.
    #[test]
    fn reflect_small_equals_read_small_with_framed(
        msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..126), any::<[u8; 4]>()), 0..12),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        room in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        for (text, data, key) in &msgs {
            let (op, data) = if *text {
                // Valid UTF-8 of at most 125 bytes, cut at a character boundary.
                let s = String::from_utf8_lossy(data);
                let mut end = s.len().min(125);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                (OpCode::Text, s.as_bytes()[..end].to_vec())
            } else {
                (OpCode::Binary, data.clone())
            };
            let data = &data[..];
            let mut h = FrameHeader::new(op, 0);
            h.mask = Some(*key);
            encode_frame(&mut wire, h, data);
        }
        wire.extend(&tail);
        let mut lent = Vec::new();
        let mut oracle = server();
        let taken = oracle.read_small_with(&mut wire.clone(), &mut |k, d| lent.push((k, d.to_vec())));
        let answers = server_frames(&lent);
        let mut out = vec![0xa5u8; room.index(wire.len() + 1)];
        let mut c = server();
        let r = c.reflect_small(&wire, &mut out);
        // As many whole answers as fit, byte for byte.
        let mut fit = 0;
        let mut used = 0;
        let mut consumed = 0;
        for (_, d) in &lent {
            if used + 2 + d.len() > out.len() {
                break;
            }
            used += 2 + d.len();
            consumed += 6 + d.len();
            fit += 1;
        }
        prop_assert_eq!(r.messages, fit as u64);
        prop_assert_eq!(r.written, used);
        prop_assert_eq!(r.consumed, consumed);
        prop_assert_eq!(&out[..used], &answers[..used]);
        if fit == lent.len() {
            prop_assert_eq!(r.consumed, taken);
        }
    }
}
