# Sourced by setup.sh and test.sh: the cargo this project builds with. rustup's
# (~/.cargo/bin) comes first when it exists, since Debian 12's cargo package (1.65) is older
# than the workspace's rust-version and a non-login shell (sudo, cron, CI) may not have
# ~/.cargo/bin on PATH; then the version is checked against Cargo.toml's rust-version.
if [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs): Debian 12's cargo package is too old" >&2
  exit 2
fi
crashrig_rust_needed=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
crashrig_rust_have=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ -z "$crashrig_rust_have" ] ||
  [ "$(printf '%s\n%s\n' "$crashrig_rust_needed" "$crashrig_rust_have" | sort -V | head -n1)" != "$crashrig_rust_needed" ]; then
  echo "setup: crashrig needs Rust $crashrig_rust_needed or newer; $(command -v rustc || echo 'no rustc') is ${crashrig_rust_have:-not runnable}: install or update Rust with rustup (https://rustup.rs); Debian 12's cargo package is too old" >&2
  exit 2
fi
