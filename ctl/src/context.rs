//! Contexts, as kubectl has them: named pairs of coordinator URLs and a TLS
//! directory, kept in `$XDG_CONFIG_HOME/drover/config.yaml` (by default
//! `~/.config/drover/config.yaml`), one of them current. A command finds
//! its coordinator and certificates from, first to last: `--coordinator`
//! and `--tls-dir` (or `DROVER_COORDINATOR`, `DROVER_TLS_DIR`), the context
//! named by `--context` (or `DROVER_CONTEXT`), the current context, and
//! the defaults (`https://127.0.0.1:7700`, `.drover/tls`). `drover login`
//! saves a context for the user's directory, `tls/NAME` beside the file,
//! and makes it current.
//!
//! The file is written whole to a temporary file beside it and renamed
//! over it, so a crash or a full disk never leaves half a file; a file
//! that does not parse is an error that says where, never overwritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_saphyr::MessageFormatter;

use crate::client::{EXIT_INVALID, EXIT_NOT_FOUND, Exit};
use crate::out::outln;
use crate::output::{self, Format};

/// The coordinator when nothing names one.
pub const DEFAULT_COORDINATOR: &str = "https://127.0.0.1:7700";
/// The TLS directory when nothing names one.
pub const DEFAULT_TLS_DIR: &str = ".drover/tls";

/// What `config.yaml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    /// The coordinators' URLs, comma-separated.
    pub coordinator: String,
    /// The TLS directory, absolute: the admin's, or a user's that `drover
    /// login` wrote (and saved this context for).
    pub tls_dir: PathBuf,
}

/// Where the configuration lives: `$XDG_CONFIG_HOME/drover/config.yaml`,
/// else `$HOME/.config/drover/config.yaml`.
pub fn path() -> Result<PathBuf, Exit> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(Exit::new(
                    EXIT_INVALID,
                    "neither XDG_CONFIG_HOME nor HOME is set: there is nowhere to keep contexts",
                ));
            }
        },
    };
    Ok(base.join("drover").join("config.yaml"))
}

/// Reads the configuration; a missing file is an empty one.
pub fn load(path: &Path) -> Result<Config, Exit> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", path.display()))),
    };
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        Exit::new(
            EXIT_INVALID,
            format!(
                "{}{at}: {}; fix the file, or remove it and add the contexts again with `drover context add`",
                path.display(),
                serde_saphyr::UserMessageFormatter.format_message(&e).replace('\n', " ")
            ),
        )
    })
}

/// Writes the configuration whole: a temporary file, synced, renamed over
/// the old one.
pub fn save(path: &Path, config: &Config) -> Result<(), Exit> {
    use std::io::Write;
    let fail = |e: std::io::Error| Exit::new(EXIT_INVALID, format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().expect("the path has a directory");
    std::fs::create_dir_all(dir).map_err(fail)?;
    let text =
        serde_saphyr::to_string(config).map_err(|e| Exit::new(EXIT_INVALID, format!("cannot write YAML: {e}")))?;
    let tmp = dir.join(format!(".config.yaml.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// The coordinator URLs and TLS directory a command uses; see the module
/// header for the order.
pub fn resolve(
    coordinator: Option<String>,
    tls_dir: Option<PathBuf>,
    context: Option<&str>,
) -> Result<(String, PathBuf), Exit> {
    if let (Some(c), Some(t)) = (&coordinator, &tls_dir) {
        return Ok((c.clone(), t.clone()));
    }
    let path = path();
    let chosen = match (context, &path) {
        (Some(name), Ok(path)) => {
            let config = load(path)?;
            Some(find(&config, name, path)?.clone())
        }
        (Some(_), Err(e)) => return Err(Exit::new(e.code, e.message.clone())),
        (None, Ok(path)) => {
            let config = load(path)?;
            match &config.current_context {
                Some(name) => Some(find(&config, name, path)?.clone()),
                None => None,
            }
        }
        (None, Err(_)) => None,
    };
    let coordinator = coordinator
        .or_else(|| chosen.as_ref().map(|c| c.coordinator.clone()))
        .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
    let tls_dir = tls_dir
        .or_else(|| chosen.as_ref().map(|c| c.tls_dir.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TLS_DIR));
    Ok((coordinator, tls_dir))
}

fn find<'a>(config: &'a Config, name: &str, path: &Path) -> Result<&'a Context, Exit> {
    config.contexts.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        Exit::new(
            EXIT_NOT_FOUND,
            format!(
                "no context {name:?} in {} (contexts: {known}); add it with `drover context add {name} --coordinator URL --tls-dir DIR`",
                path.display()
            ),
        )
    })
}

