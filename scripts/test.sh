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

# Formatting and lints first: they are quick and say what is wrong at once.
# The toolchain's rustup profile may lack the two components.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

# The end-to-end tests start the binaries from target/debug.
cargo build --locked --workspace --bins
cargo test --locked --workspace
