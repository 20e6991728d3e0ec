#!/usr/bin/env bash
# Toolchains for provider plugins written in Python and JavaScript, pinned and idempotent:
#   - componentize-py 0.25.1 (PyPI) in its own venv:            <repo>/.tools/py
#   - @bytecodealliance/componentize-js 0.23.0 (npm, node >= 20): <repo>/.tools/js/node_modules
#     installed with `npm ci` from the committed lock file scripts/deps/pyjs/package-lock.json, and
#     the build helper scripts/deps/pyjs/componentize.mjs beside it.
# plugins/build-pyjs and the `build` script of `stackhost plugin new --lang python|js` use them.
# Re-running only checks what is there. Both folders are ignored by git; CI may cache `.tools`.
#
# Usage: scripts/deps/pyjs.sh [py|js]...   (default: both)
#        TOOLS=/some/dir scripts/deps/pyjs.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=${TOOLS:-$repo/.tools}
py_want=0.25.1
parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(py js)

install_py() {
  local venv=$tools/py py=${PYTHON:-python3}
  if [[ ! -x $venv/bin/python ]]; then
    if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
      if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      else
        echo "pyjs.sh: $py cannot create virtual environments: install python3-venv" >&2
        exit 1
      fi
    fi
    "$py" -m venv "$venv"
  fi
  local have
  have=$("$venv/bin/python" -m pip show componentize-py 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [[ $have != "$py_want" ]]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "componentize-py==$py_want"
  fi
  "$venv/bin/componentize-py" --version >/dev/null
}

install_js() {
  local dir=$tools/js lock=$repo/scripts/deps/pyjs
  command -v node >/dev/null || { echo "pyjs.sh: node (>= 20) is missing: apt-get install nodejs npm" >&2; exit 1; }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if ((major < 20)); then
    echo "pyjs.sh: node $(node --version) is too old for componentize-js 0.23: need node >= 20" >&2
    exit 1
  fi
  mkdir -p "$dir"
  # Install again only when the lock file differs from the one of the last complete install
  # (`installed.lock` is written after `npm ci` succeeded).
  if ! cmp -s "$lock/package-lock.json" "$dir/installed.lock"; then
    rm -f "$dir/installed.lock"
    cp "$lock/package.json" "$lock/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$lock/package-lock.json" "$dir/installed.lock"
  fi
  # The build helper must sit beside node_modules for its import to resolve.
  cmp -s "$lock/componentize.mjs" "$dir/componentize.mjs" || cp "$lock/componentize.mjs" "$dir/"
  [[ -f $dir/node_modules/@bytecodealliance/componentize-js/package.json ]] || {
    echo "pyjs.sh: componentize-js is missing from $dir/node_modules after npm ci" >&2
    exit 1
  }
}

for p in "${parts[@]}"; do
  case $p in
    py) install_py ;;
    js) install_js ;;
    *) echo "pyjs.sh: unknown part '$p' (py|js)" >&2; exit 2 ;;
  esac
done
