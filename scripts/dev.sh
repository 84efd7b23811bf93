#!/usr/bin/env bash
# The main job on a fresh machine: builds Drover and runs `drover dev`, a
# local coordinator on the embedded store with two agents running
# examples/pipeline.yml with live progress. Installs protoc when it is
# missing (etcd-client's build needs it; Drover's own protos do not).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protoc=protobuf-compiler
cargo build --release --locked --workspace --bins
exec target/release/drover dev "$@"
