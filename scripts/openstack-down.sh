#!/usr/bin/env bash
# openstack-down.sh DIR: stops the Keystone and Glance that scripts/openstack-up.sh DIR started
# (TERM, then KILL after 10 s). Only kills PIDs whose command line names DIR, so a stale pid file
# never hits an unrelated process.
set -uo pipefail
D=$(realpath -m "${1:?usage: $0 DIR}")
for f in "$D/glance.pid" "$D/keystone.pid"; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$D/"; then
    kill "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
  fi
  rm -f "$f"
done
