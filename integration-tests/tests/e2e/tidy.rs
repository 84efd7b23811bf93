//! Tidiness the compiler does not check: every source file opens with a
//! `//!` header saying what it is for, and ARCHITECTURE.md, the map, names
//! every crate and every top-level module of each.

use std::path::{Path, PathBuf};

/// The workspace root (this crate is one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// The workspace's member crates, as its Cargo.toml lists them
/// (`members = ["proto", ...]` on one line).
fn crates() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("the workspace Cargo.toml");
    let line = manifest.lines().find(|l| l.trim_start().starts_with("members")).expect("a members line");
    let list = line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).expect("members = [...]").0;
    let crates: Vec<String> =
        list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect();
    assert!(crates.len() >= 6, "members: {crates:?}");
    crates
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_opens_with_a_module_header() {
    let mut files = Vec::new();
    for krate in &crates() {
        for sub in ["src", "tests", "build.rs"] {
            let path = root().join(krate).join(sub);
            if path.is_dir() {
                rust_files(&path, &mut files);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 50, "found only {} files under {}", files.len(), root().display());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "these files do not open with a `//!` header saying what they are for: {missing:?}");
}

#[test]
fn the_architecture_map_names_every_crate_and_top_level_module() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut missing = Vec::new();
    for krate in &crates() {
        if !map.contains(&format!("`{krate}`")) {
            missing.push(format!("crate {krate}"));
        }
        for entry in std::fs::read_dir(root().join(krate).join("src")).expect("src") {
            let name = entry.expect("an entry").file_name().to_string_lossy().trim_end_matches(".rs").to_string();
            if name == "lib" || name == "main" {
                continue;
            }
            if !map.contains(&format!("`{name}`")) && !map.contains(&format!("{krate}/src/{name}")) {
                missing.push(format!("{krate}/src/{name}"));
            }
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md does not name: {missing:?}; add them to the map");
}

/// What code in the coordinator's pure core may not say: IO, awaiting, or
/// reaching a driver. Comments are not read.
const IMPURE: &[&str] =
    &[".await", "std::fs", "tokio::fs", "std::process", "tokio::process", "std::net", "tokio::net", "std::thread"];

/// Whether `code` has `word` not followed by more of an identifier
/// (`.await`, not `.await_verdict`).
fn says(code: &str, word: &str) -> bool {
    code.match_indices(word)
        .any(|(i, _)| !code[i + word.len()..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

#[test]
fn the_coordinator_core_and_the_pure_crates_are_pure() {
    // (where, the one `crate::` path its code may name; None: any of its own)
    let places: [(&str, Option<&str>); 3] =
        [("coordinator/src/core", Some("crate::core")), ("pipeline/src", None), ("deploy/src", None)];
    let mut found = Vec::new();
    for (place, allowed) in places {
        let dir = root().join(place);
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        if place == "coordinator/src/core" {
            files.push(root().join("coordinator/src/core.rs"));
        }
        assert!(files.len() > 2, "found only {} files under {}", files.len(), dir.display());
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let reaches_out =
                    allowed.is_some_and(|ok| code.match_indices("crate::").any(|(i, _)| !code[i..].starts_with(ok)));
                if reaches_out || IMPURE.iter().any(|word| says(code, word)) {
                    let at = file.strip_prefix(root()).unwrap_or(file).display().to_string();
                    found.push(format!("{at}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "coordinator/src/core, drover-pipeline and drover-deploy are pure (see ARCHITECTURE.md): they do no IO, \
         never await, and the core imports nothing outside core; move these lines to a driver:\n{}",
        found.join("\n")
    );
}
