//! The release root picked out of an unpacked artifact, on a real file
//! system, with archives made by `tar` itself; a hook's output cut into
//! chunks and capped. The executor with real
//! supervisors and services is tested through the built binary in
//! `integration-tests/tests/e2e/deploy_executor.rs`.

use std::path::Path;
use std::process::Command;

use super::stage;

use crate::test_dir::TestDir as Dir;

fn tar(args: &[&str], cwd: &Path) {
    let status = Command::new("tar").args(args).current_dir(cwd).status().expect("tar runs");
    assert!(status.success(), "tar {args:?}");
}

/// Files as (path, contents).
type Tree = Vec<(String, String)>;

/// The files under `root`, relative, sorted, with their contents.
fn files(root: &Path) -> Tree {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn the_release_root_is_a_directory_an_unpacked_tar_or_one_file() {
    let d = Dir::new("root");
    // What a job's artifact archive unpacks to.
    let art = d.0.join("artifact");
    std::fs::create_dir_all(art.join("app/bin")).unwrap();
    std::fs::write(art.join("app/bin/serve"), "serve").unwrap();
    std::fs::write(art.join("app/version"), "v1").unwrap();
    std::fs::write(art.join("server.py"), "print()").unwrap();
    let src = d.0.join("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("main"), "main").unwrap();
    std::fs::write(src.join("lib/x"), "x").unwrap();
    tar(&["czf", art.join("app.tar.gz").to_str().unwrap(), "."], &src);
    tar(&["czf", art.join("app.tgz").to_str().unwrap(), "main", "lib"], &src);
    tar(&["cf", art.join("app.tar").to_str().unwrap(), "."], &src);
    std::fs::write(art.join("bad.tar.gz"), "not gzip at all").unwrap();
    // A foreign tar.gz with a link out of its tree.
    let evil = d.0.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", evil.join("passwd")).unwrap();
    tar(&["czf", art.join("evil.tgz").to_str().unwrap(), "."], &evil);
    std::os::unix::fs::symlink("app", art.join("link")).unwrap();

    let tree = |v: &[(&str, &str)]| -> Tree { v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect() };
    let unpacked = tree(&[("lib/x", "x"), ("main", "main")]);
    // (path, the root's files or the start of the error)
    let cases: Vec<(&str, Result<Tree, &str>)> = vec![
        ("app", Ok(tree(&[("bin/serve", "serve"), ("version", "v1")]))),
        ("./app/", Ok(tree(&[("bin/serve", "serve"), ("version", "v1")]))),
        ("app/bin/serve", Ok(tree(&[("serve", "serve")]))),
        ("server.py", Ok(tree(&[("server.py", "print()")]))),
        ("app.tar.gz", Ok(unpacked.clone())),
        ("app.tgz", Ok(unpacked.clone())),
        ("app.tar", Ok(unpacked)),
        ("bad.tar.gz", Err("\"bad.tar.gz\" in the artifact does not read as gzip")),
        ("evil.tgz", Err("cannot unpack \"evil.tgz\" from the artifact")),
        ("link", Err("\"link\" in the artifact is a symbolic link")),
        ("missing", Err("the artifact holds no \"missing\"")),
        ("../etc", Err("release path \"../etc\" must be relative")),
        ("/etc", Err("release path \"/etc\" must be relative")),
    ];
    for (i, (path, want)) in cases.into_iter().enumerate() {
        let out = d.0.join(format!("out-{i}"));
        match (stage::root(&art, path, &out), want) {
            (Ok(root), Ok(want)) => assert_eq!(files(&root), want, "{path}"),
            (Err(e), Err(start)) => assert!(e.starts_with(start), "{path}: {e}"),
            (got, want) => panic!("{path}: got {got:?}, wanted {want:?}"),
        }
    }
    // The whole archive as the root: an empty path.
    let root = stage::root(&art, "", &d.0.join("out-all")).unwrap();
    assert_eq!(root, art);
}

/// A hook's output in chunks of at most 64 KiB, and no more than the cap
/// in all: then one line says the rest was cut, and nothing follows.
#[test]
fn a_hooks_output_is_chunked_and_cut_at_its_cap() {
    use super::hook::Output;
    use super::{Event, HOOK_CHUNK};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cap = 2 * HOOK_CHUNK + 10;
    let mut out = Output::new(tx, "r/1".into(), cap);
    out.write(b"$ ./smoke\n");
    out.write(&[]);
    out.write(&vec![b'x'; 2 * HOOK_CHUNK + 5]);
    out.write(b"more than the cap");
    out.write(b"never sent");
    drop(out);
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    while let Ok(Event::HookOutput { action_id, data }) = rx.try_recv() {
        assert_eq!(action_id, "r/1");
        sizes.push(data.len());
        all.extend(data);
    }
    let cut = format!("\n[drover: the hook's output passed {cap} bytes; the rest is cut]\n");
    assert_eq!(sizes, [10, HOOK_CHUNK, HOOK_CHUNK, cut.len()]);
    let text = String::from_utf8(all).unwrap();
    assert!(text.starts_with("$ ./smoke\nxxx"), "{}", &text[..20]);
    assert_eq!(text.len(), cap + cut.len());
    assert!(text.ends_with(&format!("xxx{cut}")));
}

#[test]
fn durations_in_hook_reports() {
    use std::time::Duration;
    let cases = [(30_000, "30s"), (1500, "1500ms"), (0, "0ms"), (250, "250ms")];
    for (ms, want) in cases {
        assert_eq!(super::hook::show(Duration::from_millis(ms)), want);
    }
}
