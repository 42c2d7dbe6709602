//! Deterministic simulation of two full stacks exchanging Ethernet frames.
//! `SLUICE_SIM_SEEDS=N` runs N seeds per cell (default 1); `SLUICE_SIM_BYTES` sets the
//! bytes moved each way (default 4 MiB).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tcp::conn::{Algorithm, ConnConfig};
use tcp::testing::stack_sim::{run, SendMode, StackSimConfig};
use tcp::testing::LinkConfig;
use tcp::testing::{env_u64, matrix_conn, matrix_link};

fn cell(loss: f64, reorder: bool, alg: Algorithm, sack: bool, seed: u64, bytes: u64) {
    let cfg = StackSimConfig {
        conn: matrix_conn(alg, sack),
        link: matrix_link(loss, reorder),
        bytes_a_to_b: bytes,
        bytes_b_to_a: bytes,
        seed,
        ..StackSimConfig::default()
    };
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(e) => panic!("loss {loss} reorder {reorder} {alg:?} sack {sack} seed {seed}: {e}"),
    };
    // Both stacks send 4 MiB: with loss, recovery must have been SACK-driven exactly
    // when SACK was negotiated.
    let (a, b) = (&report.a.conn, &report.b.conn);
    let sack_recoveries = a.sack_recoveries + b.sack_recoveries;
    let fast = a.fast_retransmits + b.fast_retransmits;
    let cell = format!("loss {loss} reorder {reorder} {alg:?} sack {sack} seed {seed}");
    assert!(
        sack_recoveries <= fast,
        "{cell}: {sack_recoveries} > {fast}"
    );
    if !sack {
        assert_eq!(sack_recoveries, 0, "{cell}: SACK recovery without SACK");
    } else if loss >= 0.01 && bytes >= 1 << 20 {
        assert!(sack_recoveries > 0, "{cell}: no SACK recovery");
    }
}

#[test]
fn sim_stack_loss_matrix_moves_data_byte_exact() {
    let seeds = env_u64("SLUICE_SIM_SEEDS", 1);
    let bytes = env_u64("SLUICE_SIM_BYTES", 4 << 20);
    for seed in 1..=seeds {
        for loss in [0.0, 0.01, 0.05, 0.10, 0.20] {
            for reorder in [false, true] {
                for alg in [Algorithm::NewReno, Algorithm::Cubic] {
                    for sack in [false, true] {
                        cell(loss, reorder, alg, sack, seed, bytes);
                    }
                }
            }
        }
    }
}

#[test]
fn sim_stack_corruption_caught_by_checksums() {
    let cfg = StackSimConfig {
        link: LinkConfig {
            corrupt: 0.05,
            duplicate: 0.02,
            ..LinkConfig::default()
        },
        seed: 7,
        ..StackSimConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert!(r.link_ab.corrupted + r.link_ba.corrupted > 0);
    assert!(r.bad_checksums > 0);
}

#[test]
fn sim_stack_small_mtu_negotiates_smaller_mss() {
    let cfg = StackSimConfig {
        mtu: 576,
        bytes_a_to_b: 256 << 10,
        bytes_b_to_a: 256 << 10,
        ..StackSimConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.link_ab.too_big, 0);
}

#[test]
fn sim_stack_many_connections_in_parallel() {
    let cfg = StackSimConfig {
        connections: 50,
        bytes_a_to_b: 20_000,
        bytes_b_to_a: 30_000,
        link: LinkConfig {
            loss: 0.02,
            ..LinkConfig::default()
        },
        ..StackSimConfig::default()
    };
    let r = run(&cfg).unwrap();
    assert_eq!(r.a.opened, 50);
    assert_eq!(r.b.opened, 50);
}

/// Breadth over seeds: each seed picks its own impairments and settings and moves a
/// small transfer each way. `SLUICE_SIM_SMALL_SEEDS` (default 200) sets the count.
#[test]
fn sim_stack_many_seeds_mixed_impairments() {
    let seeds = env_u64("SLUICE_SIM_SMALL_SEEDS", 200);
    for seed in 1..=seeds {
        let mut r = tcp::testing::Rng::new(seed);
        let losses = [0.0, 0.01, 0.05, 0.10, 0.20];
        let cfg = StackSimConfig {
            conn: ConnConfig {
                congestion: if r.chance(0.5) {
                    Algorithm::Cubic
                } else {
                    Algorithm::NewReno
                },
                sack: r.chance(0.5),
                timestamps: r.chance(0.8),
                window_scaling: r.chance(0.8),
                delayed_ack: r.chance(0.7),
                syn_retries: 12,
                ..ConnConfig::default()
            },
            link: LinkConfig {
                loss: losses[r.below(5) as usize],
                reorder: if r.chance(0.5) { 0.05 } else { 0.0 },
                duplicate: if r.chance(0.3) { 0.02 } else { 0.0 },
                corrupt: if r.chance(0.3) { 0.01 } else { 0.0 },
                jitter: Duration::from_micros(r.below(3000)),
                delay: Duration::from_millis(1 + r.below(30)),
                ..LinkConfig::default()
            },
            bytes_a_to_b: 1 + r.below(96 << 10),
            bytes_b_to_a: r.below(96 << 10),
            connections: 1 + r.below(3) as usize,
            zero_copy: r.chance(0.5),
            seed,
            ..StackSimConfig::default()
        };
        if let Err(e) = run(&cfg) {
            panic!("seed {seed}: {e}\n{cfg:?}");
        }
    }
}

#[test]
fn sim_stack_send_with_and_shared_chunks_under_loss_byte_exact() {
    // Owned bytes (`send`), bytes written in place (`send_with`) and shared chunks
    // (`send_chunk`) interleave in each send queue; with loss and reordering the
    // retransmissions must read the chunks back byte-exact (the receiver verifies every
    // byte of the stream).
    for (seed, loss, reorder, sack) in [
        (11, 0.05, false, true),
        (12, 0.05, true, false),
        (13, 0.10, true, true),
    ] {
        let cfg = StackSimConfig {
            conn: matrix_conn(tcp::conn::Algorithm::Cubic, sack),
            link: matrix_link(loss, reorder),
            bytes_a_to_b: 1 << 20,
            bytes_b_to_a: 1 << 20,
            seed,
            send_mode: SendMode::Mixed,
            ..StackSimConfig::default()
        };
        let r = run(&cfg).unwrap_or_else(|e| panic!("seed {seed} loss {loss}: {e}"));
        println!(
            "seed {seed}: {:?}, a sent {} segments, {} retransmitted",
            r.elapsed, r.a.segments_out, r.a.conn.retransmits
        );
        assert!(
            r.a.conn.retransmits > 0 && r.b.conn.retransmits > 0,
            "seed {seed}: loss must force retransmissions both ways"
        );
    }
}
