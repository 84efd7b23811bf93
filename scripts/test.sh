#!/usr/bin/env bash
# Runs Drover's whole test suite: unit and table tests of every crate, then
# the end-to-end tests on the real binaries (coordinator, agents, CLI), real
# git and real processes. Installs what the tests need when it is missing.
set -euo pipefail
# A one-off build gains nothing from incremental state; it only fills the disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
cd "$(dirname "$0")/.."
. scripts/lib.sh

# git for runs from git; etcd for the high-availability tests; protoc for
# etcd-client's build (our own protos are compiled with protox).
install_missing git=git etcd=etcd-server protoc=protobuf-compiler

# A real Prometheus for the tests of metric analysis: they start their own on
# a free port, with their own configuration and storage (without an init
# system, the package's postinst starts no service).
install_missing prometheus=prometheus

# Headless Chromium and its WebDriver for the web UI's tests (a real
# browser: the pages, their scripts and the live streams).
install_missing chromium=chromium chromedriver=chromium-driver

# sshd for the tests of git over ssh with a deploy key: they start their own
# on a free port, with their own config and host key, and do not use the
# package's service (without an init system, its postinst does not start
# it). sshd lives in /usr/sbin, which a normal user's PATH may lack.
if [ ! -x /usr/sbin/sshd ] && ! command -v sshd >/dev/null 2>&1; then
  install_packages openssh-server
fi

# An S3-protocol server for the blob store's S3 backend: moto, from PyPI,
# in a virtualenv of its own under .drover-tools/ (ignored by git).
install_missing python3=python3
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  install_packages python3-venv
fi
if [ ! -x .drover-tools/venv/bin/moto_server ]; then
  python3 -m venv .drover-tools/venv
  .drover-tools/venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi

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
