//! [`set_artifact`] over the shapes a desired-state file comes in, and
//! [`UpdateSpec::takes_branch`]. The checking of `update:` is
//! `check/app`'s, tested there.

use super::{AppArtifact, ServiceFile, UpdateSpec, UpdateWrite, parse_service_file, set_artifact};

const FILE: &str = "deploy/web.yaml";
const OLD_SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SHA: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const SERVICE: &str = "\
service:
  name: web
  command: ./app --port ${PORT}
  port: 8080
  health: {http: /, interval: 1s, healthy_after: 2, timeout: 30s}
";
/// The new artifact every case of [`set_artifact_keeps_the_rest`] writes.
const NEW: &str = "{run: 43, job: build, path: dist/app.tar.gz, sha256: fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210}";

/// The file `text` as it reads after its artifact is set to run 43's:
/// the same but for the artifact (and an update's job, which follows it).
fn assert_same_but_artifact(case: &str, before: &str, after: &str, job: &str, path: &str) {
    let old = parse_service_file(FILE, before).unwrap_or_else(|err| panic!("{case}: before: {err}"));
    let new = parse_service_file(FILE, after).unwrap_or_else(|err| panic!("{case}: after: {err}\n{after}"));
    let artifact = AppArtifact::Run { run: 43, job: job.into(), path: path.into(), sha256: Some(SHA.into()) };
    let mut want = ServiceFile { artifact, ..old };
    if let Some(update) = &mut want.update {
        // Not written in these files: the artifact's.
        update.job = job.into();
    }
    assert_eq!(new, want, "{case}");
}

#[test]
fn set_artifact_keeps_the_rest() {
    let crlf = |text: &str| text.replace('\n', "\r\n");
    // (case, the file, the file as it must come out)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "a flow mapping first",
            format!("artifact: {{run: 42, job: build, path: dist/app.tar.gz}}\n{SERVICE}"),
            format!("artifact: {NEW}\n{SERVICE}"),
        ),
        (
            "comments around a pinned flow mapping, and spaces after the colon",
            format!(
                "# web, as deployed\nartifact:   {{run: 42, job: build, path: dist/app.tar.gz, sha256: {OLD_SHA}}}   \
                 # pinned\n\n{SERVICE}# the end\n"
            ),
            format!("# web, as deployed\nartifact:   {NEW}   # pinned\n\n{SERVICE}# the end\n"),
        ),
        (
            "a block mapping with comments, then an update",
            format!(
                "artifact:   # the release\n  run: 42    # the nightly\n  # the job\n  job: build\n  path: \
                 dist/app.tar.gz  # a tarball\n\n# update it from the build\nupdate: {{pipeline: web-build}}\n\
                 {SERVICE}"
            ),
            format!(
                "artifact: {NEW}   # the release\n\n# update it from the build\nupdate: {{pipeline: web-build}}\n{SERVICE}"
            ),
        ),
        (
            "a flow mapping not first, over several lines, with quotes, braces and hashes",
            format!(
                "{SERVICE}artifact: {{run: 42,  # the run\n  job: 'build',\n  path: \"dist/app.tar.gz\", sha256: \
                 '{OLD_SHA}'}}  # '}}' and # are read\nauto_rollback: false\n"
            ),
            format!("{SERVICE}artifact: {NEW}  # '}}' and # are read\nauto_rollback: false\n"),
        ),
        (
            "a block mapping last, without a final newline",
            format!("{SERVICE}artifact:\n  run: 42\n  job: build\n  path: dist/app.tar.gz"),
            format!("{SERVICE}artifact: {NEW}"),
        ),
        (
            "a block mapping last, then comments and blank lines",
            format!("{SERVICE}artifact:\n  run: 42\n  job: build\n  path: dist/app.tar.gz\n\n  # old: run 41\n\n"),
            format!("{SERVICE}artifact: {NEW}\n\n  # old: run 41\n\n"),
        ),
        (
            "a flow mapping on the line below the key",
            format!("artifact:  # the release\n  {{run: 42, job: build, path: dist/app.tar.gz}}\n{SERVICE}"),
            format!("artifact: {NEW}  # the release\n{SERVICE}"),
        ),
        (
            "an artifact by URL, its key quoted",
            format!("\"artifact\": {{url: 'https://example.com/app.tar.gz', sha256: {OLD_SHA}}}\n{SERVICE}"),
            format!("\"artifact\": {NEW}\n{SERVICE}"),
        ),
        (
            "CRLF, a flow mapping",
            crlf(&format!("artifact: {{run: 42, job: build, path: dist/app.tar.gz}}  # x\n{SERVICE}")),
            crlf(&format!("artifact: {NEW}  # x\n{SERVICE}")),
        ),
        (
            "CRLF, a block mapping",
            crlf(&format!("artifact: # x\n  run: 42\n  job: build\n  path: dist/app.tar.gz\n# y\n{SERVICE}")),
            crlf(&format!("artifact: {NEW} # x\n# y\n{SERVICE}")),
        ),
        (
            "a byte order mark",
            format!("\u{feff}artifact: {{run: 42, job: build, path: dist/app.tar.gz}}\n{SERVICE}"),
            format!("\u{feff}artifact: {NEW}\n{SERVICE}"),
        ),
        (
            "a flow document, with characters of several bytes before the artifact",
            "{service: {name: web, command: 'echo é ü; ./app --port ${PORT}', port: 8080, health: {tcp: true, \
             interval: 1s, healthy_after: 2, timeout: 30s}}, artifact: {run: 42, job: build, path: x}}\n"
                .to_owned(),
            format!(
                "{{service: {{name: web, command: 'echo é ü; ./app --port ${{PORT}}', port: 8080, health: {{tcp: \
                 true, interval: 1s, healthy_after: 2, timeout: 30s}}}}, artifact: {NEW}}}\n"
            ),
        ),
    ];
    for (case, before, want) in cases {
        let got = set_artifact(FILE, &before, 43, "build", "dist/app.tar.gz", SHA)
            .unwrap_or_else(|err| panic!("{case}: {err}"));
        assert_eq!(got, want, "{case}");
        assert_same_but_artifact(case, &before, &got, "build", "dist/app.tar.gz");
        // Setting it again, now that it is a flow mapping, is a no-op.
        assert_eq!(set_artifact(FILE, &got, 43, "build", "dist/app.tar.gz", SHA).unwrap(), got, "{case}");
    }
}

