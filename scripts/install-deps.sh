#!/usr/bin/env bash
# Installs what stackhost needs on a fresh Debian 12 machine, idempotently (safe to run again).
#   - the offline Wasm guest toolchain (Debian rustc-web + std sources, lld, wasi-libc): plugins/build
#   - rustfmt and clippy for the test command
#   - every part's own needs from scripts/deps/*.sh (registry, Helm SDK, OpenStack, ...)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(rustc-web cargo-web rust-web-src lld-19 wasi-libc)
for part in "$root"/scripts/deps/*.sh; do
  [[ -e $part ]] || continue
  # A part may list Debian packages in a line `# apt: pkg pkg ...`.
  read -r -a extra <<<"$(sed -n 's/^# apt: //p' "$part" | tr '\n' ' ')"
  apt_packages+=("${extra[@]}")
done

missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

for part in "$root"/scripts/deps/*.sh; do
  [[ -e $part ]] || continue
  bash "$part"
done
echo "install-deps: ok" >&2
