//! Secrets on the real binaries: `drover secret set` seals a value under
//! the key `drover certs init` made, a job that declares it gets it as a
//! variable, and what the job prints of it (plainly, split across two
//! writes, base64-encoded) comes out as `***` in `drover logs` and in the
//! followed output, because the agent masks it before it leaves the node.
//! The value is never in the store's files, the blob store, or any answer;
//! an unknown secret is refused at submit with its file:line:column.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{Fleet, text};

const SECRET: &str = "tr0ub4dor-and-3-horses";

/// `drover secret set NAME` with `value` on standard input.
pub(crate) fn set_secret(fleet: &Fleet, name: &str, value: &[u8]) -> Output {
    let mut child = fleet
        .drover_command(&["secret", "set", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run drover secret set");
    child.stdin.take().unwrap().write_all(value).unwrap();
    child.wait_with_output().unwrap()
}

/// Whether any file under `dir` holds `needle`.
fn found_under(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep").args(["-rl", "--", needle]).arg(dir).output().expect("grep runs");
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn a_secret_reaches_its_job_and_never_its_log_the_store_or_an_answer() {
    let mut fleet = Fleet::start("secrets");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);

    let out = set_secret(&fleet, "DEPLOY_TOKEN", format!("{SECRET}\n").as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("secret DEPLOY_TOKEN set (22 bytes)"), "{}", text(&out.stdout));

    // Listed with who set it, never with its value.
    let listed = fleet.drover(&["secret", "ls", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "DEPLOY_TOKEN", "{listed:#}");
    assert_eq!(listed[0]["updated_by"], "admin", "{listed:#}");
    assert_eq!(listed[0]["size"], 22, "{listed:#}");
    assert!(!listed.to_string().contains(SECRET));

    let out_dir = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let pipeline = format!(
        r#"name: secrets
jobs:
  deploy:
    secrets: [DEPLOY_TOKEN]
    steps:
      - run: echo "plain $DEPLOY_TOKEN"
      - run: |
          printf 'split %s' "${{DEPLOY_TOKEN:0:9}}"; sleep 0.3; printf '%s done\n' "${{DEPLOY_TOKEN:9}}"
      - run: printf '%s' "$DEPLOY_TOKEN" | base64
      - run: printf '%s' "$DEPLOY_TOKEN" | sha256sum | cut -d' ' -f1 > {}/seen
  other:
    steps:
      - run: echo "other sees [${{DEPLOY_TOKEN:-}}]"
"#,
        out_dir.display()
    );
    let file = fleet.dir.path().join("secrets.yml");
    std::fs::write(&file, &pipeline).unwrap();
    let followed = fleet.drover(&["run", "--follow", file.to_str().unwrap()]);
    let followed_text = format!("{}{}", text(&followed.stdout), text(&followed.stderr));
    assert!(followed.status.success(), "{followed_text}{}", fleet.logs());

    // The step had the whole value.
    let seen = std::fs::read_to_string(out_dir.join("seen")).unwrap();
    let want = Command::new("bash").args(["-c", &format!("printf '%s' '{SECRET}' | sha256sum")]).output().unwrap();
    assert_eq!(seen.trim(), text(&want.stdout).split_whitespace().next().unwrap());

    let run = fleet.drover(&["runs", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let logs = fleet.drover(&["logs", &run, "deploy"]);
    let logs = text(&logs.stdout);
    let encoded = Command::new("bash").args(["-c", &format!("printf '%s' '{SECRET}' | base64")]).output().unwrap();
    let encoded = text(&encoded.stdout).trim().to_string();
    for (what, output) in [("drover logs", logs.as_str()), ("drover run --follow", followed_text.as_str())] {
        assert!(output.contains("plain ***"), "{what}: {output}");
        assert!(output.contains("split *** done"), "{what}: {output}");
        assert!(!output.contains(SECRET), "{what} shows the secret: {output}");
        assert!(!output.contains(&encoded), "{what} shows its base64: {output}");
        assert!(!output.contains("tr0ub4dor"), "{what} shows half of it: {output}");
    }
    let other = text(&fleet.drover(&["logs", &run, "other"]).stdout);
    assert!(other.contains("other sees []"), "only jobs that declare a secret get it: {other}");

    // Nothing the coordinator keeps or answers holds the value: not the
    // store's files, not the blob store, not the run's status.
    let status = fleet.status(&run);
    assert!(!status.to_string().contains(SECRET), "{status:#}");
    let stored = found_under(&fleet.dir.path().join("data-0"), SECRET);
    assert!(stored.is_empty(), "the value is stored in plain text in {stored:?}");
    assert!(!found_under(&fleet.dir.path().join("data-0"), "DEPLOY_TOKEN").is_empty(), "the grep finds what is there");

    // Deleted, the next run's job fails before its steps, naming it.
    let rm = fleet.drover(&["secret", "rm", "DEPLOY_TOKEN", "-o", "json"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let removed: serde_json::Value = serde_json::from_slice(&rm.stdout).unwrap();
    assert_eq!(removed["removed"], "DEPLOY_TOKEN");
    let rerun = fleet.drover(&["rerun", &run, "--detach"]);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    let rerun = text(&rerun.stdout).trim().to_string();
    fleet.wait_run(&rerun, Duration::from_secs(30));
    let deploy = fleet.job(&rerun, "deploy");
    assert_eq!(deploy["state"], "failed", "{deploy:#}");
    let message = deploy["message"].as_str().unwrap_or_default();
    assert!(message.contains("secret DEPLOY_TOKEN no longer exists"), "{message}");
}

#[test]
fn unknown_oversized_and_misnamed_secrets_are_refused_and_nothing_is_written() {
    let fleet = Fleet::start("secrets-bad");
    let out = set_secret(&fleet, "KNOWN_TOKEN", b"value-1");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An unknown secret: refused at submit, at its file:line:column, with
    // a suggestion; no run is made.
    let file = fleet.dir.path().join("unknown.yml");
    std::fs::write(
        &file,
        "name: p\njobs:\n  a:\n    secrets: [KNOWN_TOKEN, KNOWN_TOKN2]\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    let out = fleet.drover(&["run", "--detach", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("unknown.yml:4:28: secret `KNOWN_TOKN2` of job `a` does not exist"), "{err}");
    assert!(err.contains("did you mean `KNOWN_TOKEN`?"), "{err}");
    let runs: serde_json::Value = serde_json::from_slice(&fleet.drover(&["runs", "-o", "json"]).stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs:#}");

    // 1 MiB: over the limit, named; the old value stays.
    let out = set_secret(&fleet, "KNOWN_TOKEN", &vec![b'x'; 1024 * 1024]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("1048576 bytes, over the limit of 65536 bytes (64 KiB)"), "{err}");
    let listed: serde_json::Value =
        serde_json::from_slice(&fleet.drover(&["secret", "ls", "-o", "json"]).stdout).unwrap();
    assert_eq!(listed[0]["size"], 7, "the old value stays: {listed:#}");

    // A name that cannot be a variable.
    let out = set_secret(&fleet, "deploy-token", b"value");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid secret name \"deploy-token\""), "{}", text(&out.stderr));

    // Removing one that does not exist.
    let out = fleet.drover(&["secret", "rm", "NOPE"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("secret \"NOPE\" does not exist"), "{}", text(&out.stderr));
}
