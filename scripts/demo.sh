#!/usr/bin/env bash
# The main job on the built-in defaults: the seed scenario (kill an io_uring workload, umount
# at once) and its synchronous control, 20 iterations each, on Debian's 6.1 kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/crashrig run tests/seed-kill-umount.yaml tests/control-psync.yaml "$@"
