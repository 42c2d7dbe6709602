//! `sluice`: the kernel-bypass TCP/WebSocket gateway.

mod afxdp;
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Info => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            println!("backends: afxdp, kernel");
            println!("apps: tcp-echo tcp-discard tcp-source ws-echo gateway (afxdp, kernel)");
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
    match (args.backend, args.app) {
        (Backend::Afxdp, _) => afxdp::run(&afxdp_options(&args)?),
        // One kernel-socket driver serves the gateway and ws-echo (an echo route).
        (Backend::Kernel, App::Gateway | App::WsEcho) => {
            if args.pcap.is_some() {
                anyhow::bail!("--pcap needs --backend afxdp (use tcpdump for kernel sockets)");
            }
            gateway::kernel::run(gateway::kernel::Settings {
                config: gateway_config(&args)?,
                app_name: app_name(args.app),
                any_path: args.app == App::WsEcho,
            })
        }
        (Backend::Kernel, _) => {
            if args.config.is_some() {
                anyhow::bail!("--config applies to --app gateway and to --backend afxdp");
            }
            if args.pcap.is_some() {
                anyhow::bail!("--pcap needs --backend afxdp (use tcpdump for kernel sockets)");
            }
            kernel::run(&args)
        }
    }
}

/// The configuration of `--app gateway` (file plus flags) or `--app ws-echo` (flags).
fn gateway_config(args: &RunArgs) -> anyhow::Result<config::Config> {
    if args.app == App::WsEcho {
        gateway::ws_echo_config(args)
    } else {
        config::for_run(args)
    }
}

fn app_name(app: App) -> &'static str {
    match app {
        App::TcpEcho => "tcp-echo",
        App::TcpDiscard => "tcp-discard",
        App::TcpSource => "tcp-source",
        App::WsEcho => "ws-echo",
        App::Gateway => "gateway",
    }
}

/// The AF_XDP backend's options from `sluice run` (the `afxdp` module owns the rest).
fn afxdp_options(args: &RunArgs) -> anyhow::Result<afxdp::Options> {
    let iface = args
        .iface
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--backend afxdp needs --iface"))?;
    let std::net::IpAddr::V4(addr) = args.ip.addr else {
        anyhow::bail!("--backend afxdp needs an IPv4 --ip");
    };
    if addr.is_unspecified() {
        anyhow::bail!("--backend afxdp needs --ip ADDR/PREFIX (the stack's own address)");
    }
    // `--ip ADDR` without `/PREFIX`: the subnet is the address alone (docs/AFXDP.md).
    let prefix_len = args.ip.prefix.unwrap_or(32);
    let gateway = match args.gateway_ip {
        None => None,
        Some(std::net::IpAddr::V4(g)) => Some(g),
        Some(_) => anyhow::bail!("--gateway-ip must be IPv4"),
    };
    let mac = match &args.mac {
        Some(m) => Some(afxdp::parse_mac(m).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let (app, websocket) = match args.app {
        App::TcpEcho => (afxdp::TcpApp::Echo, None),
        App::TcpDiscard => (afxdp::TcpApp::Discard, None),
        App::TcpSource => (afxdp::TcpApp::Source, None),
        App::WsEcho | App::Gateway => {
            if args.connect.is_some() {
                anyhow::bail!("--connect serves the TCP applications only");
            }
            let gw = afxdp::gateway::GatewayOptions {
                app_name: app_name(args.app),
                config: gateway_config(args)?,
                any_path: args.app == App::WsEcho,
            };
            // The TCP application is not used when the gateway is served.
            (afxdp::TcpApp::Echo, Some(gw))
        }
    };
    // `--config` also carries the `[dataplane]` tuning section, so the TCP applications take it.
    Ok(afxdp::Options {
        iface,
        addr,
        prefix_len,
        gateway,
        mac,
        queues: args.queues.clone(),
        cores: args.cores.clone(),
        ports: args.ports.clone(),
        app,
        connect: args.connect,
        dataplane: config::dataplane_for_run(args)?,
        pcap: args.pcap.clone().map(std::path::PathBuf::from),
        websocket,
    })
}
