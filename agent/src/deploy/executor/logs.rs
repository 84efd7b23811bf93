//! A service's output for the coordinator ([`super::LogsRequest`]): a
//! range of its live release's `output.log`, the file its supervisor
//! writes (and rotates once, to `output.log.1`, at its cap).
//!
//! It reads what is on disk, not the service's task: the live release is
//! the one `service.json` names (written whole and renamed, so a read never
//! sees half of it), and its output is in `supervisors/{live}/`. So a
//! request is answered while an action of the service is under way, and an
//! agent that has not yet adopted a service still finds its output.
//!
//! The range: from `offset`, at most `max_bytes` (0: 64 KiB; capped at
//! 1 MiB); `next_offset` is the offset after the bytes read. An offset past
//! the file's end means the file was rotated since: it starts again from
//! 0. `u64::MAX` asks for the file's last `max_bytes`, and `next_offset` is
//! then the file's length. A file not written yet reads as empty.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{LOGS_DEFAULT_BYTES, LOGS_MAX_BYTES, LogsChunk, LogsRequest, state};
use crate::deploy::releases::name_ok;
use crate::deploy::supervise::OUTPUT_FILE;

/// Answers `request` from the services dir; blocks on the disk.
pub(super) fn read(services_dir: &Path, request: &LogsRequest) -> LogsChunk {
    let request_id = request.request_id;
    let max = match u64::from(request.max_bytes) {
        0 => LOGS_DEFAULT_BYTES,
        n => n.min(LOGS_MAX_BYTES),
    };
    let answer = live_output(services_dir, &request.service)
        .and_then(|path| range(&path, request.offset, max).map_err(|e| format!("cannot read {}: {e}", path.display())));
    match answer {
        Ok((data, next_offset)) => LogsChunk { request_id, data, next_offset, error: String::new() },
        Err(error) => LogsChunk { request_id, error, ..Default::default() },
    }
}

/// The output file of `service`'s live release.
fn live_output(services_dir: &Path, service: &str) -> Result<PathBuf, String> {
    let not_deployed = || format!("service {service} is not deployed on this node");
    // The name becomes a path: the session checked it, and so does this.
    if !name_ok(service) {
        return Err(not_deployed());
    }
    let dir = services_dir.join(service);
    // No such directory or file: an empty state, nothing live.
    let saved = state::load(&dir)?;
    match saved.live {
        Some(live) if name_ok(&live) => Ok(dir.join("supervisors").join(live).join(OUTPUT_FILE)),
        _ => Err(not_deployed()),
    }
}

/// At most `max` bytes of `path` from `offset` (see the module header),
/// and the offset after them.
fn range(path: &Path, offset: u64, max: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let (start, want) = if offset == u64::MAX {
        let start = len.saturating_sub(max);
        // Up to the length seen, not what was written since.
        (start, len - start)
    } else if offset > len {
        (0, max)
    } else {
        (offset, max)
    };
    file.seek(SeekFrom::Start(start))?;
    let mut data = Vec::with_capacity(want.min(len.saturating_sub(start)) as usize);
    file.take(want).read_to_end(&mut data)?;
    let next = start + data.len() as u64;
    Ok((data, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str, offset: u64, max_bytes: u32) -> LogsRequest {
        LogsRequest { request_id: 7, service: service.into(), offset, max_bytes }
    }

    #[test]
    fn ranges_of_the_live_releases_output() {
        let root = std::env::temp_dir().join(format!("drover-agent-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let web = root.join("web");
        std::fs::create_dir_all(web.join("supervisors/v2")).unwrap();
        std::fs::write(web.join("supervisors/v2").join(OUTPUT_FILE), "0123456789").unwrap();
        let saved = state::Saved { live: Some("v2".into()), ..Default::default() };
        state::save(&web, &saved).unwrap();
        std::fs::create_dir_all(root.join("idle")).unwrap();
        state::save(&root.join("idle"), &state::Saved::default()).unwrap();

        let line = |r: LogsRequest| {
            let c = read(&root, &r);
            assert_eq!(c.request_id, 7);
            format!("{:?} {} {:?}", String::from_utf8_lossy(&c.data), c.next_offset, c.error)
        };
        let cases = [
            (request("web", 0, 0), r#""0123456789" 10 """#),
            (request("web", 3, 4), r#""3456" 7 """#),
            (request("web", 10, 4), r#""" 10 """#),
            (request("web", u64::MAX, 4), r#""6789" 10 """#),
            (request("web", u64::MAX, 0), r#""0123456789" 10 """#),
            // Rotated since: from the start of the new file.
            (request("web", 11, 3), r#""012" 3 """#),
            (request("api", 0, 0), r#""" 0 "service api is not deployed on this node""#),
            (request("idle", 0, 0), r#""" 0 "service idle is not deployed on this node""#),
            (request("../web", 0, 0), r#""" 0 "service ../web is not deployed on this node""#),
        ];
        for (r, want) in cases {
            let what = format!("{r:?}");
            assert_eq!(line(r), want, "{what}");
        }
        // The live release has written nothing yet.
        std::fs::remove_file(web.join("supervisors/v2").join(OUTPUT_FILE)).unwrap();
        assert_eq!(line(request("web", u64::MAX, 0)), r#""" 0 """#);
        let _ = std::fs::remove_dir_all(&root);
    }
}
