//! The `echo` route (and ws-echo): every message is sent back as it came.

use ws::{Connection, MessageKind};

use super::session::Session;
use super::worker::RouteRt;
use crate::app::Tx;

/// Echoes one message of `s` on `route`: header and payload straight into `tx` when
/// nothing is queued before it ([`Session::send_message`]); through the engine when
/// permessage-deflate is on (it compresses).
pub(super) fn echo<T: Tx>(
    s: &mut Session,
    route: &RouteRt,
    kind: MessageKind,
    data: &[u8],
    tx: &mut T,
) {
    let sent = if s.deflate_bits.is_some() {
        let sent = s.ws().is_some_and(|ws| ws.send(kind, data).is_ok());
        s.pull_engine_output();
        sent
    } else {
        s.send_message(tx, kind, data)
    };
    if sent {
        s.msgs_out += 1;
        route.stats().msgs_out.add(1);
    }
}

/// Echoes the leading run of small whole frames of `input` ([`Connection::read_small_with`])
/// through one lend of `tx` as long as `input`: each answer (2 header bytes and the
/// payload) is shorter than its request, so all of them fit, written in place one after
/// another. Returns the bytes consumed and the messages echoed; (0, 0) when `tx` has no
/// such room now (the caller's per-message path then takes the input).
pub(super) fn echo_small<T: Tx>(ws: &mut Connection, input: &mut [u8], tx: &mut T) -> (usize, u64) {
    let (mut taken, mut echoed) = (0, 0);
    tx.write_with(input.len(), |out| {
        let mut w = 0;
        taken = ws.read_small_with(input, &mut |kind, payload| {
            // A small frame's header is 2 bytes (FIN, opcode; 7-bit length, no mask).
            let len = payload.len();
            debug_assert!(len < 126, "read_small_with lends payloads under 126 bytes");
            let Some(frame) = out.get_mut(w..w + 2 + len) else {
                return;
            };
            let (header, body) = frame.split_at_mut(2);
            header[0] = 0x80 | kind.opcode().bits();
            header[1] = len as u8;
            body.copy_from_slice(payload);
            w += 2 + len;
            echoed += 1;
        });
        w
    });
    debug_assert!(echoed > 0 || taken == 0);
    (taken, echoed)
}
