/**
 * cmd/kube/reflector.ts (through KubeSource) against what a real API server
 * and a real network do: the first list from the watch cache
 * (resourceVersion=0), a consistent relist after 410, a watch that falls
 * silent behind a black-holed connection (restarted, and readiness says so),
 * 504 from a lagging watch cache, and 410 for a stale continue token.
 */
import assert from "node:assert/strict";
import { ApiError, KubeClient } from "../../cmd/kube/client.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { PODS } from "../../core/kube/resources.ts";
import { startTestApiServer } from "../../sim/kube_api.ts";
import { eventually, podObject } from "./fixtures.ts";
import { Relay } from "./net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name:
    "reflector: a watch silent for twice the bookmark interval (black-holed connection) is restarted and readiness says so",
  ...opts,
  fn: async () => {
    // Bookmarks every 750 ms; silence for twice that means a dead watch.
    const api = await startTestApiServer({ bookmarkMs: 750 });
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
    const relay = Relay.start(api.url);
    const client = await KubeClient.connect({ server: relay.url }, { requestTimeoutMs: 1000 });
    const logs: string[] = [];
    const source = new KubeSource(client, createLogger("text", (l) => logs.push(l)), {
      syncTimeoutMs: 5000,
      watchIdleMs: 1500,
    }).start();
    try {
      await source.waitForSync();
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(source.problem(), undefined, "bookmarks keep an idle watch alive");
      relay.blackhole(true);
      await eventually(
        () => /silent/.test(source.problem() ?? ""),
        "readiness to report the dead watch",
      );
      relay.blackhole(false);
      api.apply(podObject("default", "late", "10.244.1.20"));
      await eventually(() => source.pods.store.has("default/late"), "the change after the restart");
      await eventually(() => source.problem() === undefined, "ready again");
    } finally {
      await source.stop();
      client.close();
      relay.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "reflector: the first list is served from the watch cache (resourceVersion=0); a relist after 410 is a consistent read",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ bookmarkMs: 100 });
    api.apply(podObject("default", "a", "10.244.1.11"));
    const client = await KubeClient.connect({ server: api.url });
    const source = new KubeSource(client, createLogger("text", () => {}), { syncTimeoutMs: 5000 })
      .start();
    try {
      await source.waitForSync();
      const lists = () =>
        api.log.filter((l) => l.startsWith("GET /api/v1/pods?") && !l.includes("watch="));
      assert.equal(lists().length, 1);
      assert.match(lists()[0], /[?&]resourceVersion=0(&|$)/);
      api.dropWatches();
      api.store.compact();
      api.apply(podObject("default", "b", "10.244.1.12"));
      api.store.compact();
      await eventually(() => source.pods.store.has("default/b"), "the relist");
      assert.ok(source.pods.stats.gone >= 1);
      assert.doesNotMatch(
        lists().at(-1)!,
        /resourceVersion=/,
        "after 410: the latest, not the cache",
      );
    } finally {
      await source.stop();
      client.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "reflector: a watch answered 504 (watch cache behind) is retried; a stale continue token is 410",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ bookmarkMs: 100 });
    for (let i = 0; i < 3; i++) api.apply(podObject("default", `p${i}`, `10.244.1.${11 + i}`));
    const client = await KubeClient.connect({ server: api.url });
    const source = new KubeSource(client, createLogger("text", () => {}), { syncTimeoutMs: 5000 })
      .start();
    try {
      await source.waitForSync();
      api.faults.lagWatches(2);
      api.dropWatches();
      api.apply(podObject("default", "after", "10.244.1.30"));
      await eventually(() => source.pods.store.has("default/after"), "the event after the 504s");
      // A continue token from before a compaction: 410 Expired, as kube-apiserver says.
      await assert.rejects(
        client.list(PODS, {
          pageSize: 1,
          onItems: () => api.store.compact(),
        }),
        (e) => e instanceof ApiError && e.status === 410,
      );
    } finally {
      await source.stop();
      client.close();
      await api.stop();
    }
  },
});
