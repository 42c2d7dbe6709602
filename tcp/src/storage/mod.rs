//! Connection buffers: the lazily allocated byte ring used for send and receive data, the
//! send queue (ring plus shared chunks), and
//! the bounded out-of-order assembler that tracks which bytes past the receive point have
//! arrived.

pub mod assembler;
pub mod pool;
pub mod ring;
pub mod sendq;

pub use assembler::{Assembler, TooManyHoles};
pub use ring::RingBuffer;
pub use sendq::SendQueue;
