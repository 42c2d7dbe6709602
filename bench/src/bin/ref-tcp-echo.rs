//! `ref-tcp-echo`: a trivial single-threaded epoll (mio) TCP echo server, the kernel-socket
//! reference for raw TCP ping-pong. Prints `listening ADDR` when ready.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use sluice_bench::responder::{bind_and_serve, ResponderConfig};
use sluice_bench::Proto;

#[derive(Debug, Parser)]
#[command(name = "ref-tcp-echo", about = "Trivial mio TCP echo server")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
    /// CPU to pin the server thread to.
    #[arg(long)]
    pin: Option<usize>,
    /// Busy-poll instead of blocking in epoll.
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
    let mut cfg = ResponderConfig::new(Proto::Tcp);
    cfg.spin = cli.spin;
    cfg.max_connections = cli.max_connections;
    let stop = AtomicBool::new(false);
    bind_and_serve(cli.addr, &cfg, &stop, |a| println!("listening {a}"))?;
    Ok(())
}
