//! A rollout's analysis as charts, drawn on the server as SVG markup (no
//! script, no styles beyond the page's classes): one chart per metric, its
//! measurements over time as a line with a point per measurement, each
//! point classed by its outcome (`successful`, `failed`, `inconclusive`,
//! `error`). Pure: the numbers in, the markup out, escaped.

use std::fmt::Write;

/// One measurement: when (ms), its value if it was a number, and its
/// outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub value: Option<f64>,
    pub outcome: String,
}

/// The chart's size in user units; the page scales it to its width.
const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 120.0;
const PAD: f64 = 24.0;
/// The most points drawn; older ones are left out.
pub const MAX_POINTS: usize = 200;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `metric`'s chart. Measurements without a number (errors) sit on the
/// bottom axis.
pub fn svg(metric: &str, points: &[Point]) -> String {
    let points = &points[points.len().saturating_sub(MAX_POINTS)..];
    let values: Vec<f64> = points.iter().filter_map(|p| p.value).filter(|v| v.is_finite()).collect();
    let (lo, hi) = match values.iter().copied().fold(None, |acc: Option<(f64, f64)>, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    }) {
        Some((lo, hi)) if hi > lo => (lo, hi),
        Some((v, _)) => (v - 1.0, v + 1.0),
        None => (0.0, 1.0),
    };
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.at_ms > a.at_ms => (a.at_ms, b.at_ms),
        (Some(a), _) => (a.at_ms, a.at_ms + 1),
        _ => (0, 1),
    };
    let x = |t: u64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - 2.0 * PAD);
    let y = |v: f64| HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2.0 * PAD);
    let title = escape(metric);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}: {n} measurements\">\
         <title>{title}</title><line class=\"axis\" x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <text class=\"tick\" x=\"2\" y=\"{top}\">{hi}</text><text class=\"tick\" x=\"2\" y=\"{b}\">{lo}</text>",
        n = points.len(),
        b = HEIGHT - PAD,
        r = WIDTH - PAD,
        top = PAD,
        hi = short(hi),
        lo = short(lo),
    );
    let line: Vec<String> = points
        .iter()
        .filter_map(|p| p.value.filter(|v| v.is_finite()).map(|v| format!("{:.1},{:.1}", x(p.at_ms), y(v))))
        .collect();
    if line.len() > 1 {
        let _ = write!(out, "<polyline class=\"series\" points=\"{}\"/>", line.join(" "));
    }
    for p in points {
        let finite = p.value.filter(|v| v.is_finite());
        let cy = finite.map_or(HEIGHT - PAD, y);
        let value = finite.map_or_else(|| "no value".to_owned(), short);
        let _ = write!(
            out,
            "<circle class=\"pt {outcome}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\"><title>{value}: {outcome}</title></circle>",
            outcome = escape(&p.outcome),
            cx = x(p.at_ms),
        );
    }
    out.push_str("</svg>");
    out
}

/// A number as a person reads it: at most 4 significant digits.
fn short(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_ms: u64, value: Option<f64>, outcome: &str) -> Point {
        Point { at_ms, value, outcome: outcome.into() }
    }

    #[test]
    fn each_measurement_is_a_point_classed_by_its_outcome() {
        let chart =
            svg("error-rate", &[p(0, Some(0.5), "successful"), p(1000, Some(2.0), "failed"), p(2000, None, "error")]);
        assert_eq!(chart.matches("<circle").count(), 3, "{chart}");
        for class in ["pt successful", "pt failed", "pt error"] {
            assert!(chart.contains(class), "{class}: {chart}");
        }
        assert!(chart.contains("<polyline"), "two numbers make a line: {chart}");
        assert!(chart.contains("aria-label=\"error-rate: 3 measurements\""), "{chart}");
    }

    #[test]
    fn names_are_escaped_and_odd_inputs_still_draw() {
        let chart = svg("<script>", &[p(5, Some(f64::NAN), "error\"x"), p(5, Some(1.0), "ok")]);
        assert!(!chart.contains("<script>") && !chart.contains("error\"x"), "{chart}");
        assert!(!chart.contains("NaN"), "{chart}");
        let empty = svg("m", &[]);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>"));
    }

    #[test]
    fn numbers_read_short() {
        let cases = [(1.0, "1"), (0.25, "0.25"), (1.23456, "1.235"), (-3.0, "-3")];
        for (v, want) in cases {
            assert_eq!(short(v), want);
        }
    }
}
