// `misbehaving-js`: a JavaScript plugin that misbehaves on request, for the host's sandbox tests.
//
// `validate-config(b)` performs behaviour `b` and fails with what it saw as `failed(...)` (or `ok`):
// `loop`, `alloc` (run until fuel / the memory limit stops them), `count` (a module global counts
// calls: always 1 when every call gets a fresh instance), `http` (a request through the `http`
// capability), `state` (write the `state` store), `trap` (an uncaught exception).

import { send } from "clusterstack:provider/http@0.1.0";
import * as state from "clusterstack:provider/state@0.1.0";

let calls = 0;
const report = (text) => {
  throw { tag: "failed", val: text };
};

function perform(behaviour) {
  switch (behaviour) {
    case "loop": {
      let n = 0;
      for (;;) n++;
    }
    case "alloc": {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
    }
    case "count":
      calls += 1;
      report(`calls seen by this instance: ${calls}`);
    case "http":
      try {
        send({ method: "GET", url: "http://forbidden.invalid/", headers: [], body: undefined, timeoutMs: 1000 });
        report("http: sent");
      } catch (e) {
        if (e?.tag === "failed") throw e;
        report(`http: ${e.payload?.tag}: ${e.payload?.val}`);
      }
    case "state":
      try {
        state.set("k", "v");
        report("state: stored");
      } catch (e) {
        if (e?.tag === "failed") throw e;
        report(`state: ${e.payload?.tag}: ${e.payload?.val}`);
      }
    case "trap":
      throw new Error("misbehaving-js: trap requested");
  }
}

export const plugin = {
  info: () => ({ name: "misbehaving-js", version: "0.1.0", provider: "test", capabilities: ["log", "http", "state"] }),
  validateConfig: (config) => perform(config.trim().replace(/^"|"$/g, "")),
  reconcileNodeImages: () => [],
  cleanupNodeImages: () => {},
  patchClusterClass: (_release, objects) => objects,
  addonValues: (_cluster, values) => values,
};
