//! `ref-ws-echo`: a trivial single-threaded epoll (mio) WebSocket echo server on kernel
//! sockets, the "fair baseline" for a busy-polling Sluice worker (issue 13). With `--spin`
//! it polls epoll with a zero timeout and never sleeps; either way it reads each ready
//! socket until it would block and answers every read batch with one write (all the echo
//! frames that batch completed). Framing is the generator's own minimal RFC 6455 code
//! (`sluice_bench::wsframe`), independent of Sluice's `ws` crate: see
//! docs/decisions/0005-reference-ws-codec.md. Prints `listening ADDR` when ready.

use std::net::SocketAddr;

use clap::Parser;
use sluice_bench::responder::ReferenceArgs;
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
    #[command(flatten)]
    reference: ReferenceArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.reference.serve(Proto::Ws, cli.addr)
}
