//! Releases on a real filesystem: installed from real archives and checked
//! by digest, switched atomically, pruned without losing the rollback
//! target.

use super::*;

use crate::test_dir::TestDir as Dir;

/// A tar of one file `app` holding `body`, and its sha256.
fn archive(dir: &Path, body: &str) -> (Vec<u8>, String) {
    let src = dir.join(format!("src-{}", body.len()));
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("app"), body).unwrap();
    let mut tar = Vec::new();
    let manifest =
        drover_archive::pack(&src, &["app"], drover_archive::IfNoFiles::Error, &Limits::default(), &mut tar).unwrap();
    (tar, manifest.sha256.to_string())
}

fn release(version: &str, digest: &str, at: u64) -> Release {
    Release { version: version.into(), digest: digest.into(), run: Some("7".into()), commit: None, installed_ms: at }
}

#[test]
fn install_switch_and_go_back_without_downloading() {
    let d = Dir::new("switch");
    let r = Releases::open(&d.0, "web").unwrap();
    let (v1, d1) = archive(&d.0, "one");
    let (v2, d2) = archive(&d.0, "two!");
    assert_eq!(r.install(&release("v1", &d1, 1), &v1[..], Limits::default()).unwrap(), Installed::New);
    assert_eq!(r.current().unwrap(), None);
    assert_eq!(r.activate("v1").unwrap(), None);
    assert_eq!(fs::read_to_string(r.current_link().join("app")).unwrap(), "one");

    assert_eq!(r.install(&release("v2", &d2, 2), &v2[..], Limits::default()).unwrap(), Installed::New);
    assert_eq!(r.activate("v2").unwrap(), Some("v1".into()), "it says what it replaced");
    assert_eq!(fs::read_to_string(r.current_link().join("app")).unwrap(), "two!");
    // Going back is a switch: v1 is still there.
    assert_eq!(r.activate("v1").unwrap(), Some("v2".into()));
    assert_eq!(fs::read_to_string(r.current_link().join("app")).unwrap(), "one");
    let versions: Vec<String> = r.list().unwrap().into_iter().map(|r| r.version).collect();
    assert_eq!(versions, ["v1", "v2"]);
    assert_eq!(r.get("v2").unwrap().unwrap().digest, d2);
}

#[test]
fn a_digest_that_does_not_match_installs_nothing() {
    let d = Dir::new("digest");
    let r = Releases::open(&d.0, "web").unwrap();
    let (v1, d1) = archive(&d.0, "one");
    let (_, d2) = archive(&d.0, "two!");
    // (case, version, digest, what the error says)
    let cases = [
        ("the archive is not what the digest names", "v1", d2.as_str(), "cannot unpack release v1 of web"),
        ("not a digest", "v1", "abc", "cannot unpack release v1 of web"),
        ("a version that could leave the directory", "../x", d1.as_str(), "invalid version name \"../x\""),
    ];
    for (case, version, digest, want) in cases {
        let err = r.install(&release(version, digest, 1), &v1[..], Limits::default()).unwrap_err();
        assert!(err.to_string().contains(want), "{case}: {err}");
        assert!(r.list().unwrap().is_empty(), "{case}: nothing installed");
        assert!(!r.path("v1").exists(), "{case}: no directory left");
    }
    assert!(r.activate("v1").unwrap_err().to_string().contains("is not installed"));
}

#[test]
fn a_version_names_one_release_for_good() {
    let d = Dir::new("again");
    let r = Releases::open(&d.0, "web").unwrap();
    let (v1, d1) = archive(&d.0, "one");
    let (v2, d2) = archive(&d.0, "two!");
    r.install(&release("v1", &d1, 1), &v1[..], Limits::default()).unwrap();
    assert_eq!(r.install(&release("v1", &d1, 5), &v1[..], Limits::default()).unwrap(), Installed::Already);
    let err = r.install(&release("v1", &d2, 6), &v2[..], Limits::default()).unwrap_err();
    assert!(matches!(err, ReleaseError::DigestConflict { .. }), "{err}");
    assert_eq!(r.get("v1").unwrap().unwrap().installed_ms, 1, "unchanged");
}

#[test]
fn prune_keeps_the_newest_the_current_and_the_rollback_target() {
    let d = Dir::new("prune");
    let r = Releases::open(&d.0, "web").unwrap();
    for (i, v) in ["v1", "v2", "v3", "v4", "v5"].iter().enumerate() {
        let (tar, digest) = archive(&d.0, &"x".repeat(i + 1));
        r.install(&release(v, &digest, i as u64), &tar[..], Limits::default()).unwrap();
    }
    r.activate("v2").unwrap();
    let removed = r.prune(2, Some("v1")).unwrap();
    assert_eq!(removed, ["v3"], "v1 (the rollback target) and v2 (current) stay, with the newest two");
    let left: Vec<String> = r.list().unwrap().into_iter().map(|r| r.version).collect();
    assert_eq!(left, ["v1", "v2", "v4", "v5"]);
    assert!(!r.path("v3").exists());
    // Asking to keep fewer than MIN_KEEP keeps MIN_KEEP.
    r.activate("v5").unwrap();
    assert_eq!(r.prune(0, None).unwrap(), ["v1", "v2"]);
}

#[test]
fn open_clears_what_an_interrupted_switch_left_and_refuses_bad_names() {
    let d = Dir::new("open");
    let r = Releases::open(&d.0, "web").unwrap();
    symlink("releases/nothing", d.0.join("web").join("current.tmp-123")).unwrap();
    drop(r);
    Releases::open(&d.0, "web").unwrap();
    assert!(fs::symlink_metadata(d.0.join("web").join("current.tmp-123")).is_err());
    for bad in ["", "../etc", "a/b", ".hidden", &"x".repeat(65)] {
        let err = Releases::open(&d.0, bad).unwrap_err();
        assert!(matches!(err, ReleaseError::BadName { what: "service", .. }), "{bad}: {err}");
    }
}
