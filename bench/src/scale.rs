//! The scaling measurement of `bench/lab.sh --scale` (issue 12, "Measure and report"):
//! reads the per-round `sluice-load` reports, and summarises msgs/s per queue count for
//! each side (median and min..max over the rounds), the scaling factor against Q = 1, the
//! ratio Sluice / kernel and the CPU busy of each side's server and client cores.
//!
//! Layout read (written by lab.sh):
//! `SCALE/q<Q>/meta.txt` (`server_cores 0,1` and `client_cores 8,9` lines),
//! `SCALE/q<Q>/<side>.r<N>.json` (a `sluice-load` report) or `<side>.r<N>.error` (one line:
//! why that round did not run), and `RESULTS/waits.txt` (`<side> spin|block` lines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::cpustat::{mean_busy, CpuBusy};

/// The side under test (Sluice's workers on AF_XDP).
pub const BYPASS: &str = "sluice-afxdp";
/// The baseline side (one busy-polling kernel-socket WebSocket echo per core).
pub const KERNEL: &str = "kernel-ws-spin";
/// A blocking client whose cores are this busy is the limit of the row.
pub const CLIENT_BOUND_BUSY: f64 = 0.90;

/// One round of one side.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Round number (1-based).
    pub round: u32,
    /// Recorded replies per second, `None` when the round did not run.
    pub msgs_per_s: Option<f64>,
    /// Mean busy fraction of the server cores during the measurement.
    pub server_busy: Option<f64>,
    /// Mean busy fraction of the client cores during the measurement.
    pub client_busy: Option<f64>,
    /// Failures the client counted.
    pub errors: u64,
    /// Why the round did not run.
    pub unavailable: Option<String>,
}

/// One side at one queue count, over all its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `sluice-afxdp` or `kernel-ws-spin`.
    pub name: String,
    /// How its server waits for work: `spin` or `block`.
    pub wait: String,
    /// Every round, in order.
    pub rounds: Vec<Round>,
    /// Median msgs/s of the rounds that ran.
    pub median: Option<f64>,
    /// Smallest msgs/s of the rounds that ran.
    pub min: Option<f64>,
    /// Largest msgs/s of the rounds that ran.
    pub max: Option<f64>,
    /// Median msgs/s divided by this side's median at Q = 1.
    pub scaling: Option<f64>,
    /// Median server-core busy fraction.
    pub server_busy: Option<f64>,
    /// Median client-core busy fraction.
    pub client_busy: Option<f64>,
    /// True when the (blocking) client's cores were at least [`CLIENT_BOUND_BUSY`] busy: the
    /// figure describes the client, not the server.
    pub client_bound: bool,
    /// Failures over all rounds.
    pub errors: u64,
}

/// One queue count.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Queues = workers = kernel servers = client threads.
    pub queues: u32,
    /// Cores of the servers (worker i / kernel server i on the i-th).
    pub server_cores: Vec<usize>,
    /// Cores of the client threads.
    pub client_cores: Vec<usize>,
    /// Every side found, Sluice first.
    pub sides: Vec<Side>,
    /// Median Sluice msgs/s divided by the median kernel msgs/s.
    pub ratio: Option<f64>,
    /// `faster` or `slower` when the two min..max ranges do not overlap, else `overlap`
    /// (no claim); `-` when a side is missing.
    pub verdict: String,
}

/// The whole measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// One row per queue count, ascending.
    pub rows: Vec<Row>,
}

/// Median of `v` (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn cpu_list(s: &str) -> Vec<usize> {
    crate::settings::parse_cpu_list(s).unwrap_or_default()
}

