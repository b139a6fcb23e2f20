#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that boot real kernels in QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/rust-env.sh
. scripts/rust-env.sh
export CRASHRIG_GUEST_HELPER="$PWD/target/guest/x86_64-unknown-linux-gnu/release/crashrig-guest"
cargo test --release --locked --workspace --no-fail-fast -- --test-threads=1
