//! The CLI's exit codes, one case per row of the README's table: 0 ok, 1
//! the run failed, 2 invalid input or usage, 3 unreachable or unavailable,
//! 4 not found, 5 permission denied, 130 interrupted, 141 broken pipe.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Fleet, free_port, text, wait_for};

#[test]
fn each_row_of_the_exit_code_table() {
    let mut fleet = Fleet::start("exit-codes");
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let write = |name: &str, yaml: &str| {
        let path = fleet.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_string()
    };
    let failing = write("failing.yml", "name: f\njobs:\n  a:\n    steps: [{run: 'exit 3'}]\n");
    let invalid = write("invalid.yml", "name: f\njobs:\n  a:\n    stepz: []\n");
    let chatty = write("chatty.yml", "name: c\njobs:\n  a:\n    steps: [{run: 'seq 1 100000'}]\n");
    let blocked = write("blocked.yml", "name: b\njobs:\n  a:\n    runs-on: {gpu: a100}\n    steps: [{run: 'true'}]\n");
    let code = |args: &[&str]| fleet.drover(args).status.code();

    assert_eq!(code(&["runs"]), Some(0), "0: ok");
    assert_eq!(code(&["run", "--follow", &failing]), Some(1), "1: the run failed");
    assert_eq!(code(&["status"]), Some(2), "2: usage");
    assert_eq!(code(&["validate", &invalid]), Some(2), "2: invalid input");
    let no_ui = fleet.drover(&["ui", "--no-open"]);
    assert_eq!(no_ui.status.code(), Some(2), "2: a coordinator without a web UI");
    assert!(text(&no_ui.stderr).contains("--ui-listen"), "says how to turn it on: {}", text(&no_ui.stderr));
    let dead = format!("https://127.0.0.1:{}", free_port());
    assert_eq!(code(&["--coordinator", &dead, "runs"]), Some(3), "3: unreachable");
    assert_eq!(code(&["status", "999"]), Some(4), "4: not found");
    let bundle = fleet.agent_tls("a1");
    let agent_as_admin =
        crate::security::mixed_tls(&fleet, &bundle.join("agent-a1.pem"), &bundle.join("agent-a1-key.pem"));
    assert_eq!(fleet.drover_with_tls(agent_as_admin.path(), &["runs"]).status.code(), Some(5), "5: permission denied");

    // 130: Ctrl-C on a follow.
    let out = fleet.drover(&["run", "--detach", &blocked]);
    let run = text(&out.stdout).trim().to_string();
    let mut watch =
        fleet.drover_command(&["watch", &run]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    // The first line means it is connected, with its Ctrl-C handler set.
    let mut first = [0u8; 1];
    watch.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = wait_for("watch to stop", Duration::from_secs(20), || watch.try_wait().unwrap());
    assert_eq!(status.code(), Some(130), "130: interrupted");
    assert_eq!(code(&["cancel", &run]), Some(0));

    // 141: the reader of stdout goes away (`drover logs ... | head -1`).
    let out = fleet.drover(&["run", "--detach", &chatty]);
    let run = text(&out.stdout).trim().to_string();
    fleet.wait_run(&run, Duration::from_secs(60));
    let mut logs =
        fleet.drover_command(&["logs", &run, "a"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = logs.stdout.take().unwrap();
    let mut some = [0u8; 64];
    stdout.read_exact(&mut some).unwrap();
    drop(stdout);
    let status = wait_for("logs to stop", Duration::from_secs(20), || logs.try_wait().unwrap());
    assert_eq!(status.code(), Some(141), "141: broken pipe");
}
