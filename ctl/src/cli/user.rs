//! `drover login`, `drover user add|role|rm`, `drover users` and `drover
//! whoami`: their flags (issue 18: users with roles, each with a key of its
//! own enrolled with a single-use join token). Flattened into
//! [`super::Command`], so they are top-level commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use drover_client::enroll::CaPin;

use super::Remote;
use super::identity::parse_ttl;
use crate::output::Format;

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Log in as a user, with the join token `drover user add` printed.
    ///
    /// Makes the user's own key, has the coordinator sign it (trusted by the
    /// CA's pin alone), writes user.pem, user-key.pem and ca.pem, saves a
    /// context that uses them and makes it current, and says who you are
    /// and what your role may do. Log in again, with a new token, when the
    /// certificate expires.
    ///
    /// Example: drover login --name otto --token djt_... --ca-pin sha256:... --coordinator https://ci.example.com:7700
    Login(LoginArgs),
    /// Users and their roles: add one (with a join token to log in with),
    /// change its role, or remove it.
    ///
    /// Example: drover user add otto --role operator
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List users: name, role, who added each and when, and when the
    /// certificate it last logged in with expires.
    ///
    /// Example: drover users -o wide
    Users(UsersArgs),
    /// Say who the TLS directory's certificate is (an admin, a user or an
    /// agent), its role and what that role may do.
    ///
    /// Example: drover whoami -o json
    Whoami(WhoamiArgs),
    /// Open the web UI: print a single-use login link for you (your
    /// certificate's user and role) and open it in a browser.
    ///
    /// The link works once, within 5 minutes, and gives that browser a
    /// session that lasts the coordinator's --ui-session-ttl (12h by
    /// default). The coordinator must serve the UI (--ui-listen; `drover
    /// dev` does).
    ///
    /// Example: drover ui --page /runs/12
    Ui(UiArgs),
}

impl AccessCommand {
    /// The coordinator flags, for the commands that connect with them
    /// (`login` has its own).
    pub fn remote(&self) -> Option<&Remote> {
        match self {
            AccessCommand::Login(_) => None,
            AccessCommand::User { command } => Some(command.remote()),
            AccessCommand::Users(UsersArgs { remote, .. })
            | AccessCommand::Whoami(WhoamiArgs { remote, .. })
            | AccessCommand::Ui(UiArgs { remote, .. }) => Some(remote),
        }
    }
}

// `drover login`'s flags.
#[derive(Args)]
pub struct LoginArgs {
    /// The user's name, as `drover user add NAME` added it: the
    /// certificate's common name.
    #[arg(long)]
    pub name: String,
    /// The join token `drover user add` printed; single-use, never printed
    /// or logged. Prefer the variable DROVER_LOGIN_TOKEN to the flag, which
    /// other users can read in the process list.
    #[arg(long, env = "DROVER_LOGIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: String,
    /// The CA's fingerprint that `drover user add` printed, sha256: and 64
    /// lower-case hex digits: login trusts a coordinator only if it
    /// presents this CA, and keeps only a CA certificate that matches it.
    #[arg(long, value_name = "sha256:HEX", value_parser = CaPin::parse)]
    pub ca_pin: CaPin,
    /// The coordinators' URLs, comma-separated, tried in turn. Default:
    /// DROVER_COORDINATOR, else the coordinator of the context --context
    /// names if it exists, else of the current context, else
    /// https://127.0.0.1:7700.
    #[arg(long, value_name = "URLS")]
    pub coordinator: Option<String>,
    /// Where to write user.pem, user-key.pem (0600) and ca.pem; made 0700
    /// if missing. Default: $XDG_CONFIG_HOME/drover/tls/NAME (else
    /// ~/.config/drover/tls/NAME). DROVER_TLS_DIR is not read here: it
    /// says where other commands find certificates.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// The context to save (the coordinator and the TLS directory) and
    /// make current, replacing one of that name. Default: NAME, the user's
    /// name; with --tls-dir and without --context, none is saved.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// A user's role.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    /// Reads: runs, logs, artifacts, agents, environments, rollouts, apps.
    Viewer,
    /// What a viewer may, and run, rerun, cancel, approve and deploy.
    Operator,
    /// Everything: agents and tokens, users, secrets, settings, the audit
    /// log.
    Admin,
}

impl RoleArg {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleArg::Viewer => "viewer",
            RoleArg::Operator => "operator",
            RoleArg::Admin => "admin",
        }
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user with a role and print a join token, once, with the
    /// `drover login` command line the user runs to make a key of its own
    /// and log in. For a user that exists with that role, print a new token
    /// (to log in again when the certificate expired); change a role with
    /// `drover user role`. Not retried when the answer is lost: list the
    /// users and add again.
    ///
    /// Example: drover user add otto --role operator --ttl 30m
    Add {
        /// The user's name: letters, digits, -, _ and ., starting with a
        /// letter or digit.
        name: String,
        /// What the user may do: viewer (read), operator (also run, cancel,
        /// approve, deploy) or admin (everything).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// How long the token may wait to be used, 10s to 24h: whole
        /// numbers with d, h, m or s (30m, 2h). Default: the coordinator's,
        /// 10m.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Output format: text, json or yaml (the user, with `secret`,
        /// `token_id` and `ca_pin`).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a user's role; it takes effect on the user's next call.
    ///
    /// Example: drover user role otto admin
    Role {
        /// The user's name, as `drover users` lists it.
        name: String,
        /// The new role: viewer, operator or admin.
        #[arg(value_enum)]
        role: RoleArg,
        /// Output format: text, json or yaml (the user as it is then).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a user: every call with its certificates is refused from
    /// then on (`drover user add` again to let it back in).
    ///
    /// Example: drover user rm otto
    Rm {
        /// The user's name, as `drover users` lists it.
        name: String,
        /// Output format: text, json or yaml (the user removed).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl UserCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            UserCommand::Add { remote, .. } | UserCommand::Role { remote, .. } | UserCommand::Rm { remote, .. } => {
                remote
            }
        }
    }
}

// `drover users`' flags.
#[derive(Args)]
pub struct UsersArgs {
    /// Output format: text, wide (absolute times, who changed each last,
    /// the certificate's serial), json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

// `drover whoami`'s flags.
#[derive(Args)]
pub struct WhoamiArgs {
    /// Output format: text, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}

// `drover ui`'s flags.
#[derive(Args)]
pub struct UiArgs {
    /// The page to land on, a path of the UI such as /runs/12; default:
    /// the runs.
    #[arg(long, value_name = "PATH", default_value = "")]
    pub page: String,
    /// Print the link only; do not start a browser (xdg-open). Also when
    /// there is no display ($DISPLAY, $WAYLAND_DISPLAY) or -o json.
    #[arg(long)]
    pub no_open: bool,
    /// Output format: text, json or yaml.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Format,
    #[command(flatten)]
    pub remote: Remote,
}
