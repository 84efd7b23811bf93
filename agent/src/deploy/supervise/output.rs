//! A service's output on disk: `STATE_DIR/output.log`, capped, rotated
//! once to `output.log.1`, and read back from its end for
//! `drover service logs`.
//!
//! The supervisor is the only writer ([`Output`]): the service's stdout and
//! stderr are one pipe to it (so their lines keep the order they were
//! written in), and it appends what it reads. When the next bytes would
//! take `output.log` past the cap, it renames the file to `output.log.1`
//! (replacing the older one) and starts a new one, so the service's output
//! never takes more than twice the cap on disk. A rotation may fall inside
//! a line; [`tail`] reads across both files, so the line reads whole again.
//!
//! Readers ([`tail`]) never lock: a rotation between their two reads can
//! repeat or skip a piece of output, which a view of recent output can
//! bear.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The service's output file in a state dir.
pub const OUTPUT_FILE: &str = "output.log";
/// Where [`OUTPUT_FILE`] goes when it is full.
pub const OUTPUT_OLD_FILE: &str = "output.log.1";
/// The default cap of [`OUTPUT_FILE`]: 16 MiB, so at most 32 MiB a service.
pub const OUTPUT_CAP: u64 = 16 << 20;
/// The smallest cap a spec may ask for.
pub const MIN_OUTPUT_CAP: u64 = 4 << 10;

/// The supervisor's end: appends, and rotates at the cap.
pub struct Output {
    path: PathBuf,
    old_path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

impl Output {
    /// Opens (or creates) `dir/output.log`, appending to what an earlier
    /// supervisor of the same dir wrote.
    pub fn open(dir: &Path, cap: u64) -> io::Result<Output> {
        let path = dir.join(OUTPUT_FILE);
        let file = open_append(&path)?;
        let len = file.metadata()?.len();
        Ok(Output { old_path: dir.join(OUTPUT_OLD_FILE), path, file, len, cap: cap.max(MIN_OUTPUT_CAP) })
    }

    /// Appends `bytes`, rotating as often as the cap requires: the file
    /// never grows past the cap.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.len >= self.cap {
                self.rotate()?;
            }
            let room = (self.cap - self.len).min(bytes.len() as u64) as usize;
            self.file.write_all(&bytes[..room])?;
            self.len += room as u64;
            bytes = &bytes[room..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, &self.old_path)?;
        self.file = open_append(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

/// The last `bytes` bytes of the output kept in `dir`: the end of
/// `output.log.1` followed by `output.log`. Empty when the service has
/// written nothing yet.
pub fn tail(dir: &Path, bytes: u64) -> io::Result<Vec<u8>> {
    let current = read_end(&dir.join(OUTPUT_FILE), bytes)?;
    let missing = bytes.saturating_sub(current.len() as u64);
    if missing == 0 {
        return Ok(current);
    }
    let mut out = read_end(&dir.join(OUTPUT_OLD_FILE), missing)?;
    out.extend_from_slice(&current);
    Ok(out)
}

/// The last `bytes` bytes of `path`; empty when there is no such file.
pub(super) fn read_end(path: &Path, bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut out = Vec::with_capacity((len - start) as usize);
    file.take(bytes).read_to_end(&mut out)?;
    Ok(out)
}
