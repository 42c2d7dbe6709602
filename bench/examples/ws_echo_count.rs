//! Drives ws-echo (the gateway's echo route) through the stack driver on the in-memory
//! wire (`sluice::drivers::loopback`), for instruction counting of the server's work
//! alone: every call into the server goes through the out-of-line `serve_frame` /
//! `serve_poll`, so callgrind collects exactly them.
//!
//! ```text
//! cargo build --release -p sluice-bench --example ws_echo_count
//! valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='*serve_frame*' --toggle-collect='*serve_poll*' \
//!     target/release/examples/ws_echo_count single 2000
//! callgrind_annotate callgrind.out.<pid> | grep 'PROGRAM TOTALS'
//! ```
//!
//! `single N`: N rounds of one 64 B binary message in its own segment, each echoed and
//! read by the client before the next. `pipelined N`: N rounds of 16 such messages in one
//! segment. Connection set-up and warm-up are counted too: run twice (N and 2N) and divide
//! the difference by N (messages: by 16 N for `pipelined`). `bench/callgrind/echo.sh`
//! does that.

use std::sync::Arc;

use sluice::config::Config;
use sluice::drivers::loopback::Loopback;
use sluice::gateway::worker::Worker;
use sluice::metrics::Metrics;
use ws::{Event, MessageKind};

const CONFIG: &str = r#"
[listen]
ports = [7]
[control]
enabled = false
[[route]]
path = "/"
kind = "echo"
"#;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let batch = match args.next().as_deref() {
        Some("single") => 1,
        Some("pipelined") => 16,
        _ => return Err("usage: ws_echo_count single|pipelined ROUNDS".to_string()),
    };
    let rounds: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("ROUNDS: a number")?;
    let config = Arc::new(Config::parse(CONFIG).map_err(|e| e.to_string())?);
    let worker = Worker::new(0, config, Arc::new(Metrics::new()), None);
    let mut lb = Loopback::new(worker, None)?;
    let conn = lb.connect().ok_or("no handshake")?;
    let mut ws = lb.upgrade(conn, "/")?;
    let payload = [7u8; 64];
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    for _ in 0..rounds {
        for _ in 0..batch {
            ws.send(MessageKind::Binary, &payload)
                .map_err(|e| format!("{e:?}"))?;
        }
        if !lb.send_pending(conn, &mut ws) {
            return Err("the send buffer is full".to_string());
        }
        let mut got = 0;
        for _ in 0..1_000 {
            lb.step();
            let mut bytes = lb.take_received(conn, &mut buf);
            let mut pos = 0;
            while pos < bytes.len() {
                pos += ws.read(&mut bytes[pos..]);
                while let Some(ev) = ws.poll_event() {
                    match ev {
                        Event::Message { data, .. } if data == payload => got += 1,
                        other => return Err(format!("unexpected {other:?}")),
                    }
                }
            }
            if got == batch {
                break;
            }
        }
        if got != batch {
            return Err(format!("{got} of {batch} echoes arrived"));
        }
        echoed += got;
    }
    let c = lb.server.stack().counters();
    println!(
        "echoed {echoed} messages in {rounds} rounds of {batch}; server segments in {}, out {}",
        c.segments_in, c.segments_out
    );
    Ok(())
}
