//! What the CLI does with hostile job output and with inputs it must refuse:
//! terminal escape sequences shown instead of obeyed, an oversized pipeline
//! refused before anything is sent, a client certificate from another CA
//! refused with a message that says what to check, and the certificate
//! layout that keeps each key with the one process that needs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Fleet, TempDir, bin, free_port, text};

/// OSC 52 (write the clipboard), clear screen and cursor home, OSC 0 (the
/// window title), then a word in red, as a step prints them.
const HOSTILE_STEP: &str = r"printf '\033]52;c;aGVsbG8=\007\033[2J\033[H\033]0;pwned\007\033[31mred\033[0m\n'";
const HOSTILE_BYTES: &[u8] = b"\x1b]52;c;aGVsbG8=\x07\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[31mred\x1b[0m\n";
/// The same as `drover logs` shows it: controls in caret form, SGR kept.
const HOSTILE_SHOWN: &str = "^[]52;c;aGVsbG8=^G^[[2J^[[H^[]0;pwned^G\x1b[31mred\x1b[0m";

/// Panics unless every ESC in `out` starts an SGR sequence (ESC [ digits,
/// ';' or ':', then m).
fn assert_only_sgr(what: &str, out: &str) {
    for (i, _) in out.match_indices('\x1b') {
        let rest = &out[i + 1..];
        let sgr = rest.strip_prefix('[').and_then(|r| {
            let end = r.find(|c: char| !(c.is_ascii_digit() || c == ';' || c == ':'))?;
            (r.as_bytes()[end] == b'm').then_some(())
        });
        assert!(sgr.is_some(), "{what}: a raw escape that is not SGR at byte {i}: {out:?}");
    }
    for c in out.chars() {
        assert!(!c.is_control() || "\n\r\t\x08\x1b".contains(c), "{what}: control {c:?} passed: {out:?}");
    }
}

