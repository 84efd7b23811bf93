//! Who may do what, pure: the roles, the actions of the control API, and
//! the one decision (`authorize`). Deny by default: a caller is allowed an
//! action only when it is an administrator's certificate (`drover certs
//! init`'s, the root of trust) or a user whose role, read from the store
//! for the certificate it presents, includes the action. Deny wins: a
//! user who was removed, or whose certificate was replaced, has no role,
//! whatever its certificate says; an agent's certificate has none either.
//!
//! | role | may |
//! |---|---|
//! | viewer | read: runs, logs, artifacts, agents, the cluster, caches, repositories, environments, rollouts, services, apps, releases, notification targets |
//! | operator | what a viewer may, and run, rerun, cancel, approve, deploy (promote, pause, resume, abort, roll back, sync, pin, freeze, reject a release) |
//! | admin | everything: agents and their tokens, users and roles, secrets, environments, apps, repositories, caches, notification targets, the audit log |

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use viewer, operator or admin")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// What the role allows, in words.
    pub fn may(self) -> &'static str {
        match self {
            Role::Viewer => "read",
            Role::Operator => "read; run, rerun, cancel, approve, deploy",
            Role::Admin => "everything",
        }
    }
}

/// What an administrator alone manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Agents,
    Users,
    Secrets,
    Environments,
    Apps,
    Repos,
    Caches,
    Notifications,
    Audit,
    /// The certificate authority: its rotation.
    Ca,
}

impl Area {
    fn what(self) -> &'static str {
        match self {
            Area::Agents => "manage agents and join tokens",
            Area::Users => "manage users and roles",
            Area::Secrets => "read or change secrets",
            Area::Environments => "change environments",
            Area::Apps => "change apps",
            Area::Repos => "change repositories",
            Area::Caches => "delete caches",
            Area::Notifications => "change notification targets",
            Area::Audit => "read the audit log",
            Area::Ca => "rotate the certificate authority",
        }
    }
}

/// An action of the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    /// Submit or rerun a run.
    Run,
    Cancel,
    Approve,
    /// Promote, pause, resume, abort, roll back, sync, pin, freeze, reject.
    Deploy,
    Administer(Area),
    /// Ask who one is (any caller with a certificate from the CA).
    WhoAmI,
    /// Renew one's own certificate (`drover ca refresh`).
    RenewOwn,
}

impl Action {
    /// The least role that may do it.
    pub fn needs(self) -> Role {
        match self {
            Action::Read | Action::WhoAmI | Action::RenewOwn => Role::Viewer,
            Action::Run | Action::Cancel | Action::Approve | Action::Deploy => Role::Operator,
            Action::Administer(_) => Role::Admin,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Run => "run pipelines",
            Action::Cancel => "cancel runs",
            Action::Approve => "approve or reject",
            Action::Deploy => "deploy (promote, abort, roll back, sync, pin, freeze)",
            Action::Administer(area) => area.what(),
            Action::WhoAmI => "ask who it is",
            Action::RenewOwn => "renew its own certificate",
        }
    }
}

/// Who is calling, as the API edge read its certificate and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An administrator's certificate (`drover certs init`'s): every role.
    Admin(String),
    /// A user, with its role now; `None` when it has none (removed, or its
    /// certificate replaced), with why.
    User {
        name: String,
        role: Result<Role, String>,
    },
    Agent(String),
    /// A certificate from the CA with a role Drover does not know.
    Other {
        org: String,
        name: String,
    },
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Admin(name) | Caller::User { name, .. } | Caller::Agent(name) | Caller::Other { name, .. } => name,
        }
    }

    /// How the audit log names it: `admin:NAME`, `user:NAME`, `agent:NAME`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin(name) => format!("admin:{name}"),
            Caller::User { name, .. } => format!("user:{name}"),
            Caller::Agent(name) => format!("agent:{name}"),
            Caller::Other { org, name } => format!("{org}:{name}"),
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Admin(_) => Some(Role::Admin),
            Caller::User { role: Ok(role), .. } => Some(*role),
            _ => None,
        }
    }
}

