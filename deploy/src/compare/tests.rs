//! Table tests of the baseline judge, with a worked example, and its
//! false-positive rate and power on simulated measurements (a seeded
//! generator, so the figures are the same every run).

use super::*;

#[test]
fn the_normal_distribution_function_matches_its_table() {
    // (z, Φ(z) from a table)
    for (z, want) in
        [(0.0, 0.5), (1.0, 0.841_345), (1.644_854, 0.95), (1.96, 0.975_002), (-1.0, 0.158_655), (3.0, 0.998_650)]
    {
        assert!((normal_cdf(z) - want).abs() < 1e-6, "Φ({z}) = {}, want {want}", normal_cdf(z));
    }
}

#[test]
fn a_worked_example() {
    // Every canary measurement below every baseline one: U = 0, and for a
    // metric where lower is worse, z = (12.5 - 0.5) / sqrt(25/12 · 11).
    let c = compare(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0], Worse::Lower, &Judge::default());
    assert_eq!(c.u, 0.0);
    assert!((c.z - 2.506_81).abs() < 1e-4, "{c:?}");
    assert!((c.p - 0.006_09).abs() < 1e-4, "{c:?}");
    assert_eq!(c.outcome, Compared::Worse);
    // The same samples where higher is worse: the canary is better.
    let c = compare(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0], Worse::Higher, &Judge::default());
    assert_eq!(c.outcome, Compared::Pass);
    assert!(c.p > 0.99, "{c:?}");
}

#[test]
fn a_metric_is_worse_only_when_the_difference_is_both_real_and_large() {
    let base: Vec<f64> = (0..20).map(|i| 100.0 + (i % 7) as f64).collect();
    let shifted = |by: f64| base.iter().map(|v| v * by).collect::<Vec<f64>>();
    let judge = Judge::default();
    // (case, canary, baseline, which way is worse, outcome)
    type Case = (&'static str, Vec<f64>, Vec<f64>, Worse, Compared);
    let cases: Vec<Case> = vec![
        ("the same", base.clone(), base.clone(), Worse::Higher, Compared::Pass),
        ("50% slower", shifted(1.5), base.clone(), Worse::Higher, Compared::Worse),
        ("50% slower, where lower is worse", shifted(1.5), base.clone(), Worse::Lower, Compared::Pass),
        ("real but 3%: too small to matter", shifted(1.03), base.clone(), Worse::Higher, Compared::Pass),
        ("30% fewer successes", shifted(0.7), base.clone(), Worse::Lower, Compared::Worse),
        ("every value tied", vec![1.0; 10], vec![1.0; 10], Worse::Higher, Compared::Pass),
        ("a zero baseline, compared absolutely", vec![0.5; 10], vec![0.0; 10], Worse::Higher, Compared::Worse),
        ("four measurements", shifted(2.0)[..4].to_vec(), base.clone(), Worse::Higher, Compared::TooFew),
        ("NaN left out, then too few", vec![f64::NAN; 9], base.clone(), Worse::Higher, Compared::TooFew),
    ];
    for (case, canary, baseline, worse, want) in cases {
        let c = compare(&canary, &baseline, worse, &judge);
        assert_eq!(c.outcome, want, "{case}: {c:?}");
    }
}

#[test]
fn the_score_is_the_share_of_metrics_that_pass() {
    let judge = Judge { threshold: 50.0, ..Judge::default() };
    let pass = Comparison { u: 0.0, z: 0.0, p: 0.5, canary_median: 1.0, baseline_median: 1.0, outcome: Compared::Pass };
    let worse = Comparison { outcome: Compared::Worse, canary_median: 2.0, p: 0.001, ..pass.clone() };
    let few = Comparison { outcome: Compared::TooFew, ..pass.clone() };
    let (score, v) = verdict([("a", &pass), ("b", &worse)], &judge);
    assert_eq!((score, v), (50.0, Verdict::Pass));
    let (score, v) = verdict([("a", &pass), ("b", &worse), ("c", &worse)], &judge);
    assert!((score - 33.33).abs() < 0.01);
    let Verdict::Fail { reason } = v else { panic!("{v:?}") };
    assert!(reason.contains("worse on b (canary median 2 against 1, p = 0.0010), c"), "{reason}");
    let (_, v) = verdict([("a", &pass), ("c", &few)], &judge);
    assert!(matches!(v, Verdict::Inconclusive { .. }), "{v:?}");
}

/// A latency-like measurement: log-normal around `median`, from a seeded
/// xorshift generator.
struct Sampler(u64);

impl Sampler {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn latency(&mut self, median: f64) -> f64 {
        // Box-Muller, then a spread of 30%.
        let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (0.3 * normal).exp()
    }
}

#[test]
fn over_100_runs_of_identical_versions_few_fail_and_a_slower_canary_is_caught() {
    let judge = Judge::default();
    let mut s = Sampler(0x9e37_79b9_7f4a_7c15);
    let mut runs = |canary_median: f64| {
        (0..100)
            .filter(|_| {
                let canary: Vec<f64> = (0..20).map(|_| s.latency(canary_median)).collect();
                let baseline: Vec<f64> = (0..20).map(|_| s.latency(100.0)).collect();
                compare(&canary, &baseline, Worse::Higher, &judge).outcome == Compared::Worse
            })
            .count()
    };
    let false_positives = runs(100.0);
    let caught = runs(150.0);
    eprintln!(
        "baseline judge, 20 measurements a side, alpha {DEFAULT_ALPHA}, min effect {DEFAULT_MIN_EFFECT}: {false_positives} \
         of 100 identical runs judged worse; a canary 50% slower caught in {caught} of 100"
    );
    assert!(false_positives <= 3, "{false_positives} false positives of 100");
    assert!(caught >= 90, "caught {caught} of 100");
}
