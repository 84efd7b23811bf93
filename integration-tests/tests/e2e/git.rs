//! Runs from git: the pipeline is read from the named ref, the run is pinned
//! to its commit, and each job's workspace is a checkout of that commit.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Fleet, text};

/// Runs git in `dir` as a test author; panics on failure, returns stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn a_run_from_git_is_pinned_to_the_commit_and_checks_it_out() {
    let mut fleet = Fleet::start("git");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let pipeline = format!(
        "name: from-git\njobs:\n  show:\n    steps:\n      - run: |\n          cat version.txt > {out}/version-$DROVER_RUN_ID\n          git rev-parse HEAD > {out}/head-$DROVER_RUN_ID\n",
        out = out.display()
    );
    std::fs::write(repo.join(".drover.yml"), &pipeline).unwrap();
    std::fs::write(repo.join("version.txt"), "one\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("version.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);

    // A local path at a tag, and a file:// URL at the branch.
    let cases = [
        (repo.to_str().unwrap().to_string(), "v1", &first, "one"),
        (format!("file://{}", repo.display()), "main", &second, "two"),
    ];
    for (url, reference, commit, version) in cases {
        let cli = fleet.drover(&["run", "--repo", &url, "--ref", reference]);
        assert!(cli.status.success(), "{}", text(&cli.stderr));
        let run = text(&cli.stdout).trim().to_string();
        let status = fleet.wait_run(&run, Duration::from_secs(60));
        assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
        assert_eq!(status["commit"].as_str(), Some(commit.as_str()));
        assert_eq!(std::fs::read_to_string(out.join(format!("head-{run}"))).unwrap().trim(), commit.as_str());
        assert_eq!(std::fs::read_to_string(out.join(format!("version-{run}"))).unwrap().trim(), version);
    }

    // In the work tree, with no file: its .drover.yml at HEAD, and a warning
    // when the tree has changes the run will not see.
    let in_tree = |args: &[&str]| fleet.drover_command(args).current_dir(repo.join("sub")).output().unwrap();
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let cli = in_tree(&["run"]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    assert!(!text(&cli.stderr).contains("warning"), "a clean tree: {}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["commit"].as_str(), Some(second.as_str()));
    std::fs::write(repo.join("version.txt"), "three, not committed\n").unwrap();
    let cli = in_tree(&["run"]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let warning = format!(
        "warning: 1 file in {} changed since the last commit; the run uses HEAD ({})",
        repo.display(),
        &second[..12]
    );
    assert!(text(&cli.stderr).contains(&warning), "{}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(
        std::fs::read_to_string(out.join(format!("version-{run}"))).unwrap().trim(),
        "two",
        "HEAD, not the tree"
    );
    // Outside any work tree, a file or --repo is needed.
    let outside = Command::new(crate::harness::bin("drover"))
        .arg("run")
        .current_dir(fleet.dir.path())
        .env("GIT_CEILING_DIRECTORIES", fleet.dir.path().parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(outside.status.code(), Some(2), "{}", text(&outside.stderr));
    assert!(text(&outside.stderr).contains("give a pipeline FILE, or --repo URL"), "{}", text(&outside.stderr));

    // A ref that does not exist, and a missing file, are clear errors.
    let cli = fleet.drover(&["run", "--repo", repo.to_str().unwrap(), "--ref", "nope"]);
    assert_eq!(cli.status.code(), Some(2));
    assert!(text(&cli.stderr).contains("ref \"nope\" not found"), "{}", text(&cli.stderr));
    let cli = fleet.drover(&["run", "--repo", repo.to_str().unwrap(), "--file", "ci/missing.yml"]);
    assert_eq!(cli.status.code(), Some(2));
    assert!(text(&cli.stderr).contains("ci/missing.yml not found"), "{}", text(&cli.stderr));
}

#[test]
fn an_agent_checkout_past_its_git_timeout_fails_naming_the_repository() {
    let mut fleet = Fleet::start("git-checkout-timeout");
    // No checkout can finish in a millisecond: the deadline, not a server,
    // ends it here (edge.rs has a server that never answers the coordinator).
    fleet.start_agent(
        "a1",
        crate::harness::AgentSpec { extra: &["--git-timeout", "1ms"], ..crate::harness::AgentSpec::default() },
    );
    fleet.wait_agents(1);
    let repo = fleet.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join(".drover.yml"), "name: slow-git\njobs:\n  a: {steps: [{run: 'true'}]}\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let out = fleet.drover(&["run", "--repo", repo.to_str().unwrap(), "--ref", "main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = text(&out.stdout).trim().to_string();
    let status = fleet.wait_run(&run, Duration::from_secs(30));
    assert_eq!(status["state"], "failed", "{status:#}");
    let job = fleet.job(&run, "a");
    let message = job["message"].as_str().unwrap_or_default();
    assert!(message.contains("git did not finish within 0.001s checking out"), "{job:#}");
    assert!(message.contains(repo.to_str().unwrap()), "{job:#}");
}
