//! Generated gRPC types and services. Nothing outside `coordinator/src/api`,
//! `agent/src/rpc` and `ctl` uses these types; they convert to domain types at
//! the edge.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("drover.v1");
}
