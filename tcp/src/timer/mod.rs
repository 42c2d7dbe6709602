//! Timers: the per-worker hierarchical timer wheel that holds every connection's
//! retransmission, delayed-ACK, persist, keepalive, FIN_WAIT_2 and TIME_WAIT timers.

pub mod wheel;

pub use wheel::{TimerId, TimerWheel};
