#!/usr/bin/env bash
# The main job on a fresh machine: builds Drover and runs `drover dev`, a
# local coordinator on the embedded store with two agents running
# examples/pipeline.yml with live progress. Installs protoc when it is
# missing (etcd-client's build needs it; Drover's own protos do not).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "dev.sh: protoc is missing and sudo is not installed: run as root, or install sudo," \
        "or install protoc yourself: apt-get install -y protobuf-compiler" >&2
      exit 1
    fi
    sudo=sudo
  fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q protobuf-compiler
fi
cargo build --release --locked --workspace --bins
exec target/release/drover dev "$@"
