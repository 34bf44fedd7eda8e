/**
 * The controller's EgressSlices against the strict test API server: what is
 * published, what one pod change costs, and the faults of the issue (a slice
 * deleted by hand, two controllers at once, a leader lost mid-update).
 */
import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import { Controller } from "../../cmd/kube/controller.ts";
import { Reflector } from "../../cmd/kube/reflector.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { EGRESS_SLICES } from "../../core/kube/resources.ts";
import { type SliceRecord, sliceRecord } from "../../core/kube/slices.ts";
import { startTestApiServer, type TestApiServer } from "../../sim/kube_api.ts";
import { podObject, policyObject, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const ip = (n: number) => `10.244.${1 + (n >> 8)}.${n & 255}`;

interface Running {
  client: KubeClient;
  source: KubeSource;
  controller: Controller;
}

async function controller(api: TestApiServer, name: string, maxPods = 8): Promise<Running> {
  const client = await KubeClient.connect({ server: api.url });
  const log = createLogger("text", () => {});
  const source = new KubeSource(client, log, { syncTimeoutMs: 5000 }).start();
  await source.waitForSync();
  const controller = new Controller(client, source, log, name, 30_000, { sliceMaxPods: maxPods });
  return { client, source, controller };
}

async function stop(r: Running) {
  await r.controller.stop();
  await r.source.stop();
  r.client.close();
}

/** Address → the slices listing it, as stored in the API server. */
function stored(api: TestApiServer): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const object of api.list("EgressSlice")) {
    const slice = sliceRecord(object)!;
    for (const a of slice.pods) out.set(a, [...(out.get(a) ?? []), slice.name]);
  }
  return out;
}

