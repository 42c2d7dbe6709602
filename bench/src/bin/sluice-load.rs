//! `sluice-load`: WebSocket / TCP load and latency generator on kernel sockets.
//!
//! `sluice-load [OPTIONS] HOST:PORT` runs the load against a target;
//! `sluice-load ceiling [OPTIONS]` measures the generator's own ceiling on loopback.
//! Exits 1 if any connection failed or any echo did not match, 2 on bad usage.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluice_bench::settings::{parse_cpu_list, Mode, Proto, Settings};
use sluice_bench::{CeilingOptions, Report};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-load",
    about = "WebSocket/TCP echo load and latency generator (kernel sockets)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Target HOST:PORT.
    #[arg(required = true)]
    target: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure the generator's own ceiling against a trivial responder on loopback.
    Ceiling {
        #[command(flatten)]
        load: LoadArgs,
        /// CPU for the responder thread.
        #[arg(long)]
        responder_pin: Option<usize>,
        /// Busy-poll in the responder too.
        #[arg(long)]
        responder_spin: bool,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Protocol spoken to the target.
    #[arg(long, value_enum, default_value = "ws")]
    proto: Proto,
    /// Number of connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    connections: usize,
    /// Payload bytes per message.
    #[arg(long, short = 's', default_value_t = 64)]
    message_size: usize,
    /// Messages in flight per connection (open loop: the most in flight).
    #[arg(long, short = 'k', default_value_t = 1)]
    pipeline: usize,
    /// Warm-up seconds (load runs, nothing recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Closed loop (send on reply) or open loop (fixed rate).
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Open loop: messages per second over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Generator threads, each with its own epoll loop.
    #[arg(long, short = 't', default_value_t = 1)]
    threads: usize,
    /// CPUs to pin the threads to, e.g. `1` or `0,2-3` (thread i on the i-th, cycling).
    #[arg(long, value_parser = parse_pin)]
    pin: Option<CpuList>,
    /// Busy-poll (epoll with zero timeout) instead of blocking.
    #[arg(long)]
    spin: bool,
    /// Seconds to connect and finish the WebSocket upgrade.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Seconds to wait for in-flight replies after the measurement.
    #[arg(long, default_value_t = 2.0)]
    drain_timeout: f64,
    /// Write the report (settings, figures, percentiles) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A parsed `--pin` list (a newtype so clap takes it as one value, not many).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn parse_pin(s: &str) -> Result<CpuList, String> {
    parse_cpu_list(s).map(CpuList).map_err(|e| e.to_string())
}

impl LoadArgs {
    fn settings(&self, target: std::net::SocketAddr, host: String) -> Settings {
        let mut s = Settings::new(target);
        s.host = host;
        s.proto = self.proto;
        s.connections = self.connections;
        s.message_size = self.message_size;
        s.pipeline = self.pipeline;
        s.warmup_s = self.warmup;
        s.duration_s = self.duration;
        s.mode = self.mode;
        s.rate = self.rate;
        s.threads = self.threads;
        s.pin = self.pin.clone().map(|p| p.0).unwrap_or_default();
        s.spin = self.spin;
        s.connect_timeout_s = self.connect_timeout;
        s.drain_timeout_s = self.drain_timeout;
        s
    }
}

fn finish(report: anyhow::Result<Report>, json: Option<&PathBuf>) -> ExitCode {
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-load: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.human());
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sluice-load: JSON: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("sluice-load: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "sluice-load: FAILED ({} errors, {}/{} connected)",
            report.error_total, report.connected, report.settings.connections
        );
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Ceiling {
            load,
            responder_pin,
            responder_spin,
        }) => {
            let placeholder = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let s = load.settings(placeholder, placeholder.to_string());
            let opts = CeilingOptions {
                responder_pin,
                responder_spin,
            };
            finish(sluice_bench::ceiling(&s, &opts), load.json.as_ref())
        }
        None => {
            let Some(target) = cli.target else {
                eprintln!("sluice-load: a target HOST:PORT is required");
                return ExitCode::from(2);
            };
            let addr = match target.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(a)) => a,
                Ok(None) | Err(_) => {
                    eprintln!("sluice-load: cannot resolve {target}");
                    return ExitCode::from(2);
                }
            };
            let s = cli.load.settings(addr, target);
            finish(sluice_bench::run(&s), cli.load.json.as_ref())
        }
    }
}
