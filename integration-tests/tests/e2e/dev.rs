//! `drover dev`, the README's first command: certificates, a coordinator on
//! the embedded store and two agents, and the sample pipeline to the end.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use crate::harness::{TempDir, run_to_end, text, wait_for_or_report};

/// Runs `drover dev` in `dir` to its end; returns (success, stdout, stderr).
fn drover_dev(dir: &Path) -> (bool, String, String) {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.yml");
    let dev_dir = dir.join("dev");
    let args =
        [OsStr::new("dev"), OsStr::new("--pipeline"), pipeline.as_os_str(), OsStr::new("--dir"), dev_dir.as_os_str()];
    let end = run_to_end(dir, "drover", &args, Duration::from_secs(120));
    (end.status.success(), end.stdout, end.stderr)
}

/// Processes whose command line mentions `dir` (what dev started there).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = text(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

#[test]
fn drover_dev_runs_the_sample_pipeline_end_to_end_and_again_on_its_state() {
    let dir = TempDir::new("dev");
    let (ok, out, err) = drover_dev(dir.path());
    assert!(ok, "drover dev failed:\n{out}\n{err}");
    assert!(out.contains("created certificates"), "{out}");
    assert!(out.contains("2 agents connected"), "{out}");
    // Live progress: state changes and job logs prefixed by job name.
    assert!(out.contains("[lint] succeeded"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("release |") && l.contains("all green")), "{out}");
    assert!(out.contains("run 1 succeeded"), "{out}");
    // It stopped everything it started.
    wait_for_or_report(
        "every process drover dev started to exit",
        Duration::from_secs(10),
        || processes_under(dir.path()).is_empty().then_some(()),
        || format!("still running: {:?}", processes_under(dir.path())),
    );

    // Again on the same directory: the certificates and the store are kept.
    let (ok, out, err) = drover_dev(dir.path());
    assert!(ok, "drover dev failed the second time:\n{out}\n{err}");
    assert!(!out.contains("created certificates"), "{out}");
    assert!(out.contains("run 2 succeeded"), "{out}");
}

#[test]
fn scripts_dev_sh_finds_the_binaries_wherever_cargo_puts_them() {
    // CARGO_TARGET_DIR somewhere else than ./target: a link to the target
    // directory these tests were built in, and DROVER_DEV_NO_BUILD, so
    // nothing is built again (building through the link would rebuild
    // binaries that other tests are running). The script once ran
    // target/release/drover, which is not there.
    let dir = TempDir::new("dev-sh");
    let target = crate::harness::bin("drover").parent().and_then(|d| d.parent()).expect("the target dir").to_path_buf();
    let elsewhere = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &elsewhere).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .env("CARGO_TARGET_DIR", &elsewhere)
        .env("DROVER_DEV_PROFILE", "dev")
        .env("DROVER_DEV_NO_BUILD", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "scripts/dev.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("run 1 succeeded"), "{stdout}");
}

#[test]
fn drover_dev_keep_stops_its_whole_fleet_on_sigterm() {
    let dir = TempDir::new("dev-term");
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline.yml");
    let log = dir.path().join("dev.out");
    let mut child = std::process::Command::new(crate::harness::bin("drover"))
        .args(["dev", "--keep", "--pipeline"])
        .arg(&pipeline)
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_or_report(
        "drover dev --keep to say it keeps running",
        Duration::from_secs(120),
        || std::fs::read_to_string(&log).unwrap_or_default().contains("still running").then_some(()),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    assert!(!processes_under(dir.path()).is_empty(), "the fleet runs");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = crate::harness::wait_for("drover dev to exit", Duration::from_secs(20), || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0), "it exits as the run did");
    wait_for_or_report(
        "every process drover dev started to exit",
        Duration::from_secs(10),
        || processes_under(dir.path()).is_empty().then_some(()),
        || format!("still running: {:?}", processes_under(dir.path())),
    );
}
