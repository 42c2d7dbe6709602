//! Prints virtual transfer time, throughput and retransmissions for each cell of the
//! simulation loss matrix (two full stacks over a 5 ms link). A report, not a check:
//! `cargo run --release -p sluice-tcp --example sim_matrix_report`
//! (`SLUICE_SIM_BYTES` sets the bytes moved each way, default 4 MiB).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tcp::conn::Algorithm;
use tcp::testing::stack_sim::{run, StackSimConfig};
use tcp::testing::{env_u64, matrix_conn, matrix_link};

fn main() {
    let bytes = env_u64("SLUICE_SIM_BYTES", 4 << 20);
    for loss in [0.0, 0.01, 0.05, 0.10, 0.20] {
        for alg in [Algorithm::NewReno, Algorithm::Cubic] {
            for sack in [false, true] {
                let cfg = StackSimConfig {
                    conn: matrix_conn(alg, sack),
                    link: matrix_link(loss, false),
                    bytes_a_to_b: bytes,
                    bytes_b_to_a: bytes,
                    ..StackSimConfig::default()
                };
                let r = run(&cfg).unwrap();
                let mbit = (2 * bytes * 8) as f64 / r.elapsed.as_secs_f64() / 1e6;
                eprintln!(
                    "loss {:>4.0}% {alg:?} sack {sack}: {:>8.2?} virtual, {mbit:>6.1} Mbit/s both ways, rtx {}",
                    loss * 100.0,
                    r.elapsed,
                    r.a.conn.retransmits + r.b.conn.retransmits
                );
            }
        }
    }
}
