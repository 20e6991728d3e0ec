#!/usr/bin/env bash
# Dependencies of the OCI part (host/src/oci): the real registry server the tests start on
# 127.0.0.1 (Debian's `docker-registry`, distribution 2.8) and OpenSSL headers for the
# native-tls build of oci-client/sigstore. Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)

if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The package enables a system service on port 5000; the tests start their own instances with
# their own config, so the system one is not needed (and would hold the port).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

docker-registry --version >/dev/null
