//! Invalid pipeline files are rejected at submit with file:line:column and a
//! hint, the CLI exits 2, and nothing is stored.

use crate::harness::{Fleet, text};

#[test]
fn each_kind_of_invalid_pipeline_is_rejected_with_its_position() {
    let fleet = Fleet::start("invalid");
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "name: p\njobs:\n  build:\n    step:\n      - run: make\n",
            ":4:5: unknown key `step` in job `build`",
        ),
        (
            "cycle",
            "name: p\njobs:\n  a:\n    needs: [c]\n    steps: [{run: x}]\n  b:\n    needs: [a]\n    steps: [{run: x}]\n  c:\n    needs: [b]\n    steps: [{run: x}]\n",
            "cycle in needs: a -> c -> b -> a",
        ),
        (
            "missing need",
            "name: p\njobs:\n  test:\n    needs: [build]\n    steps: [{run: x}]\n",
            ":4:13: job `test` needs `build`, which is not defined",
        ),
        (
            "duplicate job",
            "name: p\njobs:\n  build:\n    steps: [{run: x}]\n  build:\n    steps: [{run: y}]\n",
            ":5:3: duplicate job `build` (first defined at line 3)",
        ),
        ("no steps", "name: p\njobs:\n  build:\n    steps: []\n", ":4:12: job `build` has no steps"),
        (
            "bad duration",
            "name: p\njobs:\n  a:\n    timeout: 10 minutes\n    steps: [{run: x}]\n",
            ":4:14: invalid timeout `10 minutes` in job `a`",
        ),
    ];
    for (what, yaml, expect) in cases {
        let path = fleet.dir.path().join(format!("{}.yml", what.replace(' ', "-")));
        std::fs::write(&path, yaml).unwrap();
        let out = fleet.drover(&["run", path.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expect), "{what}: expected {expect:?} in:\n{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{what}: the file is named: {stderr}");
        assert!(stderr.contains("hint:"), "{what}: a hint is given: {stderr}");
    }
    let out = fleet.drover(&["runs"]);
    assert_eq!(text(&out.stdout).lines().count(), 1, "nothing was stored: {}", text(&out.stdout));
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_coordinator_exits_3() {
    let fleet = Fleet::start("usage");
    let out = fleet.drover(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = fleet.drover(&["status", "not-a-number"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a run id"), "{}", text(&out.stderr));
    let out = fleet.drover(&["status", "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("run 999 not found"), "{}", text(&out.stderr));
    // A port nobody listens on (from below the ephemeral range, so no
    // parallel test's connection takes it meanwhile).
    let port = crate::harness::free_port();
    let out = std::process::Command::new(crate::harness::bin("drover"))
        .args(["--coordinator", &format!("https://127.0.0.1:{port}"), "runs"])
        .env("DROVER_TLS_DIR", &fleet.tls)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot reach the coordinator"), "{}", text(&out.stderr));
}
