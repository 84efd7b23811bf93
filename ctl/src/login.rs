//! `drover login` (issue 18): a user redeems the join token `drover user
//! add` printed for a certificate of its own, as an agent enrolls
//! (`drover_client::enroll`, with the user's files: `user.pem`,
//! `user-key.pem`, `ca.pem`), then asks the coordinator who it is now.
//!
//! Where things go, decided before the token is spent ([`plan`], pure):
//!
//! - the TLS directory: `--tls-dir`, else `tls/NAME` beside the contexts'
//!   `config.yaml` (`$XDG_CONFIG_HOME/drover/tls/NAME`), made 0700;
//! - the context saved and made current: `--context`, else one named after
//!   the user; none when `--tls-dir` is given without `--context` (the user
//!   who picked the directory points the CLI at it);
//! - the coordinator: `--coordinator` (after the command, then before it or
//!   `DROVER_COORDINATOR`), else that of the context `--context` names if it
//!   exists, else of `DROVER_CONTEXT`'s, else of the current context, else
//!   the default, as every command finds it. `DROVER_TLS_DIR` is never the
//!   destination: it names where other commands read certificates, often
//!   the admin's.
//!
//! The token is never printed; a refusal is printed with the coordinator's
//! words and the exit code of the same refusal of any call.

use std::path::{Path, PathBuf};

use drover_client::enroll::{self, EnrollError, Enrollment, Holder, Progress};

use crate::cli::{LoginArgs, RemoteBefore};
use crate::client::{Conn, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_PERMISSION, EXIT_UNREACHABLE, Exit, status_exit};
use crate::context::{self, Config, DEFAULT_COORDINATOR};
use crate::out::outln;
use crate::users;

/// Where a login writes and what it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The coordinators' URLs, comma-separated.
    pub urls: String,
    /// The user's TLS directory, absolute.
    pub tls_dir: PathBuf,
    /// The context to save and make current, if any.
    pub context: Option<String>,
}

/// `drover login`.
pub async fn run(args: LoginArgs, before: &RemoteBefore) -> anyhow::Result<()> {
    let config_file = context::path();
    let config = match &config_file {
        Ok(file) => context::load(file)?,
        Err(_) => Config::default(),
    };
    let config_dir = config_file.as_ref().ok().and_then(|f| f.parent());
    let plan = plan(&args, before, &config, config_dir)?;
    let Plan { urls, tls_dir, context: saved } = &plan;
    let enrollment = Enrollment {
        holder: Holder::User,
        coordinators: urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect(),
        name: args.name.clone(),
        tls_dir: tls_dir.clone(),
        token: args.token,
        pin: args.ca_pin,
        patience: enroll::PATIENCE,
    };
    let done = enroll::enroll(&enrollment, |progress| {
        if let Progress::Retrying { error } = progress {
            eprintln!("drover: cannot log in yet ({error}); trying again");
        }
    })
    .await
    .map_err(enroll_exit)?;
    outln!(
        "{}'s key and certificate (valid until {}) are in {}: user.pem, user-key.pem and ca.pem",
        args.name,
        crate::identity::absolute(done.not_after_ms),
        tls_dir.display()
    );
    match saved {
        Some(name) => context::add(name, urls, tls_dir, true)?,
        None => outln!(
            "use them with --tls-dir {0} (or DROVER_TLS_DIR), or save a context: drover context add NAME \
             --coordinator {1} --tls-dir {0} --use",
            tls_dir.display(),
            urls
        ),
    }
    let logged_in = |e: Exit| {
        Exit::new(e.code, format!("the certificate is in {}, but asking who it is failed: {}", tls_dir.display(), e))
    };
    let mut conn = Conn::connect(urls, tls_dir).await.map_err(logged_in)?;
    let me = users::who(&mut conn).await.map_err(logged_in)?;
    outln!("{}", users::login_text(&me));
    Ok(())
}

