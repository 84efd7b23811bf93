//! A deploy's `service:`: its name, the command run from the unpacked
//! release, its `env` (a job's rules, and never `PORT`, which Drover sets),
//! the port users connect to, and its health check: exactly one of `http`,
//! `tcp` and `exec`, how often, how many passes or failures in a row count,
//! and how long a node may take to become healthy.

use super::{is_name, show};
use crate::deploy::{HealthCheck, HealthSpec, ServiceSpec};
use crate::expr::Scope;
use crate::yaml::{Kind, abbreviate};
use crate::{
    DEFAULT_UNHEALTHY_AFTER, MAX_HEALTH_INTERVAL, MAX_HEALTH_RUN, MAX_HEALTH_TIMEOUT, MAX_SERVICE_NAME_LEN,
    SERVICE_PORT_VAR,
};

use super::super::{Checker, Entry, find};

const SERVICE_KEYS: &[&str] = &["name", "command", "env", "port", "health"];
const HEALTH_KEYS: &[&str] = &["http", "tcp", "exec", "interval", "healthy_after", "unhealthy_after", "timeout"];
const HEALTH_KINDS: &[&str] = &["http", "tcp", "exec"];

pub(in crate::check) const EXAMPLE: &str = "e.g. `service: {name: web, command: ./app --port ${PORT}, port: \
     8080, health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}}`";
const HEALTH_EXAMPLE: &str = "e.g. `health: {http: /healthz, interval: 1s, healthy_after: 3, timeout: 60s}`";
const KINDS_HINT: &str = "give exactly one of `http: /healthz` (a GET that answers 2xx), `tcp: true` (a connection \
     to the port) and `exec: ./check` (a command that exits 0)";

