//! Number formatting of the comparison bench's report.

/// A number in the unit's usual form: `1.23 M`, `45.6 k`, `12.3`.
pub fn human(value: f64, unit: &str) -> String {
    match unit {
        "msg/s" | "count" | "rows" | "B" => {
            let a = value.abs();
            if a >= 1e6 {
                format!("{:.2} M", value / 1e6)
            } else if a >= 1e4 {
                format!("{:.0} k", value / 1e3)
            } else if a >= 1e3 {
                format!("{:.1} k", value / 1e3)
            } else if a >= 10.0 || value == value.round() {
                format!("{value:.0}")
            } else {
                format!("{value:.1}")
            }
        }
        "ratio" => {
            if value >= 10.0 {
                format!("{value:.0}x")
            } else {
                format!("{value:.2}x")
            }
        }
        _ => {
            let a = value.abs();
            if a >= 100.0 {
                format!("{value:.0}")
            } else if a >= 10.0 {
                format!("{value:.1}")
            } else {
                format!("{value:.2}")
            }
        }
    }
}
