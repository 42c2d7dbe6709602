//! `sluice-load`: WebSocket / TCP load and latency generator on kernel sockets.
//!
//! `sluice-load [OPTIONS] HOST:PORT` runs the load against a target;
//! `sluice-load ceiling [OPTIONS]` measures the generator's own ceiling on loopback.
//! `sluice-load fanout [OPTIONS] HOST:PORT --ingest ADDR` measures gateway broadcast fan-out;
//! `sluice-load handshakes HOST:PORT --tls` measures the TLS + upgrade connection rate;
//! `sluice-load bulk HOST:PORT` measures bulk TCP throughput to a discard server and
//! `sluice-load sink --addr A` is such a server on kernel sockets.
//! `sluice-load bypass HOST:PORT --iface IF --ip ADDR/LEN` runs the load from Sluice's own
//! stack over AF_XDP (kernel bypass on the client side too; root);
//! `sluice-load reflect` and `sluice-load floor` measure the floor under it: bare frames
//! from one AF_XDP socket to another and back, no TCP/IP (root).
//! Exits 1 if any connection failed or any echo did not match, 2 on bad usage.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluice_bench::settings::{parse_cpu_list, Mode, Proto, Settings};
use sluice_bench::tls::TlsOptions;
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
    /// Broadcast fan-out through the gateway: N subscribers on a pubsub route, one
    /// publisher POSTing to the control endpoint; reports deliveries/s and latency.
    Fanout {
        /// The gateway's WebSocket HOST:PORT.
        target: String,
        /// The gateway's control endpoint HOST:PORT (POST /publish/{topic}).
        #[arg(long)]
        ingest: String,
        /// The pubsub route's path.
        #[arg(long, default_value = "/live")]
        path: String,
        /// Topic.
        #[arg(long, default_value = "bench")]
        topic: String,
        /// Publications per second (default: closed loop, next POST on the answer).
        #[arg(long)]
        publish_rate: Option<f64>,
        /// Bearer token for the ingest (the gateway's `[control] token`).
        #[arg(long)]
        ingest_token: Option<String>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Connection-setup rate over TLS: each of -c slots connects, does the TLS handshake
    /// (full, or resumed with --resume) and the WebSocket upgrade, closes, and starts again;
    /// reports handshakes/s and connect-to-101 latency.
    Handshakes {
        /// Target HOST:PORT (a wss echo server).
        target: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Bulk TCP throughput to a discard server.
    Bulk {
        /// Target HOST:PORT (a discard server).
        target: String,
        /// Seconds of sending.
        #[arg(long, short = 'd', default_value_t = 5.0)]
        duration: f64,
        /// Bytes per write.
        #[arg(long, default_value_t = 65_536)]
        chunk: usize,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The load from Sluice's own TCP/IP stack on an AF_XDP queue of IFACE instead of
    /// kernel sockets (root): both ends bypass the kernel. One busy-polling worker pinned
    /// to the first --pin CPU; closed loop, plain ws or tcp. Same report as a plain run.
    Bypass {
        /// Target HOST:PORT (IPv4).
        target: String,
        /// The client's interface.
        #[arg(long)]
        iface: String,
        /// The client stack's own address and prefix, e.g. 198.18.0.5/24: an address the
        /// kernel does not use (the XDP program takes its ARP, ICMP and TCP).
        #[arg(long, value_parser = parse_cidr)]
        ip: (std::net::Ipv4Addr, u8),
        /// Default gateway (for a target off the subnet).
        #[arg(long)]
        gateway: Option<std::net::Ipv4Addr>,
        /// The interface's receive queue to serve.
        #[arg(long, default_value_t = 0)]
        queue: u32,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The floor's far end: sends back every TCP/IPv4 frame for ADDR:PORT that Sluice's XDP
    /// program steers to its AF_XDP socket (IFACE queue 0), addresses and ports swapped,
    /// no protocol processing; busy-polls (root). Prints `listening ...`; runs until
    /// SIGINT/SIGTERM.
    Reflect {
        /// Interface to serve.
        #[arg(long)]
        iface: String,
        /// The address and TCP port to reflect (an address the kernel does not use).
        #[arg(long)]
        addr: std::net::SocketAddrV4,
        /// CPU to pin the worker to.
        #[arg(long)]
        pin: Option<usize>,
    },
    /// The floor: frames of a TCP/IPv4 header and -s bytes of payload from an AF_XDP socket
    /// on IFACE to a `sluice-load reflect` at HOST:PORT and back, timed, -k in flight, every
    /// payload checked; busy-polls (root). Same report as a load run.
    Floor {
        /// The reflector's ADDR:PORT.
        target: String,
        /// The pinger's interface (queue 0).
        #[arg(long)]
        iface: String,
        /// The pinger's own address (an address the kernel does not use).
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// The reflector's MAC address, e.g. 02:00:00:00:00:0a (frames go to it directly).
        #[arg(long, value_parser = parse_mac)]
        dst_mac: [u8; 6],
        #[command(flatten)]
        load: LoadArgs,
    },
    /// A kernel-socket discard server (prints `listening ADDR`).
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9009")]
        addr: std::net::SocketAddr,
        /// CPU to pin the accepting thread (and its readers) to.
        #[arg(long)]
        pin: Option<usize>,
        /// Busy-poll: each reader spins on a non-blocking socket instead of sleeping in
        /// `read` (the spinning kernel baseline for bulk runs).
        #[arg(long)]
        spin: bool,
    },
}

fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s}: expected ADDR/PREFIX, e.g. 198.18.0.5/24"))?;
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{len}: {e}"))?;
    if len == 0 || len > 32 {
        return Err(format!("prefix length {len} out of 1..=32"));
    }
    Ok((addr, len))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s}: expected six hex bytes separated by ':'"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|e| format!("{s}: {e}"))?;
    }
    Ok(mac)
}

