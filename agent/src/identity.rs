//! The agent's own key and certificate on disk, as enrollment
//! ([`crate::enroll`]) first writes them and renewal (in [`crate::client`])
//! replaces them, and the CAs it trusts, which a CA rotation's trust bundle
//! replaces: `ca.pem`, `agent-NAME.pem` and `agent-NAME-key.pem` in
//! `--tls-dir`, the files `drover_client::tls::ClientTls::load` reads. A
//! new key and its request, the check that a certificate carries it and
//! the files written whole are [`drover_client::enroll::files`]', shared
//! with `drover login`; this module names the agent's files, and has the
//! clock and the times its logs show.

use std::path::Path;

use drover_client::enroll::Holder;
pub use drover_client::enroll::files::{
    Files, KeyError, Request, WriteError, check_pair, first_cert, install, install_trust,
};

/// The base name of agent `name`'s files: `agent-NAME`.
pub fn base(name: &str) -> String {
    Holder::Agent.base(name)
}

/// Whether `dir` holds the agent's whole bundle (the CA, its certificate
/// and its key).
pub fn bundle_present(dir: &Path, name: &str) -> bool {
    drover_client::enroll::files::bundle_present(dir, &base(name))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A time in milliseconds since the Unix epoch as `2026-05-04 10:00:00Z`,
/// for logs.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_800_086_400_000), "2027-01-16 08:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
