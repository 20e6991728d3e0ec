#!/usr/bin/env bash
# Installs the real Helm SDK used by `stackhost` rendering: the PyPI wheel helm-python-sdk==0.2.2 ships
# libhelm_c.so (a C ABI over Helm v4's Go SDK). Idempotent: re-running only checks what is there.
#
# Usage: scripts/deps/helm.sh            (venv at <repo>/.venv)
#        VENV=/some/dir scripts/deps/helm.sh
# Prints the path of libhelm_c.so on its last line; export it as STACKHOST_HELM_LIB if the venv is elsewhere.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
want=0.2.2

# Debian's /usr/bin/python3 or whatever python3 is first on PATH; only the venv module is needed.
py=${PYTHON:-python3}
if [[ ! -x $venv/bin/python ]]; then
  # Debian's python3 needs python3-venv for `-m venv` (ensurepip).
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    else
      echo "helm.sh: $py cannot create virtual environments: install python3-venv" >&2
      exit 1
    fi
  fi
  "$py" -m venv "$venv"
fi
have=$("$venv/bin/python" -m pip show helm-python-sdk 2>/dev/null | sed -n 's/^Version: //p' || true)
if [[ $have != "$want" ]]; then
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "helm-python-sdk==$want"
fi
lib=$("$venv/bin/python" -c 'import helm_python,os;print(os.path.join(os.path.dirname(helm_python.__file__),"lib","libhelm_c.so"))')
if [[ ! -f $lib ]]; then
  echo "helm.sh: helm-python-sdk $want installed but $lib is missing" >&2
  exit 1
fi
echo "$lib"
