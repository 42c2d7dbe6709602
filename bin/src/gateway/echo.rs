//! The `echo` route (and ws-echo): every message is sent back as it came.

use ws::MessageKind;

use super::session::Session;
use super::worker::RouteRt;

/// Echoes one message of `s` on `route`.
pub(super) fn echo(s: &mut Session, route: &RouteRt, kind: MessageKind, data: &[u8]) {
    if let Some(ws) = s.ws() {
        if ws.send(kind, data).is_ok() {
            s.msgs_out += 1;
            route.stats().msgs_out.add(1);
        }
    }
    s.pull_engine_output();
}