/** Waits (bounded) until every address of `want` is in exactly one slice and nothing else is. */
async function converged(api: TestApiServer, want: Set<string>, what: string) {
  const deadline = Date.now() + 15_000;
  let last = "";
  while (Date.now() < deadline) {
    const now = stored(api);
    const extra = [...now.keys()].filter((a) => !want.has(a));
    const missing = [...want].filter((a) => !now.has(a));
    const doubled = [...now].filter(([, s]) => s.length > 1).map(([a]) => a);
    if (extra.length + missing.length + doubled.length === 0) return;
    last = `missing ${missing.length}, extra ${extra.length}, in two slices ${doubled.length}`;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: slices not converged (${last})`);
}

const sliceWrites = (api: TestApiServer) =>
  api.log.filter((l) => /^(POST|PUT|DELETE) \S*\/egressslices/.test(l)).length;

function seed(api: TestApiServer, pods: number) {
  api.apply(vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } }));
  api.apply(
    policyObject("default", "all", { vip: "office", podSelector: { matchLabels: { app: "web" } } }),
  );
  for (let n = 1; n <= pods; n++) {
    api.apply(podObject("default", `web-${n}`, ip(n), { labels: { app: "web" } }));
  }
  // Not selected: never published.
  api.apply(podObject("default", "db", ip(999), { labels: { app: "db" } }));
}

const range = (n: number) => new Set(Array.from({ length: n }, (_, i) => ip(i + 1)));

Deno.test({
  name:
    "slices: the elected controller publishes the selection in bounded slices; one pod change rewrites one slice",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    seed(api, 30);
    const a = await controller(api, "node1");
    try {
      a.controller.setActive(true);
      await converged(api, range(30), "first publication");
      const slices = api.list("EgressSlice");
      assert.equal(slices.length, 4); // 30 addresses, at most 8 each
      for (const s of slices) {
        assert.deepEqual(
          (s.metadata as { ownerReferences?: { kind: string; name: string }[] }).ownerReferences
            ?.map((o) => `${o.kind}/${o.name}`),
          ["EgressVIP/office"],
        );
      }
      await a.controller.publisher!.idle();
      const before = sliceWrites(api);
      api.apply(podObject("default", "web-31", ip(31), { labels: { app: "web" } }));
      await converged(api, range(31), "a new pod");
      await a.controller.publisher!.idle();
      assert.equal(sliceWrites(api) - before, 1, "one slice write for one new pod");
      api.delete("Pod", "web-3", "default");
      const want = range(31);
      want.delete(ip(3));
      await converged(api, want, "a pod deleted");
      await a.controller.publisher!.idle();
      assert.equal(sliceWrites(api) - before, 2, "one slice write for one pod deletion");
    } finally {
      await stop(a);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "slices: a slice deleted by hand is published again; a new leader writes nothing that is already right",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    seed(api, 20);
    const a = await controller(api, "node1");
    let b: Running | undefined;
    try {
      a.controller.setActive(true);
      await converged(api, range(20), "first publication");
      const victim = api.list("EgressSlice")[0].metadata as { name: string };
      api.delete("EgressSlice", victim.name);
      await converged(api, range(20), "after kubectl delete egressslice");
      await a.controller.stop();
      b = await controller(api, "node2");
      const before = sliceWrites(api);
      b.controller.setActive(true);
      await new Promise((r) => setTimeout(r, 500));
      await b.controller.publisher!.idle();
      assert.ok(b.controller.publisher!.synced);
      assert.equal(sliceWrites(api) - before, 0, "the new leader reads back the slices");
    } finally {
      await stop(a);
      if (b) await stop(b);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "slices: two controllers at once (a Lease hand-over) converge: every address in exactly one slice",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    seed(api, 10);
    const a = await controller(api, "node1", 4);
    const b = await controller(api, "node2", 4);
    try {
      a.controller.setActive(true);
      b.controller.setActive(true);
      for (let n = 11; n <= 40; n++) {
        api.apply(podObject("default", `web-${n}`, ip(n), { labels: { app: "web" } }));
        if (n % 3 === 0) api.delete("Pod", `web-${n - 5}`, "default");
      }
      const want = range(40);
      for (let n = 11; n <= 40; n++) if (n % 3 === 0) want.delete(ip(n - 5));
      // The old leader stops (its renew deadline passed); the new one cleans up.
      await a.controller.stop();
      b.controller.publisher!.resync();
      await converged(api, want, "after two controllers");
    } finally {
      await stop(a);
      await stop(b);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "slices: a leader lost mid-update never makes a selected pod disappear from the slices; the next leader converges",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    seed(api, 16);
    // What an agent sees: for each address, was it ever gone again after it appeared?
    const watcher = await KubeClient.connect({ server: api.url });
    const seen = new Map<string, number>();
    const vanished = new Set<string>();
    const count = new Map<string, number>();
    const reflector = new Reflector<SliceRecord>(watcher, createLogger("text", () => {}), {
      resource: EGRESS_SLICES,
      reduce: sliceRecord,
      key: (o) => (o as { metadata?: { name?: string } }).metadata?.name,
      onChange: () => {},
      onItem: (_name, before, after) => {
        for (const a of after?.pods ?? []) {
          count.set(a, (count.get(a) ?? 0) + 1);
          seen.set(a, 1);
        }
        for (const a of before?.pods ?? []) {
          count.set(a, (count.get(a) ?? 0) - 1);
          if (count.get(a) === 0) vanished.add(a);
        }
      },
    });
    reflector.start();
    const a = await controller(api, "node1", 4);
    let b: Running | undefined;
    try {
      a.controller.setActive(true);
      await converged(api, range(16), "first publication");
      // Every pod moves to another class (new destination ranges): a rewrite of every slice.
      api.apply(policyObject("default", "all", {
        vip: "office",
        podSelector: { matchLabels: { app: "web" } },
        destinationCIDRs: ["203.0.113.0/24"],
      }));
      // Lose the leader after its first few writes.
      const start = sliceWrites(api);
      for (let i = 0; i < 200 && sliceWrites(api) - start < 3; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      await a.controller.stop();
      b = await controller(api, "node2", 4);
      b.controller.setActive(true);
      await converged(api, range(16), "after the hand-over");
      await eventually(
        () =>
          api.list("EgressSlice").every((s) =>
            (s.spec as { destinationCIDRs?: string[] }).destinationCIDRs?.[0] === "203.0.113.0/24"
          ),
        "every slice in the new class",
      );
      assert.deepEqual([...vanished], [], "addresses that were in no slice for a moment");
    } finally {
      await reflector.stop();
      watcher.close();
      await stop(a);
      if (b) await stop(b);
      await api.stop();
    }
  },
});

async function eventually(check: () => boolean, what: string) {
  for (let i = 0; i < 300; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test({
  name:
    "slices: a failClosed policy's pods are published while its VIP is missing (guardOnly), then steered once it exists",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    api.apply(policyObject("default", "closed", {
      vip: "office",
      podSelector: { matchLabels: { app: "web" } },
      failClosed: true,
    }));
    for (let n = 1; n <= 3; n++) {
      api.apply(podObject("default", `web-${n}`, ip(n), { labels: { app: "web" } }));
    }
    const a = await controller(api, "node1");
    try {
      a.controller.setActive(true);
      await converged(api, range(3), "guarded pods published");
      const spec = () => api.list("EgressSlice").map((s) => s.spec as Record<string, unknown>);
      assert.deepEqual(spec().map((s) => [s.vip, s.failClosed, s.guardOnly]), [
        ["office", true, true],
      ]);
      api.apply(vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } }));
      await eventually(
        () => spec().length === 1 && spec()[0].guardOnly === undefined,
        "steered and still failing closed",
      );
      assert.equal(spec()[0].failClosed, true);
      await converged(api, range(3), "after the VIP appeared");
    } finally {
      await stop(a);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "slices: an API server restart (unavailable, watches dropped, history compacted: 410 and a relist) loses nothing; changes made meanwhile are published, unchanged slices are not rewritten",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    seed(api, 20);
    const a = await controller(api, "node1");
    try {
      a.controller.setActive(true);
      await converged(api, range(20), "first publication");
      await a.controller.publisher!.idle();
      const untouched = api.list("EgressSlice").map((s) =>
        `${(s.metadata as { name: string }).name}@${
          (s.metadata as { resourceVersion: string }).resourceVersion
        }`
      ).sort();
      api.setAvailable(false);
      api.dropWatches();
      // What happens while it is down (written behind its back, as etcd would keep it).
      api.apply(podObject("default", "web-21", ip(21), { labels: { app: "web" } }));
      api.store.compact();
      await new Promise((r) => setTimeout(r, 300));
      api.setAvailable(true);
      await converged(api, range(21), "after the restart");
      await a.controller.publisher!.idle();
      const now = api.list("EgressSlice").map((s) =>
        `${(s.metadata as { name: string }).name}@${
          (s.metadata as { resourceVersion: string }).resourceVersion
        }`
      ).sort();
      // Only the slice that took web-21 was written again.
      assert.equal(now.filter((s) => !untouched.includes(s)).length, 1, now.join(" "));
    } finally {
      await stop(a);
      await api.stop();
    }
  },
});
