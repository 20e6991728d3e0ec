// `docker-js`: the docker sample provider plugin (plugins/docker) in JavaScript, built with
// componentize-js. It passes the same fixtures as the Rust plugin (fixtures/ links to plugins/docker/fixtures).
//
// - `reconcile-node-images`: each image is "pulled" for `pendingRounds` calls (reported pending with a
//   one-second retry hint, progress kept in the `state` store), then ready as `<imageRegistry>/<name>`.
// - `patch-cluster-class`: annotates every ClusterClass with the plugin that patched it and the ready
//   node image ids of the release; every other object is returned unchanged.
// - `cleanup-node-images`: forgets the images' progress.
// - `addon-values`: sets `global.imageRegistry` to the configured `imageRegistry`, unless the values set it.
//
// Config (`spec.config` of the ProviderPlugin): `{"imageRegistry": "docker.io", "pendingRounds": 1}`.
//
// WIT in JavaScript: records are objects with camelCase fields, variants `{tag, val}`, enums strings,
// `option<T>` is `undefined` or the value; an export returns its `ok` value and throws its `error`.

import { get as configGet } from "clusterstack:provider/config@0.1.0";
import { log } from "clusterstack:provider/log@0.1.0";
import * as state from "clusterstack:provider/state@0.1.0";

const VERSION = "0.1.0";
// Annotation naming the plugin that patched a ClusterClass.
const PATCHED_BY = "docker.clusterstack.x-k8s.io/patched-by";
// Annotation listing the node image ids of the release.
const NODE_IMAGES = "docker.clusterstack.x-k8s.io/node-images";

const invalid = (message) => ({ tag: "invalid-input", val: message });
const failed = (message) => ({ tag: "failed", val: message });
const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function settings(text) {
  let value;
  try {
    value = JSON.parse(text.trim() === "" ? "{}" : text);
  } catch (e) {
    throw invalid(`spec.config is not JSON: ${e.message}`);
  }
  if (!isMap(value)) throw invalid("spec.config must be a JSON object");
  const s = { imageRegistry: "docker.io", pendingRounds: 1 };
  // Sorted, as the Rust plugin reads its keys, so the first problem reported is the same.
  for (const key of Object.keys(value).sort()) {
    const v = value[key];
    if (key === "imageRegistry") {
      if (typeof v !== "string" || v === "") {
        throw invalid("spec.config.imageRegistry must be a non-empty string");
      }
      s.imageRegistry = v;
    } else if (key === "pendingRounds") {
      if (!Number.isInteger(v) || v < 0 || v > 100) {
        throw invalid("spec.config.pendingRounds must be a whole number from 0 to 100");
      }
      s.pendingRounds = v;
    } else {
      throw invalid(
        `spec.config.${key} is not a setting of the docker plugin (known: imageRegistry, pendingRounds)`,
      );
    }
  }
  return s;
}

const progressKey = (tag, image) => `pull/${tag}/${image}`;
const readyKey = (tag) => `ready/${tag}`;

function setState(key, value, what) {
  try {
    state.set(key, value);
  } catch (e) {
    throw failed(`cannot record ${what}: ${JSON.stringify(e.payload ?? e)}`);
  }
}

export const plugin = {
  info() {
    return { name: "docker", version: VERSION, provider: "docker", capabilities: ["log", "state"] };
  },

  validateConfig(config) {
    settings(config);
  },

  reconcileNodeImages(release, images) {
    const s = settings(configGet());
    const ready = [];
    const out = [];
    for (const image of images) {
      const key = progressKey(release.tag, image.name);
      const rounds = Number.parseInt(state.get(key) ?? "0", 10) || 0;
      let imageState;
      if (rounds < s.pendingRounds) {
        setState(key, String(rounds + 1), "progress");
        imageState = {
          tag: "pending",
          val: {
            retryAfterSeconds: 1,
            message: `pulling ${image.name} (${rounds + 1}/${s.pendingRounds})`,
          },
        };
      } else {
        const id = `${s.imageRegistry}/${image.name}`;
        ready.push(id);
        imageState = { tag: "ready", val: id };
      }
      out.push({ name: image.name, state: imageState });
    }
    if (ready.length === out.length) {
      setState(readyKey(release.tag), ready.join(","), "ready images");
      log("info", "node images ready", [
        ["release", release.tag],
        ["images", ready.join(",")],
      ]);
    }
    return out;
  },

  cleanupNodeImages(release, images) {
    for (const image of images) state.delete(progressKey(release.tag, image.name));
    state.delete(readyKey(release.tag));
  },

  patchClusterClass(release, objects) {
    const images = state.get(readyKey(release.tag)) ?? "";
    return objects.map((text, i) => {
      let object;
      try {
        object = JSON.parse(text);
      } catch (e) {
        throw invalid(`object ${i} is not JSON: ${e.message}`);
      }
      if (!isMap(object) || object.kind !== "ClusterClass") return text;
      if (!isMap(object.metadata)) throw invalid(`object ${i}: ClusterClass without metadata`);
      const annotations = (object.metadata.annotations ??= {});
      if (!isMap(annotations)) throw invalid(`object ${i}: metadata.annotations is not a mapping`);
      annotations[PATCHED_BY] = `docker-plugin ${VERSION}`;
      annotations[NODE_IMAGES] = images;
      return JSON.stringify(object);
    });
  },

  addonValues(_cluster, values) {
    const s = settings(configGet());
    let parsed;
    try {
      parsed = JSON.parse(values);
    } catch (e) {
      throw invalid(`the addon values are not JSON: ${e.message}`);
    }
    if (!isMap(parsed)) throw invalid("the addon values must be a map");
    const global = (parsed.global ??= {});
    if (!isMap(global)) {
      throw invalid("the addon value `global` must be a map (the docker plugin sets global.imageRegistry)");
    }
    // A registry the release's values template chose stays.
    global.imageRegistry ??= s.imageRegistry;
    return JSON.stringify(parsed);
  },
};