#[test]
fn set_artifact_quotes_only_what_needs_it() {
    let before = format!("artifact: {{run: 42, job: build, path: dist/app.tar.gz}}\n{SERVICE}");
    // (job, path, the artifact written)
    let cases = [
        ("build.x", "dist/app-1.2+3@x.tar.gz", "{run: 7, job: build.x, path: dist/app-1.2+3@x.tar.gz, sha256: "),
        ("null", "1.10", "{run: 7, job: 'null', path: '1.10', sha256: "),
        ("true", "dist/my app.tgz", "{run: 7, job: 'true', path: dist/my app.tgz, sha256: "),
        ("123", "dist/it's #1, (a).tgz", "{run: 7, job: '123', path: 'dist/it''s #1, (a).tgz', sha256: "),
        ("b", "-x: y", "{run: 7, job: b, path: '-x: y', sha256: "),
    ];
    for (job, path, want) in cases {
        let got = set_artifact(FILE, &before, 7, job, path, SHA).unwrap_or_else(|err| panic!("{job} {path}: {err}"));
        assert_eq!(got, format!("artifact: {want}{SHA}}}\n{SERVICE}"), "{job} {path}");
        let new = parse_service_file(FILE, &got).unwrap();
        assert_eq!(
            new.artifact,
            AppArtifact::Run { run: 7, job: job.into(), path: path.into(), sha256: Some(SHA.into()) }
        );
    }
}

#[test]
fn set_artifact_refuses_what_it_cannot_rewrite() {
    let flow = format!("artifact: {{run: 42, job: build, path: dist/app.tar.gz}}\n{SERVICE}");
    let anchored = format!("artifact: &release\n  run: 42\n  job: build\n  path: dist/app.tar.gz\n{SERVICE}");
    let lone_cr = format!("artifact: {{run: 42, job: build, path: dist/app.tar.gz}}\r{SERVICE}");
    // (case, the file, run, job, sha256, line, column, message)
    type Case<'a> = (&'a str, String, u64, &'a str, &'a str, usize, usize, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("not YAML", "artifact: {run: 42\n".to_owned(), 43, "build", SHA, 1, 11, "invalid YAML"),
        ("no artifact", SERVICE.to_owned(), 43, "build", SHA, 1, 1, "`deploy/web.yaml` has no `artifact`"),
        ("a bad file", flow.replace("port: 8080", "port: 0"), 43, "build", SHA, 5, 9, "`port` of service `web`"),
        ("a lone carriage return", lone_cr, 43, "build", SHA, 1, 55, "a carriage return alone"),
        ("an anchor", anchored, 43, "build", SHA, 2, 3, "`artifact:` is followed by `&release` on its line"),
        ("run 0", flow.clone(), 0, "build", SHA, 1, 17, "must be a run number, 1 or more, found integer `0`"),
        ("a bad job", flow.clone(), 43, "-build", SHA, 1, 26, "invalid job name `-build` in the artifact"),
        ("a bad sha256", flow, 43, "build", "ABC", 1, 64, "`sha256` of the artifact of `deploy/web.yaml` must be"),
    ];
    let mut failures = Vec::new();
    for (case, text, run, job, sha256, line, column, message) in cases {
        match set_artifact(FILE, &text, run, job, "dist/app.tar.gz", sha256) {
            Ok(got) => failures.push(format!("{case}: rewritten:\n{got}")),
            Err(err) => match err.diagnostics.as_slice() {
                // A YAML syntax error may come without a hint.
                [d] if (d.line, d.column) == (line, column)
                    && d.message.contains(message)
                    && (d.hint.is_some() || case == "not YAML") => {}
                _ => failures.push(format!("{case}: expected {line}:{column} `{message}`, got:\n{err}")),
            },
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn an_update_takes_the_branches_its_globs_match() {
    let update = |branches: &[&str]| UpdateSpec {
        pipeline: "web-build".into(),
        job: "build".into(),
        branches: branches.iter().map(|b| (*b).to_owned()).collect(),
        write: UpdateWrite::Commit,
    };
    // (branches, branch, taken)
    let cases: &[(&[&str], &str, bool)] = &[
        (&[], "main", true),
        (&[], "feature/x/y", true),
        (&["main"], "main", true),
        (&["main"], "mainline", false),
        (&["main", "release/*"], "release/1.2", true),
        (&["main", "release/*"], "release/1.2/hotfix", false),
        (&["release/**"], "release/1.2/hotfix", true),
        (&["v{1,2}.*"], "v2.x", true),
        (&["v{1,2}.*"], "v3.x", false),
    ];
    for (branches, branch, taken) in cases {
        assert_eq!(update(branches).takes_branch(branch), *taken, "{branches:?} {branch}");
    }
}
