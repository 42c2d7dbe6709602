//! `sluice`: the kernel-bypass TCP/WebSocket gateway. The application layer is the
//! `sluice` library (`lib.rs`); this only parses the command line and dispatches.

use clap::Parser;
use sluice::cli::{Cli, Command};
use sluice::{config, control};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Info => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            println!("backends: afxdp, kernel");
            println!("apps: tcp-echo tcp-discard tcp-source ws-echo gateway (afxdp, kernel)");
            Ok(())
        }
        Command::Run(args) => sluice::run::run(*args),
        Command::CheckConfig { file } => config::check_file(&file),
        Command::Stat { control, token } => control::stat(&control, token.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("sluice: error: {e:#}");
        std::process::exit(1);
    }
}
