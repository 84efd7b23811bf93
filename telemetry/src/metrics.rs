//! A small metrics toolkit: lock-free counters, gauges and histograms, and
//! functions that write them in the Prometheus text exposition format
//! (version 0.0.4). Each binary keeps its metrics in a struct of its own and
//! renders them with [`Text`].
//!
//! Recording is a few atomic operations, so the scheduler can record on its
//! hot path without slowing down.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds in seconds for latencies from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds in seconds for job durations from 100 ms to 1 hour.
pub const DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus one for +Inf; not cumulative.
    counts: Vec<AtomicU64>,
    /// The sum of observations, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    pub fn observe(&self, seconds: f64) {
        let i = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + seconds).to_bits();
            match self.sum.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Writes metrics in the Prometheus text format.
#[derive(Default)]
pub struct Text(String);

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Text {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.0, "{name} {value}");
    }

    /// A counter with one series per label value.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, series: &[(&str, u64)]) {
        self.header(name, help, "counter");
        for (v, n) in series {
            let _ = writeln!(self.0, "{name}{} {n}", labels(&[(label, v)]));
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
    }

    /// A histogram with one series per label value (an empty label name for
    /// a single unlabelled series).
    pub fn histograms(&mut self, name: &str, help: &str, label: &str, series: &[(&str, &Histogram)]) {
        self.header(name, help, "histogram");
        for (v, h) in series {
            let base: Vec<(&str, &str)> = if label.is_empty() { vec![] } else { vec![(label, v)] };
            let mut cumulative = 0;
            for (i, bound) in h.bounds.iter().enumerate() {
                cumulative += h.counts[i].load(Ordering::Relaxed);
                let le = format!("{bound}");
                let mut l = base.clone();
                l.push(("le", &le));
                let _ = writeln!(self.0, "{name}_bucket{} {cumulative}", labels(&l));
            }
            cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
            let mut l = base.clone();
            l.push(("le", "+Inf"));
            let _ = writeln!(self.0, "{name}_bucket{} {cumulative}", labels(&l));
            let _ = writeln!(self.0, "{name}_sum{} {}", labels(&base), f64::from_bits(h.sum.load(Ordering::Relaxed)));
            let _ = writeln!(self.0, "{name}_count{} {cumulative}", labels(&base));
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.histograms(name, help, "", &[("", h)]);
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let c = Counter::default();
        c.add(3);
        let mut t = Text::default();
        t.counter("x_total", "Xs.", c.get());
        t.counters("y_total", "Ys.", "result", &[("ok", 2), ("bad\"", 1)]);
        t.histogram("lat_seconds", "Latency.", &h);
        let text = t.finish();
        let expect = "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\n\
# HELP y_total Ys.\n# TYPE y_total counter\ny_total{result=\"ok\"} 2\ny_total{result=\"bad\\\"\"} 1\n\
# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
lat_seconds_bucket{le=\"0.1\"} 1\nlat_seconds_bucket{le=\"1\"} 2\nlat_seconds_bucket{le=\"+Inf\"} 3\n\
lat_seconds_sum 5.55\nlat_seconds_count 3\n";
        assert_eq!(text, expect);
        assert_eq!(h.count(), 3);
    }
}
