//! Caches on the real binaries, from a real git repository: the first run
//! misses and saves, the second hits (its step sees the restored files),
//! a changed lock file restores by restore-key and saves anew, and `drover
//! status` says which. Warm-cache affinity sends a job to the agent that
//! holds its entry while a freer, cold agent is free too. `drover caches`
//! lists the entries and `drover cache rm` deletes one; a key template with
//! an unknown function is refused with its file:line:column.

use std::time::Duration;

use crate::git::git;
use crate::harness::{Fleet, text};

const PIPELINE: &str = r#"name: cached
jobs:
  build:
    cache:
      key: "deps-{{ hashFiles('Cargo.lock') }}"
      paths: [deps]
      restore-keys: ["deps-"]
    steps:
      - run: |
          if [ -f deps/made-by ]; then
            echo "restored deps made by run $(cat deps/made-by)"
          else
            mkdir -p deps && echo "$DROVER_RUN_ID" > deps/made-by && head -c 300000 /dev/urandom > deps/blob
            echo "made deps in run $DROVER_RUN_ID"
          fi
"#;

#[test]
fn the_second_run_hits_the_cache_on_the_warm_agent() {
    let mut fleet = Fleet::start("caches");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join(".drover.yml"), PIPELINE).unwrap();
    std::fs::write(repo.join("Cargo.lock"), "v1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let repo_arg = repo.to_str().unwrap().to_string();
    let run = |fleet: &Fleet| -> (String, serde_json::Value, String) {
        let cli = fleet.drover(&["run", "--detach", "--repo", &repo_arg]);
        assert!(cli.status.success(), "{}", text(&cli.stderr));
        let run = text(&cli.stdout).trim().to_string();
        let status = fleet.wait_run(&run, Duration::from_secs(60));
        assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
        let log = text(&fleet.drover(&["logs", &run, "build"]).stdout);
        (run.clone(), fleet.job(&run, "build"), log)
    };

    // The first run: a miss, saved.
    let (first, job, log) = run(&fleet);
    let cache = job["cache"].as_str().unwrap().to_string();
    assert!(cache.starts_with("miss deps-") && cache.ends_with(", saved"), "{job:#}\n{log}");
    let key = cache.trim_start_matches("miss ").trim_end_matches(", saved").to_string();
    assert_eq!(key.len(), "deps-".len() + 64, "hashFiles filled in: {key}");
    assert!(log.contains(&format!("made deps in run {first}")), "{log}");
    assert!(log.contains(&format!("cache: saved {key}")), "{log}");

    // A second, freer agent joins: by free slots it would get the next
    // job, but a1 holds the job's cache.
    fleet.agent("a2", "", 3);
    fleet.wait_agents(2);
    let (second, job, log) = run(&fleet);
    assert_eq!(job["cache"], format!("hit {key}"), "{job:#}\n{log}");
    assert_eq!(job["agent"], "a1", "the warm agent: {job:#}");
    assert_eq!(job["placement"], format!("warm cache {key}"), "{job:#}");
    assert!(log.contains(&format!("restored deps made by run {first}")), "the step sees the restored files: {log}");
    assert!(log.contains("from this agent's copy"), "{log}");
    let status = text(&fleet.drover(&["status", &second]).stdout);
    assert!(status.contains(&format!("cache: hit {key}; a1 chosen for its warm cache {key}")), "{status}");

    // The lock file changes: a new key, restored by restore-key from the
    // old entry, and saved under the new one.
    std::fs::write(repo.join("Cargo.lock"), "v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let (_, job, log) = run(&fleet);
    let cache = job["cache"].as_str().unwrap();
    assert!(cache.starts_with(&format!("restored {key} for deps-")) && cache.ends_with(", saved"), "{job:#}\n{log}");
    assert_eq!(job["agent"], "a1", "a restore-key match is warm too: {job:#}");

    // Listed; deleted by key; an unknown key is not found.
    let listed: serde_json::Value = serde_json::from_slice(&fleet.drover(&["caches", "-o", "json"]).stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed:#}");
    assert_eq!(listed[1]["key"], key.as_str(), "most recently used first: {listed:#}");
    assert_eq!(listed[1]["scope"], repo_arg.as_str(), "{listed:#}");
    assert!(listed[1]["size"].as_u64().unwrap() > 300_000, "{listed:#}");
    let rm = fleet.drover(&["cache", "rm", &key, "-o", "json"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let deleted: serde_json::Value = serde_json::from_slice(&rm.stdout).unwrap();
    assert_eq!((deleted["key"].as_str(), deleted["deleted"].as_u64()), (Some(key.as_str()), Some(1)), "{deleted}");
    let rm = fleet.drover(&["cache", "rm", &key]);
    assert_eq!(rm.status.code(), Some(4), "{}", text(&rm.stderr));
}

#[test]
fn a_cache_key_with_an_unknown_function_is_refused_where_it_is_written() {
    let fleet = Fleet::start("caches-bad");
    let file = fleet.dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "name: p\njobs:\n  a:\n    cache: {key: \"deps-{{ hashFile('x') }}\", paths: [deps]}\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    for args in [vec!["validate", file.to_str().unwrap()], vec!["run", "--detach", file.to_str().unwrap()]] {
        let out = fleet.drover(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("bad.yml:4:27:") && err.contains("unknown function `hashFile`"), "{args:?}: {err}");
        assert!(err.contains("hashFiles"), "a suggestion: {err}");
    }
}