fn resolve(target: &str) -> Option<std::net::SocketAddr> {
    target.to_socket_addrs().ok()?.next()
}

fn write_json<T: serde::Serialize>(value: &T, path: Option<&PathBuf>) -> bool {
    let Some(path) = path else { return true };
    match serde_json::to_string_pretty(value) {
        Ok(t) => match std::fs::write(path, t + "\n") {
            Ok(()) => true,
            Err(e) => {
                eprintln!("sluice-load: writing {}: {e}", path.display());
                false
            }
        },
        Err(e) => {
            eprintln!("sluice-load: JSON: {e}");
            false
        }
    }
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Protocol spoken to the target.
    #[arg(long, value_enum, default_value = "ws")]
    proto: Proto,
    /// Spread connections over this many consecutive ports from the target's (connection
    /// i to port + i % N; with N = --threads, thread t talks to port + t only).
    #[arg(long, default_value_t = 1)]
    ports: u16,
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
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// Speak TLS (wss with --proto ws): rustls, ring provider, TLS 1.3/1.2, ALPN http/1.1.
    #[arg(long)]
    tls: bool,
    /// PEM file of trust anchors for the server certificate.
    #[arg(long, requires = "tls", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (FOR BENCHMARKS ONLY; handshake signatures are still
    /// checked).
    #[arg(long, requires = "tls")]
    insecure: bool,
    /// Server name to verify and send as SNI (default: the target's host; an IP address is
    /// checked against the certificate's IP SAN and sends no SNI).
    #[arg(long, requires = "tls")]
    sni: Option<String>,
    /// Share one TLS session store between the connections so TLS 1.3 tickets resume
    /// later handshakes (default: every handshake is full).
    #[arg(long, requires = "tls")]
    resume: bool,
}

impl TlsArgs {
    fn options(&self) -> Option<TlsOptions> {
        self.tls.then(|| TlsOptions {
            ca: self.ca.clone(),
            insecure: self.insecure,
            sni: self.sni.clone(),
            resume: self.resume,
        })
    }
}

/// A parsed `--pin` list (a newtype so clap takes it as one value, not many).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn parse_pin(s: &str) -> Result<CpuList, String> {
    parse_cpu_list(s).map(CpuList).map_err(|e| e.to_string())
}

