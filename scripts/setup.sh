#!/usr/bin/env bash
# Installs everything crashrig needs on a Debian 12 host (as root) and builds it.
# Idempotent: installs only missing packages; cargo builds are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # QEMU and the guest image (busybox, dropbear, tools copied from the host)
  qemu-system-x86 qemu-utils busybox-static dropbear-bin fio xfsprogs e2fsprogs btrfs-progs dmsetup kmod
  # crashrig's own build (ssh2 links OpenSSL)
  gcc pkg-config libssl-dev
  # kernel builds (dwarves: pahole, for configs with CONFIG_DEBUG_INFO_BTF)
  git make bc bison flex libelf-dev cpio xz-utils ccache dwarves
)

missing_packages() {
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
}
# Twice: installing one package can remove another that was there (a qemu-utils from
# backports goes when Debian 12's qemu-system-x86 comes in); the second pass puts it back.
for pass in 1 2; do
  missing_packages
  [ ${#missing[@]} -eq 0 ] && break
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  [ "$pass" = 1 ] && apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
done
missing_packages
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: still not installed after apt-get install: ${missing[*]}" >&2
  exit 2
fi
# crashrig fetches Debian kernels with apt-get download: the package lists must exist.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi

# shellcheck source=scripts/rust-env.sh
. scripts/rust-env.sh

cargo build --release --locked -p crashrig
# The in-guest helper, linked statically against glibc (no musl target can be fetched here).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p crashrig-guest \
  --target x86_64-unknown-linux-gnu --target-dir target/guest