/// Reads one round's report into a [`Round`].
pub fn round_from_report(
    round: u32,
    v: &Value,
    server_cores: &[usize],
    client_cores: &[usize],
) -> Round {
    let busy: Vec<CpuBusy> = v
        .get("cpu_busy")
        .and_then(|b| serde_json::from_value::<Vec<CpuBusyIn>>(b.clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|b| CpuBusy {
            cpu: b.cpu,
            busy: b.busy,
            user: b.user,
            system: b.system,
            irq: b.irq,
        })
        .collect();
    Round {
        round,
        msgs_per_s: v["msgs_per_s"].as_f64(),
        server_busy: mean_busy(&busy, server_cores),
        client_busy: mean_busy(&busy, client_cores),
        errors: v["error_total"].as_u64().unwrap_or(0),
        unavailable: None,
    }
}

#[derive(serde::Deserialize)]
struct CpuBusyIn {
    cpu: usize,
    busy: f64,
    user: f64,
    system: f64,
    irq: f64,
}

/// Summarises the rounds of one side; `scaling` is filled in by [`summarise`].
pub fn side(name: &str, wait: &str, client_blocks: bool, rounds: Vec<Round>) -> Side {
    let ran: Vec<f64> = rounds.iter().filter_map(|r| r.msgs_per_s).collect();
    let pick =
        |f: fn(&Round) -> Option<f64>| median(&rounds.iter().filter_map(f).collect::<Vec<_>>());
    let client_busy = pick(|r| r.client_busy);
    Side {
        name: name.to_string(),
        wait: wait.to_string(),
        median: median(&ran),
        min: ran.iter().copied().reduce(f64::min),
        max: ran.iter().copied().reduce(f64::max),
        scaling: None,
        server_busy: pick(|r| r.server_busy),
        client_busy,
        client_bound: client_blocks && client_busy.is_some_and(|b| b >= CLIENT_BOUND_BUSY),
        errors: rounds.iter().map(|r| r.errors).sum(),
        rounds,
    }
}

/// Fills in scaling factors (against each side's Q = 1 row), ratios and verdicts.
pub fn summarise(mut rows: Vec<Row>) -> ScaleReport {
    rows.sort_by_key(|r| r.queues);
    let mut base: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(first) = rows.iter().find(|r| r.queues == 1) {
        for s in &first.sides {
            if let Some(m) = s.median {
                base.insert(s.name.clone(), m);
            }
        }
    }
    for row in &mut rows {
        for s in &mut row.sides {
            s.scaling = match (s.median, base.get(&s.name)) {
                (Some(m), Some(&b)) if b > 0.0 => Some(m / b),
                _ => None,
            };
        }
        let find = |n: &str| row.sides.iter().find(|s| s.name == n);
        let (ratio, verdict) = match (find(BYPASS), find(KERNEL)) {
            (Some(a), Some(k)) => match (a.median, k.median, a.min, a.max, k.min, k.max) {
                (Some(am), Some(km), Some(amin), Some(amax), Some(kmin), Some(kmax))
                    if km > 0.0 =>
                {
                    let v = if amin > kmax {
                        "faster"
                    } else if amax < kmin {
                        "slower"
                    } else {
                        "overlap"
                    };
                    (Some(am / km), v.to_string())
                }
                _ => (None, "-".to_string()),
            },
            _ => (None, "-".to_string()),
        };
        row.ratio = ratio;
        row.verdict = verdict;
    }
    ScaleReport { rows }
}

/// Reads `RESULTS/scale` (see the module comment) and summarises it.
pub fn load(results: &Path) -> anyhow::Result<ScaleReport> {
    let waits: BTreeMap<String, String> = std::fs::read_to_string(results.join("waits.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.trim().split_once(' ')?;
            Some((a.to_string(), b.trim().to_string()))
        })
        .collect();
    let dir = results.join("scale");
    let mut rows = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let Some(q) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('q'))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let meta = std::fs::read_to_string(path.join("meta.txt")).unwrap_or_default();
        let field = |k: &str| {
            meta.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| cpu_list(v.trim())))
                .unwrap_or_default()
        };
        let (server_cores, client_cores) = (field("server_cores"), field("client_cores"));
        // side name -> rounds
        let mut found: BTreeMap<String, Vec<Round>> = BTreeMap::new();
        let mut client_blocks: BTreeMap<String, bool> = BTreeMap::new();
        for f in std::fs::read_dir(&path)? {
            let f = f?.path();
            let Some(name) = f.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e @ ("json" | "error"))) => (s.to_string(), e),
                _ => continue,
            };
            let Some((side_name, r)) = stem.rsplit_once(".r") else {
                continue;
            };
            let Ok(round) = r.parse::<u32>() else {
                continue;
            };
            let text = std::fs::read_to_string(&f)?;
            let entry = if ext == "error" {
                Round {
                    round,
                    msgs_per_s: None,
                    server_busy: None,
                    client_busy: None,
                    errors: 0,
                    unavailable: Some(text.lines().next().unwrap_or("").trim().to_string()),
                }
            } else {
                let v: Value =
                    serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?;
                client_blocks.insert(side_name.to_string(), v["client_wait"] != "spin");
                round_from_report(round, &v, &server_cores, &client_cores)
            };
            found.entry(side_name.to_string()).or_default().push(entry);
        }
        let mut sides: Vec<Side> = found
            .into_iter()
            .map(|(n, mut rounds)| {
                rounds.sort_by_key(|r| r.round);
                let wait = waits.get(&n).map_or("?", String::as_str);
                let blocks = client_blocks.get(&n).copied().unwrap_or(true);
                side(&n, wait, blocks, rounds)
            })
            .collect();
        sides.sort_by_key(|s| (s.name != BYPASS, s.name.clone()));
        rows.push(Row {
            queues: q,
            server_cores,
            client_cores,
            sides,
            ratio: None,
            verdict: "-".into(),
        });
    }
    Ok(summarise(rows))
}

