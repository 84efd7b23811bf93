//! `drover user add|role|rm`, `drover users` and `drover whoami` (issue
//! 18): users, their roles, and who a certificate is, over the identity
//! service. As in [`crate::identity`], each command builds its answer as
//! JSON once and prints it as `-o` asks; the tables and messages are pure
//! functions (tested below), and every text the coordinator sent goes
//! through [`field`]. `drover login` is [`crate::login`]'s.

use std::time::Duration;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cli::{AccessCommand, UiArgs, UserCommand, UsersArgs, WhoamiArgs};
use crate::client::{Conn, Exit};
use crate::commands::now_ms;
use crate::identity::{absolute, relative, shell_word};
use crate::out::outln;
use crate::output::{self, Format};
use crate::term::field;

/// A join token's life when `--ttl` is not given: the coordinator's
/// default.
const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// `drover user …`, `drover users` and `drover whoami`.
pub async fn run(conn: &mut Conn, command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Login(_) => unreachable!("login connects on its own"),
        AccessCommand::User { command } => user(conn, command).await,
        AccessCommand::Users(UsersArgs { output, .. }) => list(conn, output).await,
        AccessCommand::Whoami(WhoamiArgs { output, .. }) => {
            let me = who(conn).await?;
            if output.structured() {
                return Ok(output::document(output, &whoami_view(&me))?);
            }
            outln!("{}", whoami_text(&me));
            Ok(())
        }
        AccessCommand::Ui(args) => ui(conn, args).await,
    }
}

/// `drover ui`: a login link for the web UI, printed, and opened when a
/// browser can be.
async fn ui(conn: &mut Conn, args: UiArgs) -> anyhow::Result<()> {
    let req = pb::CreateUiLoginRequest { next: args.page };
    // Not idempotent: a second link if an answer was lost, which is fine.
    let link = conn.call(false, |c| i_call!(c.create_ui_login(req.clone()))).await?;
    if args.output.structured() {
        let view = json!({
            "url": link.url,
            "expires_ms": link.expires_ms,
            "session_ttl_ms": link.session_ttl_ms,
        });
        return Ok(output::document(args.output, &view)?);
    }
    outln!("{}", field(&link.url));
    outln!(
        "it works once and expires {}; it logs one browser in for {}",
        relative(link.expires_ms, now_ms() as i64),
        output::human(link.session_ttl_ms)
    );
    let display = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !args.no_open && display {
        // The browser's own output is not ours to print.
        let opened = std::process::Command::new("xdg-open")
            .arg(&link.url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if opened.is_err() {
            outln!("(no xdg-open here: open the link in a browser)");
        }
    }
    Ok(())
}

/// Who the connection's certificate is.
pub async fn who(conn: &mut Conn) -> Result<pb::WhoAmIResponse, Exit> {
    conn.call(true, |c| i_call!(c.who_am_i(pb::WhoAmIRequest {}))).await
}

async fn user(conn: &mut Conn, command: UserCommand) -> anyhow::Result<()> {
    let (user, output, message) = match command {
        UserCommand::Add { name, role, ttl, output, .. } => {
            let ttl_ms = ttl.map_or(0, |d| (d.as_millis() as u64).max(1));
            let req = pb::AddUserRequest { name, role: role.as_str().into(), ttl_ms };
            // Not idempotent: a second token if an answer was lost.
            let added = conn.call(false, |c| i_call!(c.add_user(req.clone()))).await?;
            if output.structured() {
                return Ok(output::document(output, &added_view(&added))?);
            }
            for line in added_text(&added, conn.urls(), ttl.unwrap_or(DEFAULT_TTL)) {
                outln!("{line}");
            }
            return Ok(());
        }
        UserCommand::Role { name, role, output, .. } => {
            let req = pb::SetUserRoleRequest { name, role: role.as_str().into() };
            let u = conn.call(true, |c| i_call!(c.set_user_role(req.clone()))).await?;
            let message = role_message(&u);
            (u, output, message)
        }
        UserCommand::Rm { name, output, .. } => {
            let req = pb::RemoveUserRequest { name };
            // Not retried on a lost answer: the second try would say the
            // user does not exist, which the first made so.
            let u = conn.call(false, |c| i_call!(c.remove_user(req.clone()))).await?;
            let message = removed_message(&u);
            (u, output, message)
        }
    };
    if output.structured() {
        return Ok(output::document(output, &user_view(&user))?);
    }
    outln!("{message}");
    Ok(())
}

/// `drover users`.
async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let users = conn.call(true, |c| i_call!(c.list_users(pb::ListUsersRequest {}))).await?.users;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(users.iter().map(user_view).collect()))?);
    }
    if users.is_empty() {
        outln!("no users; add one with `drover user add NAME --role viewer|operator|admin`");
        return Ok(());
    }
    for line in user_table(&users, format == Format::Wide, now_ms() as i64) {
        outln!("{line}");
    }
    Ok(())
}

