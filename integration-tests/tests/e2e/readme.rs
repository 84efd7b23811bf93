//! The README's by-hand walkthrough runs as pasted: its shell block, on a
//! terminal, with only what a test must change (the binaries already
//! built, a free port for 7700, a scratch directory for `.drover/by-hand`,
//! Ctrl-C on `drover watch` after a few seconds).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{TempDir, bin, free_port, pty};

/// The shell block under "## Trying it by hand".
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = &readme[readme.find("## Trying it by hand").expect("the section")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block's end");
    section[start..end].to_string()
}

#[test]
fn the_readme_walkthrough_runs_as_pasted() {
    let dir = TempDir::new("readme");
    let block = walkthrough();
    for line in ["drover context rm by-hand", "kill $AGENTS", "rm -rf .drover/by-hand", "drover cancel 4"] {
        assert!(block.contains(line), "the walkthrough has `{line}`:\n{block}");
    }
    let bins = bin("drover").parent().unwrap().to_path_buf();
    let scratch = dir.path().join("by-hand");
    let port = free_port().to_string();
    let script = block
        .lines()
        .filter(|l| !l.starts_with("cargo build"))
        .map(|l| {
            let l = l.replace(".drover/by-hand", scratch.to_str().unwrap()).replace("7700", &port);
            if l.starts_with("export PATH=") {
                format!("export PATH={}:$PATH", bins.display())
            } else if l.starts_with("drover watch 4") {
                // Ctrl-C, three seconds in.
                "timeout --preserve-status -s INT 3 drover watch 4; echo \"watch 4 exit $?\"".to_string()
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let script = format!("set -u\n{script}\necho \"teardown exit $?\"\n");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("DROVER_COORDINATOR")
        .env_remove("DROVER_TLS_DIR")
        .env_remove("DROVER_CONTEXT");
    let (code, out) = pty::on_a_terminal(cmd, Duration::from_secs(180));
    let lines = pty::lines(&out);
    let shown = || lines.join("\n");
    assert_eq!(code, Some(0), "{}", shown());
    for want in [
        "examples/pipeline.yml: ok, pipeline \"sample\" with 5 jobs",
        "run 1 succeeded (",
        "run 2 succeeded (",
        "started run 3 (a rerun of run 1)",
        "run 3 succeeded (",
        "`drover watch 4` follows it again, `drover cancel 4` cancels it",
        "watch 4 exit 130",
        "run 4 cancelling",
        "builder-2",
        "context by-hand removed",
        "teardown exit 0",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "no line with {want:?}:\n{}", shown());
    }
    assert!(!lines.iter().any(|l| l.starts_with("drover: ") && !l.contains("interrupted")), "{}", shown());
    assert!(!scratch.exists(), "the teardown removes everything");
}
