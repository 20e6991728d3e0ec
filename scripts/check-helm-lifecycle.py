#!/usr/bin/env python3
"""Runs the README's Helm lifecycle of charts/stackhost with the real Helm v4 SDK (libhelm_c from
scripts/deps/helm.sh: the code behind the helm CLI's install, upgrade, uninstall, package and push)
against kube-emulator and a local docker-registry:

  install from the chart folder -> `stackhost crds | kubectl apply --server-side` -> upgrade ->
  uninstall (the CRDs and a ClusterStack stay) -> package + push to an OCI registry -> install from oci://

Usage (after `cargo build --release --workspace` and scripts/install-deps.sh):
  .venv/bin/python scripts/check-helm-lifecycle.py [TARGET_DIR]
TARGET_DIR holds release/kube-emulator and release/stackhost (default: target, or $CARGO_TARGET_DIR).
Prints one line per step and exits non-zero at the first step that does not do what the README says.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm

REPO = Path(__file__).resolve().parent.parent
NS = "stackhost-system"
VALUES = {
    "image": {"repository": "registry.example.test/stackhost/stackhost", "tag": "0.1.0"},
    "releaseSource": "oci://registry.example.test/kaas/cluster-stacks",
    # The emulator has no cert-manager: the hooks' certificate is given instead.
    "certManager": {"enabled": False},
    "hooks": {"tls": {"secretName": "stackhost-hooks-tls", "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}},
}


def step(text):
    print(f"check-helm-lifecycle: {text}", flush=True)


def fail(text):
    print(f"check-helm-lifecycle: FAILED: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    fail(f"timed out waiting for {what}")


def main():
    target = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    emulator_bin = target / "release" / "kube-emulator"
    stackhost_bin = target / "release" / "stackhost"
    for b in (emulator_bin, stackhost_bin):
        if not b.is_file():
            fail(f"{b} is missing: build with `cargo build --release --workspace` (or pass TARGET_DIR)")
    tmp = Path(tempfile.mkdtemp(prefix="helm-lifecycle-"))
    kubeconfig = tmp / "kubeconfig"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(tmp),
               PATH=f"{stackhost_bin.parent}:{os.environ.get('PATH', '')}")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(emulator_bin), "--kubeconfig", str(kubeconfig), "--apply", str(REPO / "tests/fixtures/capi-crds")],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "emulator.log", "w")))
        wait_for("the emulator's kubeconfig", kubeconfig.exists)

        def sh(command, ok=True):
            out = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
            if ok and out.returncode != 0:
                fail(f"`{command}`: {out.stdout}{out.stderr}")
            return out

        def get(kind, name, namespace=None):
            ns = f"-n {namespace} " if namespace else ""
            out = sh(f"kubectl {ns}get {kind} {name} -o json", ok=False)
            return json.loads(out.stdout) if out.returncode == 0 else None

        config = helm.Config(kubeconfig_path=str(kubeconfig), namespace=NS)

        # helm install stackhost charts/stackhost -n stackhost-system --create-namespace --set ...
        config.install(str(REPO / "charts/stackhost"), "stackhost", VALUES, create_namespace=True)
        for crd in ("clusterstacks", "clusterstackreleases", "clusteraddons", "providerplugins"):
            if get("crd", f"{crd}.clusterstack.x-k8s.io") is None:
                fail(f"install from the folder did not install the CRD {crd} from crds/")
        deployment = get("deployment", "stackhost", NS)
        if deployment is None or deployment["spec"]["replicas"] != 2:
            fail("install from the folder: no Deployment stackhost with 2 replicas")
        step("helm install from charts/stackhost: CRDs from crds/, Deployment with 2 replicas")

        # stackhost crds | kubectl apply --server-side --force-conflicts -f -
        sh("stackhost crds | kubectl apply --server-side --force-conflicts -f -")
        step("`stackhost crds | kubectl apply --server-side --force-conflicts -f -` over the chart's CRDs")

        # A user's ClusterStack, to see what an uninstall keeps.
        sh("kubectl create namespace cluster && kubectl apply -f - <<'EOF'\n"
           "apiVersion: clusterstack.x-k8s.io/v1alpha1\nkind: ClusterStack\n"
           "metadata: {name: ferrol, namespace: cluster}\n"
           "spec: {provider: docker, name: ferrol, kubernetesVersion: \"1.32\", noProvider: true, autoSubscribe: false, versions: [v1]}\n"
           "EOF")

        # helm upgrade stackhost charts/stackhost -n stackhost-system --reuse-values --set replicaCount=3
        config.upgrade(str(REPO / "charts/stackhost"), "stackhost", {"replicaCount": 3}, reuse_values=True)
        deployment = get("deployment", "stackhost", NS)
        if deployment["spec"]["replicas"] != 3 or deployment["spec"]["template"]["spec"]["containers"][0]["image"] \
                != "registry.example.test/stackhost/stackhost:0.1.0":
            fail("upgrade --reuse-values --set replicaCount=3 did not keep the image or set 3 replicas")
        step("helm upgrade --reuse-values: values kept, replicaCount changed")

        # helm uninstall stackhost -n stackhost-system
        config.uninstall("stackhost")
        wait_for("the Deployment to go", lambda: get("deployment", "stackhost", NS) is None)
        if get("crd", "clusterstacks.clusterstack.x-k8s.io") is None:
            fail("uninstall deleted the CRDs")
        if get("clusterstack", "ferrol", "cluster") is None:
            fail("uninstall deleted the user's ClusterStack")
        if get("extensionconfig", "stackhost") is not None:
            fail("uninstall left the ExtensionConfig")
        step("helm uninstall: Deployment and ExtensionConfig gone; CRDs and the ClusterStack kept")

        # helm package charts/stackhost && helm push stackhost-0.1.0.tgz oci://REGISTRY/charts
        port = free_port()
        (tmp / "registry.yml").write_text(
            f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {tmp / 'registry'}}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n")
        procs.append(subprocess.Popen(["docker-registry", "serve", str(tmp / "registry.yml")],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / "registry.log", "w")))

        def registry_up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for("docker-registry", registry_up)
        archive = helm.package(str(REPO / "charts/stackhost"), destination=str(tmp))
        if Path(archive).name != "stackhost-0.1.0.tgz":
            fail(f"helm package wrote {archive}")
        pushed = helm.push(archive, f"oci://127.0.0.1:{port}/charts", plain_http=True)
        step(f"helm package + helm push to oci://127.0.0.1:{port}/charts: {json.dumps(pushed)[:160]}")

        # helm install stackhost oci://REGISTRY/charts/stackhost --version 0.1.0 -n stackhost-system
        config.install(f"oci://127.0.0.1:{port}/charts/stackhost", "stackhost", VALUES,
                       chart_version="0.1.0", plain_http=True, create_namespace=True)
        if get("deployment", "stackhost", NS) is None:
            fail("install from oci:// made no Deployment")
        step("helm install from oci://.../charts/stackhost --version 0.1.0 (over the CRDs left by the uninstall)")
        step("ok")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
