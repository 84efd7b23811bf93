#!/usr/bin/env bash
# The main job on a fresh machine: builds Drover and runs `drover dev`, a
# local coordinator on the embedded store with two agents running
# examples/pipeline.yml with live progress. Installs protoc when it is
# missing (etcd-client's build needs it; Drover's own protos do not).
#
# Cargo says where its binaries are (`cargo metadata`), so CARGO_TARGET_DIR
# and .cargo/config.toml are honoured. DROVER_DEV_PROFILE=dev builds
# without optimisations (quicker to build, slower to run; the default is
# release); DROVER_DEV_NO_BUILD=1 runs what was built before.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protoc=protobuf-compiler
profile="${DROVER_DEV_PROFILE:-release}"
if [ -z "${DROVER_DEV_NO_BUILD:-}" ]; then
  # Every binary: `drover dev` starts the coordinator and agents found
  # next to itself.
  cargo build --profile "$profile" --locked --workspace --bins
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$profile" in
  dev) out=debug ;;
  *) out="$profile" ;;
esac
exec "$target_dir/$out/drover" dev "$@"
