//! Root lab tests of `deploy/tune-nic.sh` on a veth in a fresh lab namespace: queue count
//! (veth has rx/tx channels, no combined ones), GRO off, idempotence, `--dry-run` changing
//! nothing, IRQ affinity (against a scratch /proc copy: a veth has no IRQs), the XDP report
//! while `sluice` is attached, and one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lab::Lab;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tune-nic.sh")
}

/// Runs `tune-nic.sh ARGS` in `ns` with extra environment variables.
fn tune_env(ns: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "bash"])
        .arg(script())
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn tune-nic.sh")
}

fn tune(ns: &str, args: &[&str]) -> Output {
    tune_env(ns, args, &[])
}

/// stdout of a run that must succeed.
fn tune_ok(ns: &str, args: &[&str]) -> String {
    let out = tune(ns, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tune-nic {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `cmd` in the stack namespace and returns its stdout.
fn in_ns(ns: &str, cmd: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Current (rx, tx) channel counts from `ethtool -l`.
fn channels(lab: &Lab) -> (u32, u32) {
    let out = in_ns(&lab.stack_ns, &["ethtool", "-l", &lab.stack_if]);
    let current = out
        .split("Current hardware settings:")
        .nth(1)
        .expect("no current settings");
    let field = |name: &str| -> u32 {
        current
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    (field("RX:"), field("TX:"))
}

fn gro(lab: &Lab) -> String {
    let out = in_ns(&lab.stack_ns, &["ethtool", "-k", &lab.stack_if]);
    out.lines()
        .find_map(|l| l.strip_prefix("generic-receive-offload: "))
        .unwrap()
        .to_string()
}

/// The whole stderr is one `tune-nic: ...` line and the exit status is 1.
fn assert_one_line_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: {stderr}");
    assert!(lines[0].starts_with("tune-nic: "), "{what}: {stderr}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn tune_nic_veth_queues_and_gro_set_dry_run_changes_nothing_second_run_idempotent() {
    let lab = Lab::up(4);
    let (ns, ifc) = (lab.stack_ns.as_str(), lab.stack_if.as_str());
    in_ns(ns, &["ethtool", "-K", ifc, "gro", "on"]);
    assert_eq!(channels(&lab), (4, 4));
    assert_eq!(gro(&lab), "on");

    let dry = tune_ok(ns, &[ifc, "--queues", "2", "--dry-run"]);
    assert!(
        dry.contains(&format!("would run: ethtool -L {ifc} rx 2 tx 2")),
        "{dry}"
    );
    assert!(
        dry.contains(&format!(
            "would run: ethtool -K {ifc} generic-receive-offload off"
        )),
        "{dry}"
    );
    assert!(dry.contains("dry run, 2 change(s) would be made"), "{dry}");
    assert!(dry.contains("xdp: none attached"), "{dry}");
    assert_eq!(channels(&lab), (4, 4), "--dry-run changed the queues");
    assert_eq!(gro(&lab), "on", "--dry-run changed GRO");

    let run = tune_ok(ns, &[ifc, "--queues", "2"]);
    assert!(run.contains("done, 2 change(s) made"), "{run}");
    assert_eq!(channels(&lab), (2, 2));
    assert_eq!(gro(&lab), "off");
    // veth reports no RSS table: said so, not an error.
    assert!(run.contains("rss: not reported by driver veth"), "{run}");
    assert!(run.contains("irq: none found"), "{run}");

    let again = tune_ok(ns, &[ifc, "--queues", "2"]);
    assert!(again.contains("done, 0 change(s) made"), "{again}");
    assert!(again.contains("queues: already rx=2 tx=2"), "{again}");
    assert!(
        again.contains("offload: generic-receive-offload already off"),
        "{again}"
    );
    assert_eq!(channels(&lab), (2, 2));
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn tune_nic_irqs_moved_off_worker_cores_dry_run_leaves_them() {
    let lab = Lab::up(1);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    // "0-1" or "0,2-3": the last online core becomes the worker core.
    let mut cores: Vec<u32> = Vec::new();
    for item in online.trim().split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        cores.extend(lo.parse::<u32>().unwrap()..=hi.parse::<u32>().unwrap());
    }
    assert!(cores.len() >= 2, "needs two online cores: {online}");
    let worker = cores.pop().unwrap().to_string();
    let rest = cores
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");

    // A scratch /proc: two IRQs named after the interface, one matched by --irq-match, one
    // foreign; each starts on every core.
    let proc_dir = std::env::temp_dir().join(format!("sluice-tune-nic-{}", lab.prefix));
    let ifc = lab.stack_if.as_str();
    let all = online.trim();
    let mut interrupts = String::from("           CPU0       CPU1\n");
    for (irq, name) in [
        (90, format!("{ifc}-TxRx-0")),
        (91, format!("ice-{ifc}-TxRx-1")),
        (92, "mlx5_comp0@pci:0000:00:09.0".to_string()),
        (93, "virtio9-input.0".to_string()),
        // Another interface whose name starts with this one's.
        (94, format!("{ifc}0-TxRx-0")),
    ] {
        interrupts.push_str(&format!(
            " {irq}:   1   2  PCI-MSIX-0000:00:09.0  0-edge  {name}\n"
        ));
        std::fs::create_dir_all(proc_dir.join(format!("irq/{irq}"))).unwrap();
        std::fs::write(
            proc_dir.join(format!("irq/{irq}/smp_affinity_list")),
            format!("{all}\n"),
        )
        .unwrap();
    }
    interrupts.push_str("NMI:   0   0   Non-maskable interrupts\n");
    std::fs::write(proc_dir.join("interrupts"), interrupts).unwrap();
    let affinity = |irq: u32| {
        std::fs::read_to_string(proc_dir.join(format!("irq/{irq}/smp_affinity_list")))
            .unwrap()
            .trim()
            .to_string()
    };
    let env = [("TUNE_NIC_PROC", proc_dir.as_path())];
    let args = [ifc, "--cores", &worker, "--irq-match", "^mlx5_comp"];

    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = tune_env(&lab.stack_ns, &dry_args, &env);
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry.status.success(), "{dry:?}");
    for irq in [90, 91, 92] {
        assert!(
            dry_out.contains(&format!("irq: {irq} ")) && dry_out.contains(&format!("-> {rest}")),
            "{dry_out}"
        );
        assert_eq!(affinity(irq), all, "--dry-run moved IRQ {irq}");
    }

    let run = tune_env(&lab.stack_ns, &args, &env);
    let run_out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{run:?}");
    for irq in [90, 91, 92] {
        assert_eq!(affinity(irq), rest, "IRQ {irq}: {run_out}");
    }
    for irq in [93, 94] {
        assert_eq!(affinity(irq), all, "a foreign IRQ was moved: {run_out}");
        assert!(!run_out.contains(&format!("irq: {irq}")), "{run_out}");
    }

    let again = tune_env(&lab.stack_ns, &args, &env);
    let again_out = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{again:?}");
    assert!(
        again_out.contains(&format!("irq: 90 {ifc}-TxRx-0 already on cores {rest}")),
        "{again_out}"
    );
    let _ = std::fs::remove_dir_all(&proc_dir);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn tune_nic_reports_the_xdp_program_sluice_attached() {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let ifc = lab.stack_if.clone();
    let before = tune_ok(&lab.stack_ns, &[&ifc, "--dry-run"]);
    assert!(before.contains("xdp: none attached"), "{before}");

    let sluice = lab.sluice("tcp-echo", &[7], &[]);
    let during = tune_ok(&lab.stack_ns, &[&ifc, "--dry-run"]);
    let line = during
        .lines()
        .find(|l| l.starts_with("xdp: attached"))
        .unwrap_or_else(|| panic!("no attached XDP program reported: {during}"));
    assert!(line.contains(" id "), "{line}");
    // The mode matches what sluice's `listening` line says (xdp=native|generic).
    let want = if sluice.listening.contains("xdp=generic") {
        "mode=xdpgeneric"
    } else {
        "mode=xdp "
    };
    assert!(line.contains(want), "{line} vs {}", sluice.listening);
    sluice.stop();

    let after = tune_ok(&lab.stack_ns, &[&ifc, "--dry-run"]);
    assert!(after.contains("xdp: none attached"), "{after}");
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn tune_nic_errors_one_line_nonzero_exit() {
    let lab = Lab::up(4);
    let ns = lab.stack_ns.as_str();
    let ifc = lab.stack_if.as_str();

    let out = tune(ns, &["nosuchif0"]);
    assert_one_line_error(&out, "no such interface");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such interface 'nosuchif0'"));

    let out = tune(ns, &[ifc, "--queues", "9"]);
    assert_one_line_error(&out, "too many queues");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds the driver's maximum"));
    assert_eq!(channels(&lab), (4, 4));

    // The loopback device has no channels at all.
    let out = tune(ns, &["lo", "--queues", "2"]);
    assert_one_line_error(&out, "no ethtool -L");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support changing the queue"));

    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let out = tune(ns, &[ifc, "--cores", online.trim()]);
    assert_one_line_error(&out, "every core a worker core");
    assert!(String::from_utf8_lossy(&out.stderr).contains("leave at least one core"));

    let out = tune(ns, &[ifc, "--queues", "0"]);
    assert_one_line_error(&out, "zero queues");

    // Not root: refused before anything is read or changed.
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "bash",
        ])
        .arg(script())
        .args([ifc, "--queues", "2"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "not root");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
    assert_eq!(channels(&lab), (4, 4));
}
