//! The CLI's definition checked as clap reads it: every flag has help,
//! every command an example.

use super::*;
use clap::CommandFactory;

#[test]
fn the_flags_are_consistent() {
    Cli::command().debug_assert();
}

/// Every command and its subcommands, with their paths; clap's own `help`
/// commands left out.
fn commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands().filter(|sub| sub.get_name() != "help") {
        let path = format!("{path} {}", sub.get_name());
        out.push((path.clone(), sub.clone()));
        commands(sub, path, out);
    }
}

#[test]
fn every_flag_has_help_and_every_command_an_example() {
    let mut cli = Cli::command();
    cli.build();
    let mut all = Vec::new();
    commands(&cli, "drover".into(), &mut all);
    let mut missing = Vec::new();
    for (path, cmd) in std::iter::once(("drover".to_string(), cli.clone())).chain(all) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path}: {id} has no help"));
            }
        }
        let leaf = cmd.get_subcommands().next().is_none();
        let text = format!(
            "{}{}",
            cmd.get_long_about().map(|s| s.to_string()).unwrap_or_default(),
            cmd.get_after_help().map(|s| s.to_string()).unwrap_or_default()
        );
        if leaf && !text.contains("Example: drover") {
            missing.push(format!("{path}: no example"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Each command says what it does in its own words: a struct of flags that
/// several commands flatten must not lend them its doc comment (see
/// [`Command`], which is deferred).
#[test]
fn every_command_has_its_own_help() {
    let mut cli = Cli::command();
    cli.build();
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut all = Vec::new();
    commands(&cli, "drover".into(), &mut all);
    for (path, cmd) in all {
        let about = cmd.get_about().map(|s| s.to_string()).unwrap_or_default();
        assert!(!about.is_empty(), "{path} has no help");
        seen.entry(about).or_default().push(path);
    }
    let shared: Vec<_> = seen.into_iter().filter(|(_, paths)| paths.len() > 1).collect();
    assert!(shared.is_empty(), "commands that share their help: {shared:#?}");
}

#[test]
fn duration_flags() {
    let ok = [
        ("60s", Duration::from_secs(60)),
        ("0s", Duration::ZERO),
        ("5m", Duration::from_secs(300)),
        ("1m30s", Duration::from_secs(90)),
        ("1h", Duration::from_secs(3600)),
        ("500ms", Duration::from_millis(500)),
        ("2s500ms", Duration::from_millis(2500)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    for text in ["", "60", "s", "1.5s", "30s1m", "1m1m", "5 m", "1d", "-1s", "99999999999s"] {
        let err = parse_duration(text).unwrap_err();
        assert!(err.contains("is not a duration"), "{text}: {err}");
    }
}
