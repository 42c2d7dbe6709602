//! Per-CPU busy time from `/proc/stat`, sampled at the start and the end of a measurement,
//! so a report can show how busy each side (client cores, server cores) was. `/proc/stat`
//! is the host's view even inside a network namespace, so the generator sees the server's
//! cores too.

use serde::Serialize;

/// Cumulative jiffies of one CPU, as `/proc/stat` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// CPU number (`cpuN`).
    pub cpu: usize,
    /// User time (with `nice`).
    pub user: u64,
    /// System time.
    pub system: u64,
    /// Hard and soft interrupt time (on veth the receiver's softirq work runs on the
    /// sender's CPU).
    pub irq: u64,
    /// Idle time (with `iowait`).
    pub idle: u64,
    /// Time stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTimes {
    fn total(&self) -> u64 {
        self.user + self.system + self.irq + self.idle + self.steal
    }
}

/// How one CPU spent a measurement window, as fractions of it (0.0..=1.0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuBusy {
    /// CPU number.
    pub cpu: usize,
    /// Not idle (user + system + irq + steal).
    pub busy: f64,
    /// User time.
    pub user: f64,
    /// System time.
    pub system: f64,
    /// Hard and soft interrupts.
    pub irq: f64,
}

/// Parses the per-CPU lines of `/proc/stat` (the aggregate `cpu` line is skipped; malformed
/// lines are ignored).
pub fn parse(text: &str) -> Vec<CpuTimes> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(n) = name.strip_prefix("cpu") else {
            continue;
        };
        let Ok(cpu) = n.parse::<usize>() else {
            continue;
        };
        // user nice system idle iowait irq softirq steal [guest guest_nice] (guest time
        // is already inside user).
        let v: Vec<u64> = f.take(8).map_while(|x| x.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        out.push(CpuTimes {
            cpu,
            user: at(0) + at(1),
            system: at(2),
            idle: at(3) + at(4),
            irq: at(5) + at(6),
            steal: at(7),
        });
    }
    out
}

/// Reads `/proc/stat`; empty when it cannot be read.
pub fn sample() -> Vec<CpuTimes> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// What each CPU present in both samples did between them (a CPU with no elapsed ticks
/// reads as idle).
pub fn busy_between(before: &[CpuTimes], after: &[CpuTimes]) -> Vec<CpuBusy> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.cpu == a.cpu)?;
            let total = a.total().saturating_sub(b.total());
            let frac = |x: u64, y: u64| {
                if total == 0 {
                    0.0
                } else {
                    x.saturating_sub(y) as f64 / total as f64
                }
            };
            let idle = frac(a.idle, b.idle);
            Some(CpuBusy {
                cpu: a.cpu,
                busy: if total == 0 { 0.0 } else { 1.0 - idle },
                user: frac(a.user, b.user),
                system: frac(a.system, b.system),
                irq: frac(a.irq, b.irq),
            })
        })
        .collect()
}

/// Mean busy fraction of `cpus` (`None` when none of them was sampled).
pub fn mean_busy(busy: &[CpuBusy], cpus: &[usize]) -> Option<f64> {
    let v: Vec<f64> = busy
        .iter()
        .filter(|b| cpus.contains(&b.cpu))
        .map(|b| b.busy)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
        cpu0 5 0 5 50 0 0 0 0 0 0\n\
        cpu1 5 0 5 50 0 0 0 0 0 0\n\
        intr 12345 1 2\n";
    const AFTER: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
        cpu0 45 10 25 60 0 0 10 0 0 0\n\
        cpu1 5 0 5 150 0 0 0 0 0 0\n";

    #[test]
    fn parse_per_cpu_lines_only() {
        let t = parse(BEFORE);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].cpu, 1);
        assert_eq!(t[0].idle, 50);
    }

    #[test]
    fn busy_between_fractions_of_window() {
        let b = busy_between(&parse(BEFORE), &parse(AFTER));
        // cpu0: +50 user, +20 system, +10 idle, +10 softirq of 90 ticks.
        assert!((b[0].busy - 80.0 / 90.0).abs() < 1e-9);
        assert!((b[0].user - 50.0 / 90.0).abs() < 1e-9);
        assert!((b[0].irq - 10.0 / 90.0).abs() < 1e-9);
        assert_eq!(b[1].busy, 0.0);
        assert!((mean_busy(&b, &[0, 1]).unwrap() - 40.0 / 90.0).abs() < 1e-9);
        assert_eq!(mean_busy(&b, &[7]), None);
    }

    #[test]
    fn busy_between_no_ticks_idle() {
        let t = parse(BEFORE);
        let b = busy_between(&t, &t);
        assert!(b.iter().all(|c| c.busy == 0.0));
    }

    #[test]
    fn parse_garbage_ignored() {
        assert!(parse("cpuX 1 2 3 4\ncpu3 1 2\nnonsense").is_empty());
    }
}
