//! The `echo` route (and ws-echo): every message is sent back as it came.

use ws::{Connection, MessageKind, Reflected};

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

/// Echoes the leading run of small whole frames of `input` ([`Connection::reflect_small`])
/// through one lend of `tx` as long as `input`: each answer (2 header bytes and the
/// payload, unmasked from `input` straight into `tx`) is shorter than its request, so all
/// of them fit. Returns the bytes consumed and the messages echoed; (0, 0) when `tx` has
/// no such room now (the caller's per-message path then takes the input).
pub(super) fn echo_small<T: Tx>(ws: &mut Connection, input: &[u8], tx: &mut T) -> (usize, u64) {
    let mut done = Reflected::default();
    tx.write_with(input.len(), |out| {
        done = ws.reflect_small(input, out);
        done.written
    });
    debug_assert!(done.messages > 0 || done.written == 0);
    (done.consumed, done.messages)
}
