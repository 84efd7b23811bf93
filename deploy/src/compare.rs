//! Baseline comparison (issue 17's `compare: baseline`), the judge: a
//! canary's measurements of a metric against a baseline's, taken over the
//! same window from a baseline of the same size started at the same moment
//! from the current version (as Kayenta does), by a one-sided
//! Mann-Whitney U test. Pure, and table-tested.
//!
//! **The test.** Both samples are ranked together (ties share the mean of
//! their ranks); `U` counts, over every pair of a canary and a baseline
//! measurement, how often the canary's is the larger (a tie counts a
//! half). With no difference `U` is near `n·m/2`. Its z-score uses the
//! normal approximation with the tie correction and a continuity
//! correction of ½, and `p` is the one-sided probability, in the direction
//! that is worse for the metric, of a `U` at least this far from the middle
//! if the two came from one distribution.
//!
//! **A metric's verdict.** The canary is *worse* when `p < alpha` (default
//! [`DEFAULT_ALPHA`], 0.01) and its median differs from the baseline's by
//! more than `min_effect` of the baseline's (default [`DEFAULT_MIN_EFFECT`],
//! 10%; a baseline median of zero compares absolutely), so that a
//! difference both real and large enough to matter fails it; else it
//! *passes*. Fewer than [`MIN_SAMPLES`] measurements on either side is *too
//! few* to say, which is inconclusive, never a pass.
//!
//! **The score** of a comparison is the share of its metrics that pass,
//! 0 to 100; the canary passes when it reaches the threshold (default
//! [`DEFAULT_THRESHOLD`], 100: every metric), and a metric with too few
//! measurements makes the whole inconclusive.

use crate::rollout::Verdict;

/// The significance level a difference must reach.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// How far apart the medians must be, relative to the baseline's.
pub const DEFAULT_MIN_EFFECT: f64 = 0.10;
/// The score (per cent of metrics passing) the canary must reach.
pub const DEFAULT_THRESHOLD: f64 = 100.0;
/// The fewest measurements on each side the test is run with.
pub const MIN_SAMPLES: usize = 5;

/// Which way a metric is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Latency, errors: higher is worse.
    Higher,
    /// Throughput, successes: lower is worse.
    Lower,
}

/// How one metric compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The Mann-Whitney U of the canary's sample (pairs where it is the
    /// larger).
    pub u: f64,
    pub z: f64,
    /// One-sided, in the direction that is worse.
    pub p: f64,
    pub canary_median: f64,
    pub baseline_median: f64,
    pub outcome: Compared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    Pass,
    Worse,
    TooFew,
}

/// The thresholds of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judge {
    pub alpha: f64,
    pub min_effect: f64,
    pub threshold: f64,
}

impl Default for Judge {
    fn default() -> Judge {
        Judge { alpha: DEFAULT_ALPHA, min_effect: DEFAULT_MIN_EFFECT, threshold: DEFAULT_THRESHOLD }
    }
}

/// Compares a metric's `canary` measurements with the `baseline`'s.
/// Measurements that are not numbers (NaN) are left out.
pub fn compare(canary: &[f64], baseline: &[f64], worse: Worse, judge: &Judge) -> Comparison {
    let canary: Vec<f64> = canary.iter().copied().filter(|v| !v.is_nan()).collect();
    let baseline: Vec<f64> = baseline.iter().copied().filter(|v| !v.is_nan()).collect();
    let (canary_median, baseline_median) = (median(&canary), median(&baseline));
    if canary.len() < MIN_SAMPLES || baseline.len() < MIN_SAMPLES {
        return Comparison { u: 0.0, z: 0.0, p: 1.0, canary_median, baseline_median, outcome: Compared::TooFew };
    }
    let (n1, n2) = (canary.len() as f64, baseline.len() as f64);
    // Rank both together; ties share their mean rank.
    let mut all: Vec<(f64, bool)> =
        canary.iter().map(|v| (*v, true)).chain(baseline.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum += rank * all[i..=j].iter().filter(|(_, is_canary)| *is_canary).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let nf = n as f64;
    let variance = n1 * n2 / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    // Positive when the canary is worse.
    let toward_worse = match worse {
        Worse::Higher => u - mean,
        Worse::Lower => mean - u,
    };
    let z = if variance > 0.0 { (toward_worse - 0.5) / variance.sqrt() } else { 0.0 };
    let p = if variance > 0.0 { 1.0 - normal_cdf(z) } else { 1.0 };
    let effect = match worse {
        Worse::Higher => canary_median - baseline_median,
        Worse::Lower => baseline_median - canary_median,
    };
    let large = if baseline_median == 0.0 {
        effect > judge.min_effect
    } else {
        effect > judge.min_effect * baseline_median.abs()
    };
    let outcome = if p < judge.alpha && large { Compared::Worse } else { Compared::Pass };
    Comparison { u, z, p, canary_median, baseline_median, outcome }
}

/// The score of `metrics`' comparisons, each by name, and the verdict it
/// gives the gate.
pub fn verdict<'a>(metrics: impl IntoIterator<Item = (&'a str, &'a Comparison)>, judge: &Judge) -> (f64, Verdict) {
    let metrics: Vec<(&str, &Comparison)> = metrics.into_iter().collect();
    if let Some((name, c)) = metrics.iter().find(|(_, c)| c.outcome == Compared::TooFew) {
        let why = format!(
            "metric {name}: too few measurements to compare with the baseline (at least {MIN_SAMPLES} each; canary \
             median {}, baseline median {})",
            c.canary_median, c.baseline_median
        );
        return (0.0, Verdict::Inconclusive { reason: why });
    }
    if metrics.is_empty() {
        return (100.0, Verdict::Pass);
    }
    let passing = metrics.iter().filter(|(_, c)| c.outcome == Compared::Pass).count();
    let score = 100.0 * passing as f64 / metrics.len() as f64;
    if score >= judge.threshold {
        return (score, Verdict::Pass);
    }
    let worse: Vec<String> = metrics
        .iter()
        .filter(|(_, c)| c.outcome == Compared::Worse)
        .map(|(name, c)| {
            format!("{name} (canary median {} against {}, p = {:.4})", c.canary_median, c.baseline_median, c.p)
        })
        .collect();
    let reason = format!(
        "the canary scored {score:.0} against the baseline, under its threshold of {:.0}: worse on {}",
        judge.threshold,
        worse.join(", ")
    );
    (score, Verdict::Fail { reason })
}

fn median(sample: &[f64]) -> f64 {
    if sample.is_empty() {
        return f64::NAN;
    }
    let mut s = sample.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len().is_multiple_of(2) { (s[mid - 1] + s[mid]) / 2.0 } else { s[mid] }
}

/// The standard normal distribution function, from the complementary
/// error function (W. J. Cody's rational approximation, as in Numerical
/// Recipes' `erfcc`: absolute error under 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    1.0 - 0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests;
