"""`docker-py`: the docker sample provider plugin (plugins/docker) in Python, built with componentize-py.

It passes the same fixtures as the Rust plugin (fixtures/ is a link to plugins/docker/fixtures):

- `reconcile-node-images`: each image is "pulled" for `pendingRounds` calls (reported pending with a
  one-second retry hint, progress kept in the `state` store), then ready as `<imageRegistry>/<name>`.
- `patch-cluster-class`: annotates every ClusterClass with the plugin that patched it and the ready node
  image ids of the release; every other object is returned unchanged.
- `cleanup-node-images`: forgets the images' progress.
- `addon-values`: sets `global.imageRegistry` to the configured `imageRegistry`, unless the values set it.

Config (`spec.config` of the ProviderPlugin): `{"imageRegistry": "docker.io", "pendingRounds": 1}`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, state
from wit_world.imports.types import (
    Capability,
    Error_Failed,
    Error_InvalidInput,
    ImageState_Pending,
    ImageState_Ready,
    ImageStatus,
    PluginInfo,
    Retry,
)

VERSION = "0.1.0"
# Annotation naming the plugin that patched a ClusterClass.
PATCHED_BY = "docker.clusterstack.x-k8s.io/patched-by"
# Annotation listing the node image ids of the release.
NODE_IMAGES = "docker.clusterstack.x-k8s.io/node-images"


def invalid(message):
    return Err(Error_InvalidInput(message))


def settings(text):
    try:
        value = json.loads(text if text.strip() else "{}")
    except ValueError as e:
        raise invalid(f"spec.config is not JSON: {e}")
    if not isinstance(value, dict):
        raise invalid("spec.config must be a JSON object")
    registry, rounds = "docker.io", 1
    # Sorted, as the Rust plugin reads its keys, so the first problem reported is the same.
    for key in sorted(value):
        v = value[key]
        if key == "imageRegistry":
            if not isinstance(v, str) or not v:
                raise invalid("spec.config.imageRegistry must be a non-empty string")
            registry = v
        elif key == "pendingRounds":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                raise invalid("spec.config.pendingRounds must be a whole number from 0 to 100")
            rounds = v
        else:
            raise invalid(
                f"spec.config.{key} is not a setting of the docker plugin (known: imageRegistry, pendingRounds)"
            )
    return registry, rounds


def progress_key(tag, image):
    return f"pull/{tag}/{image}"


def ready_key(tag):
    return f"ready/{tag}"


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Plugin(exports.Plugin):
    def info(self):
        return PluginInfo("docker", VERSION, "docker", [Capability.LOG, Capability.STATE])

    def validate_config(self, config_text):
        settings(config_text)

    def reconcile_node_images(self, release, images):
        registry, pending_rounds = settings(config.get())
        ready, out = [], []
        for image in images:
            key = progress_key(release.tag, image.name)
            try:
                rounds = int(state.get(key) or 0)
            except ValueError:
                rounds = 0
            if rounds < pending_rounds:
                try:
                    state.set(key, str(rounds + 1))
                except Err as e:
                    raise Err(Error_Failed(f"cannot record progress: {e.value}"))
                status = ImageState_Pending(
                    Retry(1, f"pulling {image.name} ({rounds + 1}/{pending_rounds})")
                )
            else:
                image_id = f"{registry}/{image.name}"
                ready.append(image_id)
                status = ImageState_Ready(image_id)
            out.append(ImageStatus(image.name, status))
        if len(ready) == len(out):
            try:
                state.set(ready_key(release.tag), ",".join(ready))
            except Err as e:
                raise Err(Error_Failed(f"cannot record ready images: {e.value}"))
            log.log(
                log.Level.INFO,
                "node images ready",
                [("release", release.tag), ("images", ",".join(ready))],
            )
        return out

    def cleanup_node_images(self, release, images):
        for image in images:
            state.delete(progress_key(release.tag, image.name))
        state.delete(ready_key(release.tag))

    def patch_cluster_class(self, release, objects):
        images = state.get(ready_key(release.tag)) or ""
        out = []
        for i, text in enumerate(objects):
            try:
                obj = json.loads(text)
            except ValueError as e:
                raise invalid(f"object {i} is not JSON: {e}")
            if not isinstance(obj, dict) or obj.get("kind") != "ClusterClass":
                out.append(text)
                continue
            metadata = obj.get("metadata")
            if not isinstance(metadata, dict):
                raise invalid(f"object {i}: ClusterClass without metadata")
            annotations = metadata.setdefault("annotations", {})
            if not isinstance(annotations, dict):
                raise invalid(f"object {i}: metadata.annotations is not a mapping")
            annotations[PATCHED_BY] = f"docker-plugin {VERSION}"
            annotations[NODE_IMAGES] = images
            out.append(compact(obj))
        return out

    def addon_values(self, cluster, values):
        registry, _ = settings(config.get())
        try:
            parsed = json.loads(values)
        except ValueError as e:
            raise invalid(f"the addon values are not JSON: {e}")
        if not isinstance(parsed, dict):
            raise invalid("the addon values must be a map")
        glob = parsed.setdefault("global", {})
        if not isinstance(glob, dict):
            raise invalid(
                "the addon value `global` must be a map (the docker plugin sets global.imageRegistry)"
            )
        # A registry the release's values template chose stays.
        glob.setdefault("imageRegistry", registry)
        return compact(parsed)
