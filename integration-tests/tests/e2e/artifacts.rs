//! Artifacts between jobs, on the real binaries: a job's `artifacts:` are
//! packed after its steps succeed, stored by sha256 in the coordinator's
//! blob store, and unpacked into the workspace of the jobs that need it
//! before their first step; `drover artifacts` lists them and `drover
//! artifacts get` downloads them, checked. A glob that matches nothing
//! fails its job, naming the glob.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Fleet, text};

/// sha256 of a file, by the system's sha256sum.
fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    text(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn a_binary_artifact_flows_from_build_to_test_by_sha256() {
    let mut fleet = Fleet::start("artifacts");
    fleet.agent("a1", "", 2);
    fleet.agent("a2", "", 2);
    fleet.wait_agents(2);
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.display();
    // build makes a 300 kB binary and records its sha256; test (on
    // whichever agent) checks what it received against that.
    let pipeline = format!(
        "name: artifacts
jobs:
  build:
    steps:
      - run: |
          mkdir -p dist/bin
          head -c 300000 /dev/urandom > dist/bin/app
          chmod 755 dist/bin/app
          echo not packed > scratch.txt
          sha256sum dist/bin/app | cut -d' ' -f1 > {o}/built
    artifacts: {{paths: [dist/]}}
  test:
    needs: [build]
    steps:
      - run: |
          test -x dist/bin/app
          test ! -e scratch.txt
          sha256sum dist/bin/app | cut -d' ' -f1 > {o}/received
  without:
    needs: [{{job: build, artifacts: false}}]
    steps: [{{run: 'test ! -e dist'}}]
  nothing:
    steps: [{{run: 'true'}}]
    artifacts: {{paths: ['reports/*.xml']}}
"
    );
    let file = fleet.dir.path().join("artifacts.yml");
    std::fs::write(&file, pipeline).unwrap();
    let cli = fleet.drover(&["run", "--detach", file.to_str().unwrap()]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let run = text(&cli.stdout).trim().to_string();
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(fleet.job(&run, "build")["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(fleet.job(&run, "test")["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(fleet.job(&run, "without")["state"], "succeeded", "opted out: {status:#}");
    let built = std::fs::read_to_string(out.join("built")).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("received")).unwrap(), built, "the same bytes arrived");

    // A glob that matches nothing fails its job, naming the glob.
    let nothing = fleet.job(&run, "nothing");
    assert_eq!(nothing["state"], "failed", "{nothing:#}");
    assert!(nothing["message"].as_str().unwrap_or_default().contains("reports/*.xml"), "{nothing:#}");

    // Listed, and downloaded checked by sha256.
    let listed: serde_json::Value =
        serde_json::from_slice(&fleet.drover(&["artifacts", &run, "-o", "json"]).stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["job"], "build");
    assert_eq!(listed[0]["files"], 1, "{listed:#}");
    let sha = listed[0]["sha256"].as_str().unwrap().to_string();
    assert_eq!(status["jobs"][0]["artifact"]["sha256"], sha.as_str(), "{status:#}");
    let dest = fleet.dir.path().join("got");
    let got = fleet.drover(&["artifacts", "get", &run, "build", "-o", dest.to_str().unwrap()]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(sha256sum(&dest.join("dist/bin/app")), built.trim());
    // No artifacts, and no such job: exit 4, saying so.
    let none = fleet.drover(&["artifacts", "get", &run, "test", "-o", fleet.dir.path().join("x").to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(4), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("job test of run"), "{}", text(&none.stderr));
    let nojob = fleet.drover(&["artifacts", &run, "nope"]);
    assert_eq!(nojob.status.code(), Some(4), "{}", text(&nojob.stderr));
}

/// The blobs in a coordinator's blob store.
fn blobs(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("sha256")).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            out.push(blob.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn artifacts_go_when_no_kept_run_refers_to_them() {
    // A grace of a second, as for expiry below: with 1ms, under load, the
    // sweep could take the build's blob before its result was committed,
    // and the test job found no artifact (seen once in CI).
    let mut fleet =
        Fleet::start_with("artifact-gc", &["--keep-runs", "1", "--prune-interval", "200ms", "--blob-grace", "1s"]);
    fleet.agent("a1", "", 2);
    fleet.wait_agents(1);
    let store = fleet.dir.path().join("data-0/blobs");
    let yaml = "name: gc
jobs:
  build:
    steps: [{run: 'head -c 1000 /dev/urandom > made.bin'}]
    artifacts: {paths: [made.bin]}
  test:
    needs: [build]
    steps: [{run: 'test -s made.bin'}]
";
    let first = fleet.submit("gc.yml", yaml);
    let status = fleet.wait_run(&first, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let a = fleet.job(&first, "build")["artifact"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(blobs(&store), vec![a.clone()]);
    // A rerun reuses build, and with it its artifacts: when the first run
    // is pruned, the blob stays, since the rerun refers to it.
    let out = fleet.drover(&["rerun", &first, "--job", "test", "--detach"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = text(&out.stdout).trim().to_string();
    assert_eq!(fleet.wait_run(&second, Duration::from_secs(60))["state"], "succeeded");
    assert_eq!(fleet.job(&second, "build")["artifact"]["sha256"], a.as_str());
    crate::harness::wait_for("the first run to be pruned", Duration::from_secs(15), || {
        (!fleet.drover(&["status", &first]).status.success()).then_some(())
    });
    assert_eq!(blobs(&store), vec![a.clone()], "still referred to by the rerun");
    // A new run with other bytes: the rerun is pruned, and its blob with it.
    let third = fleet.submit("gc.yml", yaml);
    assert_eq!(fleet.wait_run(&third, Duration::from_secs(60))["state"], "succeeded");
    let b = fleet.job(&third, "build")["artifact"]["sha256"].as_str().unwrap().to_string();
    crate::harness::wait_for("the unreferenced blob to be swept", Duration::from_secs(15), || {
        (blobs(&store) == vec![b.clone()]).then_some(())
    });
}

#[test]
fn artifacts_expire_and_then_say_so() {
    // A grace of a second: the sweep must not take a blob whose upload is
    // not yet committed to its job (with 1ms it could, under load).
    let mut fleet = Fleet::start_with("artifact-expire", &["--prune-interval", "200ms", "--blob-grace", "1s"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let store = fleet.dir.path().join("data-0/blobs");
    let yaml = "name: expire\njobs:\n  build:\n    steps: [{run: 'echo x > x.txt'}]\n    artifacts: {paths: [x.txt], expire: 2s}\n";
    let run = fleet.submit("expire.yml", yaml);
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "succeeded");
    assert_eq!(blobs(&store).len(), 1);
    crate::harness::wait_for("the artifact to expire and its blob to go", Duration::from_secs(20), || {
        blobs(&store).is_empty().then_some(())
    });
    let out = fleet.drover(&["artifacts", "get", &run, "build", "-o", fleet.dir.path().join("x").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("have expired"), "{}", text(&out.stderr));
    // The run itself is kept: only its artifacts expired.
    assert_eq!(fleet.status(&run)["state"], "succeeded");
}

/// moto's S3-protocol server, which scripts/test.sh installs.
fn moto_server() -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.drover-tools/venv/bin/moto_server");
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh installs it (python3 -m venv .drover-tools/venv, then its pip installs \
         moto[server])",
        path.display()
    );
    path
}

/// One HTTP/1.1 request to the S3 server, path-style; returns the status and
/// body.
fn s3(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("the S3 server answers");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn artifacts_round_trip_through_an_s3_protocol_server() {
    let dir = crate::harness::TempDir::new("moto");
    let port = crate::harness::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("moto.log");
    let child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("moto.err")).unwrap())
        .spawn()
        .unwrap();
    let _moto = crate::harness::Proc { child, name: "moto_server".into(), log };
    crate::harness::wait_for("the S3 server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).ok().map(|_| ())
    });
    assert_eq!(s3(&addr, "PUT", "/drover-e2e").0, 200, "bucket created");
    let endpoint = format!("http://{addr}");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let flags = ["--blob-store", "s3://drover-e2e/ci", "--seal-logs-after", "100ms", "--prune-interval", "200ms"];
    let mut fleet = Fleet::start_with_env("s3", &flags, &env);
    fleet.agent("a1", "n=1", 2);
    fleet.agent("a2", "n=2", 2);
    fleet.wait_agents(2);
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let yaml = format!(
        "name: s3
jobs:
  build:
    steps: [{{run: 'head -c 300000 /dev/urandom > app.bin; sha256sum app.bin > {o}/built'}}]
    artifacts: {{paths: [app.bin]}}
  test:
    needs: [build]
    steps: [{{run: 'sha256sum app.bin > {o}/received'}}]
  warm:
    runs-on: {{n: '1'}}
    cache: {{key: s3-cache, paths: [deps]}}
    steps: [{{run: 'mkdir -p deps; head -c 200000 /dev/urandom > deps/blob; sha256sum deps/blob > {o}/cached'}}]
  cold:
    needs: [warm]
    runs-on: {{n: '2'}}
    cache: {{key: s3-cache, paths: [deps]}}
    steps: [{{run: 'sha256sum deps/blob > {o}/restored'}}]
",
        o = out.display()
    );
    let run = fleet.submit("s3.yml", &yaml);
    let status = fleet.wait_run(&run, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}{}", fleet.logs());
    assert_eq!(
        std::fs::read_to_string(out.join("received")).unwrap(),
        std::fs::read_to_string(out.join("built")).unwrap()
    );
    // The cache went through the bucket too: a2 had no copy of its own.
    assert_eq!(
        std::fs::read_to_string(out.join("restored")).unwrap(),
        std::fs::read_to_string(out.join("cached")).unwrap()
    );
    assert_eq!(fleet.job(&run, "warm")["cache"], "miss s3-cache, saved");
    assert_eq!(fleet.job(&run, "cold")["cache"], "hit s3-cache");
    // The finished run's logs move into the bucket and are read from there.
    let run_dir = fleet.dir.path().join("data-0/blobs/logs").join(format!("{:010}", run.parse::<u64>().unwrap()));
    crate::harness::wait_for("the logs to be sealed into the bucket", Duration::from_secs(30), || {
        (!run_dir.exists()).then_some(())
    });
    let cold = fleet.drover(&["logs", &run, "cold"]);
    let cold_log = text(&cold.stdout);
    assert!(
        cold_log.contains("cache: hit s3-cache") && cold_log.contains("downloaded"),
        "{cold_log}{}",
        text(&cold.stderr)
    );
    // The blob is in the bucket, under the prefix, not on the coordinator's
    // disk.
    let sha = fleet.job(&run, "build")["artifact"]["sha256"].as_str().unwrap().to_string();
    let (code, listing) = s3(&addr, "GET", "/drover-e2e?list-type=2&prefix=ci/");
    assert_eq!(code, 200, "{listing}");
    assert!(listing.contains(&format!("ci/sha256/{}/{sha}", &sha[..2])), "{listing}");
    assert!(blobs(&fleet.dir.path().join("data-0/blobs")).is_empty(), "nothing stored locally");
    // And back to the CLI.
    let dest = fleet.dir.path().join("got");
    let got = fleet.drover(&["artifacts", "get", &run, "build", "-o", dest.to_str().unwrap()]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(
        sha256sum(&dest.join("app.bin")),
        std::fs::read_to_string(out.join("built")).unwrap().split_whitespace().next().unwrap()
    );
}

#[test]
fn an_artifact_over_the_limit_fails_its_job_naming_the_limit() {
    let mut fleet = Fleet::start_with("artifact-limit", &["--max-artifact-bytes", "100K"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let run = fleet.submit(
        "big.yml",
        "name: big\njobs:\n  build:\n    steps: [{run: 'head -c 300000 /dev/urandom > big.bin'}]\n    artifacts: {paths: [big.bin]}\n",
    );
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "failed");
    let build = fleet.job(&run, "build");
    let message = build["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_file_bytes limit of 102400") && message.contains("--max-artifact-bytes"),
        "{build:#}"
    );
    assert!(blobs(&fleet.dir.path().join("data-0/blobs")).is_empty(), "nothing stored");
}

#[test]
fn an_upload_past_the_blob_store_budget_fails_its_job_naming_the_flag() {
    let mut fleet = Fleet::start_with("store-budget", &["--blob-store-budget", "500K"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let yaml = "name: fill\njobs:\n  build:\n    steps: [{run: 'head -c 300000 /dev/urandom > big.bin'}]\n    artifacts: {paths: [big.bin]}\n";
    let first = fleet.submit("fill.yml", yaml);
    assert_eq!(fleet.wait_run(&first, Duration::from_secs(60))["state"], "succeeded", "{}", fleet.logs());
    let second = fleet.submit("fill.yml", yaml);
    assert_eq!(fleet.wait_run(&second, Duration::from_secs(60))["state"], "failed");
    let build = fleet.job(&second, "build");
    let message = build["message"].as_str().unwrap_or_default();
    assert!(message.contains("budget of 512000 bytes (--blob-store-budget)"), "{build:#}");
    assert_eq!(blobs(&fleet.dir.path().join("data-0/blobs")).len(), 1, "only the first one is stored");
}

#[test]
fn a_file_over_the_per_file_limit_fails_its_job_naming_the_flag() {
    let mut fleet = Fleet::start_with("file-limit", &["--max-artifact-file-bytes", "100K"]);
    fleet.agent("a1", "", 1);
    fleet.wait_agents(1);
    let yaml = "name: f\njobs:\n  build:\n    steps: [{run: 'head -c 50000 /dev/urandom > ok.bin; head -c 300000 /dev/urandom > big.bin'}]\n    artifacts: {paths: [ok.bin, big.bin]}\n";
    let run = fleet.submit("f.yml", yaml);
    assert_eq!(fleet.wait_run(&run, Duration::from_secs(60))["state"], "failed");
    let build = fleet.job(&run, "build");
    let message = build["message"].as_str().unwrap_or_default();
    assert!(message.contains("big.bin") && message.contains("--max-artifact-file-bytes is 102400"), "{build:#}");
}
