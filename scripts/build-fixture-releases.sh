#!/usr/bin/env bash
# Builds the sample cluster stack releases in tests/fixtures/releases/<tag>/ from the sources in
# tests/fixtures/release-sources/ (see its README). Chart archives are plain `helm package`-compatible
# tar.gz files: one top directory named like the chart, built reproducibly (sorted, fixed mtime/owner,
# gzip without a timestamp). Needs only tar and gzip. Idempotent.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$repo/tests/fixtures/release-sources
out=${1:-$repo/tests/fixtures/releases}

# pack <archive> <dir containing the top-level entries> <entry>...
pack() {
  local archive=$1 base=$2
  shift 2
  tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=ustar \
    -C "$base" -cf - "$@" | gzip -n -9 > "$archive"
}

prefix=docker-ferrol-1-32
for v in v1 v2; do
  tag=$prefix-$v
  dest=$out/$tag
  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$src/$tag"/* "$dest/"

  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  cp -r "$src/cluster-class-$v" "$stage/$prefix-cluster-class"
  pack "$dest/$prefix-cluster-class-$v.tgz" "$stage" "$prefix-cluster-class"

  if [[ -f $src/$tag/clusteraddon.yaml ]]; then
    # Multi-stage: the archive holds one chart directory per stage at its root.
    pack "$dest/$prefix-cluster-addon-$v.tgz" "$src/cluster-addon-$v" $(cd "$src/cluster-addon-$v" && ls)
  else
    cp -r "$src/cluster-addon-$v" "$stage/$prefix-cluster-addon"
    pack "$dest/$prefix-cluster-addon-$v.tgz" "$stage" "$prefix-cluster-addon"
  fi
  rm -rf "$stage"
  trap - EXIT
  echo "built $dest"
done
