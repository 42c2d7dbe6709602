//! `ref-ws-echo`: a trivial single-threaded epoll (mio) WebSocket echo server on kernel
//! sockets, the "fair baseline" for a busy-polling Sluice worker (issue 13). With `--spin`
//! it polls epoll with a zero timeout and never sleeps; either way it reads each ready
//! socket until it would block and answers every read batch with one write (all the echo
//! frames that batch completed). Framing is the generator's own minimal RFC 6455 code
//! (`sluice_bench::wsframe`), independent of Sluice's `ws` crate: see
//! docs/decisions/0005-reference-ws-codec.md. Prints `listening ADDR` when ready.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use sluice_bench::responder::{bind_and_serve, ResponderConfig};
use sluice_bench::Proto;

#[derive(Debug, Parser)]
#[command(
    name = "ref-ws-echo",
    about = "Trivial epoll (mio) WebSocket echo server, blocking or busy-polling (--spin)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9005")]
    addr: SocketAddr,
    /// CPU to pin the server thread to.
    #[arg(long)]
    pin: Option<usize>,
    /// Busy-poll (epoll with a zero timeout, no sleep) instead of blocking in epoll.
    #[arg(long)]
    spin: bool,
    /// Most connections served at once.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(cpu) = cli.pin {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            anyhow::bail!("could not pin to CPU {cpu}");
        }
    }
    let mut cfg = ResponderConfig::new(Proto::Ws);
    cfg.spin = cli.spin;
    cfg.max_connections = cli.max_connections;
    let stop = AtomicBool::new(false);
    bind_and_serve(cli.addr, &cfg, &stop, |a| println!("listening {a}"))?;
    Ok(())
}
