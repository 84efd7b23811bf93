//! `env` mappings, at the top level and in jobs, and what a pipeline may set
//! in them. Steps start with a cleared environment, so these rules decide
//! everything a pipeline file can put there: no `DROVER_*` names, which are
//! Drover's own, none of the variables that make the loader or bash run code
//! before the step's script, and a `PATH` that only extends the fixed one.

use std::collections::BTreeMap;

use super::Checker;
use crate::RESERVED_ENV_PREFIX;
use crate::yaml::{Kind, Node, abbreviate};

const ENV_NAME_HINT: &str = "env variable names must be shell identifiers: letters, digits \
     and `_`, not starting with a digit";
const DENIED_ENV_HINT: &str = "these variables change how the dynamic loader or bash start every \
     step, before the step's own script runs; set them inside the step's `run` instead if you really mean it";
const PATH_HINT: &str = "steps start with a fixed PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin); \
     extend it with absolute directories, e.g. `PATH: \"$PATH:/opt/tool/bin\"` or `PATH: \"/opt/tool/bin:$PATH\"`";

impl Checker<'_> {
    /// Reads an `env` mapping: the top-level one, or that of `owner`
    /// ("job `a`").
    pub(super) fn env(&mut self, env: &Node, owner: Option<&str>) -> BTreeMap<String, String> {
        let (subject, context) = match owner {
            Some(owner) => (format!("`env` of {owner}"), format!("in {owner}")),
            None => ("the top-level `env`".to_owned(), "at the top level".to_owned()),
        };
        let mut out = BTreeMap::new();
        let map = match &env.kind {
            Kind::Map(map) => map,
            Kind::Null => return out,
            _ => {
                self.error(
                    env.pos,
                    format!("{subject} must be a mapping of variable names to values, found {}", env.describe()),
                    Some("e.g. `env: {GREETING: hello}`".to_owned()),
                );
                return out;
            }
        };
        let entries = self.entries(map, "env variable", &context);
        for entry in entries {
            let key = entry.key;
            let mut ok = true;
            if !is_shell_identifier(key) {
                self.error(
                    entry.key_pos,
                    format!("invalid env variable name `{}` {context}", abbreviate(key)),
                    Some(ENV_NAME_HINT.to_owned()),
                );
                ok = false;
            } else if key.starts_with(RESERVED_ENV_PREFIX) {
                self.error(
                    entry.key_pos,
                    format!(
                        "env variable `{key}` {context} uses the reserved prefix \
                         `{RESERVED_ENV_PREFIX}`"
                    ),
                    Some(format!("Drover sets {RESERVED_ENV_PREFIX}* variables itself; choose another name")),
                );
                ok = false;
            } else if let Some(rule) = denied_env_name(key) {
                self.error(
                    entry.key_pos,
                    format!("env variable `{key}` {context} is not allowed: {rule}"),
                    Some(DENIED_ENV_HINT.to_owned()),
                );
                ok = false;
            }
            let value = match (&entry.value.kind, entry.value.scalar_text()) {
                (_, Some(text)) if text.contains('\0') => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} contains a NUL character"),
                        Some("environment variables cannot hold NUL characters".to_owned()),
                    );
                    continue;
                }
                (_, Some(text)) => text,
                (Kind::Null, _) => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} has no value"),
                        Some(format!("write `{key}: \"\"` for an empty value")),
                    );
                    continue;
                }
                _ => {
                    self.error(
                        entry.value_pos(),
                        format!("env variable `{key}` {context} must be a string, found {}", entry.value.describe()),
                        Some("env values are strings; numbers and booleans are taken as written".to_owned()),
                    );
                    continue;
                }
            };
            if key == "PATH"
                && let Err(problem) = check_path_extension(value)
            {
                self.error(
                    entry.value_pos(),
                    format!("env variable `PATH` {context} {problem}"),
                    Some(PATH_HINT.to_owned()),
                );
                continue;
            }
            if ok {
                out.insert(key.to_owned(), value.to_owned());
            }
        }
        out
    }
}

