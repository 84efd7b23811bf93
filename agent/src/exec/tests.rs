//! The executor end to end: a real attempt, run by real bash.

use super::*;

/// A real step: the agent's environment stays out, the pipeline's and
/// Drover's come in, and a failing step's message is whole.
#[tokio::test]
async fn a_real_step_sees_a_cleared_environment() {
    let mut attempt = attempt_with(&["env; exit 3"], &[]);
    attempt.steps[0].0 = "show".into();
    attempt.env = [("JOB_VAR".to_string(), "from-the-job".to_string())].into();
    let (log, result, work_dir) = run_attempt(attempt, "env").await;
    let vars: BTreeMap<&str, &str> =
        log.lines().filter(|l| !l.starts_with("==>")).filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars.get("JOB_VAR"), Some(&"from-the-job"), "{log}");
    assert_eq!(vars.get("DROVER_WORKSPACE").copied(), work_dir.join("8-deploy-1").to_str(), "{log}");
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
}

/// Runs `attempt` to its end in a work dir of its own; its log, its result
/// and the (removed) work dir.
async fn run_attempt(attempt: Attempt, name: &str) -> (String, Option<(Outcome, i32, String)>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("drover-agent-exec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let work_dir = std::fs::canonicalize(&dir).unwrap();
    let ctx = Arc::new(Context::new("a1".into(), work_dir.clone(), None, Arc::new(StepWatch::disabled())));
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
    std::fs::remove_dir_all(&dir).unwrap();
    (String::from_utf8(log).unwrap(), result, work_dir)
}

fn attempt_with(steps: &[&str], secrets: &[(&str, &str)]) -> Attempt {
    Attempt {
        id: "8/deploy/1".into(),
        run_id: "8".into(),
        job: "deploy".into(),
        attempt: 1,
        steps: steps.iter().map(|s| (String::new(), s.to_string())).collect(),
        env: BTreeMap::new(),
        timeout: None,
        checkout: None,
        traceparent: None,
        artifacts: None,
        inputs: Vec::new(),
        secrets: Secrets(secrets.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()),
        secrets_error: None,
        cache: None,
        step_conditions: Vec::new(),
        need_results: Default::default(),
        branch: None,
        tag: None,
        matrix: Default::default(),
        event: None,
    }
}

/// A step gets its secret as a variable, and its output never carries it:
/// not printed plainly, not split across two writes, not base64-encoded,
/// on stdout or stderr. What it printed around the secret stays.
#[tokio::test]
async fn a_step_gets_its_secrets_and_its_output_never_shows_them() {
    let secret = "s3cr3t-Value-42";
    let steps = [
        r#"echo "plain: $TOKEN""#,
        r#"printf 'split: %s' "${TOKEN:0:6}"; sleep 0.2; printf '%s end\n' "${TOKEN:6}""#,
        r#"printf '%s' "$TOKEN" | base64; printf 'x%s' "$TOKEN" | base64 >&2"#,
        r#"test "$TOKEN" = 's3cr3t-Value-42' && echo 'length:' ${#TOKEN}"#,
    ];
    let (log, result, _) = run_attempt(attempt_with(&steps, &[("TOKEN", secret)]), "secrets").await;
    assert_eq!(result, Some((Outcome::Succeeded, 0, String::new())), "{log}");
    assert!(log.contains("plain: ***\n"), "{log}");
    assert!(log.contains("split: *** end\n"), "{log}");
    assert!(log.contains("length: 15\n"), "the step saw the whole value: {log}");
    use base64::Engine as _;
    for form in [
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::STANDARD.encode(format!("x{secret}")),
    ] {
        assert!(!log.contains(&form), "{form} in {log}");
    }
}

/// A secret the coordinator could not deliver fails the attempt before
/// any step, with the coordinator's message.
#[tokio::test]
async fn an_undelivered_secret_fails_the_attempt_before_any_step() {
    let mut attempt = attempt_with(&["echo ran"], &[]);
    attempt.secrets_error = Some("secret TOKEN no longer exists".into());
    let (log, result, _) = run_attempt(attempt, "undelivered").await;
    assert_eq!(result, Some((Outcome::Failed, -1, "secret TOKEN no longer exists".into())));
    assert!(!log.contains("ran"), "{log}");
}

/// After a step fails, only steps whose `if:` says so run (failure(),
/// always()); the attempt fails with the first failure.
#[tokio::test]
async fn after_a_failed_step_only_steps_that_ask_to_run_do() {
    let mut attempt = attempt_with(&["echo first", "exit 3", "echo never", "echo cleanup", "echo report"], &[]);
    attempt.step_conditions =
        vec![String::new(), String::new(), String::new(), "always()".into(), "failure() && env.MODE == 'ci'".into()];
    attempt.env = [("MODE".to_string(), "ci".to_string())].into();
    let (log, result, _) = run_attempt(attempt, "conditions").await;
    assert_eq!(result, Some((Outcome::Failed, 3, "step 2 exited with code 3".into())), "{log}");
    assert!(log.contains("first\n") && log.contains("cleanup\n") && log.contains("report\n"), "{log}");
    assert!(!log.contains("never\n"), "{log}");
    assert!(log.contains("==> [3/5] step 3: skipped (its condition is false)"), "{log}");

    // Without a failure, failure() steps are skipped and the attempt succeeds.
    let mut attempt = attempt_with(&["echo ok", "echo report"], &[]);
    attempt.step_conditions = vec![String::new(), "failure()".into()];
    let (log, result, _) = run_attempt(attempt, "conditions-ok").await;
    assert_eq!(result, Some((Outcome::Succeeded, 0, String::new())), "{log}");
    assert!(!log.contains("report\n"), "{log}");
}
