//! `lab-report RESULTS_DIR`: turns the JSON results of `bench/lab.sh` into tables (one per
//! scenario, each target's percentiles, msgs/s and the ratio to the best kernel-socket
//! server), an SVG percentile plot, and the `<!-- lab:begin -->`..`<!-- lab:end -->`
//! section of `docs/BENCHMARKS.md` (hand-written prose outside the markers stays).
//!
//! Layout read: `RESULTS/machine.txt`, `RESULTS/<scenario>/title.txt`,
//! `RESULTS/<scenario>/<target>[.r<N>].json` (a `sluice-load` report, or a `bulk` report,
//! one per round N) and `RESULTS/<scenario>/<target>[.r<N>].error` (the target was not
//! available: one line why). Scenario and target files are read in name order (lab.sh
//! prefixes them); the rounds of one target make one row: the median of each figure with
//! its range (min..max over the rounds).
//!
//! Honest ratios (issue 13): each is the ratio of medians to the best kernel-socket
//! target's; it is marked `~` when the two targets' ranges overlap (inside the
//! run-to-run spread: not a difference). A row whose blocking client's core was 90 % busy
//! or more, or whose msgs/s is within 10 % of the load generator's own ceiling in the same
//! table, is labelled client-bound: its msgs/s is a floor for the server, and its ratio
//! is not a win.
//! `RESULTS/waits.txt` (`<target> spin|block` lines) says how each target's server waits
//! for work; every table shows it.
//!
//! `lab-report --scale RESULTS` summarises `bench/lab.sh --scale` instead (see
//! `sluice_bench::scale`): a table on stdout and `RESULTS/scale.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use plotters::prelude::*;
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    name = "lab-report",
    about = "Tables, plot and BENCHMARKS.md section from bench/lab.sh results"
)]
struct Cli {
    /// The results directory written by bench/lab.sh.
    results: PathBuf,
    /// Markdown file whose lab section is regenerated.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// SVG percentile plot to write.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// How the doc refers to the SVG (relative link).
    #[arg(long, default_value = "bench-lab.svg")]
    svg_link: String,
    /// Summarise `bench/lab.sh --scale` results (RESULTS/scale) instead: a table on stdout
    /// and RESULTS/scale.json.
    #[arg(long, conflicts_with_all = ["doc", "svg"])]
    scale: bool,
}

/// Plot colours follow this order.
const KNOWN: [&str; 9] = [
    "sluice-afxdp",
    "sluice-kernel",
    "ref-tungstenite",
    "ref-fastwebsockets",
    "ref-tcp-echo",
    "load-generator-ceiling",
    "ref-ws-echo-spin",
    "ref-tcp-echo-spin",
    "sluice-dpdk",
];

const BEGIN: &str = "<!-- lab:begin -->";
const END: &str = "<!-- lab:end -->";

#[derive(Debug)]
enum Outcome {
    Load(Value),
    Bulk(Value),
    Unavailable(String),
}

#[derive(Debug)]
struct Target {
    name: String,
    /// How its server waits for work: `spin`, `block` or `-` (the generator's ceiling row
    /// is labelled by its responder).
    wait: String,
    /// One per round, in round order.
    runs: Vec<Outcome>,
}

