//! Figures of a bench run: each measured number of each repetition, collected into series,
//! printed as a table (median and min-max over repetitions, with the target each is held to)
//! and turned into JSON lines, one per figure. Shared by the append, delivery and timer benches
//! (which also include `support/json_lines.rs`, `support/machine.rs`, `support/run.rs` and
//! `support/summary.rs`).

// Each bench includes this file as its own module and uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::time::Instant;

use std::path::Path;

use delaystore::{Message, Options};
use serde_json::json;

use super::json_lines::unix_time_s;
use super::machine::settle_disk;
use super::run::put_rate;
use super::summary::{percentile, summarize};

/// Whether a figure should be low or high, and the bound it is held to.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(bound) => value <= bound,
            Goal::AtLeast(bound) => value >= bound,
        }
    }

    pub fn describe(self, unit: &str) -> String {
        match self {
            Goal::AtMost(bound) => format!("<= {}", human(bound, unit)),
            Goal::AtLeast(bound) => format!(">= {}", human(bound, unit)),
        }
    }
}

/// One measured number of one repetition.
#[derive(Debug, Clone)]
pub struct Figure {
    pub workload: String,
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub goal: Option<Goal>,
}

pub fn figure(workload: &str, name: &str, unit: &'static str, value: f64) -> Figure {
    Figure {
        workload: workload.to_owned(),
        name: name.to_owned(),
        unit,
        value,
        goal: None,
    }
}

pub fn with_goal(mut figure: Figure, goal: Goal) -> Figure {
    figure.goal = Some(goal);
    figure
}

/// p50, p99 and max figures of `values` (sorted in place), named `{prefix}_p50` and so on,
/// in ms; `p99_goal` is the target of the p99.
pub fn lateness_figures(
    workload: &str,
    prefix: &str,
    values: &mut [f64],
    p99_goal: Option<Goal>,
) -> Vec<Figure> {
    values.sort_by(f64::total_cmp);
    let mut p99 = figure(
        workload,
        &format!("{prefix}_p99"),
        "ms",
        percentile(values, 0.99),
    );
    p99.goal = p99_goal;
    vec![
        figure(
            workload,
            &format!("{prefix}_p50"),
            "ms",
            percentile(values, 0.5),
        ),
        p99,
        figure(
            workload,
            &format!("{prefix}_max"),
            "ms",
            percentile(values, 1.0),
        ),
    ]
}

/// The `put_rate` (msg/s) and `put_failures` figures of `count` timed puts of `message` into a
/// fresh store at `dir` (see [`put_rate`]); failures are reported on stderr as `who`'s.
pub fn put_rate_figures(
    workload: &str,
    who: &str,
    dir: &Path,
    options: Options,
    message: Message,
    count: u64,
) -> Result<Vec<Figure>, String> {
    let (rate, failures) = put_rate(dir, options, message, count)?;
    failures.report(workload, who);
    Ok(vec![
        figure(workload, "put_rate", "msg/s", rate),
        figure(workload, "put_failures", "count", failures.count as f64),
    ])
}

/// A figure over all repetitions, in first-seen order.
#[derive(Debug)]
pub struct Series {
    pub workload: String,
    pub name: String,
    pub unit: &'static str,
    pub goal: Option<Goal>,
    pub values: Vec<f64>,
}

/// Every series of a run, and the workloads that failed: (workload, repetition, error).
#[derive(Debug, Default)]
pub struct Results {
    pub series: Vec<Series>,
    pub failures: Vec<(String, usize, String)>,
}

impl Results {
    pub fn add(&mut self, figure: Figure) {
        let found = self
            .series
            .iter_mut()
            .find(|s| s.workload == figure.workload && s.name == figure.name);
        match found {
            Some(series) => series.values.push(figure.value),
            None => self.series.push(Series {
                workload: figure.workload,
                name: figure.name,
                unit: figure.unit,
                goal: figure.goal,
                values: vec![figure.value],
            }),
        }
    }

    /// Runs workload `name` of repetition `rep` (0-based, of `reps`) after settling the disk,
    /// says on stderr how long it took, and records its figures or its failure.
    pub fn run_workload(
        &mut self,
        name: String,
        rep: usize,
        reps: usize,
        run: impl FnOnce() -> Result<Vec<Figure>, String>,
    ) {
        eprint!("rep {}/{reps}: {name} ... ", rep + 1);
        if let Err(e) = std::io::stderr().flush() {
            eprintln!("(stderr: {e})");
        }
        settle_disk();
        let t = Instant::now();
        match run() {
            Ok(figures) => {
                eprintln!("{:.1} s", t.elapsed().as_secs_f64());
                for f in figures {
                    self.add(f);
                }
            }
            Err(e) => {
                eprintln!("FAILED: {e}");
                self.failures.push((name, rep + 1, e));
            }
        }
    }

