//! `ref-tcp-echo`: a trivial single-threaded epoll (mio) TCP echo server, the kernel-socket
//! reference for raw TCP ping-pong. Prints `listening ADDR` when ready.

use std::net::SocketAddr;

use clap::Parser;
use sluice_bench::responder::ReferenceArgs;
use sluice_bench::Proto;

#[derive(Debug, Parser)]
#[command(name = "ref-tcp-echo", about = "Trivial mio TCP echo server")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    #[command(flatten)]
    reference: ReferenceArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.reference.serve(Proto::Tcp, cli.addr)
}
