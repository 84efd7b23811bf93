//! The disk of the work dir: how much is free (for readiness and for a
//! failed step's message), and what a failed step's message adds when the
//! disk is full or the step's output says so.

use std::path::Path;

/// Below this much free space, a failed step's message says the disk is
/// full: a step that just failed to write has often left less than that.
const NEARLY_FULL: u64 = 1024 * 1024;

/// What the kernel says when a disk is full (ENOSPC).
pub(super) const ENOSPC_TEXT: &[u8] = b"No space left on device";

/// How much of a step's output is kept to look for [`ENOSPC_TEXT`] in.
const TAIL: usize = 4096;

/// What a failed step's message adds about the disk of the work dir, if
/// anything: `free` is what statvfs says is available there (None when it
/// cannot tell), `output_says_full` whether the step's last output holds
/// "No space left on device".
pub fn disk_note(free: Option<u64>, work_dir: &Path, output_says_full: bool) -> Option<String> {
    let dir = work_dir.display();
    match free {
        Some(free) if free < NEARLY_FULL => {
            Some(format!("the work directory's disk is full: {} free on {dir}", bytes(free)))
        }
        Some(free) if output_says_full => {
            Some(format!("its output says \"No space left on device\"; {} free on {dir}", bytes(free)))
        }
        None if output_says_full => Some("its output says \"No space left on device\"".to_string()),
        _ => None,
    }
}

/// A byte count for people: `0 bytes`, `512 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 { format!("{value:.1} {}", UNITS[unit]) } else { format!("{value:.0} {}", UNITS[unit]) }
}

/// Bytes available to unprivileged users on the file system of `path`.
pub(crate) fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct,
    // and statvfs(2) writes only into it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The last [`TAIL`] bytes a step wrote, stdout and stderr together.
#[derive(Default)]
pub(super) struct Tail(Vec<u8>);

impl Tail {
    pub(super) fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL)..];
        self.0.extend_from_slice(data);
        if self.0.len() > TAIL {
            self.0.drain(..self.0.len() - TAIL);
        }
    }

    pub(super) fn contains(&self, needle: &[u8]) -> bool {
        self.0.windows(needle.len()).any(|w| w == needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_says_when_the_disk_is_full() {
        let dir = Path::new("/var/lib/drover");
        let cases: &[(Option<u64>, bool, Option<&str>)] = &[
            (Some(0), false, Some("the work directory's disk is full: 0 bytes free on /var/lib/drover")),
            (Some(4096), true, Some("the work directory's disk is full: 4.0 KiB free on /var/lib/drover")),
            (Some(NEARLY_FULL - 1), false, Some("the work directory's disk is full: 1024 KiB free on /var/lib/drover")),
            (Some(NEARLY_FULL), false, None),
            (Some(50 << 30), false, None),
            // Another file system (/tmp) ran full, or the step freed space
            // before it exited: its output says so.
            (Some(50 << 30), true, Some("its output says \"No space left on device\"; 50 GiB free on /var/lib/drover")),
            (None, true, Some("its output says \"No space left on device\"")),
            (None, false, None),
        ];
        for (free, said, want) in cases {
            assert_eq!(disk_note(*free, dir, *said).as_deref(), *want, "{free:?} {said}");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_across_chunks() {
        let mut tail = Tail::default();
        tail.push(b"cp: error writing 'x': No space le");
        tail.push(b"ft on device\n");
        assert!(tail.contains(ENOSPC_TEXT));
        tail.push(&vec![b'.'; TAIL]);
        assert!(!tail.contains(ENOSPC_TEXT), "pushed out by later output");
        assert_eq!(tail.0.len(), TAIL);
        tail.push(&[b"No space left on device".as_slice(), &vec![b'.'; 3 * TAIL]].concat());
        assert_eq!(tail.0.len(), TAIL);
        tail.push(b"No space left on device");
        assert!(tail.contains(ENOSPC_TEXT));
        assert_eq!(tail.0.len(), TAIL);
    }
}
