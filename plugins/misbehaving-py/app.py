"""`misbehaving-py`: a Python plugin that misbehaves on request, for the host's sandbox tests.

`validate-config(b)` performs behaviour `b` and fails with what it saw as `failed(...)` (or `ok`):

- `loop`, `alloc`: run until fuel / the memory limit stops them;
- `count`: a module global counts calls (always 1 when every call gets a fresh instance);
- `connect:<port>`: a TCP connection to 127.0.0.1:<port>; `lookup`: resolve `localhost`;
- `file`: read `/etc/hostname`; `env`: the environment; `http`: a request through the `http` capability;
- `state`: write the `state` store.
"""

import os
import socket

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http, state
from wit_world.imports.types import Capability, Error_Failed, PluginInfo

CALLS = [0]


def report(text):
    raise Err(Error_Failed(text))


def perform(behaviour):
    if behaviour == "loop":
        n = 0
        while True:
            n += 1
    if behaviour == "alloc":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if behaviour == "count":
        CALLS[0] += 1
        report(f"calls seen by this instance: {CALLS[0]}")
    if behaviour.startswith("connect:"):
        port = int(behaviour.split(":", 1)[1])
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", port))
            report("connected")
        except OSError as e:
            report(f"connect: {type(e).__name__}: {e}")
    if behaviour == "lookup":
        # A bytes host: the bundled stdlib has no idna codec, and the lookup itself is what is tested.
        try:
            report(f"resolved: {socket.getaddrinfo(b'localhost', 80)}")
        except OSError as e:
            report(f"lookup: {type(e).__name__}: {e}")
    if behaviour == "file":
        try:
            with open("/etc/hostname") as f:
                report(f"read: {f.read()}")
        except OSError as e:
            report(f"file: {type(e).__name__}: {e}")
    if behaviour == "env":
        report(f"env: {dict(os.environ)}")
    if behaviour == "http":
        try:
            http.send(http.Request("GET", "http://forbidden.invalid/", [], None, 1000))
            report("http: sent")
        except Err as e:
            report(f"http: {type(e.value).__name__}: {e.value.value}")
    if behaviour == "state":
        try:
            state.set("k", "v")
            report("state: stored")
        except Err as e:
            report(f"state: {type(e.value).__name__}: {e.value.value}")
    if behaviour == "trap":
        raise RuntimeError("misbehaving-py: trap requested")


class Plugin(exports.Plugin):
    def info(self):
        return PluginInfo("misbehaving-py", "0.1.0", "test", [Capability.LOG, Capability.HTTP, Capability.STATE])

    def validate_config(self, config):
        perform(config.strip().strip('"'))

    def reconcile_node_images(self, release, images):
        return []

    def cleanup_node_images(self, release, images):
        pass

    def patch_cluster_class(self, release, objects):
        return objects

    def addon_values(self, cluster, values):
        return values