    pub fn get(&self, workload: &str, name: &str) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.workload == workload && s.name == name)
    }

    /// One JSON line per series and per failure, tagged with the bench, the mode and the
    /// machine.
    pub fn json_lines(
        &self,
        bench: &str,
        mode: &str,
        machine: &serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let time = unix_time_s();
        let mut lines = Vec::new();
        for s in &self.series {
            let sum = summarize(&s.values);
            lines.push(json!({
                "bench": bench, "mode": mode, "workload": s.workload, "figure": s.name,
                "unit": s.unit, "min": sum.min, "median": sum.median, "max": sum.max,
                "values": s.values,
                "target": s.goal.map(|g| g.describe(s.unit)),
                "met": s.goal.map(|g| g.met(sum.median)),
                "unix_time": time, "machine": machine,
            }));
        }
        for (workload, rep, failure) in &self.failures {
            lines.push(json!({
                "bench": bench, "mode": mode, "workload": workload, "rep": rep,
                "error": failure, "unix_time": time, "machine": machine,
            }));
        }
        lines
    }
}

/// A ratio series (one value per repetition) as a JSON line with the fields of a series line.
pub fn ratio_line(
    bench: &str,
    mode: &str,
    machine: &serde_json::Value,
    workload: &str,
    name: &str,
    values: &[f64],
) -> serde_json::Value {
    let sum = summarize(values);
    json!({
        "bench": bench, "mode": mode, "workload": workload, "figure": name, "unit": "ratio",
        "min": sum.min, "median": sum.median, "max": sum.max, "values": values,
        "unix_time": unix_time_s(), "machine": machine,
    })
}

/// `a[i] / b[i]` for the repetitions both series have.
pub fn per_rep_ratios(a: &Series, b: &Series) -> Vec<f64> {
    a.values.iter().zip(&b.values).map(|(x, y)| x / y).collect()
}

/// A value in its unit's usual form (`1.07 M` msg/s, `0.68x`, `42 %`, `27` ms...).
pub fn human(value: f64, unit: &str) -> String {
    match unit {
        "msg/s" | "cancels/s" => {
            if value >= 1e6 {
                format!("{:.2} M", value / 1e6)
            } else if value >= 1e3 {
                format!("{:.1} k", value / 1e3)
            } else {
                format!("{value:.0}")
            }
        }
        "ratio" => format!("{value:.2}x"),
        // A fraction (of a ceiling, say) shown as a percentage.
        "percent" => format!("{:.0} %", value * 100.0),
        "count" => format!("{value:.0}"),
        "s" => format!("{value:.2}"),
        "rows" | "puts" | "B" => format!("{value:.2}"),
        _ => {
            if value.abs() >= 100.0 {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        }
    }
}

/// `median (min-max)` of a series, or just the value when it has one repetition.
pub fn cell(series: Option<&Series>) -> String {
    match series {
        Some(s) => {
            let sum = summarize(&s.values);
            if s.values.len() > 1 {
                format!(
                    "{} ({}-{})",
                    human(sum.median, s.unit),
                    human(sum.min, s.unit),
                    human(sum.max, s.unit)
                )
            } else {
                human(sum.median, s.unit)
            }
        }
        None => "-".to_owned(),
    }
}

/// Prints every series whose workload starts with `prefix`, under `title`.
pub fn print_section(results: &Results, title: &str, prefix: &str) {
    let rows: Vec<&Series> = results
        .series
        .iter()
        .filter(|s| s.workload.starts_with(prefix))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n{title}");
    println!(
        "{:<20} {:<34} {:>32} {:>16}",
        "workload", "figure", "median (min-max)", "target"
    );
    for s in rows {
        let target = s.goal.map_or(String::new(), |goal| {
            let met = goal.met(summarize(&s.values).median);
            format!(
                "{} {}",
                goal.describe(s.unit),
                if met { "met" } else { "MISSED" }
            )
        });
        println!(
            "{:<20} {:<34} {:>32} {:>16}",
            s.workload,
            format!("{} [{}]", s.name, s.unit),
            cell(Some(s)),
            target
        );
    }
}

/// Prints a ratio series as a row of the table above it.
pub fn print_ratio(workload: &str, name: &str, values: &[f64]) {
    let sum = summarize(values);
    println!(
        "{workload:<20} {:<34} {:>32}",
        format!("{name} [ratio]"),
        format!(
            "{} ({}-{})",
            human(sum.median, "ratio"),
            human(sum.min, "ratio"),
            human(sum.max, "ratio")
        )
    );
}
