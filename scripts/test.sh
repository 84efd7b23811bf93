#!/usr/bin/env bash
# Runs Drover's whole test suite: unit and table tests of every crate, then
# the end-to-end tests on the real binaries (coordinator, agents, CLI), real
# git and real processes. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# git for runs from git; etcd for the high-availability tests; protoc for
# etcd-client's build (our own protos are compiled with protox).
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "test.sh: needs ${missing[*]}, and sudo is not installed: run as root, or install sudo," \
        "or install them yourself: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    sudo=sudo
  fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi

# The end-to-end tests start the binaries from target/debug.
cargo build --locked --workspace --bins
cargo test --locked --workspace
