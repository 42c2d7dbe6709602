//! Root lab tests for `deploy/lab.sh`: labs are independent, and `down` leaves nothing.
//!
//! These need root (network namespaces), so plain `cargo test` ignores them;
//! `deploy/test.sh` (the README's test command, CI) runs them with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab.sh")
}

fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "slt{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn lab(args: &[&str]) -> Output {
    run(Command::new("bash").arg(lab_script()).args(args))
}

fn netns_list() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A lab that is always torn down, even when the test panics.
struct Lab {
    prefix: String,
}

impl Lab {
    fn up(queues: u32) -> (Lab, String) {
        let prefix = unique_prefix();
        let q = queues.to_string();
        let out = lab(&["up", "--prefix", &prefix, "--queues", &q]);
        let lab = Lab { prefix };
        assert!(
            out.status.success(),
            "lab.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (lab, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn exec(&self, side: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", "--prefix", &self.prefix, side];
        args.extend_from_slice(cmd);
        lab(&args)
    }

    fn ns(&self, side: &str) -> String {
        format!("{}-{}", self.prefix, side)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab(&["down", "--prefix", &self.prefix]);
    }
}

fn value<'a>(env: &'a str, key: &str) -> &'a str {
    env.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("lab.sh up printed no {key}: {env}"))
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_two_prefixes_independent_and_down_leaves_nothing() {
    let (a, env_a) = Lab::up(2);
    let (b, env_b) = Lab::up(1);
    let names = netns_list();
    for ns in [a.ns("stack"), a.ns("peer"), b.ns("stack"), b.ns("peer")] {
        assert!(names.contains(&ns), "namespace {ns} missing in {names:?}");
    }
    assert_eq!(value(&env_a, "QUEUES"), "2");
    assert_eq!(value(&env_b, "QUEUES"), "1");
    assert_eq!(value(&env_a, "PEER_IP"), "198.18.0.1");

    // The peer side has its address, offloads off; the stack side has no kernel address.
    let addrs = a.exec(
        "peer",
        &[
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            value(&env_a, "PEER_IF"),
        ],
    );
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("198.18.0.1/24"));
    let stack_addrs = a.exec(
        "stack",
        &[
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "dev",
            value(&env_a, "STACK_IF"),
        ],
    );
    assert!(stack_addrs.status.success());
    assert!(String::from_utf8_lossy(&stack_addrs.stdout)
        .trim()
        .is_empty());
    let offloads = a.exec("peer", &["ethtool", "-k", value(&env_a, "PEER_IF")]);
    let offloads = String::from_utf8_lossy(&offloads.stdout);
    for feature in [
        "tcp-segmentation-offload: off",
        "tx-checksumming: off",
        "generic-segmentation-offload: off",
    ] {
        assert!(offloads.contains(feature), "{feature} not set: {offloads}");
    }

    // Independence: give lab A's stack side a kernel address; A's peer reaches it, B's
    // peer (same addresses, other namespaces) does not.
    let stack_if = value(&env_a, "STACK_IF");
    assert!(a
        .exec(
            "stack",
            &["ip", "addr", "add", "198.18.0.2/24", "dev", stack_if]
        )
        .status
        .success());
    let ping_a = a.exec("peer", &["ping", "-c", "1", "-W", "2", "198.18.0.2"]);
    assert!(
        ping_a.status.success(),
        "lab A peer cannot reach its stack side"
    );
    let ping_b = b.exec("peer", &["ping", "-c", "1", "-W", "1", "198.18.0.2"]);
    assert!(
        !ping_b.status.success(),
        "lab B reached lab A: labs are not independent"
    );

    // A second `up` with a prefix in use fails and leaves the existing lab intact.
    let again = lab(&["up", "--prefix", &a.prefix]);
    assert!(!again.status.success());
    assert!(netns_list().contains(&a.ns("stack")));

    // `down` removes every namespace (and with them the veths); running it twice is fine.
    for l in [&a, &b] {
        assert!(lab(&["down", "--prefix", &l.prefix]).status.success());
        assert!(lab(&["down", "--prefix", &l.prefix]).status.success());
    }
    let names = netns_list();
    for ns in [a.ns("stack"), a.ns("peer"), b.ns("stack"), b.ns("peer")] {
        assert!(!names.contains(&ns), "namespace {ns} left behind");
    }
    let links = run(Command::new("ip").args(["-o", "link", "show"]));
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!("{}-", a.prefix)),
        "veth of lab A left in the host namespace"
    );
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn lab_up_rejects_bad_prefix_and_queue_count() {
    let out = lab(&["up", "--prefix", "this-prefix-is-far-too-long"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefix"));
    let prefix = unique_prefix();
    let out = lab(&["up", "--prefix", &prefix, "--queues", "0"]);
    assert!(!out.status.success());
    assert!(!netns_list().iter().any(|n| n.starts_with(&prefix)));
}
