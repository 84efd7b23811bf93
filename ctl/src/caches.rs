//! `drover caches` and `drover cache rm`: the cache entries jobs saved
//! (`cache:`), most recently used first, and deleting them.

use drover_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client::Conn;
use crate::out::outln;
use crate::output::{self, Format};

/// `drover caches`.
pub async fn list(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let caches = conn.call(true, |c| c_call!(c.list_caches(pb::ListCachesRequest {}))).await?.caches;
    if format.structured() {
        let views = caches
            .iter()
            .map(|c| {
                json!({
                    "scope": c.scope,
                    "key": c.key,
                    "size": c.size,
                    "created_ms": c.created_ms,
                    "last_used_ms": c.last_used_ms,
                    "run": c.run_id,
                    "job": c.job,
                })
            })
            .collect();
        return Ok(output::document(format, &Value::Array(views))?);
    }
    if caches.is_empty() {
        outln!("no caches; a job saves one with `cache: {{key: ..., paths: [...]}}`");
        return Ok(());
    }
    outln!("{:<40} {:>10} {:<10} {:<14} SCOPE", "KEY", "SIZE", "LAST USED", "SAVED BY");
    for c in caches {
        outln!(
            "{:<40} {:>10} {:<10} {:<14} {}",
            c.key,
            output::bytes(c.size),
            crate::commands::fmt_ms(c.last_used_ms),
            format!("{}/{}", c.run_id, c.job),
            c.scope
        );
    }
    Ok(())
}

/// `drover cache rm KEY`.
pub async fn remove(conn: &mut Conn, key: String, scope: Option<String>, format: Format) -> anyhow::Result<()> {
    let req = pb::DeleteCacheRequest { key: key.clone(), scope: scope.unwrap_or_default() };
    let deleted = conn.call(true, |c| c_call!(c.delete_cache(req.clone()))).await?.deleted;
    if format.structured() {
        return Ok(output::document(format, &json!({ "key": key, "deleted": deleted }))?);
    }
    outln!("deleted {deleted} cache entr{} with key {key}", if deleted == 1 { "y" } else { "ies" });
    Ok(())
}