/// Where the login writes, which context it saves and which coordinator
/// it asks (see the module header), from the flags, those before the
/// command (and their variables), the contexts' file and its directory
/// (None when neither XDG_CONFIG_HOME nor HOME is set). Everything that can
/// be refused is refused here, before the single-use token is spent.
pub fn plan(args: &LoginArgs, before: &RemoteBefore, config: &Config, config_dir: Option<&Path>) -> Result<Plan, Exit> {
    let name = &args.name;
    drover_pki::ca::check_agent_name(name)
        .map_err(|e| Exit::new(EXIT_INVALID, e.to_string().replace("agent name", "user name")))?;
    let no_home = |what: &str| {
        Exit::new(EXIT_INVALID, format!("neither XDG_CONFIG_HOME nor HOME is set: there is nowhere to keep {what}"))
    };
    let tls_dir = match &args.tls_dir {
        Some(dir) => std::path::absolute(dir)
            .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot make {} absolute: {e}", dir.display())))?,
        None => config_dir.ok_or_else(|| no_home("the certificates; give --tls-dir DIR"))?.join("tls").join(name),
    };
    if tls_dir.join("admin.pem").exists() {
        return Err(Exit::new(
            EXIT_INVALID,
            format!(
                "{} holds admin.pem, an administrator's certificate: a user's beside it would take its place for \
                 every command that uses the directory; log in into a directory of its own (without --tls-dir, \
                 the default is one per user beside the contexts)",
                tls_dir.display()
            ),
        ));
    }
    let saved = match (&args.context, &args.tls_dir) {
        (Some(context), _) => Some(context.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(name.clone()),
    };
    if let Some(context) = &saved {
        context::check_name(context)?;
        if config_dir.is_none() {
            return Err(no_home("contexts; give --tls-dir DIR without --context"));
        }
    }
    let urls = match args.coordinator.clone().or_else(|| before.coordinator.clone()) {
        Some(urls) => urls,
        None => coordinator_of(config, args.context.as_deref(), before.context.as_deref())?,
    };
    Ok(Plan { urls, tls_dir, context: saved })
}

/// The coordinator of context `wanted` if it exists, else of `required`
/// (which must exist), else of the current context, else the default.
fn coordinator_of(config: &Config, wanted: Option<&str>, required: Option<&str>) -> Result<String, Exit> {
    let found = |name: &str| config.contexts.get(name).map(|c| c.coordinator.clone());
    if let Some(urls) = wanted.and_then(found) {
        return Ok(urls);
    }
    if let Some(name) = required {
        return found(name).ok_or_else(|| {
            Exit::new(
                EXIT_NOT_FOUND,
                format!("no context {name:?} (DROVER_CONTEXT or --context before the command); give --coordinator URL"),
            )
        });
    }
    Ok(config.current_context.as_deref().and_then(found).unwrap_or_else(|| DEFAULT_COORDINATOR.to_string()))
}

/// A failed enrollment as the CLI exits on it: a refusal as the same
/// refusal of any call; a pin that does not match, a bad URL or directory
/// as the user's input; no answer, or one that cannot be used, as an
/// unreachable coordinator.
fn enroll_exit(e: EnrollError) -> Exit {
    let message = e.to_string();
    let code = match &e {
        EnrollError::Refused { code, .. } => match code {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => EXIT_PERMISSION,
            code => status_exit(tonic::Status::new(*code, "")).code,
        },
        EnrollError::NoCoordinator
        | EnrollError::Url(_)
        | EnrollError::Dir { .. }
        | EnrollError::Key { .. }
        | EnrollError::Write(_)
        | EnrollError::PinMismatch { .. }
        | EnrollError::CaMismatch { .. } => EXIT_INVALID,
        EnrollError::BadAnswer { .. } | EnrollError::GaveUp { .. } => EXIT_UNREACHABLE,
    };
    // The coordinator's words, one line that cannot act on the terminal.
    Exit::new(code, crate::term::field(&message))
}

#[cfg(test)]
mod tests;
