//! `--report FILE.html`: one self-contained page with the run's figures and its plots —
//! throughput over time and latency by percentile, per service — drawn as inline SVG.

use std::fmt::Write as _;

use crate::summary::Summary;

/// A line of a plot: its name and its points `(x, y)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The legend.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// The plots of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plots {
    /// Per service: completions (conversations or receipts) per second, by seconds since the
    /// start.
    pub throughput: Vec<Series>,
    /// Per service: latency in milliseconds by percentile (0–100).
    pub latency: Vec<Series>,
}

/// Completions per second in windows of `window` seconds, from the seconds at which each
/// completed.
#[must_use]
pub fn rate(name: &str, mut at: Vec<f64>, window: f64) -> Series {
    at.sort_by(f64::total_cmp);
    let window = window.max(0.1);
    let end = at.last().copied().unwrap_or(0.0);
    let mut points = Vec::new();
    let mut i = 0;
    let mut t = 0.0;
    while t <= end {
        let mut n = 0;
        while i < at.len() && at[i] < t + window {
            n += 1;
            i += 1;
        }
        points.push((t + window, f64::from(n) / window));
        t += window;
    }
    Series {
        name: name.to_owned(),
        points,
    }
}

/// Latency by percentile from microseconds, sorted: 101 points, 0th to 100th.
#[must_use]
pub fn percentiles(name: &str, sorted_us: &[u32]) -> Series {
    let points = if sorted_us.is_empty() {
        Vec::new()
    } else {
        (0..=100)
            .map(|p| {
                let rank = (p as f64 / 100.0 * (sorted_us.len() - 1) as f64).round() as usize;
                (f64::from(p), f64::from(sorted_us[rank]) / 1000.0)
            })
            .collect()
    };
    Series {
        name: name.to_owned(),
        points,
    }
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line chart of `series` as SVG.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 320.0, 60.0, 40.0, 30.0, 170.0);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.05;
    let px = |x: f64| left + (x / x_max) * (w - left - right);
    let py = |y: f64| h - bottom - (y / y_max) * (h - bottom - top);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..=4 {
        let (xv, yv) = (x_max * f64::from(i) / 4.0, y_max * f64::from(i) / 4.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{yv:.1}</text><text x="{x}" y="{}" text-anchor="middle">{xv:.0}</text>"##,
            w - right,
            left - 6.0,
            py(yv) + 4.0,
            h - bottom + 16.0,
            y = py(yv),
            x = px(xv),
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 6.0,
        escape(x_label),
        h / 2.0,
        h / 2.0,
        escape(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            pts.join(" "),
            w - right + 10.0,
            top + 16.0 * i as f64,
            w - right + 24.0,
            top + 9.0 + 16.0 * i as f64,
            escape(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page: the summary's figures, its plots and its verdict.
#[must_use]
pub fn html(summary: &Summary, plots: &Plots) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>snodo-sim report</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}\
         .bad{color:#b00}.good{color:#070}</style></head><body>",
    );
    let _ = write!(s, "<h1>snodo-sim {}</h1>", escape(&summary.mode));
    let verdict = if summary.ok() {
        "<p class=\"good\"><b>Every invariant holds.</b></p>".to_owned()
    } else {
        let items: String = summary
            .violations
            .iter()
            .map(|v| format!("<li>{}</li>", escape(v)))
            .collect();
        format!(
            "<p class=\"bad\"><b>{} invariants violated:</b></p><ul>{items}</ul>",
            summary.violations.len()
        )
    };
    s.push_str(&verdict);
    s.push_str("<table><tr><th>service</th><th>started</th><th>finished</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>");
    for (name, f) in &summary.services {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            escape(name),
            f.conversations_started,
            f.conversations_finished,
            f.p50_ms,
            f.p95_ms,
            f.p99_ms
        );
    }
    s.push_str("</table><p>");
    let _ = write!(
        s,
        "accepted {}, delivered {}, lost {}, duplicates {}, refused as expected {}, refused unexpectedly {}; {:.0} envelopes/s; journal verified: {}",
        summary.accepted,
        summary.delivered,
        summary.lost,
        summary.duplicates,
        summary.refused_expected,
        summary.refused_unexpected,
        summary.envelopes_per_sec,
        summary.journal_verified
    );
    s.push_str("</p>");
    let per = if summary.mode == "run" {
        "conversations finished per second"
    } else {
        "receipts per second"
    };
    s.push_str(&chart(
        "Throughput",
        "seconds since the start",
        per,
        &plots.throughput,
    ));
    s.push_str("<br>");
    s.push_str(&chart(
        "Latency by percentile",
        "percentile",
        "milliseconds",
        &plots.latency,
    ));
    s.push_str("<h2>Details</h2><table>");
    for (k, v) in &summary.details {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(k),
            escape(&v.to_string())
        );
    }
    s.push_str("</table></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_completions_per_window() {
        let r = rate("x", vec![0.1, 0.2, 1.5, 2.5, 2.6, 2.7], 1.0);
        assert_eq!(r.points, vec![(1.0, 2.0), (2.0, 1.0), (3.0, 3.0)]);
        assert!(rate("x", Vec::new(), 1.0).points.len() <= 1);
    }

    #[test]
    fn percentiles_run_from_fastest_to_slowest() {
        let us: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        let p = percentiles("x", &us);
        assert_eq!(p.points.len(), 101);
        assert_eq!(p.points[0], (0.0, 1.0));
        assert_eq!(p.points[100], (100.0, 1000.0));
        assert!(percentiles("x", &[]).points.is_empty());
    }

    #[test]
    fn the_page_holds_both_plots_and_escapes_names() {
        let mut s = Summary {
            mode: "bench".into(),
            ..Summary::default()
        };
        s.violations.push("envelope <x> lost".into());
        let plots = Plots {
            throughput: vec![rate("a&b", vec![0.5, 1.5], 1.0)],
            latency: vec![percentiles("a&b", &[1000, 2000])],
        };
        let page = html(&s, &plots);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("a&amp;b") && page.contains("envelope &lt;x&gt; lost"));
        assert!(page.contains("1 invariants violated"));
    }
}
