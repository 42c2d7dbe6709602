//! `sluice run`: from the parsed command line to a running backend (the dispatch `main`
//! calls).

use crate::app::tcp::Kind;
use crate::cli::{App, Backend, RunArgs};
use crate::config;
use crate::drivers::{bypass, gateway, kernel};

/// Runs `sluice run`: the chosen backend and application, until SIGINT/SIGTERM.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.busy_poll && args.backend != Backend::Kernel {
        anyhow::bail!(
            "--busy-poll applies to --backend kernel (the AF_XDP and DPDK workers spin by --idle-spin)"
        );
    }
    match (args.backend, args.app) {
        (Backend::Afxdp, _) => bypass::run(&bypass_options(&args)?),
        // The DPDK backend runs the same workers on DPDK queue pairs.
        (Backend::Dpdk, _) => {
            let mut opts = bypass_options(&args)?;
            let dpdk = config::dpdk_for_run(&args)?;
            // (`--cores` over `[dpdk] lcores`, resolved by `dpdk_for_run`.)
            opts.cores.clone_from(&dpdk.lcores);
            opts.dpdk = Some(dpdk);
            bypass::run(&opts)
        }
        // One kernel-socket driver serves the gateway and ws-echo (an echo route).
        (Backend::Kernel, App::Gateway | App::WsEcho) => {
            if args.pcap.is_some() {
                anyhow::bail!(
                    "--pcap needs --backend afxdp or dpdk (use tcpdump for kernel sockets)"
                );
            }
            kernel::run_gateway(kernel::Settings {
                config: gateway_config(&args)?,
                app_name: app_name(args.app),
                any_path: args.app == App::WsEcho,
                busy_poll: args.busy_poll,
            })
        }
        (Backend::Kernel, _) => {
            if args.config.is_some() {
                anyhow::bail!("--config applies to --app gateway and to --backend afxdp or dpdk");
            }
            if args.pcap.is_some() {
                anyhow::bail!(
                    "--pcap needs --backend afxdp or dpdk (use tcpdump for kernel sockets)"
                );
            }
            let kind = match args.app {
                App::TcpEcho => Kind::Echo,
                App::TcpDiscard => Kind::Discard,
                App::TcpSource => Kind::Source,
                App::WsEcho | App::Gateway => unreachable!("matched above"),
            };
            kernel::run_tcp(
                kind,
                args.ip.addr,
                &args.ports,
                args.max_connections,
                args.max_output_queue,
                tcp_idle(&args),
                args.busy_poll,
            )
        }
    }
}

/// The configuration of `--app gateway` (file plus flags) or `--app ws-echo` (flags).
fn gateway_config(args: &RunArgs) -> anyhow::Result<config::Config> {
    if args.app == App::WsEcho {
        config::ws_echo_for_run(args)
    } else {
        config::for_run(args)
    }
}

/// `--tcp-idle-timeout` (0: none).
fn tcp_idle(args: &RunArgs) -> Option<std::time::Duration> {
    (args.tcp_idle_timeout > 0).then(|| std::time::Duration::from_secs(args.tcp_idle_timeout))
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

/// The kernel-bypass backends' options from `sluice run` (the `bypass` module owns the
/// rest; `--backend dpdk` adds its `[dpdk]` part).
fn bypass_options(args: &RunArgs) -> anyhow::Result<bypass::Options> {
    let backend = if args.backend == Backend::Dpdk {
        "dpdk"
    } else {
        "afxdp"
    };
    let iface = match (&args.iface, args.backend) {
        (Some(i), _) => i.clone(),
        (None, Backend::Dpdk) => String::new(),
        (None, _) => anyhow::bail!("--backend afxdp needs --iface"),
    };
    let std::net::IpAddr::V4(addr) = args.ip.addr else {
        anyhow::bail!("--backend {backend} needs an IPv4 --ip");
    };
    if addr.is_unspecified() {
        anyhow::bail!("--backend {backend} needs --ip ADDR/PREFIX (the stack's own address)");
    }
    // `--ip ADDR` without `/PREFIX`: the subnet is the address alone (docs/AFXDP.md).
    let prefix_len = args.ip.prefix.unwrap_or(32);
    let gateway = match args.gateway_ip {
        None => None,
        Some(std::net::IpAddr::V4(g)) => Some(g),
        Some(_) => anyhow::bail!("--gateway-ip must be IPv4"),
    };
    let mac = match &args.mac {
        Some(m) => Some(bypass::parse_mac(m).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let (app, websocket) = match args.app {
        App::TcpEcho => (Kind::Echo, None),
        App::TcpDiscard => (Kind::Discard, None),
        App::TcpSource => (Kind::Source, None),
        App::WsEcho | App::Gateway => {
            if args.connect.is_some() {
                anyhow::bail!("--connect serves the TCP applications only");
            }
            let gw = gateway::GatewayOptions {
                app_name: app_name(args.app),
                config: gateway_config(args)?,
                any_path: args.app == App::WsEcho,
            };
            // The TCP application is not used when the gateway is served.
            (Kind::Echo, Some(gw))
        }
    };
    // The gateway listens on its configuration's ports: `--port` plus those `--tls-port`
    // added.
    let ports = websocket
        .as_ref()
        .map_or_else(|| args.ports.clone(), |g| g.config.listen.ports.clone());
    // `--config` also carries the `[dataplane]` tuning section, so the TCP applications take it.
    Ok(bypass::Options {
        iface,
        addr,
        prefix_len,
        gateway,
        mac,
        queues: args.queues.clone(),
        cores: args.cores.clone(),
        ports,
        app,
        max_connections: args.max_connections,
        max_output: args.max_output_queue,
        tcp_idle_timeout: tcp_idle(args),
        connect: args.connect,
        dataplane: config::dataplane_for_run(args)?,
        pcap: args.pcap.clone().map(std::path::PathBuf::from),
        websocket,
        dpdk: None,
    })
}
