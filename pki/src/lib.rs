//! Drover's certificate authority, where both the CLI (`drover certs`,
//! `drover dev`) and the coordinator (which will sign agents' requests when
//! enrollment comes) can reach it:
//!
//! - [`ca`]: the CA and the certificates it issues, one directory per
//!   holder (`drover certs init`, `drover certs issue-agent`);
//! - [`labels`]: the agent-labels extension, its OID, how it is written
//!   and how it is read back from a certificate;
//! - [`enroll`]: the coordinator's [`enroll::Authority`], which signs an
//!   enrolling agent's CSR into a short-lived certificate, and the CA's
//!   pin (`sha256:…`) agents check it against;
//! - [`peer`]: who a client certificate names, its role (the subject's
//!   organisation) and its name (the common name);
//! - [`secrets_key`]: the key file that seals secrets at rest, made beside
//!   the coordinator's certificate.
//!
//! A crate of its own, not a module of `drover-client`: the agent and the
//! benchmark's thousands of simulated agents link `drover-client`, and
//! must not carry a certificate generator (rcgen) and an X.509 parser they
//! never use. Reading certificates uses `x509-parser`, the parser rcgen
//! itself can use, rather than a hand-rolled DER walk: it is maintained
//! and fuzzed, and this crate is built only for the CLI and the
//! coordinator.

pub mod ca;
pub mod enroll;
pub mod labels;
pub mod peer;
pub mod secrets_key;

/// The subject organisation of agents' certificates.
pub const AGENTS_ORG: &str = "drover-agents";
/// The subject organisation of administrators' (the CLI's) certificates.
pub const ADMINS_ORG: &str = "drover-admins";
/// The subject organisation of users' certificates (`drover login`): their
/// role is not in the certificate but in the coordinators' store, so it can
/// change, and a removed user is refused at once.
pub const USERS_ORG: &str = "drover-users";
/// The subject organisation of a coordinator's client certificate, which
/// it makes itself with the CA key to carry agents' sessions to the leader
/// while it follows (`enroll::Authority::sign_coordinator_client`).
pub const COORDINATORS_ORG: &str = "drover-coordinators";
