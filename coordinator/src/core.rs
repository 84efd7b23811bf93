//! The coordinator's pure core: the rules, apart from the drivers that do
//! the IO. Nothing here awaits, touches the store, the disk, the network or
//! a process, or imports a module outside `core` (the tidy test checks it);
//! every module is tested with tables of inputs and a clock of the test's
//! making. The pipeline language, pure too, is a crate of its own
//! (`drover-pipeline`), because the CLI checks files with it offline. See
//! ARCHITECTURE.md, "Inside the coordinator".

pub mod apps;
pub mod authz;
pub mod ca;
pub mod declared;
pub mod dispatch;
pub mod environments;
pub mod fleet;
pub mod identity;
pub mod job_token;
pub mod keys;
pub mod logs;
pub mod machine;
pub mod rerun;
pub mod rollouts;
pub mod triggers;
