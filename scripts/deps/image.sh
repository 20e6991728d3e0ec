#!/usr/bin/env bash
# Dependencies of the container image (scripts/image, host/tests/image.rs): Debian's buildah (builds the
# image from scratch, no daemon, no base image) and skopeo (copies and inspects images and registries).
# Idempotent: installs only what is missing.
# apt: buildah skopeo
set -euo pipefail

need=()
for p in buildah skopeo; do
  command -v "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Only refresh the package lists when the install fails with the cached ones.
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  }
fi
buildah --version >/dev/null
skopeo --version >/dev/null
