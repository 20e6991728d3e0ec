#!/usr/bin/env bash
# Builds sandbox/sample/: the OCI image layout `stackhost sandbox` reads its sample plugin and release from
# (no registry at run time): plugins/dist/docker.wasm as sample.stackhost.local/plugins/docker:0.1.0 and
# tests/fixtures/releases/docker-ferrol-1-32-v1 as sample.stackhost.local/kaas/cluster-stacks:docker-ferrol-1-32-v1,
# with the manifests `stackhost plugin push` and `stackhost release push` write.
# Needs the plugins built (plugins/build). Rerun after changing plugins/docker or the fixture release.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stackhost=${STACKHOST:-${CARGO_TARGET_DIR:-$repo/target}/release/stackhost}
[[ -x $stackhost ]] || { echo "build-sample-layout: $stackhost missing: cargo build --release -p stackhost" >&2; exit 1; }
"$stackhost" sandbox --write-sample-layout "${1:-$repo/sandbox/sample}"
