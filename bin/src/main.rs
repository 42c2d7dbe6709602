//! `sluice`: the kernel-bypass TCP/WebSocket gateway.

use clap::{Parser, Subcommand};

/// Sluice: a kernel-bypass TCP/IP stack and WebSocket gateway on AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the build's version and enabled components.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
