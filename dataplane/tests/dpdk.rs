//! The DPDK device on DPDK's `net_null` driver (frames of 64 bytes received from nowhere,
//! transmitted frames freed), in-process: no NIC, hugepages or network needed. The EAL starts
//! once per process, so everything runs in one test, in order.
#![cfg(feature = "dpdk")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dataplane::dpdk::{DpdkDevice, DpdkError, Eal, Pool, Port, PortConfig};
use dataplane::{Device, TxQueue};

fn config(name: &str, queues: u16) -> PortConfig {
    PortConfig {
        name: name.into(),
        queues,
        rx_ring: 256,
        tx_ring: 256,
        promiscuous: false,
    }
}

#[test]
fn dpdk_null_port_frames_in_and_out_every_mbuf_returned_after_run_and_failed_start() {
    let args: Vec<String> = [
        "--no-huge",
        "--no-shconf",
        "--no-pci",
        "-m",
        "256",
        "--no-telemetry",
        "--log-level=*:warning",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Eal::init(&args).expect("EAL");
    // The same arguments again: fine; others: refused.
    Eal::init(&args).expect("EAL again");
    assert!(matches!(
        Eal::init(&["--no-huge".to_string()]),
        Err(DpdkError::EalRunning { .. })
    ));

    let pool = Pool::create("sluice_test", 4095).expect("pool");
    assert_eq!(pool.in_use(), 0);

    // Unknown port, then a failed start: more queues than the driver has.
    let err = Port::open(&config("net_nothere0", 1), pool.clone()).unwrap_err();
    assert!(matches!(err, DpdkError::NoSuchPort { .. }), "{err}");
    let err = Port::open(&config("net_null1", 5000), pool.clone()).unwrap_err();
    assert!(err.to_string().contains("queue count"), "{err}");
    assert_eq!(pool.in_use(), 0, "mbufs left after a failed start");

    let port = Port::open(&config("net_null0", 1), pool.clone()).expect("port");
    assert_eq!(port.driver(), "net_null");
    assert!(!port.rss_enabled());
    assert!(port.rss().is_none());
    let worker_port = port.clone();
    let worker_pool = pool.clone();
    let (received, sent) = std::thread::spawn(move || {
        let mut dev = DpdkDevice::open(worker_port, 0, 256).expect("queue 0");
        assert!(DpdkDevice::open(dev.port().clone(), 1, 256).is_err());
        assert_eq!(dev.tx().capacity(), 2048);
        let (mut received, mut sent) = (0u64, 0u64);
        while received < 20_000 {
            received += dev
                .receive(64, |frame, tx| {
                    assert_eq!(frame.len(), 64);
                    // Answer from the frame itself while it is lent (as the stack does).
                    frame[0] ^= 0xff;
                    assert!(tx.transmit(frame.len(), |out| {
                        out.copy_from_slice(frame);
                        out.len()
                    }));
                })
                .expect("receive") as u64;
            let mut pending = Vec::new();
            dev.pending_frames(|f| pending.push(f.len()));
            assert!(pending.iter().all(|&l| l == 64));
            sent += dev.submit().expect("submit") as u64;
        }
        // A cancelled frame goes back at once; a frame too large is refused.
        assert!(dev.tx().transmit(100, |_| 0));
        assert!(!dev.tx().transmit(4000, |_| 1));
        // Frames queued and never submitted are freed with the device.
        for _ in 0..100 {
            assert!(dev.tx().transmit(60, |b| b.len()));
        }
        assert!(worker_pool.in_use() >= 100);
        let stats = dev.stats();
        assert_eq!(stats.rx_frames, received);
        assert_eq!(stats.tx_frames, sent);
        assert_eq!(stats.tx_too_large, 1);
        drop(dev);
        (received, sent)
    })
    .join()
    .expect("worker");
    assert_eq!(received, sent, "net_null takes every frame");
    let stats = port.stats().expect("port stats");
    assert!(stats.ipackets >= received, "{stats:?}");
    assert!(stats.opackets >= sent, "{stats:?}");
    drop(port);
    assert_eq!(pool.in_use(), 0, "mbufs left after a run");
}