/// `drover context add`: adds or replaces a context; `make_current` makes
/// it the current one too.
pub fn add(name: &str, coordinator: &str, tls_dir: &Path, make_current: bool) -> Result<(), Exit> {
    check_name(name)?;
    let tls_dir = std::path::absolute(tls_dir)
        .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot make {} absolute: {e}", tls_dir.display())))?;
    let path = path()?;
    let mut config = load(&path)?;
    config.contexts.insert(name.to_string(), Context { coordinator: coordinator.to_string(), tls_dir });
    if make_current || config.current_context.is_none() {
        config.current_context = Some(name.to_string());
    }
    save(&path, &config)?;
    let current = config.current_context.as_deref() == Some(name);
    outln!("context {name} saved in {}{}", path.display(), if current { "; it is the current context" } else { "" });
    Ok(())
}

/// Refuses a context name that is empty or has spaces or control
/// characters.
pub fn check_name(name: &str) -> Result<(), Exit> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Exit::new(EXIT_INVALID, format!("{name:?} is not a context name: use letters, digits, - or _")));
    }
    Ok(())
}

/// `drover context use`.
pub fn use_context(name: &str) -> Result<(), Exit> {
    let path = path()?;
    let mut config = load(&path)?;
    find(&config, name, &path)?;
    config.current_context = Some(name.to_string());
    save(&path, &config)?;
    outln!("now using context {name}");
    Ok(())
}

/// `drover context rm`.
pub fn remove(name: &str) -> Result<(), Exit> {
    let path = path()?;
    let mut config = load(&path)?;
    find(&config, name, &path)?;
    config.contexts.remove(name);
    if config.current_context.as_deref() == Some(name) {
        config.current_context = None;
    }
    save(&path, &config)?;
    outln!("context {name} removed");
    Ok(())
}

/// `drover context ls`.
pub fn list(format: Format) -> Result<(), Exit> {
    let path = path()?;
    let config = load(&path)?;
    if format.structured() {
        let contexts: Vec<serde_json::Value> = config
            .contexts
            .iter()
            .map(|(name, c)| {
                json!({
                    "name": name,
                    "coordinator": c.coordinator,
                    "tls_dir": c.tls_dir,
                    "current": config.current_context.as_deref() == Some(name),
                })
            })
            .collect();
        return output::document(format, &serde_json::Value::Array(contexts));
    }
    if config.contexts.is_empty() {
        outln!(
            "no contexts in {}; add one with `drover context add NAME --coordinator URL --tls-dir DIR`",
            path.display()
        );
        return Ok(());
    }
    outln!("{:<8} {:<16} {:<40} TLS DIR", "CURRENT", "NAME", "COORDINATOR");
    for (name, c) in &config.contexts {
        let mark = if config.current_context.as_deref() == Some(name) { "*" } else { "" };
        outln!("{mark:<8} {name:<16} {:<40} {}", c.coordinator, c.tls_dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_a_bad_one_says_where() {
        let dir = std::env::temp_dir().join(format!("drover-context-{}", std::process::id()));
        let path = dir.join("config.yaml");
        let mut config = Config::default();
        config
            .contexts
            .insert("dev".into(), Context { coordinator: "https://127.0.0.1:1".into(), tls_dir: "/tmp/tls".into() });
        config.current_context = Some("dev".into());
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), config);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: dev") && text.contains("tls-dir: /tmp/tls"), "{text}");

        std::fs::write(&path, "contexts:\n  dev:\n    coordinatr: x\n").unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(err.code, EXIT_INVALID);
        assert!(err.message.starts_with(&format!("{}:3:", path.display())), "{}", err.message);
        assert!(load(&dir.join("missing.yaml")).unwrap() == Config::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