fn rate(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 1e6 => format!("{:.2} M", v / 1e6),
        Some(v) => format!("{:.0} k", v / 1e3),
        None => "-".into(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn factor(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}x"))
}

/// The table printed on stdout (Markdown).
pub fn table(r: &ScaleReport) -> String {
    let mut t = String::new();
    t.push_str(
        "| Q | side | server | msgs/s median (min..max) | vs Q=1 | server cores busy | \
         client cores busy | errors | Sluice / kernel |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &r.rows {
        for (i, s) in row.sides.iter().enumerate() {
            let mut msgs = format!("{} ({}..{})", rate(s.median), rate(s.min), rate(s.max));
            let missing: Vec<&str> = s
                .rounds
                .iter()
                .filter_map(|x| x.unavailable.as_deref())
                .collect();
            if let Some(why) = missing.first() {
                let _ = write!(
                    msgs,
                    ", {} round(s) not run: {}",
                    missing.len(),
                    why.replace('|', "/")
                );
            }
            let client = format!(
                "{}{}",
                pct(s.client_busy),
                if s.client_bound {
                    " (client-bound)"
                } else {
                    ""
                }
            );
            let ratio = if i == 0 {
                format!("{} ({})", factor(row.ratio), row.verdict)
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.queues,
                s.name,
                s.wait,
                msgs,
                factor(s.scaling),
                pct(s.server_busy),
                client,
                s.errors,
                ratio
            );
        }
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn round(round: u32, m: f64) -> Round {
        Round {
            round,
            msgs_per_s: Some(m),
            server_busy: Some(1.0),
            client_busy: Some(0.5),
            errors: 0,
            unavailable: None,
        }
    }

    fn row(q: u32, a: &[f64], k: &[f64]) -> Row {
        let rounds = |v: &[f64]| {
            v.iter()
                .enumerate()
                .map(|(i, &m)| round(i as u32 + 1, m))
                .collect()
        };
        Row {
            queues: q,
            server_cores: vec![0],
            client_cores: vec![1],
            sides: vec![
                side(BYPASS, "spin", true, rounds(a)),
                side(KERNEL, "spin", true, rounds(k)),
            ],
            ratio: None,
            verdict: String::new(),
        }
    }

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summarise_scaling_against_q1_and_ratio() {
        let r = summarise(vec![
            row(2, &[4.0, 3.0, 5.0], &[2.0, 2.0, 2.0]),
            row(1, &[2.0, 2.0, 2.0], &[1.0, 1.0, 1.0]),
        ]);
        assert_eq!(r.rows[0].queues, 1);
        let q2 = &r.rows[1];
        assert_eq!(q2.sides[0].scaling, Some(2.0));
        assert_eq!(q2.sides[1].scaling, Some(2.0));
        assert_eq!(q2.ratio, Some(2.0));
        assert_eq!(q2.verdict, "faster");
        assert_eq!(q2.sides[0].min, Some(3.0));
        assert_eq!(q2.sides[0].max, Some(5.0));
    }

    #[test]
    fn summarise_overlapping_ranges_no_claim() {
        let r = summarise(vec![row(1, &[1.0, 1.2, 0.9], &[1.1, 1.0, 1.3])]);
        assert_eq!(r.rows[0].verdict, "overlap");
        let r = summarise(vec![row(1, &[1.0, 1.1, 0.9], &[2.0, 2.1, 1.9])]);
        assert_eq!(r.rows[0].verdict, "slower");
    }

    #[test]
    fn side_busy_client_marked_client_bound() {
        let mut rounds = vec![round(1, 1.0)];
        rounds[0].client_busy = Some(0.95);
        assert!(side(KERNEL, "spin", true, rounds.clone()).client_bound);
        // A spinning client is always busy: the rule does not apply.
        assert!(!side(KERNEL, "spin", false, rounds).client_bound);
    }

    #[test]
    fn round_from_report_busy_of_each_side() {
        let v: Value = serde_json::json!({
            "msgs_per_s": 1000.0,
            "error_total": 2,
            "cpu_busy": [
                {"cpu": 0, "busy": 1.0, "user": 1.0, "system": 0.0, "irq": 0.0},
                {"cpu": 1, "busy": 0.5, "user": 0.2, "system": 0.2, "irq": 0.1},
                {"cpu": 2, "busy": 0.7, "user": 0.2, "system": 0.2, "irq": 0.3}
            ]
        });
        let r = round_from_report(1, &v, &[0], &[1, 2]);
        assert_eq!(r.msgs_per_s, Some(1000.0));
        assert_eq!(r.server_busy, Some(1.0));
        assert!((r.client_busy.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(r.errors, 2);
    }

    #[test]
    fn load_reads_lab_layout() {
        let dir = std::env::temp_dir().join(format!("sluice-scale-test-{}", std::process::id()));
        let q1 = dir.join("scale/q1");
        std::fs::create_dir_all(&q1).unwrap();
        std::fs::write(
            dir.join("waits.txt"),
            "sluice-afxdp spin\nkernel-ws-spin spin\n",
        )
        .unwrap();
        std::fs::write(q1.join("meta.txt"), "server_cores 0\nclient_cores 1\n").unwrap();
        for (i, (a, k)) in [(10.0, 8.0), (11.0, 9.0), (12.0, 7.0)].iter().enumerate() {
            let rep = |m: f64| {
                serde_json::json!({"msgs_per_s": m, "error_total": 0, "client_wait": "blocking",
                    "cpu_busy": [{"cpu": 1, "busy": 0.95, "user": 0.5, "system": 0.4, "irq": 0.05}]})
                .to_string()
            };
            std::fs::write(q1.join(format!("sluice-afxdp.r{}.json", i + 1)), rep(*a)).unwrap();
            std::fs::write(q1.join(format!("kernel-ws-spin.r{}.json", i + 1)), rep(*k)).unwrap();
        }
        std::fs::write(q1.join("sluice-afxdp.r4.error"), "no AF_XDP\n").unwrap();
        let r = load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let row = &r.rows[0];
        assert_eq!(row.sides[0].name, BYPASS);
        assert_eq!(row.sides[0].rounds.len(), 4);
        assert_eq!(row.sides[0].median, Some(11.0));
        assert_eq!(row.sides[0].wait, "spin");
        assert!(row.sides[0].client_bound);
        assert_eq!(row.verdict, "faster");
        let t = table(&r);
        assert!(t.contains("1 round(s) not run: no AF_XDP"), "{t}");
        assert!(t.contains("client-bound"), "{t}");
    }
}
