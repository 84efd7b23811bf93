//! A step's environment, built from nothing: the fixed minimum, the
//! pipeline's `env` (with `$PATH` expanded), then Drover's own variables.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The PATH every step starts with. A pipeline may only extend it (the
/// coordinator refuses any other PATH), writing `$PATH` where this goes.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// bash, found on [`DEFAULT_PATH`] (neither the agent's PATH nor a
/// pipeline's decides which shell runs steps), or plain `bash` if none is
/// there.
pub fn find_bash() -> std::path::PathBuf {
    DEFAULT_PATH
        .split(':')
        .map(|dir| std::path::Path::new(dir).join("bash"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from("bash"))
}

/// A pipeline's PATH with each `$PATH` or `${PATH}` element replaced by
/// [`DEFAULT_PATH`]. Only whole elements count, as the coordinator checks
/// them: `$PATHS` or `/x$PATH` stay as written.
pub fn expand_path(value: &str) -> String {
    value
        .split(':')
        .map(|element| if element == "$PATH" || element == "${PATH}" { DEFAULT_PATH } else { element })
        .collect::<Vec<_>>()
        .join(":")
}

/// A step's whole environment, built from nothing: `PATH` ([`DEFAULT_PATH`]),
/// `HOME` and `LANG=C.UTF-8`, then the pipeline's and job's `env` (which
/// may set `HOME` and `LANG`, and extend `PATH`), then Drover's own
/// variables (`DROVER_*`, `TRACEPARENT`), which nothing overrides: the next
/// agent finds leftover steps by `DROVER_WORKSPACE`. The agent's own
/// environment never reaches a step.
pub fn step_env(
    job_env: &BTreeMap<String, String>,
    home: &OsStr,
    drover: &[(&str, &OsStr)],
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), home.into());
    env.insert("LANG".into(), "C.UTF-8".into());
    for (key, value) in job_env {
        let value = if key == "PATH" { expand_path(value) } else { value.clone() };
        env.insert(key.into(), value.into());
    }
    for (key, value) in drover {
        env.insert(key.into(), value.into());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn a_step_environment_holds_only_what_drover_and_the_pipeline_give() {
        let d = DEFAULT_PATH;
        let drover: &[(&str, &OsStr)] = &[
            ("DROVER_JOB", OsStr::new("build")),
            ("DROVER_WORKSPACE", OsStr::new("/w/1-build-1")),
            ("TRACEPARENT", OsStr::new("00-ab-cd-01")),
        ];
        let base = |more: &[(&str, &str)]| {
            let mut pairs = vec![
                ("PATH", d),
                ("HOME", "/home/b"),
                ("LANG", "C.UTF-8"),
                ("DROVER_JOB", "build"),
                ("DROVER_WORKSPACE", "/w/1-build-1"),
                ("TRACEPARENT", "00-ab-cd-01"),
            ];
            pairs.extend_from_slice(more);
            map(&pairs)
        };
        let with_path = |path: &str| {
            let mut env = base(&[]);
            env.insert("PATH".into(), path.into());
            env
        };
        // (the pipeline's and job's env, the step's whole environment)
        type Case<'a> = (&'a [(&'a str, &'a str)], BTreeMap<OsString, OsString>);
        let cases: Vec<Case> = vec![
            // Nothing from the pipeline: the fixed minimum and Drover's own.
            (&[], base(&[])),
            (&[("MODE", "release"), ("EMPTY", "")], base(&[("MODE", "release"), ("EMPTY", "")])),
            // PATH extends the default where `$PATH` stands.
            (&[("PATH", "$PATH:/opt/x/bin")], with_path(&format!("{d}:/opt/x/bin"))),
            (&[("PATH", "/opt/x/bin:${PATH}")], with_path(&format!("/opt/x/bin:{d}"))),
            (&[("PATH", "/a:$PATH:/b")], with_path(&format!("/a:{d}:/b"))),
            // Only whole elements are expanded, as the coordinator checks.
            (&[("PATH", "$PATHS:/x$PATH")], with_path("$PATHS:/x$PATH")),
            // `$PATH` in another variable is that variable's business.
            (&[("OTHER", "$PATH")], base(&[("OTHER", "$PATH")])),
            // The pipeline may set HOME and LANG...
            (&[("HOME", "/tmp/h"), ("LANG", "de_DE.UTF-8")], {
                let mut env = base(&[]);
                env.insert("HOME".into(), "/tmp/h".into());
                env.insert("LANG".into(), "de_DE.UTF-8".into());
                env
            }),
            // ...but never Drover's own variables.
            (&[("DROVER_WORKSPACE", "/elsewhere"), ("TRACEPARENT", "x")], base(&[])),
        ];
        for (job_env, want) in cases {
            let job_env: BTreeMap<String, String> =
                job_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(step_env(&job_env, OsStr::new("/home/b"), drover), want, "{job_env:?}");
        }
    }
}
