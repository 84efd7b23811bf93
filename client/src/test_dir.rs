//! A directory of a unit test's own under the system's temp dir, removed
//! when the test ends (tests only).

use std::path::PathBuf;

pub(crate) struct TestDir(pub PathBuf);

impl TestDir {
    /// `name` must be unique among the crate's tests; the process id keeps
    /// two test runs apart.
    pub(crate) fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("drover-client-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
