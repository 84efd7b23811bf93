//! `drover secret set|ls|rm`: secrets that jobs declare (`secrets:`) and
//! get as environment variables. A value goes to the coordinator once and
//! never comes back: no command prints one, and the coordinator has no
//! call that returns one.

use std::io::{IsTerminal, Read};
use std::path::Path;

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::{Conn, EXIT_INVALID, Exit};
use crate::out::outln;
use crate::output::{self, Format};

/// The most bytes read for a value: gRPC's message limit. The coordinator's
/// own, smaller limit (64 KiB) is the one that refuses, with its message.
const MAX_READ: u64 = 4 * 1024 * 1024 - 1024;

/// The value to set: the file's bytes as they are, or standard input with
/// one final line break removed (`echo value | drover secret set NAME`).
pub fn read_value(from_file: Option<&Path>) -> Result<Vec<u8>, Exit> {
    let mut value = Vec::new();
    match from_file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", path.display())))?;
            file.take(MAX_READ)
                .read_to_end(&mut value)
                .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot read {}: {e}", path.display())))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("type or paste the value, then press Ctrl-D on an empty line:");
            }
            stdin
                .lock()
                .take(MAX_READ)
                .read_to_end(&mut value)
                .map_err(|e| Exit::new(EXIT_INVALID, format!("cannot read the value from standard input: {e}")))?;
            if value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
        }
    }
    Ok(value)
}

/// `drover secret set NAME`.
pub async fn set(conn: &mut Conn, name: String, value: Vec<u8>, format: Format) -> anyhow::Result<()> {
    let req = pb::SetSecretRequest { name, value };
    let secret = conn.call(true, |c| c_call!(c.set_secret(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &view(&secret))?);
    }
    outln!("secret {} set ({} bytes); jobs get it with `secrets: [{}]`", secret.name, secret.size, secret.name);
    Ok(())
}

/// `drover secret ls`: names, sizes, when and by whom; never values.
pub async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let secrets = conn.call(true, |c| c_call!(c.list_secrets(pb::ListSecretsRequest {}))).await?.secrets;
    if format.structured() {
        return Ok(output::document(format, &Value::Array(secrets.iter().map(view).collect()))?);
    }
    if secrets.is_empty() {
        outln!("no secrets; set one with `drover secret set NAME`");
        return Ok(());
    }
    outln!("{:<32} {:>8} {:<12} {:<20}", "NAME", "SIZE", "UPDATED", "BY");
    for s in secrets {
        outln!("{:<32} {:>8} {:<12} {:<20}", s.name, s.size, crate::commands::fmt_ms(s.updated_ms), s.updated_by);
    }
    Ok(())
}

/// `drover secret rm NAME`.
pub async fn remove(conn: &mut Conn, name: String, format: Format) -> anyhow::Result<()> {
    let req = pb::DeleteSecretRequest { name: name.clone() };
    conn.call(true, |c| c_call!(c.delete_secret(req.clone()))).await?;
    if format.structured() {
        return Ok(output::document(format, &json!({ "removed": name }))?);
    }
    outln!("secret {name} removed; jobs that declare it fail until it is set again");
    Ok(())
}

fn view(s: &pb::Secret) -> Value {
    json!({"name": s.name, "size": s.size, "updated_ms": s.updated_ms, "updated_by": s.updated_by})
}
