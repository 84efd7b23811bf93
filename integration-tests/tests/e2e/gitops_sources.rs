//! Where an app's pieces come from, end to end (issue 16): a release by
//! URL with its sha256, fetched by the coordinator from a real HTTP server
//! and refused when the bytes are not the ones the file names; apps
//! declared in a file; a deploy key over a real sshd; and a sync's hooks,
//! whose output stays with its rollout.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::deploys::Web;
use crate::gitops::{Repo, app, create, history};
use crate::harness::{text, wait_for, wait_for_or_report};

/// A directory served over HTTP by Python's `http.server`, killed on drop.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = crate::harness::free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        wait_for("the file server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        FileServer { child, port }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release of the test service at `version`, as `dir/web-{version}.tar.gz`
/// made by tar and gzip; its sha256.
fn tarball(web: &Web, dir: &Path, version: &str) -> String {
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(&web.script, src.join("server.py")).unwrap();
    std::fs::write(src.join("VERSION"), format!("{version}\n")).unwrap();
    let out = dir.join("files").join(format!("web-{version}.tar.gz"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let made = Command::new("tar").arg("czf").arg(&out).arg("-C").arg(&src).args(["server.py", "VERSION"]).output();
    let made = made.unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let sum = Command::new("sha256sum").arg(&out).output().unwrap();
    text(&sum.stdout).split_whitespace().next().unwrap().to_string()
}

fn url_file(web: &Web, url: &str, sha256: &str) -> String {
    format!(
        "artifact: {{url: \"{url}\", sha256: {sha256}}}\nservice:\n  name: web\n  command: python3 server.py\n  port: \
         {port}\n  health: {{http: /healthz, interval: 1s, healthy_after: 2, timeout: 8s}}\nstrategy: {{rolling: \
         {{max_parallel: 1}}}}\nprogress_deadline: 2m\n",
        port = web.port
    )
}

#[test]
fn an_artifact_by_url_is_fetched_checked_by_its_digest_and_deployed() {
    let web = Web::start("gitops-url", 2);
    let dir = web.fleet.dir.path().to_path_buf();
    let (v1, v2) = (tarball(&web, &dir, "v1"), tarball(&web, &dir, "v2"));
    let files = FileServer::start(&dir.join("files"));
    let port = files.port;
    let url = |version: &str| format!("http://127.0.0.1:{port}/web-{version}.tar.gz");
    let repo = Repo::new(&dir);

    // A URL at the cloud's instance metadata address is never fetched.
    let metadata = "http://169.254.169.254/latest/web.tar.gz";
    repo.commit("main", &url_file(&web, metadata, &v1), "web from the metadata address");
    create(&web, &repo, &["--auto-sync"]);
    let failed_with = |says: &'static str| {
        wait_for_or_report(
            &format!("a sync to fail with {says:?}"),
            Duration::from_secs(60),
            || {
                history(&web)
                    .into_iter()
                    .find(|s| s["outcome"] == "failed" && s["message"].as_str().unwrap_or_default().contains(says))
            },
            || format!("{:#}\n{:#?}", app(&web), history(&web)),
        )
    };
    let refused = failed_with("refused to fetch http://169.254.169.254");
    assert!(refused["message"].as_str().unwrap().contains("link-local"), "{refused:#}");

    // The file names v1's URL with v2's digest: the sync fetches it, finds
    // other bytes, and changes nothing.
    repo.commit("main", &url_file(&web, &url("v1"), &v2), "web v1, with the wrong digest");
    let failed = failed_with("has the sha256");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains(&format!("has the sha256 {v1}, not the {v2}")), "{failed:#}");
    assert!(message.contains("nothing was changed"), "{failed:#}");
    assert!(failed["rollouts"].as_array().unwrap().is_empty(), "{failed:#}");
    assert_eq!(web.versions(), vec![None, None], "nothing was deployed");

    // The right digest: fetched, and served on every node.
    repo.commit("main", &url_file(&web, &url("v1"), &v1), "web v1");
    let serving = |version: &str| {
        wait_for_or_report(
            &format!("{version} served from its URL"),
            Duration::from_secs(90),
            || {
                (web.versions() == vec![Some(version.to_string()); 2] && app(&web)["sync_status"] == "synced")
                    .then_some(())
            },
            || format!("{:?}\n{:#}\n{:#?}\n{}", web.versions(), app(&web), history(&web), web.fleet.logs()),
        )
    };
    serving("v1");
    let services = crate::deploys::json(&web.fleet, &["services", "--env", "staging", "-o", "json"]);
    assert!(services.to_string().contains(&v1[..12]), "the release is named by its digest: {services:#}");

    // v2 by URL too. Then the server goes away, and going back to v1
    // needs no fetch: its blob is stored already.
    repo.commit("main", &url_file(&web, &url("v2"), &v2), "web v2");
    serving("v2");
    drop(files);
    repo.commit("main", &url_file(&web, &url("v1"), &v1), "web v1 again");
    serving("v1");
    let last = &history(&web)[0];
    assert_eq!(last["outcome"], "succeeded", "{last:#}");
}

