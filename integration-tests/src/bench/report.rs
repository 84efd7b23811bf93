//! The figures `drover-bench` prints: one JSON object per line on stdout,
//! `{"metric", "value", "unit", "store", "agents"}`, so a script can collect
//! them; everything else the benchmark says goes to stderr.

use std::io::Write;
use std::time::Duration;

/// Prints one figure, rounded to three decimals, and flushes at once so a
/// reader sees each figure as soon as it is measured.
pub fn figure(metric: &str, value: f64, unit: &str, store: &str, agents: usize) {
    let line = serde_json::json!({
        "metric": metric,
        "value": (value * 1000.0).round() / 1000.0,
        "unit": unit,
        "store": store,
        "agents": agents,
    });
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to stop measuring.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The nearest-rank percentile `p` (0..=1) of sorted samples; 0 when there
/// are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Samples sorted ascending, for [`percentile`].
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let s = sorted((1..=100).rev().map(f64::from).collect());
        assert_eq!(percentile(&s, 0.5), 51.0);
        assert_eq!(percentile(&s, 0.99), 99.0);
        assert_eq!(percentile(&s, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
