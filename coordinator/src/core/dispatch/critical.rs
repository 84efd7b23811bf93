//! Critical-path-first order: the scheduler's queue (`scheduler/queue.rs`)
//! is kept so that the job with the longest remaining path to its run's end
//! goes first, since every moment it waits the run's end moves too; among
//! equals, the older (earlier queued) first. A job's remaining path is its estimated
//! duration plus the longest remaining path among the jobs that need it.
//! Estimates come from the driver (the median of the job's last runs, 1 s
//! for a job never seen). `--dispatch fifo` keeps the queue's order.

use std::collections::HashMap;

use drover_pipeline::Pipeline;

/// The estimate for a job never seen, in ms.
pub const DEFAULT_ESTIMATE_MS: u64 = 1000;

/// Each job's remaining path to the end of `pipeline`'s run, in ms, with
/// `estimate` giving one job's duration.
pub fn ranks(pipeline: &Pipeline, estimate: impl Fn(&str) -> u64) -> HashMap<String, u64> {
    let position: HashMap<&str, usize> = pipeline.jobs.iter().enumerate().map(|(i, j)| (j.name.as_str(), i)).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); pipeline.jobs.len()];
    for (i, job) in pipeline.jobs.iter().enumerate() {
        for need in &job.needs {
            if let Some(&n) = position.get(need.as_str()) {
                dependents[n].push(i);
            }
        }
    }
    // The needs graph has no cycles (the pipeline was checked), so a
    // memoised depth-first walk ends; explicit stack, no recursion.
    let mut rank: Vec<Option<u64>> = vec![None; pipeline.jobs.len()];
    for start in 0..pipeline.jobs.len() {
        let mut stack = vec![start];
        while let Some(&i) = stack.last() {
            if rank[i].is_some() {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = dependents[i].iter().copied().filter(|&d| rank[d].is_none()).collect();
            if pending.is_empty() {
                let after = dependents[i].iter().filter_map(|&d| rank[d]).max().unwrap_or(0);
                rank[i] = Some(estimate(&pipeline.jobs[i].name).saturating_add(after));
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
    }
    pipeline.jobs.iter().zip(rank).map(|(j, r)| (j.name.clone(), r.unwrap_or(0))).collect()
}

/// The median of `samples` (ms), or [`DEFAULT_ESTIMATE_MS`] without any.
pub fn median(samples: impl IntoIterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = samples.into_iter().collect();
    if v.is_empty() {
        return DEFAULT_ESTIMATE_MS;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(jobs: &[(&str, &[&str])]) -> Pipeline {
        let yaml: String = jobs
            .iter()
            .map(|(name, needs)| format!("  {name}: {{needs: [{}], steps: [{{run: x}}]}}\n", needs.join(", ")))
            .collect();
        drover_pipeline::parse("p.yml", &format!("name: p\njobs:\n{yaml}")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ranks_are_the_longest_remaining_path() {
        // A chain a -> b -> c beside a lone d and a diamond e -> (f, g) -> h.
        let p = pipeline(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
            ("e", &[]),
            ("f", &["e"]),
            ("g", &["e"]),
            ("h", &["f", "g"]),
        ]);
        let est = |job: &str| match job {
            "g" => 5000,
            _ => 1000,
        };
        let r = ranks(&p, est);
        let want =
            [("a", 3000), ("b", 2000), ("c", 1000), ("d", 1000), ("e", 7000), ("f", 2000), ("g", 6000), ("h", 1000)];
        for (job, rank) in want {
            assert_eq!(r[job], rank, "{job}");
        }
    }
}
