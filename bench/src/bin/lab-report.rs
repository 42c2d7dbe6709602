//! `lab-report RESULTS_DIR`: turns the JSON results of `bench/lab.sh` into tables (one per
//! scenario, each target's percentiles, msgs/s and the ratio to the best kernel-socket
//! server), an SVG percentile plot, and the `<!-- lab:begin -->`..`<!-- lab:end -->`
//! section of `docs/BENCHMARKS.md` (hand-written prose outside the markers stays).
//!
//! Layout read: `RESULTS/machine.txt`, `RESULTS/<scenario>/title.txt`,
//! `RESULTS/<scenario>/<target>.json` (a `sluice-load` report, or a `bulk` report) and
//! `RESULTS/<scenario>/<target>.error` (the target was not available: one line why).
//! Scenario and target directories are read in name order (lab.sh prefixes them).
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
const KNOWN: [&str; 8] = [
    "sluice-afxdp",
    "sluice-kernel",
    "ref-tungstenite",
    "ref-fastwebsockets",
    "ref-tcp-echo",
    "load-generator-ceiling",
    "ref-ws-echo-spin",
    "ref-tcp-echo-spin",
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
    outcome: Outcome,
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

/// A target counts as a kernel-socket server unless it runs on AF_XDP (the load
/// generator's own ceiling is a reference row, not a server).
fn is_kernel(name: &str) -> bool {
    !name.contains("afxdp") && !name.contains("ceiling")
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
        let mut targets = Vec::new();
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
            let name = display_name(&stem);
            targets.push(Target {
                wait: waits.get(&name).cloned().unwrap_or_else(|| "?".into()),
                name,
                outcome,
            });
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

fn table(s: &Scenario) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "### {}\n", s.title);
    let bulk = s
        .targets
        .iter()
        .any(|x| matches!(x.outcome, Outcome::Bulk(_)));
    if bulk {
        let best = s
            .targets
            .iter()
            .filter(|x| is_kernel(&x.name))
            .filter_map(|x| match &x.outcome {
                Outcome::Bulk(v) => Some(num(&v["gbit_per_s"])),
                _ => None,
            })
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        t.push_str(
            "| target | server | Gbit/s | bytes | seconds | vs best kernel |\n|---|---|---:|---:|---:|---:|\n",
        );
        for x in &s.targets {
            match &x.outcome {
                Outcome::Bulk(v) => {
                    let g = num(&v["gbit_per_s"]);
                    let _ = writeln!(
                        t,
                        "| {} | {} | {:.2} | {} | {:.2} | {} |",
                        x.name,
                        x.wait,
                        g,
                        fmt_num(num(&v["bytes"])),
                        num(&v["seconds"]),
                        ratio(g, best)
                    );
                }
                Outcome::Unavailable(e) => {
                    let _ = writeln!(
                        t,
                        "| {} | {} | not available ({}) | | | |",
                        x.name, x.wait, e
                    );
                }
                Outcome::Load(_) => {}
            }
        }
        t.push('\n');
        return t;
    }
    let loads: Vec<(&Target, &Value)> = s
        .targets
        .iter()
        .filter_map(|x| match &x.outcome {
            Outcome::Load(v) => Some((x, v)),
            _ => None,
        })
        .collect();
    let kernel = || {
        loads
            .iter()
            .filter(|(x, v)| is_kernel(&x.name) && v["error_total"].as_u64() == Some(0))
    };
    let best_p50 = kernel()
        .map(|(_, v)| num(&v["latency_us"]["p50"]))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
    let best_p99 = kernel()
        .map(|(_, v)| num(&v["latency_us"]["p99"]))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
    let best_rate = kernel()
        .map(|(_, v)| num(&v["msgs_per_s"]))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    t.push_str(
        "| target | server | p50 us | p90 us | p99 us | p99.9 us | max us | msgs/s | p50 vs best kernel | \
         p99 vs best kernel | msgs/s vs best kernel | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for x in &s.targets {
        match &x.outcome {
            Outcome::Load(v) => {
                // The generator's ceiling is a reference row: no ratios.
                let reference = x.name.contains("ceiling");
                let r = |val: f64, best: Option<f64>| {
                    if reference {
                        "-".to_string()
                    } else {
                        ratio(val, best)
                    }
                };
                let l = &v["latency_us"];
                let rate = num(&v["msgs_per_s"]);
                let mut errors = v["error_total"].as_u64().unwrap_or(0).to_string();
                if let Some(u) = v["unsent"].as_u64().filter(|&u| u > 0) {
                    let _ = write!(errors, " ({u} unsent)");
                }
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    x.name,
                    x.wait,
                    fmt_num(num(&l["p50"])),
                    fmt_num(num(&l["p90"])),
                    fmt_num(num(&l["p99"])),
                    fmt_num(num(&l["p999"])),
                    fmt_num(num(&l["max"])),
                    fmt_num(rate),
                    r(num(&l["p50"]), best_p50),
                    r(num(&l["p99"]), best_p99),
                    r(rate, best_rate),
                    errors
                );
            }
            Outcome::Unavailable(e) => {
                let _ = writeln!(
                    t,
                    "| {} | {} | not available ({}) | | | | | | | | | |",
                    x.name,
                    x.wait,
                    e.replace('|', "/")
                );
            }
            Outcome::Bulk(_) => {}
        }
    }
    if let Some((_, v)) = loads.first() {
        let st = &v["settings"];
        let _ = writeln!(
            t,
            "\nClient: `sluice-load` {} connections, {} B, pipeline {}, {} loop{}, {} s measured after {} s warm-up, {} client.",
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
        .filter(|s| {
            s.targets
                .iter()
                .any(|t| matches!(t.outcome, Outcome::Load(_)))
        })
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
            .filter_map(|t| match &t.outcome {
                Outcome::Load(v) => {
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
                _ => None,
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
        "Ratios: each figure divided by the best kernel-socket target of the same table \
         (every target not on AF_XDP, spinning or blocking; lower is better for latency, higher \
         for msgs/s and Gbit/s). Server: `spin` busy-polls (AF_XDP workers, `--spin` \
         references), `block` sleeps in epoll/tokio between events.\n\n",
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
