#!/usr/bin/env bash
# Dependencies of the kube-emulator tests (sandbox/): only the real kubectl v1.32 client.
# kubectl is preinstalled at /usr/bin/kubectl on the project's machines. Do not install Debian's
# `kubernetes-client` package: it conflicts with that kubectl (see /work/shared/toolchain.md §6).
set -euo pipefail
if command -v kubectl >/dev/null 2>&1; then
  echo "emulator deps: kubectl present: $(kubectl version --client 2>/dev/null | head -1)"
  exit 0
fi
echo "emulator deps: kubectl is missing. Install the kubectl v1.32 client binary to /usr/bin/kubectl" >&2
echo "(e.g. from your distribution's Kubernetes packages or dl.k8s.io), then re-run this script." >&2
exit 1
