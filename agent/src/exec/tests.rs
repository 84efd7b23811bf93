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
    run_attempt_with(attempt, name, None, |_| {}).await
}

/// As [`run_attempt`], with `transfer` and this agent's caches; `check`
/// looks at the work dir once the attempt has ended, before it goes.
async fn run_attempt_with(
    attempt: Attempt,
    name: &str,
    transfer: Option<Arc<dyn artifacts::Transfer>>,
    check: impl FnOnce(&Path),
) -> (String, Option<(Outcome, i32, String)>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("drover-agent-exec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let work_dir = std::fs::canonicalize(&dir).unwrap();
    let mut ctx = Context::new("a1".into(), work_dir.clone(), None, Arc::new(StepWatch::disabled()));
    if transfer.is_some() {
        ctx.caches = Some(Arc::new(cache::LocalCaches::open(&work_dir.join(".caches"), 1 << 30).unwrap()));
    }
    ctx.transfer = transfer;
    let ctx = Arc::new(ctx);
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
    check(&work_dir);
    std::fs::remove_dir_all(&dir).unwrap();
    (String::from_utf8(log).unwrap(), result, work_dir)
}

/// A step that prints far more than one read takes, on stdout and on
/// stderr, is read whole and in order (the readers' buffers grow as reads
/// fill them).
#[tokio::test]
async fn a_steps_long_output_arrives_whole_and_in_order() {
    let attempt = attempt_with(&["seq 1 100000", "seq 100001 150000 >&2"], &[]);
    let (log, result, _) = run_attempt(attempt, "long-output").await;
    let numbers: Vec<u64> = log.lines().filter(|l| !l.starts_with("==>")).map(|l| l.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 150_000);
    assert!(numbers.iter().copied().eq(1..=150_000), "out of order or altered");
    assert_eq!(result.map(|r| r.0), Some(Outcome::Succeeded));
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
        job_token: JobToken::default(),
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

/// The coordinator's blobs and cache, in memory: it serves two archives
/// (a need's artifacts, a cache entry's) and records every call with the
/// attempt and token it named.
struct Recording {
    blobs: BTreeMap<String, Vec<u8>>,
    /// The sha256 of the cache entry's archive.
    cached: String,
    calls: std::sync::Mutex<Vec<String>>,
}

impl Recording {
    fn note(&self, call: &str, job: JobAuth<'_>) {
        self.calls.lock().unwrap().push(format!("{call} {} {}", job.attempt, job.token.expose()));
    }

    fn serve(&self, sha256: &str, dest: &Path) -> Result<(), String> {
        std::fs::write(dest, self.blobs.get(sha256).ok_or("no such blob")?).map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl artifacts::Transfer for Recording {
    async fn fetch(&self, _: &str, _: u64, _: &Path) -> Result<(), String> {
        self.calls.lock().unwrap().push("fetch, naming no attempt".into());
        Err("a job never downloads as a deployment does".into())
    }
    async fn fetch_artifact(&self, job: JobAuth<'_>, sha256: &str, _: u64, dest: &Path) -> Result<(), String> {
        self.note("fetch_artifact", job);
        self.serve(sha256, dest)
    }
    async fn upload(&self, job: JobAuth<'_>, _: &Path, _: &str, _: u64) -> Result<(), String> {
        self.note("upload", job);
        Ok(())
    }
    async fn restore_cache(
        &self,
        job: JobAuth<'_>,
        _: &str,
        _: &[String],
    ) -> Result<(Option<cache::Found>, String), String> {
        self.note("restore_cache", job);
        let size = self.blobs[&self.cached].len() as u64;
        let blob = cache::BlobRef { root: "workspace".into(), sha256: self.cached.clone(), size };
        Ok((Some(cache::Found { key: "deps-old".into(), blobs: vec![blob] }), "scope".into()))
    }
    async fn fetch_cache(&self, job: JobAuth<'_>, _: &str, blob: &cache::BlobRef, dest: &Path) -> Result<(), String> {
        self.note("fetch_cache", job);
        self.serve(&blob.sha256, dest)
    }
    async fn save_cache(&self, job: JobAuth<'_>, _: &str, _: &[cache::BlobRef]) -> Result<(bool, String), String> {
        self.note("save_cache", job);
        Ok((true, "scope".into()))
    }
}

/// An archive of `files` (path, content): its sha256, size and bytes.
fn archive(name: &str, files: &[(&str, &str)]) -> (String, u64, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("drover-agent-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, content) in files {
        std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
        std::fs::write(dir.join(path), content).unwrap();
    }
    let mut bytes = Vec::new();
    let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    let limits = drover_archive::Limits::default();
    let manifest = drover_archive::pack(&dir, &paths, drover_archive::IfNoFiles::Error, &limits, &mut bytes).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (manifest.sha256.to_string(), manifest.bytes, bytes)
}

/// Every transfer of an attempt (its need's artifacts, its cache's lookup,
/// download and save, its own uploads) names it and carries its job token;
/// the token never reaches a step's environment, the job's log or a file
/// the agent keeps.
#[tokio::test]
async fn an_attempts_transfers_carry_its_token_and_its_steps_never_see_it() {
    let token = "djt-never-shown-7f3a";
    let (need_sha, need_size, need) = archive("need", &[("from-need.txt", "n")]);
    let (cache_sha, _, cached) = archive("cache", &[("deps/lib.txt", "cached")]);
    let transfer = Arc::new(Recording {
        blobs: [(need_sha.clone(), need), (cache_sha.clone(), cached)].into(),
        cached: cache_sha,
        calls: Default::default(),
    });
    let mut attempt = attempt_with(
        &["env; cat from-need.txt deps/lib.txt; mkdir out && echo built > out/x && echo more >> deps/lib.txt"],
        &[],
    );
    attempt.job_token = JobToken::new(token.into());
    attempt.inputs = vec![artifacts::Input { job: "build".into(), sha256: need_sha, size: need_size }];
    attempt.artifacts =
        Some(artifacts::Spec { paths: vec!["out/**".into()], ignore_missing: false, max_bytes: 0, max_file_bytes: 0 });
    attempt.cache = Some(cache::CacheWork {
        key: vec![cache::KeyPart::Text("deps-new".into())],
        paths: vec!["deps".into()],
        restore_keys: vec!["deps-".into()],
    });
    let (mut files_with_token, mut left) = (Vec::new(), Vec::new());
    let find_token = |work_dir: &Path| {
        for entry in walkdir::WalkDir::new(work_dir).into_iter().map(Result::unwrap) {
            if entry.file_type().is_file()
                && String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).contains(token)
            {
                files_with_token.push(entry.path().to_path_buf());
            }
        }
        left = std::fs::read_dir(work_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    };
    let (log, result, _) = run_attempt_with(attempt, "token", Some(transfer.clone()), find_token).await;
    // The workspace and the scratch directory (which the transfers used)
    // are gone; the agent's caches stay.
    assert_eq!(left, [".caches"]);
    assert_eq!(result, Some((Outcome::Succeeded, 0, String::new())), "{log}");
    assert!(log.contains("ncached"), "the need's artifacts and the cache arrived: {log}");
    assert!(!log.contains(token), "{log}");
    assert!(files_with_token.is_empty(), "{files_with_token:?}");
    let calls = transfer.calls.lock().unwrap().clone();
    let by = format!("8/deploy/1 {token}");
    let want: Vec<String> = ["fetch_artifact", "restore_cache", "fetch_cache", "upload", "upload", "save_cache"]
        .iter()
        .map(|call| format!("{call} {by}"))
        .collect();
    assert_eq!(calls, want);
}