/// Whether `caller` may do `action`; if not, why and what would allow it.
pub fn authorize(caller: &Caller, action: Action) -> Result<(), String> {
    let needs = action.needs();
    match caller {
        Caller::Admin(_) => Ok(()),
        Caller::User { role: Ok(role), .. } if *role >= needs => Ok(()),
        Caller::User { name, role: Ok(role) } => Err(format!(
            "user {name:?} is a{} {}, which may not {}: that takes the {} role (an admin grants it with \
             `drover user role {name} {}`)",
            if *role == Role::Operator || *role == Role::Admin { "n" } else { "" },
            role.as_str(),
            action.what(),
            needs.as_str(),
            needs.as_str()
        )),
        Caller::User { name, role: Err(why) } => Err(format!("user {name:?} may do nothing: {why}")),
        Caller::Agent(name) => Err(format!(
            "the certificate of agent {name:?} cannot use the control API; use an admin certificate (DIR/admin \
             from `drover certs init --dir DIR`) or a user's (`drover login`)"
        )),
        Caller::Other { org, name } => Err(format!(
            "certificate {name:?} has unknown role {org:?}; use an admin certificate or a user's (`drover login`)"
        )),
    }
}

/// Whether `caller` may deploy by hand to `what` (`environment "prod"`,
/// `app "web"`), which asks for `needs` (its `deploy_role`), beyond
/// [`Action::Deploy`] itself.
pub fn may_deploy(caller: &Caller, what: &str, needs: Option<Role>) -> Result<(), String> {
    let Some(needs) = needs else { return Ok(()) };
    match caller.role() {
        Some(role) if role >= needs => Ok(()),
        role => Err(format!(
            "{what} takes the {} role to deploy to by hand; {} is {} (an admin grants it with \
             `drover user role {} {}`)",
            needs.as_str(),
            caller.actor(),
            role.map_or("without a role".to_owned(), |r| format!(
                "a{} {}",
                if r == Role::Viewer { "" } else { "n" },
                r.as_str()
            )),
            caller.name(),
            needs.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role) -> Caller {
        Caller::User { name: "u".into(), role: Ok(role) }
    }

    #[test]
    fn each_role_may_do_what_its_row_says_and_nothing_more() {
        use Action::*;
        let actions = [
            Read,
            WhoAmI,
            RenewOwn,
            Run,
            Cancel,
            Approve,
            Deploy,
            Administer(Area::Secrets),
            Administer(Area::Agents),
            Administer(Area::Users),
            Administer(Area::Audit),
            Administer(Area::Ca),
        ];
        // (caller, how many of `actions`, in order, it may do)
        let cases = [
            (user(Role::Viewer), 3),
            (user(Role::Operator), 7),
            (user(Role::Admin), 12),
            (Caller::Admin("root".into()), 12),
            (Caller::User { name: "u".into(), role: Err("it was removed".into()) }, 0),
            (Caller::Agent("a1".into()), 0),
            (Caller::Other { org: "acme".into(), name: "x".into() }, 0),
        ];
        for (caller, allowed) in cases {
            for (i, action) in actions.iter().enumerate() {
                assert_eq!(authorize(&caller, *action).is_ok(), i < allowed, "{caller:?} {action:?}");
            }
        }
    }

    #[test]
    fn a_refusal_says_what_it_takes_and_who_can_grant_it() {
        let err = authorize(&user(Role::Viewer), Action::Cancel).unwrap_err();
        assert_eq!(
            err,
            "user \"u\" is a viewer, which may not cancel runs: that takes the operator role (an admin grants it \
             with `drover user role u operator`)"
        );
        let err = authorize(&user(Role::Operator), Action::Administer(Area::Secrets)).unwrap_err();
        assert!(
            err.starts_with(
                "user \"u\" is an operator, which may not read or change secrets: that takes the admin role"
            ),
            "{err}"
        );
        let removed = Caller::User { name: "u".into(), role: Err("user \"u\" was removed".into()) };
        assert!(authorize(&removed, Action::Read).unwrap_err().contains("may do nothing: user \"u\" was removed"));
        assert!(
            authorize(&Caller::Agent("a1".into()), Action::Read).unwrap_err().contains("cannot use the control API")
        );
        assert_eq!(Role::parse("operator"), Ok(Role::Operator));
        assert!(Role::parse("root").unwrap_err().contains("use viewer, operator or admin"));
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn an_environment_may_ask_more_than_an_operator_to_deploy_to_it() {
        let prod = "environment \"prod\"";
        assert!(may_deploy(&user(Role::Operator), prod, None).is_ok());
        assert!(may_deploy(&user(Role::Operator), prod, Some(Role::Operator)).is_ok());
        assert!(may_deploy(&Caller::Admin("root".into()), prod, Some(Role::Admin)).is_ok());
        let err = may_deploy(&user(Role::Operator), prod, Some(Role::Admin)).unwrap_err();
        assert_eq!(
            err,
            "environment \"prod\" takes the admin role to deploy to by hand; user:u is an operator (an admin grants \
             it with `drover user role u admin`)"
        );
    }
}
