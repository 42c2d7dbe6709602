//! Shared helpers for the binary's integration tests: start `sluice` on a free loopback
//! port and always kill it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `sluice run --backend kernel` child; killed on drop.
pub struct Server {
    child: Child,
    /// The port it listens on (picked by the kernel: `--port 0`; the first one when
    /// `extra` adds more).
    pub port: u16,
}

impl Server {
    /// Starts `--app APP` on 127.0.0.1 with a free port plus `extra` arguments and waits
    /// for its `listening` line.
    pub fn start(app: &str, extra: &[&str]) -> Server {
        Server::start_bin(Path::new(env!("CARGO_BIN_EXE_sluice")), app, extra)
    }

    /// [`Server::start`] with another `sluice` binary (e.g. the release build).
    pub fn start_bin(bin: &Path, app: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(bin)
            .args([
                "run",
                "--backend",
                "kernel",
                "--ip",
                "127.0.0.1",
                "--port",
                "0",
                "--app",
                app,
            ])
            .args(extra)
            .args(["--log-level", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("sluice printed no listening line within 60 s")
            });
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .and_then(|p| p.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("no listening line from sluice: {line:?}")
            });
        Server { child, port }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `program --version`-style probing finds the program.
pub fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