#[test]
fn escape_sequences_in_job_output_are_shown_not_obeyed() {
    let mut fleet = Fleet::start("escapes");
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let path = fleet.dir.path().join("escapes.yml");
    std::fs::write(
        &path,
        format!("name: escapes\njobs:\n  noisy:\n    steps:\n      - run: |\n          {HOSTILE_STEP}\n"),
    )
    .unwrap();

    // `run --follow` prints the job's lines sanitised.
    let out = fleet.drover(&["run", "--follow", path.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}{}", fleet.logs());
    assert!(stdout.contains(&format!("noisy | {HOSTILE_SHOWN}")), "{stdout:?}");
    assert_only_sgr("run --follow", &stdout);
    let run = stderr
        .lines()
        .find_map(|l| l.strip_prefix("submitted run "))
        .unwrap_or_else(|| panic!("no run id in {stderr:?}"))
        .trim()
        .to_string();

    // `logs` sanitises too, stdout being a pipe here as in `drover logs > f`.
    let out = fleet.drover(&["logs", &run, "noisy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains(HOSTILE_SHOWN), "{shown:?}");
    assert_only_sgr("logs", &shown);

    // `logs --raw` gives the bytes as the step wrote them.
    let out = fleet.drover(&["logs", "--raw", &run, "noisy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout.windows(HOSTILE_BYTES.len()).any(|w| w == HOSTILE_BYTES),
        "the raw log lacks the step's bytes: {:?}",
        text(&out.stdout)
    );
}

#[test]
fn an_oversized_pipeline_file_is_refused_before_anything_is_sent() {
    let dir = TempDir::new("oversized");
    let path = dir.path().join("big.yml");
    let mut yaml = String::from("name: big\njobs:\n  a:\n    steps:\n      - run: echo\n");
    while yaml.len() < 5 << 20 {
        yaml.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, &yaml).unwrap();
    // Nothing listens on the port and the TLS directory does not exist: a
    // CLI that tried to connect would fail otherwise (exit 3 or another
    // message).
    let out = Command::new(bin("drover"))
        .args(["run", path.to_str().unwrap()])
        .env("DROVER_COORDINATOR", format!("https://127.0.0.1:{}", free_port()))
        .env("DROVER_TLS_DIR", dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("big.yml is {} bytes", yaml.len())), "{stderr}");
    assert!(stderr.contains("over the limit of 1 MiB (1048576 bytes) for a pipeline file"), "{stderr}");
    assert!(!stderr.contains("decoded message length"), "{stderr}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_with_what_to_check() {
    let fleet = Fleet::start("otherca-msg");
    let other = TempDir::new("otherca-msg-certs");
    let certs = other.path().join("certs");
    let out = Command::new(bin("drover")).args(["certs", "init", "--dir"]).arg(&certs).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Trusts the fleet's CA (so the coordinator is accepted) but presents
    // the other CA's admin certificate, which the coordinator refuses.
    let mixed = other.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(fleet.tls.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    for file in ["admin.pem", "admin-key.pem"] {
        std::fs::copy(certs.join("admin").join(file), mixed.join(file)).unwrap();
    }
    let out = fleet.drover_with_tls(&mixed, &["runs"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("refused the client certificate"), "{stderr}");
    assert!(stderr.contains("check --tls-dir (or DROVER_TLS_DIR, or the context)"), "{stderr}");
    assert!(!stderr.contains("the coordinator failed"), "{stderr}");

    // The whole admin directory of the other CA: now the CLI refuses the
    // coordinator's certificate, and says so.
    let out = fleet.drover_with_tls(&certs.join("admin"), &["runs"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("does not vouch for"), "{stderr}");
    assert!(stderr.contains("check --tls-dir (or DROVER_TLS_DIR, or the context)"), "{stderr}");

    // The fleet's own admin directory works.
    let out = fleet.drover(&["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Every file and directory under `dir`, relative, with its permission bits.
fn tree(dir: &Path) -> Vec<(String, u32)> {
    fn walk(root: &Path, dir: &Path, into: &mut Vec<(String, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            into.push((rel, meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                walk(root, &path, into);
            }
        }
    }
    let mut all = Vec::new();
    walk(dir, dir, &mut all);
    all.sort();
    all
}

#[test]
fn certs_init_gives_each_process_only_its_own_keys() {
    let dir = TempDir::new("layout");
    let certs = dir.path().join("certs");
    let drover = |args: &[&str]| {
        let out = Command::new(bin("drover")).args(args).arg("--dir").arg(&certs).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let init = drover(&["certs", "init"]);
    let issued = drover(&["certs", "issue-agent", "b1", "b2", "--labels", "os=linux,agent=1"]);
    let want: Vec<(String, u32)> = [
        ("admin", 0o700),
        ("admin/admin-key.pem", 0o600),
        ("admin/admin.pem", 0o644),
        ("admin/ca.pem", 0o644),
        ("agents", 0o700),
        ("agents/b1", 0o700),
        ("agents/b1/agent-b1-key.pem", 0o600),
        ("agents/b1/agent-b1.pem", 0o644),
        ("agents/b1/ca.pem", 0o644),
        ("agents/b2", 0o700),
        ("agents/b2/agent-b2-key.pem", 0o600),
        ("agents/b2/agent-b2.pem", 0o644),
        ("agents/b2/ca.pem", 0o644),
        ("ca", 0o700),
        ("ca/ca-key.pem", 0o600),
        ("ca/ca.pem", 0o644),
        ("coordinator", 0o700),
        ("coordinator/ca-key.pem", 0o600),
        ("coordinator/ca.pem", 0o644),
        ("coordinator/coordinator-key.pem", 0o600),
        ("coordinator/coordinator.pem", 0o644),
        ("coordinator/secrets.key", 0o600),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), *m))
    .collect();
    assert_eq!(tree(&certs), want);
    assert_eq!(std::fs::metadata(&certs).unwrap().permissions().mode() & 0o777, 0o700);

    // It says where each directory goes.
    let c = certs.display();
    for line in [
        format!("{c}/ca/  the CA and its key, with the operator"),
        format!("drover-coordinator --tls-dir {c}/coordinator"),
        format!("DROVER_TLS_DIR={c}/admin"),
    ] {
        assert!(init.contains(&line), "{line:?} not in {init}");
    }
    for name in ["b1", "b2"] {
        let line = format!(
            "created {c}/agents/{name}/ for agent {name} (labels agent=1,os=linux): copy it to the agent's host and \
             start drover-agent --name {name} --labels agent=1,os=linux --tls-dir"
        );
        assert!(issued.contains(&line), "{line:?} not in {issued}");
    }

    // Nothing is overwritten.
    for args in [&["certs", "init"][..], &["certs", "issue-agent", "b2"][..]] {
        let out = Command::new(bin("drover")).args(args).arg("--dir").arg(&certs).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("already exists"), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(tree(&certs), want);
}

#[test]
fn agents_started_by_the_harness_use_their_own_bundle_with_their_labels() {
    let mut fleet = Fleet::start("bundles");
    fleet.agent("x1", "os=linux,role=b", 1);
    fleet.wait_agents(1);
    let bundle = fleet.agent_tls("x1");
    let mut files: Vec<String> =
        std::fs::read_dir(&bundle).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["agent-x1-key.pem", "agent-x1.pem", "ca.pem"]);
    let out = fleet.drover(&["agents"]);
    assert!(text(&out.stdout).contains("os=linux,role=b"), "{}", text(&out.stdout));
    // Started again under the same name with other labels, it gets a new
    // certificate with those.
    let cert = std::fs::read(bundle.join("agent-x1.pem")).unwrap();
    fleet.agents[0].kill();
    fleet.agent("x1", "os=linux", 1);
    crate::harness::wait_for("x1 to reconnect with its new labels", Duration::from_secs(30), || {
        let out = fleet.drover(&["agents"]);
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("x1 ") && l.contains("connected") && !l.contains("role=b"))
            .then_some(())
    });
    assert_ne!(std::fs::read(bundle.join("agent-x1.pem")).unwrap(), cert);
}
