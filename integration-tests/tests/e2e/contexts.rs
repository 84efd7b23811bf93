//! Contexts: named coordinators and TLS directories in
//! `$XDG_CONFIG_HOME/drover/config.yaml`, chosen by `--context`,
//! `DROVER_CONTEXT` or the current one, with flags and their variables
//! winning over all; and `drover dev --keep`, which makes a `dev` context
//! current so that a plain `drover runs` reaches its fleet.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{Fleet, TempDir, bin, free_port, text, wait_for};

/// `drover args` with only `config` as its configuration home, and `env`.
fn drover(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("drover"));
    cmd.args(args)
        .env_remove("DROVER_COORDINATOR")
        .env_remove("DROVER_TLS_DIR")
        .env_remove("DROVER_CONTEXT")
        .env("XDG_CONFIG_HOME", config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn contexts_choose_the_coordinator_and_flags_win() {
    let fleet = Fleet::start("contexts");
    let config = fleet.dir.path().join("config");
    let (url, tls) = (fleet.url(), fleet.tls.to_str().unwrap().to_string());
    let dead = format!("https://127.0.0.1:{}", free_port());

    let out = drover(&config, &[], &["context", "ls"]);
    assert!(out.status.success() && text(&out.stdout).contains("no contexts"), "{}", text(&out.stdout));
    // The first context added becomes the current one.
    let out = drover(&config, &[], &["context", "add", "local", "--coordinator", &url, "--tls-dir", &tls]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("it is the current context"), "{}", text(&out.stdout));
    let out = drover(&config, &[], &["context", "add", "gone", "--coordinator", &dead, "--tls-dir", &tls]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let code = |env: &[(&str, &str)], args: &[&str]| drover(&config, env, args).status.code();
    assert_eq!(code(&[], &["runs"]), Some(0), "the current context");
    assert_eq!(code(&[], &["--context", "gone", "runs"]), Some(3), "--context");
    assert_eq!(code(&[("DROVER_CONTEXT", "gone")], &["runs"]), Some(3), "DROVER_CONTEXT");
    let out = drover(&config, &[], &["context", "use", "gone"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(code(&[], &["runs"]), Some(3), "the new current context");
    assert_eq!(code(&[], &["--coordinator", &url, "--tls-dir", &tls, "runs"]), Some(0), "flags win");
    assert_eq!(code(&[("DROVER_COORDINATOR", &url)], &["runs"]), Some(0), "variables win");

    let list: serde_json::Value =
        serde_json::from_slice(&drover(&config, &[], &["context", "ls", "-o", "json"]).stdout).unwrap();
    let current: Vec<&str> =
        list.as_array().unwrap().iter().filter(|c| c["current"] == true).filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(current, ["gone"], "{list:#}");
    assert_eq!(list[1]["coordinator"], url.as_str(), "{list:#}");

    let out = drover(&config, &[], &["context", "use", "nope"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("no context \"nope\"") && text(&out.stderr).contains("(contexts: gone, local)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code(&[], &["context", "rm", "gone"]), Some(0));
    // The current context removed: none is current, and the defaults apply.
    let out = drover(&config, &[], &["runs"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(".drover/tls/ca.pem"), "{}", text(&out.stderr));
    assert_eq!(code(&[], &["context", "use", "local"]), Some(0));
    assert_eq!(code(&[], &["runs"]), Some(0));
}

#[test]
fn dev_keep_makes_a_dev_context_current() {
    let dir = TempDir::new("dev-keep");
    let config = dir.path().join("config");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.yml");
    let mut dev = Command::new(bin("drover"))
        .args(["dev", "--keep", "--pipeline", pipeline.to_str().unwrap(), "--dir"])
        .arg(dir.path().join("dev"))
        .env("XDG_CONFIG_HOME", &config)
        .stdout(std::fs::File::create(dir.path().join("dev.stdout")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("drover dev to keep its fleet", Duration::from_secs(120), || {
        let out = std::fs::read_to_string(dir.path().join("dev.stdout")).unwrap_or_default();
        out.contains("still running").then_some(())
    });
    let out = drover(&config, &[], &["runs", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["state"], "succeeded", "{runs:#}");
    // A second `drover dev` on the same directory says why it cannot
    // start, in the coordinator's own words.
    let second = Command::new(bin("drover"))
        .args(["dev", "--pipeline", pipeline.to_str().unwrap(), "--dir"])
        .arg(dir.path().join("dev"))
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    let stderr = text(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("the coordinator exited") && stderr.contains("is in use by another drover-coordinator"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 0, "each cause once: {stderr}");
    // Ctrl-C stops the fleet; the run succeeded, so the exit is 0.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(dev.id() as i32, libc::SIGINT) };
    let status = wait_for("drover dev to stop", Duration::from_secs(30), || dev.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}
