#!/usr/bin/env bash
# Dependencies of the OpenStack provider tests (host/tests/openstack.rs, scripts/openstack-up.sh):
# real Keystone v3 and Glance v2 from Debian's Python packages, run from /usr/bin/python3 with
# sqlite, plus qemu-img for the test image. Only the libraries are installed: the `keystone` and
# `glance-api` packages are not, because their postinst wants a database server and starts
# system services. Idempotent: installs only what is missing.
# apt: python3-keystone python3-glance qemu-utils curl
set -euo pipefail

need=()
for p in python3-keystone python3-glance qemu-utils curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # Only refresh the package lists when the install fails with the cached ones.
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  }
fi

# The services must import from Debian's python, not a pyenv/venv one on PATH.
/usr/bin/python3 -c 'import keystone.server.wsgi, glance_store, keystonemiddleware.auth_token' >/dev/null
command -v keystone-manage >/dev/null
command -v qemu-img >/dev/null