impl Checker<'_> {
    /// Reads the `service` of the deploy of `owner` ("job `d`"); its
    /// expressions may name what `scope` has.
    pub(in crate::check) fn service(
        &mut self,
        entry: &Entry<'_>,
        owner: &str,
        scope: &Scope<'_>,
    ) -> Option<ServiceSpec> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("`service` in the deploy of {owner} must be a mapping, found {}", entry.value.describe()),
                Some(EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in the service of {owner}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, SERVICE_KEYS, &context);
        let missing = |checker: &mut Self, key: &str| {
            checker.error(entry.key_pos, format!("the service of {owner} has no `{key}`"), Some(EXAMPLE.to_owned()));
        };
        let name = match find(&entries, "name") {
            Some(e) => self.service_name(e, owner),
            None => {
                missing(self, "name");
                None
            }
        };
        let shown = name.clone().unwrap_or_else(|| "?".to_owned());
        let command = match find(&entries, "command") {
            Some(e) => self.command(e, &format!("`command` of service `{shown}` in {owner}"), scope),
            None => {
                missing(self, "command");
                None
            }
        };
        let env = match find(&entries, "env") {
            Some(e) => {
                let mut env = self.env(e.value, Some(owner));
                if let Kind::Map(map) = &e.value.kind
                    && let Some((key, _)) = map.iter().find(|(k, _)| k.scalar_text() == Some(SERVICE_PORT_VAR))
                {
                    self.error(
                        key.pos,
                        format!("env variable `{SERVICE_PORT_VAR}` of service `{shown}` in {owner} is Drover's"),
                        Some(format!(
                            "Drover sets `{SERVICE_PORT_VAR}` to the port the service listens on behind the node's \
                             proxy: read it (`--port ${{{SERVICE_PORT_VAR}}}`); `port:` is the one users connect to"
                        )),
                    );
                    env.remove(SERVICE_PORT_VAR);
                }
                self.env_interpolations(e.value, &env, scope, &format!("in service `{shown}` of {owner}"));
                Some(env)
            }
            None => Some(Default::default()),
        };
        let port = match find(&entries, "port") {
            Some(e) => self
                .whole(
                    e,
                    &format!("`port` of service `{shown}` in {owner}"),
                    1,
                    u32::from(u16::MAX),
                    "the port users connect to, e.g. `port: 8080`; the node's proxy owns it",
                )
                .and_then(|port| u16::try_from(port).ok()),
            None => {
                missing(self, "port");
                None
            }
        };
        let health = match find(&entries, "health") {
            Some(e) => self.health(e, &format!("the health check of service `{shown}` in {owner}"), owner, scope),
            None => {
                missing(self, "health");
                None
            }
        };
        Some(ServiceSpec { name: name?, command: command?, env: env?, port: port?, health: health? })
    }

    fn service_name(&mut self, entry: &Entry<'_>, owner: &str) -> Option<String> {
        match entry.value.scalar_text() {
            Some(name) if is_name(name, MAX_SERVICE_NAME_LEN) => Some(name.to_owned()),
            found => {
                let found = found.map_or_else(|| entry.value.describe(), |name| format!("`{}`", abbreviate(name)));
                self.error(
                    entry.value_pos(),
                    format!("invalid service name {found} in the deploy of {owner}"),
                    Some(format!(
                        "a service's name is 1 to {MAX_SERVICE_NAME_LEN} letters, digits, `_`, `.` or `-`, starting \
                         with a letter or digit, e.g. `web`"
                    )),
                );
                None
            }
        }
    }

    /// A command to run from the release (`command`, a health check's
    /// `exec`): a non-empty string whose `${{ }}` are checked.
    fn command(&mut self, entry: &Entry<'_>, subject: &str, scope: &Scope<'_>) -> Option<String> {
        match entry.value.scalar_text() {
            Some(text) if text.trim().is_empty() => {
                self.error(
                    entry.value_pos(),
                    format!("{subject} is empty"),
                    Some("give the command to run".to_owned()),
                );
                None
            }
            Some(text) if text.contains('\0') => {
                self.error(entry.value_pos(), format!("{subject} contains a NUL character"), None);
                None
            }
            Some(text) => {
                self.interpolated(entry.value, scope, subject);
                Some(text.to_owned())
            }
            None => {
                self.error(
                    entry.value_pos(),
                    format!("{subject} must be a command, found {}", entry.value.describe()),
                    Some("a shell command run from the unpacked release, e.g. `./app --port ${PORT}`".to_owned()),
                );
                None
            }
        }
    }

    /// Reads a service's `health`; `subject` names it in messages.
    fn health(&mut self, entry: &Entry<'_>, subject: &str, owner: &str, scope: &Scope<'_>) -> Option<HealthSpec> {
        let Kind::Map(map) = &entry.value.kind else {
            self.error(
                entry.value_pos(),
                format!("{subject} must be a mapping, found {}", entry.value.describe()),
                Some(HEALTH_EXAMPLE.to_owned()),
            );
            return None;
        };
        let context = format!("in {subject}");
        let entries = self.entries(map, "key", &context);
        self.unknown_keys(&entries, HEALTH_KEYS, &context);
        let missing = |checker: &mut Self, key: &str| {
            checker.error(entry.key_pos, format!("{subject} has no `{key}`"), Some(HEALTH_EXAMPLE.to_owned()));
        };

        let kinds: Vec<&Entry<'_>> = entries.iter().filter(|e| HEALTH_KINDS.contains(&e.key)).collect();
        let check = match kinds.as_slice() {
            [] => {
                self.error(entry.key_pos, format!("{subject} names no check"), Some(KINDS_HINT.to_owned()));
                None
            }
            [one] => self.health_check(one, subject, scope),
            [first, second, ..] => {
                self.error(
                    second.key_pos,
                    format!("{subject} has both `{}` and `{}`", first.key, second.key),
                    Some(KINDS_HINT.to_owned()),
                );
                None
            }
        };
        let interval = match find(&entries, "interval") {
            Some(e) => self.bounded_duration(e, "health interval", owner, MAX_HEALTH_INTERVAL),
            None => {
                missing(self, "interval");
                None
            }
        };
        let run_hint = format!("a number of checks in a row, 1 to {MAX_HEALTH_RUN}, e.g. 3");
        let healthy_after = match find(&entries, "healthy_after") {
            Some(e) => self.whole(e, &format!("`healthy_after` of {subject}"), 1, MAX_HEALTH_RUN, &run_hint),
            None => {
                missing(self, "healthy_after");
                None
            }
        };
        let unhealthy_after = match find(&entries, "unhealthy_after") {
            Some(e) => self.whole(e, &format!("`unhealthy_after` of {subject}"), 1, MAX_HEALTH_RUN, &run_hint),
            None => Some(DEFAULT_UNHEALTHY_AFTER),
        };
        let timeout = match find(&entries, "timeout") {
            Some(e) => {
                let timeout = self.bounded_duration(e, "health timeout", owner, MAX_HEALTH_TIMEOUT);
                // Too short for `healthy_after` checks, no node could ever pass.
                if let (Some(t), Some(i), Some(n)) = (timeout, interval, healthy_after)
                    && let Some(needed) = i.checked_mul(n).filter(|needed| *needed > t)
                {
                    self.error(
                        e.value.pos,
                        format!(
                            "{subject} waits {} for a node to become healthy, less than {n} checks every {} take",
                            show(t),
                            show(i)
                        ),
                        Some(format!("give it at least {}, or check more often", show(needed))),
                    );
                    None
                } else {
                    timeout
                }
            }
            None => {
                missing(self, "timeout");
                None
            }
        };
        Some(HealthSpec {
            check: check?,
            interval: interval?,
            healthy_after: healthy_after?,
            unhealthy_after: unhealthy_after?,
            timeout: timeout?,
        })
    }

    fn health_check(&mut self, entry: &Entry<'_>, subject: &str, scope: &Scope<'_>) -> Option<HealthCheck> {
        let value = entry.value;
        match entry.key {
            "http" => match value.scalar_text() {
                Some(path) if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    Some(HealthCheck::Http(path.to_owned()))
                }
                found => {
                    let found = found.map_or_else(|| value.describe(), |path| format!("`{}`", abbreviate(path)));
                    self.error(
                        entry.value_pos(),
                        format!("the `http` path {found} of {subject} must start with `/`, without spaces"),
                        Some("the path of a GET on the service's port, e.g. `http: /healthz`".to_owned()),
                    );
                    None
                }
            },
            "tcp" => match value.scalar_text() {
                Some("true") => Some(HealthCheck::Tcp),
                _ => {
                    self.error(
                        entry.value_pos(),
                        format!("`tcp` of {subject} must be `true`, found {}", value.describe()),
                        Some("`tcp: true` passes when the service's port takes a connection".to_owned()),
                    );
                    None
                }
            },
            _ => self.command(entry, &format!("`exec` of {subject}"), scope).map(HealthCheck::Exec),
        }
    }
}
