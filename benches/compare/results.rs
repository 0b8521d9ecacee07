//! Figures of a run: recorded per repetition, written as JSON lines (one per figure, with its
//! min / median / max over repetitions and, for throughputs, its ratio to a raw ceiling of
//! the same run), and read back for rendering.

use std::path::Path;

use serde_json::{json, Value};

use crate::summary::summarize;

/// One measured number of one repetition.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Workload, e.g. `async_append/1KiB`.
    pub workload: String,
    /// System measured: a peer name, or `ceiling` / `scan_10s` and the like.
    pub system: String,
    /// Figure name, e.g. `msg_per_s`.
    pub figure: String,
    pub unit: &'static str,
    pub value: f64,
}

/// A lateness distribution of one repetition, as (percentile, ms) points.
#[derive(Debug, Clone)]
pub struct Cdf {
    pub workload: String,
    pub system: String,
    pub rep: usize,
    pub points: Vec<(f64, f64)>,
}

/// Everything one run recorded.
#[derive(Debug, Default)]
pub struct Recorder {
    pub rep: usize,
    pub figures: Vec<(usize, Figure)>,
    pub cdfs: Vec<Cdf>,
    pub skips: Vec<(String, String)>,
    pub failures: Vec<(String, String, usize, String)>,
    /// Throughput figures judged against a ceiling: (workload prefix, figure, ceiling workload,
    /// ceiling figure).
    pub ceiling_of: Vec<(String, String, String, String)>,
}

impl Recorder {
    pub fn add(
        &mut self,
        workload: &str,
        system: &str,
        figure: &str,
        unit: &'static str,
        value: f64,
    ) {
        self.figures.push((
            self.rep,
            Figure {
                workload: workload.to_owned(),
                system: system.to_owned(),
                figure: figure.to_owned(),
                unit,
                value,
            },
        ));
    }

    pub fn cdf(&mut self, workload: &str, system: &str, sorted_ms: &[f64]) {
        let mut points: Vec<(f64, f64)> = (0..=100)
            .map(|p| {
                (
                    f64::from(p),
                    crate::summary::percentile(sorted_ms, f64::from(p) / 100.0),
                )
            })
            .collect();
        for p in [99.5, 99.9, 99.99] {
            points.push((p, crate::summary::percentile(sorted_ms, p / 100.0)));
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.cdfs.push(Cdf {
            workload: workload.to_owned(),
            system: system.to_owned(),
            rep: self.rep,
            points,
        });
    }

    pub fn skip(&mut self, system: &str, reason: &str) {
        if !self.skips.iter().any(|(s, _)| s == system) {
            println!("SKIP {system}: {reason}");
            self.skips.push((system.to_owned(), reason.to_owned()));
        }
    }

    pub fn fail(&mut self, workload: &str, system: &str, error: String) {
        eprintln!("FAILED {workload} on {system} (rep {}): {error}", self.rep);
        self.failures
            .push((workload.to_owned(), system.to_owned(), self.rep, error));
    }

    /// Declares that `figure` of workloads starting with `workload_prefix` is a throughput
    /// judged against `ceiling_figure` of `ceiling_workload`.
    pub fn judge_against(
        &mut self,
        workload_prefix: &str,
        figure: &str,
        ceiling_workload: &str,
        ceiling_figure: &str,
    ) {
        self.ceiling_of.push((
            workload_prefix.to_owned(),
            figure.to_owned(),
            ceiling_workload.to_owned(),
            ceiling_figure.to_owned(),
        ));
    }

    /// Every (workload, system, figure) with its unit and values in repetition order.
    fn series(&self) -> Vec<(String, String, String, &'static str, Vec<f64>)> {
        let mut out: Vec<(String, String, String, &'static str, Vec<f64>)> = Vec::new();
        for (_, f) in &self.figures {
            match out
                .iter_mut()
                .find(|s| s.0 == f.workload && s.1 == f.system && s.2 == f.figure)
            {
                Some(s) => s.4.push(f.value),
                None => out.push((
                    f.workload.clone(),
                    f.system.clone(),
                    f.figure.clone(),
                    f.unit,
                    vec![f.value],
                )),
            }
        }
        out
    }

    /// The best (largest) value of a ceiling figure over the run (measured at its start and
    /// end): ratios to it are the conservative ones.
    fn ceiling(&self, workload: &str, figure: &str) -> Option<f64> {
        self.figures
            .iter()
            .filter(|(_, f)| f.system == "ceiling" && f.workload == workload && f.figure == figure)
            .map(|(_, f)| f.value)
            .reduce(f64::max)
    }

    /// The JSON lines of the run.
    pub fn to_json_lines(&self, head: &[Value]) -> String {
        let mut out = String::new();
        let mut line = |v: Value| {
            out.push_str(&v.to_string());
            out.push('\n');
        };
        for v in head {
            line(v.clone());
        }
        for (workload, system, figure, unit, values) in self.series() {
            let sum = summarize(&values);
            let mut v = json!({
                "kind": "figure", "workload": workload, "system": system, "figure": figure,
                "unit": unit, "min": sum.min, "median": sum.median, "max": sum.max,
                "values": values,
            });
            let judged = self.ceiling_of.iter().find(|(prefix, f, _, _)| {
                workload.starts_with(prefix.as_str()) && *f == figure && system != "ceiling"
            });
            if let Some((_, _, cw, cf)) = judged {
                if let Some(ceiling) = self.ceiling(cw, cf).filter(|c| *c > 0.0) {
                    let ratios: Vec<f64> = values.iter().map(|x| x / ceiling).collect();
                    let r = summarize(&ratios);
                    v["ceiling"] = json!({
                        "workload": cw, "figure": cf, "value": ceiling,
                        "ratio_min": r.min, "ratio_median": r.median, "ratio_max": r.max,
                    });
                }
            }
            line(v);
        }
        for c in &self.cdfs {
            line(json!({
                "kind": "cdf", "workload": c.workload, "system": c.system, "rep": c.rep,
                "points": c.points,
            }));
        }
        for (system, reason) in &self.skips {
            line(json!({"kind": "skip", "system": system, "reason": reason}));
        }
        for (workload, system, rep, error) in &self.failures {
            line(json!({
                "kind": "failure", "workload": workload, "system": system, "rep": rep,
                "error": error,
            }));
        }
        out
    }
}

/// A run read back from its JSON lines.
#[derive(Debug, Default)]
pub struct Loaded {
    pub lines: Vec<Value>,
}

impl Loaded {
    pub fn read(path: &Path) -> Result<Loaded, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path:?}: {e}"))?;
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{path:?}: {e}: {l}")))
            .collect::<Result<Vec<Value>, String>>()?;
        Ok(Loaded { lines })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines.iter().filter(move |v| v["kind"] == kind)
    }

    /// The line of one figure.
    pub fn figure(&self, workload: &str, system: &str, figure: &str) -> Option<&Value> {
        self.of_kind("figure")
            .find(|v| v["workload"] == workload && v["system"] == system && v["figure"] == figure)
    }

    /// The median of one figure.
    pub fn median(&self, workload: &str, system: &str, figure: &str) -> Option<f64> {
        self.figure(workload, system, figure)
            .and_then(|v| v["median"].as_f64())
    }

    /// Systems that have any figure in `workload`, in first-seen order.
    pub fn systems(&self, workload: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in self.of_kind("figure").filter(|v| v["workload"] == workload) {
            if let Some(s) = v["system"].as_str() {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
        }
        out
    }
}
