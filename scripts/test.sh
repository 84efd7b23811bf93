#!/usr/bin/env bash
# Runs Drover's whole test suite: unit and table tests of every crate, then
# the end-to-end tests on the real binaries (coordinator, agents, CLI), real
# git and real processes. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# git for runs from git; etcd for the high-availability tests; protoc for
# etcd-client's build (our own protos are compiled with protox).
install_missing git=git etcd=etcd-server protoc=protobuf-compiler

# The end-to-end tests start the binaries from target/debug.
cargo build --locked --workspace --bins
cargo test --locked --workspace