/// Whether `name` matches `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why an env variable name may not be set by a pipeline, if it may not.
/// Each of these runs code or changes parsing before (or inside) every
/// step's script: the loader's `LD_*`, bash's startup files (`BASH_ENV`,
/// `ENV`), exported functions (`BASH_FUNC_*`), word splitting (`IFS`), the
/// xtrace prompt (`PS4`, which is expanded) and shell options.
pub(super) fn denied_env_name(key: &str) -> Option<&'static str> {
    if key.starts_with("LD_") {
        Some("`LD_*` variables make the dynamic loader load or look up other code in every program a step starts")
    } else if key.starts_with("BASH_FUNC_") {
        Some("`BASH_FUNC_*` variables define shell functions that bash imports before the script runs")
    } else {
        match key {
            "BASH_ENV" | "ENV" => Some("bash runs the file it names before every step"),
            "IFS" => Some("it changes how bash splits words in every step"),
            "PS4" => Some("bash expands it, running any command substitution in it, on every traced line"),
            "SHELLOPTS" | "BASHOPTS" => Some("it turns shell options on before every step's script runs"),
            _ => None,
        }
    }
}

/// A pipeline may only extend the steps' fixed PATH: the value must hold
/// `$PATH` (or `${PATH}`) once as a whole element, and every other element
/// must be an absolute directory. The agent puts its fixed PATH where
/// `$PATH` stands. Replacing PATH outright failed with a bare "cannot
/// start bash" (`PATH=/nonexistent`) and lets a pipeline shadow system
/// tools without saying so.
fn check_path_extension(value: &str) -> Result<(), String> {
    let elements: Vec<&str> = value.split(':').collect();
    let references = elements.iter().filter(|e| **e == "$PATH" || **e == "${PATH}").count();
    if references == 0 {
        return Err(format!("must extend the default PATH, not replace it: {value:?} does not contain `$PATH`"));
    }
    if references > 1 {
        return Err(format!("names `$PATH` more than once in {value:?}"));
    }
    for element in elements.iter().filter(|e| **e != "$PATH" && **e != "${PATH}") {
        if !element.starts_with('/') {
            let shown = if element.is_empty() {
                "an empty element (the current directory)".to_owned()
            } else {
                format!("{element:?}")
            };
            return Err(format!("may only add absolute directories, and {value:?} has {shown}"));
        }
        if element.contains('$') {
            return Err(format!("may only add literal directories, and {element:?} refers to another variable"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_env_names_are_refused_and_others_are_not() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "BASH_ENV",
            "ENV",
            "BASH_FUNC_ls%%",
            "IFS",
            "PS4",
            "SHELLOPTS",
            "BASHOPTS",
        ] {
            assert!(denied_env_name(name).is_some(), "{name} should be refused");
        }
        for name in
            ["LD", "OLD_PRELOAD", "ENVIRONMENT", "MY_ENV", "PS1", "PATH", "HOME", "GREETING", "BASH", "RUST_LOG"]
        {
            assert_eq!(denied_env_name(name), None, "{name} should be allowed");
        }
    }

    #[test]
    fn path_may_only_be_extended() {
        for ok in ["$PATH:/opt/x", "/opt/x:$PATH", "${PATH}:/opt/x", "/a:$PATH:/b/c", "$PATH"] {
            assert_eq!(check_path_extension(ok), Ok(()), "{ok}");
        }
        let bad: &[(&str, &str)] = &[
            ("/nonexistent", "does not contain `$PATH`"),
            ("", "does not contain `$PATH`"),
            ("/opt/$PATHX", "does not contain `$PATH`"),
            ("$PATH:$PATH", "more than once"),
            ("$PATH:", "an empty element (the current directory)"),
            (":$PATH", "an empty element"),
            ("$PATH:bin", "\"bin\""),
            ("$PATH:./bin", "\"./bin\""),
            ("$PATH:/opt/$HOME", "refers to another variable"),
        ];
        for (value, want) in bad {
            let err = check_path_extension(value).unwrap_err();
            assert!(err.contains(want), "{value:?}: {err}");
        }
    }
}
