//! The executor end to end: a real attempt, run by real bash.

use super::*;

/// A real step: the agent's environment stays out, the pipeline's and
/// Drover's come in, and a failing step's message is whole.
#[tokio::test]
async fn a_real_step_sees_a_cleared_environment() {
    let dir = std::env::temp_dir().join(format!("drover-agent-exec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work_dir = std::fs::canonicalize(&dir).unwrap();
    let ctx = Arc::new(Context::new("a1".into(), work_dir.clone(), None, Arc::new(StepWatch::disabled())));
    let attempt = Attempt {
        id: "7/env/1".into(),
        run_id: "7".into(),
        job: "env".into(),
        attempt: 1,
        steps: vec![("show".into(), "env; exit 3".into())],
        env: [("JOB_VAR".to_string(), "from-the-job".to_string())].into(),
        timeout: None,
        checkout: None,
        traceparent: None,
        artifacts: None,
        inputs: Vec::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_control_tx, control) = watch::channel(Control::default());
    execute(attempt, ctx, tx, control).await;
    let mut log = Vec::new();
    let mut result = None;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            ExecEvent::Output { data, .. } => log.extend(data),
            ExecEvent::Finished { outcome, exit_code, message, .. } => result = Some((outcome, exit_code, message)),
        }
    }
    let log = String::from_utf8(log).unwrap();
    let vars: BTreeMap<&str, &str> =
        log.lines().filter(|l| !l.starts_with("==>")).filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("JOB_VAR"), Some(&"from-the-job"), "{log}");
    assert_eq!(vars.get("DROVER_WORKSPACE").copied(), work_dir.join("7-env-1").to_str(), "{log}");
    assert_eq!(vars.get("PATH"), Some(&DEFAULT_PATH), "{log}");
    assert_eq!(vars.get("LANG"), Some(&"C.UTF-8"), "{log}");
    // Nothing of this test process's environment: only what Drover
    // gives, and what bash adds itself.
    let given = ["PATH", "HOME", "LANG", "JOB_VAR", "TRACEPARENT"];
    let bash = ["PWD", "OLDPWD", "SHLVL", "_"];
    for key in vars.keys() {
        assert!(key.starts_with("DROVER_") || given.contains(key) || bash.contains(key), "{key} in {log}");
    }
    assert_eq!(result, Some((Outcome::Failed, 3, "show exited with code 3".to_string())));
    std::fs::remove_dir_all(&dir).unwrap();
}