#[test]
fn an_apps_file_creates_and_changes_apps_all_or_nothing() {
    let web = Web::start("gitops-apply", 1);
    let v1 = crate::gitops::build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    repo.commit("main", &crate::gitops::service_file(&web, &v1), "web v1");
    let file = web.fleet.dir.path().join("apps.yml");
    let apply = |text: &str| {
        std::fs::write(&file, text).unwrap();
        web.fleet.drover(&["app", "apply", "-f", file.to_str().unwrap(), "-o", "json"])
    };
    let apps = |auto_sync: bool, env: &str| {
        format!(
            "apps:\n  - name: web\n    repo: {url}\n    path: deploy\n    env: {env}\n    poll: 1s\n    auto_sync: \
             {auto_sync}\n  - name: docs\n    repo: {url}\n    path: docs\n    env: staging\n    depends_on: [web]\n",
            url = repo.url
        )
    };

    // Two mistakes: both said at their place, and no app is made.
    let out = apply(&apps(false, "staging").replace("poll: 1s", "poll: 30").replace("[web]", "[docs]"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("apps.yml:6:11: `poll: 30` has no unit"), "{said}");
    assert!(said.contains("apps.yml:12:17: app docs cannot depend on itself"), "{said}");
    assert_eq!(crate::deploys::json(&web.fleet, &["apps", "-o", "json"]), serde_json::json!([]));

    // Created, without auto-sync: the commit waits for a sync.
    let out = apply(&apps(false, "staging"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(applied["created"], serde_json::json!(["web", "docs"]), "{applied:#}");
    wait_for_or_report(
        "the app to see its commit",
        Duration::from_secs(30),
        || (app(&web)["sync_status"] == "out_of_sync").then_some(()),
        || format!("{:#}", app(&web)),
    );
    assert_eq!(web.versions(), vec![None], "no auto-sync yet");

    // The same file again changes nothing; one that moves an app to
    // another environment is refused whole.
    let out = apply(&apps(false, "staging"));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["unchanged"], serde_json::json!(["web", "docs"]), "{again:#}");
    let out = apply(&apps(true, "production"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("app web deploys to environment staging, not production"),
        "{}",
        text(&out.stderr)
    );

    // Auto-sync turned on by the file: the app syncs its commit.
    let out = apply(&apps(true, "staging"));
    let changed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (changed["replaced"].clone(), changed["unchanged"].clone()),
        (serde_json::json!(["web"]), serde_json::json!(["docs"]))
    );
    wait_for_or_report(
        "the app to sync once auto-sync is on",
        Duration::from_secs(90),
        || (web.versions() == vec![Some("v1".to_string())] && app(&web)["sync_status"] == "synced").then_some(()),
        || format!("{:?}\n{:#}\n{:#?}", web.versions(), app(&web), history(&web)),
    );
    assert_eq!(history(&web)[0]["started_by"], "auto-sync");
}

#[test]
fn a_deploy_key_held_as_a_secret_fetches_and_pushes_over_ssh_and_only_it() {
    use drover_integration_tests::harness::sshd::{Sshd, keypair};
    let web = Web::start("gitops-ssh", 1);
    let dir = web.fleet.dir.path().to_path_buf();
    let v1 = crate::gitops::web_build(&web, "v1");
    let repo = Repo::new(&dir);
    let following = crate::gitops::service_file(&web, &v1)
        .replace("service:\n", "update: {pipeline: web-build, job: build, write: commit}\nservice:\n");
    repo.commit("main", &following, "web follows web-build");
    let key_dir = dir.join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    let (_, public) = keypair(&key_dir.join("deploy"));
    let (_, _) = keypair(&key_dir.join("other"));
    let sshd = Sshd::start(&dir.join("sshd"), &public);
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts()).unwrap();
    let set_key = |which: &str| {
        let path = key_dir.join(which);
        let out = web.fleet.drover(&["secret", "set", "DEPLOY_KEY", "--from-file", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    set_key("deploy");
    let url = sshd.url(&dir.join("desired.git"));
    let create = |extra: &[&str]| {
        let mut args = vec!["app", "create", "web", "--repo", &url, "--path", "deploy", "--env", "staging"];
        args.extend_from_slice(&["--poll", "1s", "--auto-sync"]);
        args.extend_from_slice(extra);
        web.fleet.drover(&args)
    };

    // A key with no host keys to trust is refused; so is one for a
    // repository that is not reached over ssh.
    let out = create(&["--deploy-key", "DEPLOY_KEY"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--known-hosts"), "{}", text(&out.stderr));
    let mut args = vec!["app", "create", "web", "--repo", &repo.url, "--path", "deploy", "--env", "staging"];
    args.extend_from_slice(&["--deploy-key", "DEPLOY_KEY", "--known-hosts", known_hosts.to_str().unwrap()]);
    let out = web.fleet.drover(&args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is for a repository reached over ssh"), "{}", text(&out.stderr));

    // Over ssh with the deploy key: fetched and synced.
    let out = create(&["--deploy-key", "DEPLOY_KEY", "--known-hosts", known_hosts.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let serving = |version: &str| {
        wait_for_or_report(
            &format!("{version} to serve"),
            Duration::from_secs(90),
            || (web.versions() == [Some(version.to_string())]).then_some(()),
            || format!("{:?}\n{:#}\n{:#?}\n{}", web.versions(), app(&web), history(&web), sshd.log_tail()),
        )
    };
    serving("v1");

    // CI builds v2: Drover pushes the new version over ssh with the key,
    // then syncs its own commit.
    let v2 = crate::gitops::web_build(&web, "v2");
    serving("v2");
    let bare = dir.join("desired.git");
    let log = crate::git::git(&bare, &["log", "-1", "--format=%an%n%B", "main"]);
    assert!(log.starts_with("Drover\nDeploy web: run"), "{log}");
    assert!(log.contains(&format!("run {v2} of pipeline web-build")), "{log}");

    // Another key in the secret: the server refuses it, and the app says so.
    set_key("other");
    web.fleet.drover(&["app", "refresh", "web"]);
    let a = wait_for_or_report(
        "the refused key to be reported",
        Duration::from_secs(30),
        || Some(app(&web)).filter(|a| a["last_error"].as_str().unwrap_or_default().contains("Permission denied")),
        || format!("{:#}\n{}", app(&web), sshd.log_tail()),
    );
    assert!(a["last_error"].as_str().unwrap().contains("cannot"), "{a:#}");
    assert_eq!(web.versions(), [Some("v2".to_string())], "what runs stays");
}

#[test]
fn a_syncs_hooks_run_and_their_output_stays_with_its_rollout() {
    let web = Web::start("gitops-hooks", 1);
    let v1 = crate::gitops::build(&web, "v1");
    let repo = Repo::new(web.fleet.dir.path());
    let hooked = crate::gitops::service_file(&web, &v1).replace(
        "strategy:",
        "hooks:\n  before: [{run: 'echo migrating to $DROVER_RELEASE_VERSION'}]\n  after: [{run: \"printf \
         'smoke \\\\033[31mok\\\\033[0m\\\\033]0;title\\\\007\\\\n'\"}]\nstrategy:",
    );
    repo.commit("main", &hooked, "web v1, with hooks");
    create(&web, &repo, &["--auto-sync"]);
    let synced = wait_for_or_report(
        "the sync with hooks to succeed",
        Duration::from_secs(90),
        || history(&web).into_iter().find(|s| s["outcome"] == "succeeded"),
        || format!("{:#}\n{:#?}\n{}", app(&web), history(&web), web.fleet.logs()),
    );
    let rollout = synced["rollouts"][0].as_u64().unwrap().to_string();
    let r = crate::deploys::json(&web.fleet, &["rollout", "status", &rollout, "-o", "json"]);
    let log = r["hook_log"].as_str().unwrap();
    assert!(log.starts_with("── hook before on web-1 ──\n"), "{r:#}");
    assert!(log.contains(&format!("\nmigrating to {}\n", r["version"].as_str().unwrap())), "{r:#}");
    assert!(log.contains("── hook after on web-1 ──"), "{r:#}");
    let out = web.fleet.drover(&["rollout", "status", &rollout]);
    let shown = text(&out.stdout);
    assert!(shown.contains("hooks' output"), "{shown}");
    assert!(shown.contains("smoke \u{1b}[31mok\u{1b}[0m"), "colours are kept: {shown:?}");
    assert!(!shown.contains("\u{1b}]0;title"), "other control sequences are neutralised: {shown:?}");
}
