//! Segments as the state machine sees them. Incoming segments are the wire
//! [`TcpRepr`] itself (parsed once, payload borrowed from the frame; the TCB ignores the
//! ports). An outgoing segment is a [`TcpRepr`] header whose payload the TCB writes
//! straight into the transmit frame ([`OutSegment`]).

use core::ops::Deref;

use crate::wire::tcp::TcpRepr;

/// An outgoing segment's header (ports left zero: the stack fills them in) and the
/// length of its payload, which is written into the buffer handed to
/// [`super::Tcb::dispatch`] or by [`super::Tcb::write_payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutSegment {
    /// Header fields and options; `payload` is empty.
    pub repr: TcpRepr<'static>,
    /// Payload bytes written into the caller's buffer.
    pub payload_len: usize,
}

impl OutSegment {
    /// The header with its ports filled in, ready to emit.
    pub fn with_ports(&self, src_port: u16, dst_port: u16) -> TcpRepr<'static> {
        TcpRepr {
            src_port,
            dst_port,
            ..self.repr
        }
    }
}

impl Deref for OutSegment {
    type Target = TcpRepr<'static>;
    fn deref(&self) -> &TcpRepr<'static> {
        &self.repr
    }
}

/// The reset to send in answer to `seg` when no connection (or a non-synchronized one)
/// wants it, per RFC 9293 3.10.7.1 and 3.10.7.2. `None` if `seg` is itself a RST.
pub fn reset_for(seg: &TcpRepr<'_>) -> Option<OutSegment> {
    // RFC 9293 3.10.7.1: an incoming segment containing a RST is discarded.
    if seg.flags.rst() {
        return None;
    }
    Some(OutSegment {
        repr: crate::iface::rst_for(seg),
        payload_len: 0,
    })
}
