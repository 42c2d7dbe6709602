//! The `echo` route (and ws-echo): every message is sent back as it came.

use ws::MessageKind;

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