fn user_view(u: &pb::User) -> Value {
    json!({
        "name": u.name, "role": u.role, "created_by": u.created_by, "created_ms": u.created_ms,
        "updated_by": u.updated_by, "updated_ms": u.updated_ms, "serial": u.serial,
        "not_after_ms": u.not_after_ms,
    })
}

/// `user add -o json`: the user, the token's secret and id, the CA's pin.
fn added_view(r: &pb::AddUserResponse) -> Value {
    let mut view = user_view(&r.user.clone().unwrap_or_default());
    view["secret"] = json!(r.secret);
    view["token_id"] = json!(r.token_id);
    view["ca_pin"] = json!(r.ca_pin);
    view
}

fn whoami_view(w: &pb::WhoAmIResponse) -> Value {
    json!({ "kind": w.kind, "name": w.name, "role": w.role, "may": w.may })
}

/// `whoami`: `otto (user, role operator): may read; run, …`.
fn whoami_text(w: &pb::WhoAmIResponse) -> String {
    let what = if w.role.is_empty() { field(&w.kind) } else { format!("{}, role {}", field(&w.kind), field(&w.role)) };
    format!("{} ({what}){}", field(&w.name), may(&w.may))
}

/// `login`: `logged in as otto (role operator): may read; run, …`.
pub fn login_text(w: &pb::WhoAmIResponse) -> String {
    let role = if w.role.is_empty() { "no role".to_string() } else { format!("role {}", field(&w.role)) };
    format!("logged in as {} ({role}){}", field(&w.name), may(&w.may))
}

fn may(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": may {}", field(text)) }
}

/// The command line with which a user logs in: the token, the CA's pin
/// (which `drover login` checks the coordinator's CA against before it
/// trusts it) and every coordinator URL the CLI was given.
pub fn login_line(name: &str, secret: &str, ca_pin: &str, urls: &[String]) -> String {
    let words = [
        "drover login".to_string(),
        "--name".into(),
        shell_word(name),
        "--token".into(),
        shell_word(secret),
        "--ca-pin".into(),
        shell_word(ca_pin),
        "--coordinator".into(),
        shell_word(&urls.join(",")),
    ];
    words.join(" ")
}

/// What `user add` prints: the secret, what it is for, and the command
/// line that uses it.
fn added_text(r: &pb::AddUserResponse, urls: &[String], ttl: Duration) -> Vec<String> {
    let u = r.user.clone().unwrap_or_default();
    let (name, role, id, secret, pin) =
        (field(&u.name), field(&u.role), field(&r.token_id), field(&r.secret), field(&r.ca_pin));
    vec![
        format!("user {name} (role {role}): join token {id}, valid for {}:", drover_client::duration::format(ttl)),
        String::new(),
        format!("    {secret}"),
        String::new(),
        format!("It is shown only this once, and logs in once: copy it now, and give it to {name}, who runs:"),
        String::new(),
        format!("    {}", login_line(&name, &secret, &pin, urls)),
        String::new(),
        format!(
            "That makes {name}'s own key and certificate (the key never leaves where it is made), saves a context \
             for them and makes it current. Until it is used, `drover agent-token revoke {}` revokes the token.",
            shell_word(&id)
        ),
    ]
}

/// `user role`: the role as it is now.
fn role_message(u: &pb::User) -> String {
    format!("user {} now has role {}, from its next call", field(&u.name), field(&u.role))
}

/// `user rm`: what follows from it.
fn removed_message(u: &pb::User) -> String {
    let name = field(&u.name);
    format!(
        "user {name} removed: every call with its certificates is refused from now on; `drover user add {} --role \
         ROLE` lets it log in again",
        shell_word(&name)
    )
}

/// `users`; `wide` has absolute times, who changed each user last and
/// when, and the certificate's serial.
fn user_table(users: &[pb::User], wide: bool, now: i64) -> Vec<String> {
    let mut header =
        format!("{:<20} {:<9} {:<20} {:<21} {:<21}", "NAME", "ROLE", "CREATED BY", "CREATED", "CERT-EXPIRES");
    if wide {
        header.push_str(&format!(" {:<20} {:<21} SERIAL", "UPDATED BY", "UPDATED"));
    }
    let mut lines = vec![header.trim_end().to_string()];
    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { field(s) };
    for u in users {
        let when = |ms: i64| if wide { absolute(ms) } else { relative(ms, now) };
        let mut row = format!(
            "{:<20} {:<9} {:<20} {:<21} {:<21}",
            field(&u.name),
            field(&u.role),
            dash(&u.created_by),
            when(u.created_ms),
            when(u.not_after_ms)
        );
        if wide {
            row.push_str(&format!(" {:<20} {:<21} {}", dash(&u.updated_by), absolute(u.updated_ms), dash(&u.serial)));
        }
        lines.push(row.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests;
