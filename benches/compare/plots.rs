//! SVG plots of the report (plotters, SVG backend only: text is emitted as SVG `<text>` and
//! laid out with plotters' built-in estimate, so no font library or system font is needed).

use std::path::Path;

use plotters::prelude::*;

/// One group of bars: a label on the x axis and one value per series (None: not measured).
pub struct BarGroup {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("plotting {path:?}: {e}")
}

/// Grouped bars on a log-scale y axis (throughputs that differ by orders of magnitude).
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[String],
    groups: &[BarGroup],
) -> Result<(), String> {
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let (Some(lo), Some(hi)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return Ok(());
    };
    let y_min = 10f64.powf(lo.log10().floor());
    let y_max = 10f64.powf(hi.log10().ceil()).max(y_min * 10.0);
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let n = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (y_min..y_max).log_scale())
        .map_err(err(path))?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .y_label_formatter(&|y| crate::util::human(*y, "msg/s"))
        .draw()
        .map_err(err(path))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, name) in series.iter().enumerate() {
        let c = color(s);
        let rects: Vec<Rectangle<(f64, f64)>> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, group)| {
                let v = (*group.values.get(s)?)?;
                let x0 = g as f64 + 0.1 + s as f64 * width;
                Some(Rectangle::new(
                    [(x0, y_min), (x0 + width * 0.9, v.max(y_min))],
                    c.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(err(path))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))
}

/// Lateness distributions: percentile (y) against lateness in ms (x, log scale), one line per
/// system.
pub fn cdf(path: &Path, title: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<(), String> {
    let floor_ms = 0.01;
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, ms)| ms.max(floor_ms)))
        .collect();
    let Some(hi) = xs.iter().copied().reduce(f64::max) else {
        return Ok(());
    };
    let x_max = 10f64.powf(hi.log10().ceil()).max(1.0);
    let root = SVGBackend::new(path, (860, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((floor_ms..x_max).log_scale(), 0f64..100f64)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("lateness, ms (log scale; values below 0.01 ms drawn at 0.01)")
        .y_desc("percentile")
        .x_label_formatter(&|x| crate::util::human(*x, "ms"))
        .draw()
        .map_err(err(path))?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(p, ms)| (ms.max(floor_ms), *p)),
                c.stroke_width(2),
            ))
            .map_err(err(path))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))
}
