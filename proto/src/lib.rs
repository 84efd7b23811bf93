//! Generated gRPC types and services. Nothing outside `coordinator/src/api`,
//! `agent/src/client/`, `agent/src/enroll` and `ctl` (and the test clients of
//! `integration-tests`) uses these types; they convert to domain types at
//! the edge.
#![allow(clippy::all)]

pub mod codec;

pub mod v1 {
    tonic::include_proto!("drover.v1");
}

/// The gRPC metadata keys of the wire contract that the proto file cannot
/// express: what a follower puts on a refusal. A coordinator that does not
/// lead answers every call (and every agent session) with `Unavailable` and
/// these keys, so clients can retry elsewhere.
pub mod metadata {
    /// The leader's URL, when the follower knows who leads: go there.
    pub const LEADER: &str = "drover-leader";
    /// Present (value `1`) on every refusal by a follower: nothing happened,
    /// so the request is safe to send again to another coordinator. Without
    /// [`LEADER`] it means an election is under way.
    pub const NOT_LEADER: &str = "drover-not-leader";
    /// Present (value `1`) when a follower that carried an agent's session
    /// to the leader ends it (the leader went): open it again here, over
    /// the connection there is. [`LEADER`] then names the follower itself,
    /// for agents from before this key.
    pub const COME_BACK: &str = "drover-come-back";
}

/// The largest log chunk a coordinator takes, in bytes. Agents read a
/// step's output 64 KiB at a time and add at most a short truncation marker,
/// so a well-behaved agent stays far below it; a bigger chunk is refused and
/// the attempt that sent it is ended as lost.
pub const MAX_LOG_CHUNK_BYTES: usize = 128 * 1024;