impl LoadArgs {
    /// [`LoadArgs::settings`] for `target` as given on the command line, resolved; an
    /// address that does not resolve is reported and gives the exit code.
    fn resolved(&self, target: String) -> Result<Settings, ExitCode> {
        let Some(addr) = resolve(&target) else {
            eprintln!("sluice-load: cannot resolve {target}");
            return Err(ExitCode::from(2));
        };
        Ok(self.settings(addr, target))
    }

    fn settings(&self, target: std::net::SocketAddr, host: String) -> Settings {
        let mut s = Settings::new(target);
        s.host = host;
        s.proto = self.proto;
        s.ports = self.ports;
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
        s.tls = self.tls.options();
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
    if !write_json(&report, json) {
        return ExitCode::from(2);
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
        Some(Cmd::Fanout {
            target,
            ingest,
            path,
            topic,
            publish_rate,
            ingest_token,
            load,
        }) => {
            let (Some(addr), Some(ingest)) = (resolve(&target), resolve(&ingest)) else {
                eprintln!("sluice-load: cannot resolve {target} or {ingest}");
                return ExitCode::from(2);
            };
            let s = load.settings(addr, target);
            let opts = sluice_bench::fanout::FanoutOptions {
                ingest,
                path,
                topic,
                rate: publish_rate,
                token: ingest_token,
            };
            finish(sluice_bench::fanout::fanout(&s, &opts), load.json.as_ref())
        }
        Some(Cmd::Handshakes { target, load }) => {
            let s = match load.resolved(target) {
                Ok(s) => s,
                Err(code) => return code,
            };
            finish(sluice_bench::handshakes::handshakes(&s), load.json.as_ref())
        }
        Some(Cmd::Bulk {
            target,
            duration,
            chunk,
            json,
        }) => {
            let Some(addr) = resolve(&target) else {
                eprintln!("sluice-load: cannot resolve {target}");
                return ExitCode::from(2);
            };
            match sluice_bench::bulk::bulk(
                addr,
                std::time::Duration::from_secs_f64(duration),
                chunk,
            ) {
                Ok(r) => {
                    println!(
                        "bulk {}: {} bytes in {:.2} s = {:.3} Gbit/s",
                        r.target, r.bytes, r.seconds, r.gbit_per_s
                    );
                    if write_json(&r, json.as_ref()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("sluice-load: bulk: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Cmd::Bypass {
            target,
            iface,
            ip,
            gateway,
            queue,
            load,
        }) => {
            let s = match load.resolved(target) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let opts = sluice_bench::bypass::BypassOptions {
                iface,
                addr: ip.0,
                prefix_len: ip.1,
                gateway,
                queue,
            };
            finish(sluice_bench::bypass::run(&s, &opts), load.json.as_ref())
        }
        Some(Cmd::Reflect { iface, addr, pin }) => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop)) {
                    eprintln!("sluice-load: reflect: installing a signal handler: {e}");
                    return ExitCode::from(2);
                }
            }
            let r = sluice_bench::floor::reflect(&iface, addr, pin, &stop, || {
                println!(
                    "listening ip={} port={} app=reflect iface={iface}",
                    addr.ip(),
                    addr.port()
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
            });
            match r {
                Ok(n) => {
                    println!("reflected {n} frames");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice-load: reflect: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Cmd::Floor {
            target,
            iface,
            ip,
            dst_mac,
            load,
        }) => {
            let s = match load.resolved(target) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let opts = sluice_bench::floor::FloorOptions {
                iface,
                addr: ip,
                dst_mac,
            };
            finish(sluice_bench::floor::floor(&s, &opts), load.json.as_ref())
        }
        Some(Cmd::Sink { addr, pin, spin }) => {
            if let Some(cpu) = pin {
                let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            let r = sluice_bench::bulk::sink(addr, spin, |a| {
                println!("listening {a}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice-load: sink: {e:#}");
                    ExitCode::from(2)
                }
            }
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