impl Target {
    /// The load reports of the rounds that ran.
    fn loads(&self) -> Vec<&Value> {
        self.runs
            .iter()
            .filter_map(|o| match o {
                Outcome::Load(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// The bulk reports of the rounds that ran.
    fn bulks(&self) -> Vec<&Value> {
        self.runs
            .iter()
            .filter_map(|o| match o {
                Outcome::Bulk(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// Why it did not run (the first round's reason), when no round ran.
    fn unavailable(&self) -> Option<&str> {
        if self.loads().is_empty() && self.bulks().is_empty() {
            self.runs.iter().find_map(|o| match o {
                Outcome::Unavailable(e) => Some(e.as_str()),
                _ => None,
            })
        } else {
            None
        }
    }

    /// The round whose p50 is the median one (for the plot).
    fn representative(&self) -> Option<&Value> {
        let mut loads = self.loads();
        loads.sort_by(|a, b| num(&a["latency_us"]["p50"]).total_cmp(&num(&b["latency_us"]["p50"])));
        loads.get(loads.len() / 2).copied()
    }
}

/// A figure over the rounds: median and range.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `median (min..max)`, or the median alone for one round.
    fn cell(&self, f: impl Fn(f64) -> String) -> String {
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} ({}..{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// Median busy share (%) of the cores a report's client was pinned to.
fn client_busy(v: &Value) -> f64 {
    let pins: Vec<u64> = v["settings"]["pin"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let busy: Vec<f64> = v["cpu_busy"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["cpu"].as_u64().is_some_and(|cpu| pins.contains(&cpu)))
                .map(|c| num(&c["busy"]) * 100.0)
                .collect()
        })
        .unwrap_or_default();
    if busy.is_empty() {
        f64::NAN
    } else {
        busy.iter().sum::<f64>() / busy.len() as f64
    }
}

/// `RESULTS/waits.txt`: target (display name) -> `spin` or `block`.
fn waits(results: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(results.join("waits.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.trim().split_once(' ')?;
            Some((a.to_string(), b.trim().to_string()))
        })
        .collect()
}

#[derive(Debug)]
struct Scenario {
    title: String,
    targets: Vec<Target>,
}

/// A target counts as a kernel-socket server unless it bypasses the kernel (AF_XDP, DPDK;
/// the load generator's own ceiling is a reference row, not a server).
fn is_kernel(name: &str) -> bool {
    !name.contains("afxdp") && !name.contains("dpdk") && !name.contains("ceiling")
}

/// `1-sluice-afxdp.r2` -> `1-sluice-afxdp` (lab.sh names a round's file `<target>.r<N>`).
fn without_round(stem: &str) -> &str {
    match stem.rsplit_once(".r") {
        Some((base, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => base,
        _ => stem,
    }
}

fn display_name(file_stem: &str) -> String {
    // lab.sh prefixes names with an order number: "1-sluice-afxdp".
    match file_stem.split_once('-') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest.to_string(),
        _ => file_stem.to_string(),
    }
}

fn load(results: &Path) -> anyhow::Result<Vec<Scenario>> {
    let waits = waits(results);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .with_context(|| format!("reading {}", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let id = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let title = std::fs::read_to_string(dir.join("title.txt"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| id.clone());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "error")
                )
            })
            .collect();
        files.sort();
        let mut targets: Vec<Target> = Vec::new();
        for f in files {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&f)?;
            let outcome = if f.extension().and_then(|e| e.to_str()) == Some("error") {
                Outcome::Unavailable(text.lines().next().unwrap_or("").trim().to_string())
            } else {
                let v: Value =
                    serde_json::from_str(&text).with_context(|| format!("{}", f.display()))?;
                if v["kind"] == "bulk" {
                    Outcome::Bulk(v)
                } else {
                    Outcome::Load(v)
                }
            };
            let name = display_name(without_round(&stem));
            match targets.iter_mut().find(|t| t.name == name) {
                Some(t) => t.runs.push(outcome),
                None => targets.push(Target {
                    wait: waits.get(&name).cloned().unwrap_or_else(|| "?".into()),
                    name,
                    runs: vec![outcome],
                }),
            }
        }
        if !targets.is_empty() {
            out.push(Scenario { title, targets });
        }
    }
    Ok(out)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        let s = format!("{x:.0}");
        // Thousands separators for readability.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn ratio(x: f64, best: Option<f64>) -> String {
    match best {
        Some(b) if b > 0.0 && x.is_finite() => format!("{:.2}x", x / b),
        _ => "-".into(),
    }
}

/// A ratio of medians, marked `~` when the ranges overlap the best kernel target's.
fn ratio_marked(x: &Spread, best: Option<&Spread>) -> String {
    match best {
        Some(b) => {
            let r = ratio(x.median, Some(b.median));
            let itself = x.median == b.median && x.min == b.min && x.max == b.max;
            if r != "-" && !itself && x.overlaps(b) {
                format!("{r} ~")
            } else {
                r
            }
        }
        None => "-".into(),
    }
}

/// The kernel-socket target with the best median (`higher`: larger is better).
fn best_kernel<'a>(rows: &'a [(&Target, Option<Spread>)], higher: bool) -> Option<&'a Spread> {
    rows.iter()
        .filter(|(t, _)| is_kernel(&t.name))
        .filter_map(|(_, s)| s.as_ref())
        .fold(None, |best: Option<&Spread>, s| match best {
            Some(b) if (higher && b.median >= s.median) || (!higher && b.median <= s.median) => {
                Some(b)
            }
            _ => Some(s),
        })
}

fn table(s: &Scenario) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "### {}\n", s.title);
    let bulk = s.targets.iter().any(|x| !x.bulks().is_empty());
    if bulk {
        let rows: Vec<(&Target, Option<Spread>)> = s
            .targets
            .iter()
            .map(|x| {
                let g = Spread::of(x.bulks().iter().map(|v| num(&v["gbit_per_s"])));
                (x, g)
            })
            .collect();
        let best = best_kernel(&rows, true);
        t.push_str(
            "| target | server | rounds | Gbit/s | vs best kernel |\n|---|---|---:|---:|---:|\n",
        );
        for (x, g) in &rows {
            match (g, x.unavailable()) {
                (Some(g), _) => {
                    let _ = writeln!(
                        t,
                        "| {} | {} | {} | {} | {} |",
                        x.name,
                        x.wait,
                        x.bulks().len(),
                        g.cell(|v| format!("{v:.2}")),
                        ratio_marked(g, best)
                    );
                }
                (None, reason) => {
                    let _ = writeln!(
                        t,
                        "| {} | {} | 0 | not available ({}) | |",
                        x.name,
                        x.wait,
                        reason.unwrap_or("no run").replace('|', "/")
                    );
                }
            }
        }
        t.push('\n');
        return t;
    }
    // Per target: p50, p99, p99.9, msgs/s and client busy over its error-free rounds (all
    // rounds when none is error-free).
    struct Row<'a> {
        x: &'a Target,
        p50: Option<Spread>,
        p99: Option<Spread>,
        p999: Option<Spread>,
        rate: Option<Spread>,
        busy: Option<Spread>,
        errors: u64,
        unsent: u64,
        blocking_client: bool,
        closed_loop: bool,
    }
    let rows: Vec<Row<'_>> = s
        .targets
        .iter()
        .map(|x| {
            let all = x.loads();
            let clean: Vec<&Value> = all
                .iter()
                .copied()
                .filter(|v| v["error_total"].as_u64() == Some(0))
                .collect();
            let use_ = if clean.is_empty() { all.clone() } else { clean };
            let f = |k: &str| Spread::of(use_.iter().map(|v| num(&v["latency_us"][k])));
            Row {
                x,
                p50: f("p50"),
                p99: f("p99"),
                p999: f("p999"),
                rate: Spread::of(use_.iter().map(|v| num(&v["msgs_per_s"]))),
                busy: Spread::of(use_.iter().map(|v| client_busy(v))),
                errors: all
                    .iter()
                    .map(|v| v["error_total"].as_u64().unwrap_or(0))
                    .sum(),
                unsent: all.iter().map(|v| v["unsent"].as_u64().unwrap_or(0)).sum(),
                blocking_client: use_
                    .first()
                    .is_some_and(|v| v["client_wait"].as_str() == Some("blocking")),
                closed_loop: use_
                    .first()
                    .is_some_and(|v| v["settings"]["mode"].as_str() != Some("open")),
            }
        })
        .collect();
    // The best kernel target: error-free rounds only.
    let pick = |f: &dyn Fn(&Row<'_>) -> Option<Spread>| -> Vec<(&Target, Option<Spread>)> {
        rows.iter()
            .map(|r| (r.x, if r.errors == 0 { f(r) } else { None }))
            .collect()
    };
    let p50s = pick(&|r| r.p50);
    let p99s = pick(&|r| r.p99);
    let rates = pick(&|r| r.rate);
    let (best_p50, best_p99, best_rate) = (
        best_kernel(&p50s, false),
        best_kernel(&p99s, false),
        best_kernel(&rates, true),
    );
    let ceiling = rows
        .iter()
        .find(|r| r.x.name.contains("ceiling"))
        .and_then(|r| r.rate);
    t.push_str(
        "| target | server | rounds | p50 us | p99 us | p99.9 us | msgs/s | p50 vs best kernel | \
         p99 vs best kernel | msgs/s vs best kernel | client core busy % | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let x = r.x;
        if let Some(reason) = x.unavailable() {
            let _ = writeln!(
                t,
                "| {} | {} | 0 | not available ({}) | | | | | | | | |",
                x.name,
                x.wait,
                reason.replace('|', "/")
            );
            continue;
        }
        // The generator's ceiling is a reference row: no ratios.
        let reference = x.name.contains("ceiling");
        // Throughput rows only: a closed loop with a blocking client (a spinning client is
        // always busy, and an open loop's rate is the offered load).
        let client_bound = !reference
            && r.blocking_client
            && r.closed_loop
            && (r.busy.is_some_and(|b| b.median >= 90.0)
                || matches!((r.rate, ceiling), (Some(a), Some(c)) if a.median >= 0.9 * c.median));
        let rr = |v: &Option<Spread>, best: Option<&Spread>| match v {
            Some(v) if !reference => ratio_marked(v, best),
            _ => "-".to_string(),
        };
        let cell = |v: &Option<Spread>| v.map_or("-".to_string(), |v| v.cell(fmt_num));
        let mut rate_ratio = rr(&r.rate, best_rate);
        if client_bound && rate_ratio != "-" {
            rate_ratio.push_str(" (client-bound)");
        }
        let mut errors = r.errors.to_string();
        if r.unsent > 0 {
            let _ = write!(errors, " ({} unsent)", r.unsent);
        }
        let name = if client_bound {
            format!("{} (client-bound)", x.name)
        } else {
            x.name.clone()
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            name,
            x.wait,
            x.loads().len(),
            cell(&r.p50),
            cell(&r.p99),
            cell(&r.p999),
            cell(&r.rate),
            rr(&r.p50, best_p50),
            rr(&r.p99, best_p99),
            rate_ratio,
            r.busy
                .map_or("-".to_string(), |b| b.cell(|v| format!("{v:.0}"))),
            errors
        );
    }
    // The bypass tables carry the floor: bare AF_XDP frames there and back.
    if let Some(floor) = rows.iter().find(|r| r.x.name.starts_with("floor")) {
        let parts: Vec<String> = rows
            .iter()
            .filter(|r| {
                !is_kernel(&r.x.name)
                    && !r.x.name.starts_with("floor")
                    && !r.x.name.contains("ceiling")
            })
            .filter_map(|r| match (r.p50, r.p99, floor.p50, floor.p99) {
                (Some(a), Some(b), Some(fa), Some(fb)) if fa.median > 0.0 && fb.median > 0.0 => {
                    Some(format!(
                        "{} p50 {:.2}x, p99 {:.2}x",
                        r.x.name,
                        a.median / fa.median,
                        b.median / fb.median
                    ))
                }
                _ => None,
            })
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(
                t,
                "\nAgainst the floor (`{}`: bare frames from one AF_XDP socket to the other \
                 and back, no TCP/IP): {}.",
                floor.x.name,
                parts.join("; ")
            );
        }
    }
    if let Some(v) = rows.iter().find_map(|r| r.x.loads().first().copied()) {
        let st = &v["settings"];
        let _ = writeln!(
            t,
            "\nClient: `{}` {} connections, {} B, pipeline {}, {} loop{}, {} s measured after {} s warm-up, {} client.",
            match v["kind"].as_str() {
                Some(k) if k != "run" => format!("sluice-load {k}"),
                _ => "sluice-load".to_string(),
            },
            st["connections"],
            st["message_size"],
            st["pipeline"],
            st["mode"].as_str().unwrap_or("?"),
            st["rate"].as_f64().map(|r| format!(" at {} msgs/s", fmt_num(r))).unwrap_or_default(),
            st["duration_s"],
            st["warmup_s"],
            v["client_wait"].as_str().unwrap_or("?"),
        );
    }
    t.push('\n');
    t
}

/// -log10(1 - p): 0 at p0, 1 at p90, 2 at p99, 3 at p99.9.
fn nines(percentile: f64) -> f64 {
    let q = (1.0 - percentile / 100.0).max(1e-5);
    -q.log10()
}

fn plot(scenarios: &[Scenario], path: &Path) -> anyhow::Result<()> {
    let panels: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.targets.iter().any(|t| !t.loads().is_empty()))
        .collect();
    if panels.is_empty() {
        return Ok(());
    }
    let height = 360 * panels.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels.len(), 1));
    let colors = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0x17, 0xbe, 0xcf),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    for (area, s) in areas.iter().zip(panels) {
        let series: Vec<(&str, Vec<(f64, f64)>)> = s
            .targets
            .iter()
            .filter_map(|t| match t.representative() {
                Some(v) => {
                    let pts: Vec<(f64, f64)> = v["percentiles"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|p| {
                                    (nines(num(&p["percentile"])), num(&p["latency_us"]).max(0.1))
                                })
                                .filter(|(x, y)| x.is_finite() && y.is_finite())
                                .collect()
                        })
                        .unwrap_or_default();
                    (!pts.is_empty()).then_some((t.name.as_str(), pts))
                }
                None => None,
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let ymax = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .fold(1.0f64, f64::max)
            * 1.5;
        let ymin = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .fold(f64::INFINITY, f64::min)
            .max(0.1)
            / 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(&s.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..4f64, (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (us, log)")
            .x_labels(5)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".into(),
                1 => "p90".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                4 => "p99.99".into(),
                _ => String::new(),
            })
            .draw()?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            // The same target keeps its colour in every panel.
            let c = KNOWN
                .iter()
                .position(|k| *k == name)
                .map_or(colors[i % colors.len()], |k| colors[k % colors.len()]);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.scale {
        let report = sluice_bench::scale::load(&cli.results)?;
        print!("{}", sluice_bench::scale::table(&report));
        let path = cli.results.join("scale.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let scenarios = load(&cli.results)?;
    let machine = std::fs::read_to_string(cli.results.join("machine.txt")).unwrap_or_default();
    let mut md = String::new();
    md.push_str("Generated by `bench/lab.sh` (do not edit between the markers).\n\n");
    if !machine.trim().is_empty() {
        md.push_str("```text\n");
        md.push_str(machine.trim_end());
        md.push_str("\n```\n\n");
    }
    md.push_str(
        "Each row: the median over the rounds, with the range (min..max) when there were \
         several. Ratios: a target's median divided by the best kernel-socket target's median \
         in the same table (every target on kernel sockets, spinning or blocking, never \
         AF_XDP, DPDK, the floor or the generator's ceiling; lower is better for latency, higher for msgs/s and Gbit/s); `~` marks a ratio whose two ranges \
         overlap (inside the run-to-run spread: not a difference). Server: `spin` busy-polls \
         (AF_XDP workers, `--spin` references), `block` sleeps in epoll/tokio between \
         events. `(client-bound)`, closed-loop rows with a blocking client only: its core \
         was 90 % busy or more, or the msgs/s is within 10 % of the load generator's own \
         ceiling: a floor for the server, not a win (a spinning client is always 100 % busy, \
         so ping-pong rows are not judged by it; an open loop's msgs/s is the offered \
         rate).\n\n",
    );
    for s in &scenarios {
        md.push_str(&table(s));
    }
    if let Some(svg) = &cli.svg {
        plot(&scenarios, svg)?;
        let _ = writeln!(
            md,
            "![latency percentiles per scenario]({})\n",
            cli.svg_link
        );
    }
    print!("{md}");
    std::fs::write(cli.results.join("report.md"), &md)?;
    if let Some(doc) = &cli.doc {
        let old = std::fs::read_to_string(doc).unwrap_or_default();
        let section = format!("{BEGIN}\n{md}{END}");
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{}{}", &old[..b], section, &old[e + END.len()..])
            }
            _ => format!(
                "{}\n## End-to-end on the lab (`bench/lab.sh`)\n\n{section}\n",
                old.trim_end()
            ),
        };
        std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A `sluice-load` report with these figures (client pinned to CPU 1).
    fn report(p50: f64, rate: f64, client_busy: f64, client_wait: &str) -> String {
        serde_json::json!({
            "kind": "run",
            "settings": {"connections": 100, "message_size": 64, "pipeline": 16, "mode": "closed",
                         "rate": null, "duration_s": 5.0, "warmup_s": 1.0, "pin": [1]},
            "client_wait": client_wait,
            "msgs_per_s": rate,
            "latency_us": {"p50": p50, "p99": p50 * 2.0, "p999": p50 * 3.0},
            "percentiles": [],
            "error_total": 0,
            "unsent": 0,
            "cpu_busy": [{"cpu": 0, "busy": 1.0}, {"cpu": 1, "busy": client_busy}],
        })
        .to_string()
    }

    #[test]
    fn spinning_or_open_loop_clients_are_never_labelled_client_bound() {
        let dir = std::env::temp_dir().join(format!("lab-report-spin-{}", std::process::id()));
        let sc = dir.join("1-ws-pingpong");
        std::fs::create_dir_all(&sc).unwrap();
        std::fs::write(
            sc.join("1-sluice-afxdp.json"),
            report(5.0, 2.0e5, 1.0, "spin"),
        )
        .unwrap();
        std::fs::write(
            sc.join("2-ref-ws-echo-spin.json"),
            report(6.0, 1.6e5, 1.0, "spin"),
        )
        .unwrap();
        let mut open: Value = serde_json::from_str(&report(7.0, 5e3, 1.0, "blocking")).unwrap();
        open["settings"]["mode"] = "open".into();
        std::fs::write(sc.join("3-ref-tungstenite.json"), open.to_string()).unwrap();
        let scenarios = load(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let t = table(&scenarios[0]);
        assert!(!t.contains("client-bound"), "{t}");
        // One round: the median alone, no range.
        assert!(t.contains("| sluice-afxdp | ? | 1 | 5.0 |"), "{t}");
    }

    #[test]
    fn rounds_become_medians_with_ranges_overlap_marked_client_bound_labelled() {
        let dir = std::env::temp_dir().join(format!("lab-report-test-{}", std::process::id()));
        let sc = dir.join("2-ws-c100");
        std::fs::create_dir_all(&sc).unwrap();
        std::fs::write(sc.join("title.txt"), "WebSocket, 100 connections").unwrap();
        std::fs::write(
            dir.join("waits.txt"),
            "sluice-afxdp spin\nref-tungstenite block\nref-ws-echo-spin spin\n",
        )
        .unwrap();
        // AF_XDP: clearly faster than one kernel server, inside the other's spread, and
        // its blocking client was busy: client-bound.
        for (r, (p50, rate)) in [(10.0, 2.0e6), (11.0, 2.1e6), (12.0, 1.9e6)]
            .iter()
            .enumerate()
        {
            std::fs::write(
                sc.join(format!("1-sluice-afxdp.r{}.json", r + 1)),
                report(*p50, *rate, 0.95, "blocking"),
            )
            .unwrap();
        }
        for (r, (p50, rate)) in [(40.0, 0.3e6), (41.0, 0.31e6), (42.0, 0.29e6)]
            .iter()
            .enumerate()
        {
            std::fs::write(
                sc.join(format!("3-ref-tungstenite.r{}.json", r + 1)),
                report(*p50, *rate, 0.5, "blocking"),
            )
            .unwrap();
        }
        for (r, (p50, rate)) in [(11.5, 1.95e6), (12.5, 2.05e6), (13.0, 1.8e6)]
            .iter()
            .enumerate()
        {
            std::fs::write(
                sc.join(format!("5-ref-ws-echo-spin.r{}.json", r + 1)),
                report(*p50, *rate, 0.5, "blocking"),
            )
            .unwrap();
        }
        std::fs::write(sc.join("4-ref-fastwebsockets.r1.error"), "exited").unwrap();
        let scenarios = load(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(scenarios.len(), 1);
        assert_eq!(scenarios[0].targets.len(), 4);
        let t = table(&scenarios[0]);
        let row = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("| {name}")))
                .unwrap_or_else(|| panic!("no {name} row in\n{t}"))
                .to_string()
        };
        let afxdp = row("sluice-afxdp");
        // Three rounds: median and range; best kernel = ref-ws-echo-spin (medians 12.5 us,
        // 1.95 M), whose ranges overlap AF_XDP's: marked.
        assert!(afxdp.contains("| 3 | 11.0 (10.0..12.0) |"), "{afxdp}");
        assert!(
            afxdp.contains("2,000,000 (1,900,000..2,100,000)"),
            "{afxdp}"
        );
        assert!(afxdp.contains("0.88x ~"), "{afxdp}");
        assert!(afxdp.contains("1.03x ~ (client-bound)"), "{afxdp}");
        assert!(
            afxdp.starts_with("| sluice-afxdp (client-bound) |"),
            "{afxdp}"
        );
        assert!(afxdp.contains("| 95 |"), "{afxdp}");
        let tung = row("ref-tungstenite");
        // Against the best kernel target, ranges apart: no mark.
        assert!(tung.contains("3.28x |"), "{tung}");
        assert!(!tung.contains('~'), "{tung}");
        assert!(row("ref-fastwebsockets").contains("not available (exited)"));
        // The best kernel target against itself: 1.00x, no mark.
        assert!(row("ref-ws-echo-spin").contains("| 1.00x | 1.00x |"), "{t}");
        assert_eq!(without_round("1-sluice-afxdp.r12"), "1-sluice-afxdp");
        // Both kernel-bypass backends are compared with the kernel, never the reference.
        assert!(!is_kernel("sluice-afxdp") && !is_kernel("sluice-dpdk"));
        assert!(is_kernel("ref-ws-echo-spin") && is_kernel("sluice-kernel"));
        assert_eq!(without_round("2-kernel.rx"), "2-kernel.rx");
    }
}
