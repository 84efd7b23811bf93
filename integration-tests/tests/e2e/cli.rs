//! The CLI's conveniences: `drover version` (the CLI's and the
//! coordinator's), and completion scripts that the shells accept.

use std::process::Command;

use crate::harness::{Fleet, bin, text};

#[test]
fn version_names_the_cli_and_the_coordinator() {
    let fleet = Fleet::start("version");
    let out = fleet.drover(&["version", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = env!("CARGO_PKG_VERSION");
    assert_eq!(v["client"]["version"], ours, "{v:#}");
    assert_eq!(v["coordinator"]["version"], ours, "{v:#}");
    let out = fleet.drover(&["version"]);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("drover {ours}\ncoordinator {ours} (")), "{stdout}");

    // No coordinator: the CLI's version still, and why there is no other.
    let out = Command::new(bin("drover"))
        .args(["--coordinator", &format!("https://127.0.0.1:{}", crate::harness::free_port()), "version"])
        .env("DROVER_TLS_DIR", &fleet.tls)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("coordinator: not reachable ("), "{}", text(&out.stdout));
}

#[test]
fn completion_scripts_parse_in_their_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("drover")).args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["watch", "rerun", "validate"] {
            assert!(script.contains(word), "{shell}: no {word} in the script");
        }
        // bash checks the syntax itself; the others, where installed.
        let check: &[&str] = match shell {
            "bash" => &["bash", "-n"],
            "zsh" => &["zsh", "-n"],
            _ => &["fish", "--no-execute"],
        };
        let path = std::env::temp_dir().join(format!("drover-completion-{}.{shell}", std::process::id()));
        std::fs::write(&path, &script).unwrap();
        match Command::new(check[0]).args(&check[1..]).arg(&path).output() {
            Ok(out) => assert!(out.status.success(), "{shell} refuses the script: {}", text(&out.stderr)),
            Err(_) => assert_ne!(shell, "bash", "bash is always there"),
        }
        let _ = std::fs::remove_file(&path);
    }
}
