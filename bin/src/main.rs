//! `sluice`: the kernel-bypass TCP/WebSocket gateway.

mod afxdp;

use std::net::Ipv4Addr;

use clap::{Parser, Subcommand, ValueEnum};

/// Sluice: a kernel-bypass TCP/IP stack and WebSocket gateway on AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the build's version and enabled components.
    Info,
    /// Serve an application until SIGINT/SIGTERM; prints one `listening` line when ready.
    Run(RunArgs),
}

/// Packet I/O backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// AF_XDP rings with the userspace TCP stack.
    Afxdp,
}

/// Application served on every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum App {
    /// Echo every TCP byte back.
    TcpEcho,
    /// Read and drop everything.
    TcpDiscard,
    /// Send the byte pattern `offset % 251` until the peer closes.
    TcpSource,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    #[arg(long, value_name = "N|LIST")]
    queues: Option<String>,
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    #[arg(long, value_name = "ADDR[/PREFIX]")]
    ip: String,
    #[arg(long, value_name = "ADDR")]
    gateway_ip: Option<Ipv4Addr>,
    #[arg(long, value_name = "MAC")]
    mac: Option<String>,
    #[arg(long, value_enum, default_value = "afxdp")]
    backend: Backend,
    #[arg(long = "port", value_name = "PORT", required = true)]
    ports: Vec<u16>,
    #[arg(long, value_enum)]
    app: App,
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Info => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(args) => run_afxdp(&args),
    };
    if let Err(e) = result {
        eprintln!("sluice: error: {e:#}");
        std::process::exit(1);
    }
}

fn run_afxdp(args: &RunArgs) -> anyhow::Result<()> {
    let Backend::Afxdp = args.backend;
    let iface = args
        .iface
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--backend afxdp needs --iface"))?;
    let (addr, prefix_len) = afxdp::parse_ipv4_prefix(&args.ip).map_err(anyhow::Error::msg)?;
    let mac = match &args.mac {
        Some(m) => Some(afxdp::parse_mac(m).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let opts = afxdp::Options {
        iface,
        addr,
        prefix_len,
        gateway: args.gateway_ip,
        mac,
        queues: args.queues.clone(),
        cores: args.cores.clone(),
        ports: args.ports.clone(),
        app: match args.app {
            App::TcpEcho => afxdp::TcpApp::Echo,
            App::TcpDiscard => afxdp::TcpApp::Discard,
            App::TcpSource => afxdp::TcpApp::Source,
        },
    };
    afxdp::run(&opts)
}
