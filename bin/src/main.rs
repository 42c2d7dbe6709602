//! `sluice`: the kernel-bypass TCP/WebSocket gateway.

mod cli;
mod config;
mod control;
mod gateway;
mod kernel;

use clap::Parser;
use cli::{App, Backend, Cli, Command, RunArgs};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Info => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            println!("backends: kernel (afxdp: not yet)");
            println!("apps: tcp-echo tcp-discard tcp-source ws-echo gateway (kernel backend)");
            Ok(())
        }
        Command::Run(args) => run(*args),
        // Gateway additions (config, control plane): see config.rs and control/.
        Command::CheckConfig { file } => config::check_file(&file),
        Command::Stat { control } => control::stat(&control),
    };
    if let Err(e) = result {
        eprintln!("sluice: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Gateway addition: `--app gateway` has its own kernel driver in gateway/kernel.rs.
    if args.app == App::Gateway && args.backend == Backend::Kernel {
        let config = config::for_run(&args)?;
        return gateway::kernel::run(gateway::kernel::Settings { config });
    }
    if args.config.is_some() {
        anyhow::bail!("--config is not supported yet; pass options on the command line");
    }
    if args.app == App::Gateway {
        anyhow::bail!("--app gateway is not available yet");
    }
    match args.backend {
        Backend::Afxdp => anyhow::bail!(
            "--backend afxdp is not available in this build yet; use --backend kernel"
        ),
        Backend::Kernel => {
            if args.pcap.is_some() {
                anyhow::bail!("--pcap is only supported by the afxdp backend");
            }
            kernel::run(&args)
        }
    }
}
