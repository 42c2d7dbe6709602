//! A network-namespace lab for root tests (built on `deploy/lab.sh`) and a `sluice` child
//! running in its stack namespace. Both clean up in `Drop`, so a failing assertion still
//! removes the namespaces and kills the process.
//!
//! Include with `#[path = "common/lab.rs"] mod lab;`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The stack's address in every lab.
pub const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The peer's address in every lab.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Lab tests share two vCPUs with a busy-polling stack: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab.sh")
}

fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sla{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn lab(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(lab_script())
        .args(args)
        .output()
        .expect("spawn lab.sh")
}

/// A lab, torn down on drop.
#[derive(Debug)]
pub struct Lab {
    /// The prefix naming everything of this lab.
    pub prefix: String,
    /// The stack's namespace.
    pub stack_ns: String,
    /// The peer's namespace.
    pub peer_ns: String,
    /// The stack side's interface (no kernel address).
    pub stack_if: String,
    /// The peer side's interface.
    pub peer_if: String,
    /// The stack side's MAC, as `ip link` prints it.
    pub stack_mac: String,
    /// Receive queues of the stack side.
    pub queues: u32,
    /// `sluice run --backend` of [`Lab::sluice`]: `afxdp` ([`Lab::up`]) or `dpdk`
    /// ([`Lab::up_dpdk`]: DPDK's `net_af_packet` on the stack's veth, no hugepages or PCI).
    pub backend: &'static str,
}

impl Lab {
    /// Runs `f` on a fresh thread inside the stack namespace (where the control plane
    /// listens on loopback) and returns its result.
    pub fn in_stack<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.stack_ns.clone();
        std::thread::spawn(move || {
            dataplane::sys::enter_netns(&ns).expect("enter the stack namespace");
            f()
        })
        .join()
        .expect("stack-namespace thread panicked")
    }

    /// Creates a lab with `queues` queues per veth end.
    pub fn up(queues: u32) -> Lab {
        let prefix = unique_prefix();
        let q = queues.to_string();
        let out = lab(&["up", "--prefix", &prefix, "--queues", &q]);
        // Build the guard first so a half-made lab is still removed.
        let mut lab = Lab {
            prefix,
            stack_ns: String::new(),
            peer_ns: String::new(),
            stack_if: String::new(),
            peer_if: String::new(),
            stack_mac: String::new(),
            queues,
            backend: "afxdp",
        };
        assert!(
            out.status.success(),
            "lab.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| -> String {
            env.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("lab.sh up printed no {key}: {env}"))
                .to_string()
        };
        lab.stack_ns = value("STACK_NS");
        lab.peer_ns = value("PEER_NS");
        lab.stack_if = value("STACK_IF");
        lab.peer_if = value("PEER_IF");
        lab.stack_mac = value("STACK_MAC");
        assert_eq!(value("STACK_IP"), STACK_IP.to_string());
        assert_eq!(value("PEER_IP"), PEER_IP.to_string());
        lab
    }

    /// [`Lab::up`] for the DPDK backend: [`Lab::sluice`] then runs `--backend dpdk` on a
    /// `net_af_packet` port over the stack's veth (`queues` queue pairs, a fan-out of packet
    /// sockets; pass `--queues N` to use them all), with EAL arguments for a machine without
    /// hugepages or PCI devices.
    pub fn up_dpdk(queues: u32) -> Lab {
        let mut lab = Lab::up(queues);
        lab.backend = "dpdk";
        lab
    }

    /// `--backend ...` and the backend's port arguments for this lab.
    pub fn backend_args(&self) -> Vec<String> {
        if self.backend == "dpdk" {
            vec![
                "--backend".into(),
                "dpdk".into(),
                "--dpdk-port".into(),
                format!(
                    "net_af_packet0,iface={},qpairs={}",
                    self.stack_if, self.queues
                ),
                "--eal-args".into(),
                "--no-huge --no-shconf --no-pci -m 512 --log-level=*:warning".into(),
            ]
        } else {
            vec![
                "--backend".into(),
                "afxdp".into(),
                "--iface".into(),
                self.stack_if.clone(),
            ]
        }
    }

    /// Runs `cmd` in the peer namespace.
    pub fn peer(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.peer_ns])
            .args(cmd)
            .output()
            .expect("spawn ip netns exec")
    }

    /// Runs `cmd` in the peer namespace and returns its stdout; panics when it fails.
    pub fn peer_ok(&self, cmd: &[&str]) -> String {
        let out = self.peer(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread inside the peer namespace (kernel sockets there).
    pub fn in_peer<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in_peer(f).join().expect("peer thread panicked")
    }

    /// Starts `f` on a thread inside the peer namespace.
    pub fn spawn_in_peer<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.peer_ns.clone();
        std::thread::spawn(move || {
            dataplane::sys::enter_netns(&ns).expect("enter the peer namespace");
            f()
        })
    }

    /// Starts `sluice run --backend afxdp` (or `dpdk`, see [`Lab::up_dpdk`]) in the stack
    /// namespace on this lab's interface
    /// and waits for its `listening` line.
    pub fn sluice(&self, app: &str, ports: &[u16], extra: &[&str]) -> Sluice {
        self.sluice_bin_with_env(env!("CARGO_BIN_EXE_sluice"), app, ports, extra, &[])
    }

    /// [`Lab::sluice`] with another `sluice` binary (e.g. the release build).
    pub fn sluice_bin(&self, bin: &str, app: &str, ports: &[u16], extra: &[&str]) -> Sluice {
        self.sluice_bin_with_env(bin, app, ports, extra, &[])
    }

    /// [`Lab::sluice`] with `env` (`NAME=VALUE` items) added to sluice's environment.
    pub fn sluice_with_env(
        &self,
        app: &str,
        ports: &[u16],
        extra: &[&str],
        env: &[&str],
    ) -> Sluice {
        self.sluice_bin_with_env(env!("CARGO_BIN_EXE_sluice"), app, ports, extra, env)
    }

    /// [`Lab::sluice_bin`] with `env` (`NAME=VALUE` items) added to sluice's environment.
    pub fn sluice_bin_with_env(
        &self,
        bin: &str,
        app: &str,
        ports: &[u16],
        extra: &[&str],
        env: &[&str],
    ) -> Sluice {
        // `env` execs sluice, so the child's pid is still sluice's.
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.stack_ns.clone(),
            "env".into(),
        ];
        args.extend(env.iter().map(|s| s.to_string()));
        args.extend([bin.into(), "run".into()]);
        args.extend(self.backend_args());
        args.extend([
            "--ip".into(),
            format!("{STACK_IP}/24"),
            "--app".into(),
            app.into(),
            "--log-level".into(),
            "info".into(),
        ]);
        for p in ports {
            args.push("--port".into());
            args.push(p.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Sluice::spawn(&args)
    }

    /// Connects from the peer namespace to the stack (a blocking kernel socket).
    pub fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        self.in_peer(move || {
            TcpStream::connect_timeout(
                &SocketAddrV4::new(STACK_IP, port).into(),
                Duration::from_secs(5),
            )
        })
    }

    /// A kernel listener in the peer namespace.
    pub fn listen(&self, port: u16) -> TcpListener {
        self.in_peer(move || TcpListener::bind(SocketAddrV4::new(PEER_IP, port)).expect("bind"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab(&["down", "--prefix", &self.prefix]);
    }
}

/// A running `sluice` child; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Sluice {
    /// The child (`ip netns exec` execs into `sluice`, so this is sluice's pid).
    pub child: Child,
    /// The `listening` line it printed.
    pub listening: String,
    /// Where its stderr goes (removed on drop).
    pub log: PathBuf,
}

impl Sluice {
    /// Spawns `ip ARGS` and waits (up to 60 s) for a `listening` line on stdout.
    pub fn spawn(args: &[String]) -> Sluice {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "sluice-afxdp-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let mut child = Command::new("ip")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        let mut sluice = Sluice {
            child,
            listening: String::new(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("listening") => sluice.listening = line,
            other => panic!(
                "sluice printed no listening line: {other:?}; log: {}",
                sluice.log_text()
            ),
        }
        sluice
    }

    /// What it logged so far (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait for a clean exit, and return the log.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(20));
        let log = self.log_text();
        assert!(
            status.is_some_and(|s| s.success()),
            "sluice did not stop cleanly ({status:?}): {log}"
        );
        log
    }

    /// The sum of `key=N` over the log's lines (e.g. `retransmits` over the workers).
    pub fn log_sum(log: &str, key: &str) -> u64 {
        // Drop ANSI colour sequences (ESC [ ... m) first.
        let mut plain = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .filter_map(|v| v.trim_end_matches(',').parse::<u64>().ok())
            .sum()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
