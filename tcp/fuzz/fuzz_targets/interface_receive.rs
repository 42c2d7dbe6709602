//! The interface fed a sequence of arbitrary frames (length-prefixed in the input),
//! rejecting every TCP segment, advancing time and transmitting, never panics and keeps
//! its queues bounded.
#![no_main]

use core::time::Duration;
use libfuzzer_sys::fuzz_target;
use tcp::iface::{ClosedPortPolicy, Inbound, Interface, InterfaceConfig, VecTxQueue};
use tcp::wire::{EthernetAddress, Ipv4Addr};
use tcp::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = InterfaceConfig::new(
        EthernetAddress([0x02, 0, 0, 0, 0, 1]),
        Ipv4Addr::new(198, 18, 0, 1),
        24,
    );
    config.gateway = Some(Ipv4Addr::new(198, 18, 0, 254));
    config.verify_checksums = flags & 1 == 0;
    config.closed_port = match (flags >> 1) & 3 {
        0 => ClosedPortPolicy::Rst,
        1 => ClosedPortPolicy::IcmpUnreachable,
        _ => ClosedPortPolicy::Drop,
    };
    config.arp_pending_limit = 4;
    config.control_queue_limit = 4;
    let mut iface = Interface::new(config);
    let mut tx = VecTxQueue::with_limit(16);
    let mut now = Instant::ZERO;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(len) * 10);
        match iface.receive(now, frame) {
            Inbound::Tcp {
                src, dst, segment, ..
            } => {
                let _ = iface.reject(now, &mut tx, src, dst, &segment);
                // Also talk to someone unresolved, to exercise the ARP queue.
                let _ = iface.send_tcp(now, &mut tx, dst, Ipv4Addr::new(198, 18, 0, len), &segment);
            }
            Inbound::IcmpError { original, .. } => {
                let _ = original.ports();
            }
            Inbound::Handled | Inbound::Dropped(_) => {}
        }
        if let Some(t) = iface.poll_timeout() {
            if t <= now {
                iface.handle_timeout(now);
            }
        }
        iface.poll_transmit(now, &mut tx);
        if tx.frames.len() >= 16 {
            tx.frames.clear();
        }
    }
    assert!(iface.stats().rx_frames > 0 || data.len() <= 1);
});
