/**
 * The agent's source on the published selection: it reads EgressSlices,
 * EgressVIPs and its own Node only, and never reads a slice deleted by
 * someone else as "these pods left".
 */
import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import { SliceSource } from "../../cmd/kube/slice_source.ts";
import { createLogger } from "../../cmd/log.ts";
import { AGENT_PERMISSIONS } from "../../core/kube/resources.ts";
import { sliceObject } from "../../core/kube/slices.ts";
import { startTestApiServer, type TestApiServer } from "../../sim/kube_api.ts";
import { eventually, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

function node(name: string, ip: string, labels: Record<string, string> = {}) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, labels },
    spec: {},
    status: { addresses: [{ type: "InternalIP", address: ip }] },
  };
}

const slice = (name: string, pods: string[], extra: Record<string, unknown> = {}) =>
  ({ ...sliceObject(name, { vip: "office", ...extra }, pods) }) as Record<string, unknown>;

async function source(api: { url: string }, holdMs?: number) {
  const client = await KubeClient.connect({ server: api.url }, {
    permissions: AGENT_PERMISSIONS,
  });
  const logs: string[] = [];
  const s = new SliceSource(client, createLogger("text", (l) => logs.push(l)), {
    nodeName: "node1",
    vrrpPeers: true,
    syncTimeoutMs: 5000,
    holdMs,
  }).start();
  await s.waitForSync();
  return { client, source: s, logs };
}

/**
 * An API server holding node1 (192.0.2.11), the EgressVIP office (route id 5)
 * and `objects`, with a synced slice source on it; `fn` runs, then both stop.
 */
async function withOfficeSource(
  objects: Record<string, unknown>[],
  fn: (started: { api: TestApiServer; s: SliceSource; logs: string[] }) => Promise<void>,
  holdMs?: number,
) {
  const api = await startTestApiServer();
  api.apply(node("node1", "192.0.2.11"));
  api.apply(vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } }));
  for (const object of objects) api.apply(object);
  const { client, source: s, logs } = await source(api, holdMs);
  try {
    await fn({ api, s, logs });
  } finally {
    await s.stop();
    client.close();
    await api.stop();
  }
}

/** Every object reachable from `root` (own properties, array items, map keys and values). */
function reachable(root: unknown): Set<unknown> {
  const seen = new Set<unknown>();
  const stack = [root];
  while (stack.length > 0) {
    const value = stack.pop();
    if (value === null || typeof value !== "object" || seen.has(value)) continue;
    seen.add(value);
    if (value instanceof Map) { for (const [k, v] of value) stack.push(k, v); }
    else stack.push(...Object.values(value));
  }
  seen.delete(root);
  return seen;
}

const podsOf = (snapshot: { pods: readonly { podIp: unknown }[] }) =>
  snapshot.pods.map((p) => p.podIp as string).sort();

Deno.test({
  name:
    "slice source: pods from the slices, eligibility from the own Node, peers and guard nodes from status.nodes; no Pod is read",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    api.apply(node("node1", "192.0.2.11", { gw: "yes" }));
    api.apply(node("node2", "192.0.2.12"));
    api.apply(
      vipObject("office", { ip: "192.0.2.50", nodeSelector: { matchLabels: { gw: "yes" } } }, {
        status: {
          routeId: 5,
          nodes: [{ name: "node1", ip: "192.0.2.11" }, {
            name: "node3",
            ip: "192.0.2.13",
            cordoned: true,
          }],
        },
      }),
    );
    api.apply(slice("office-a-0", ["10.244.1.2", "10.244.1.3"]));
    api.apply(slice("office-b-0", ["10.244.2.2"], { destinations: ["203.0.113.0/24"] }));
    const { client, source: s } = await source(api);
    try {
      const raw = await s.readInputs();
      assert.deepEqual(raw.vips, [{
        origin: "EgressVIP office",
        ip: "192.0.2.50",
        routeId: 5,
        eligible: true,
        peers: ["192.0.2.11"],
        nodes: ["192.0.2.11", "192.0.2.13"],
      }]);
      assert.deepEqual(podsOf(raw), ["10.244.1.2", "10.244.1.3", "10.244.2.2"]);
      assert.deepEqual(raw.pods.find((p) => p.podIp === "10.244.2.2")!.destinations, [
        "203.0.113.0/24",
      ]);
      // Only its own Node is cached.
      assert.deepEqual([...s.nodes.store.keys()], ["node1"]);
      const asked = [...api.requestsBy.get("kube-egress")!].sort();
      assert.ok(!asked.some((r) => /\/(pods|namespaces|replicasets) /.test(r)), asked.join(", "));
      assert.ok(api.log.some((l) => l.includes("fieldSelector=metadata.name%3Dnode1")));
    } finally {
      await s.stop();
      client.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "slice source: a slice deleted with pods in it (by hand) keeps them in force until republished, or until the hold expires",
  ...opts,
  fn: async () => {
    await withOfficeSource([
      slice("office-a-0", ["10.244.1.2", "10.244.1.3"]),
      slice("office-a-1", ["10.244.1.4"]),
    ], async ({ api, s, logs }) => {
      assert.equal((await s.readInputs()).pods.length, 3);
      api.delete("EgressSlice", "office-a-0");
      await eventually(() => !s.slices.store.has("office-a-0"), "the deletion seen");
      assert.deepEqual(podsOf(await s.readInputs()), ["10.244.1.2", "10.244.1.3", "10.244.1.4"]);
      assert.equal(s.held, 2);
      assert.ok(logs.some((l) => l.includes("EgressSlice deleted with pods in it")));
      // The controller republishes them (another shard): the hold ends.
      api.apply(slice("office-a-2", ["10.244.1.2", "10.244.1.3"]));
      await eventually(() => s.slices.store.has("office-a-2"), "the new slice seen");
      assert.equal((await s.readInputs()).pods.length, 3);
      assert.equal(s.held, 0);
      // An emptied slice (the controller's way) then deleted: its pods are gone at once.
      api.apply(slice("office-a-1", []));
      await eventually(() => s.slices.store.get("office-a-1")?.pods.length === 0, "emptied");
      api.delete("EgressSlice", "office-a-1");
      await eventually(() => !s.slices.store.has("office-a-1"), "deleted");
      assert.deepEqual(podsOf(await s.readInputs()), ["10.244.1.2", "10.244.1.3"]);
      assert.equal(s.held, 0);
      // Deleted by hand and never republished: kept for the hold, then dropped.
      api.delete("EgressSlice", "office-a-2");
      await eventually(() => !s.slices.store.has("office-a-2"), "deleted");
      assert.equal((await s.readInputs()).pods.length, 2);
      await new Promise((r) => setTimeout(r, 1700));
      assert.equal((await s.readInputs()).pods.length, 0);
    }, 1500);
  },
});

Deno.test({
  name:
    "slice source: an address in two slices (a move under way) is mapped once, never rejected as ambiguous",
  ...opts,
  fn: async () => {
    await withOfficeSource([
      slice("office-a-0", ["10.244.1.2"]),
      slice("office-b-0", ["10.244.1.2"], { destinations: ["203.0.113.0/24"] }),
    ], async ({ s }) => {
      const raw = await s.readInputs();
      assert.equal(raw.pods.length, 1);
      assert.equal(raw.pods[0].origin, "EgressSlice office-a-0");
    });
  },
});

Deno.test({
  name:
    "slice source: failClosed slices guard their pods; guardOnly ones (the VIP missing) guard without mapping",
  ...opts,
  fn: async () => {
    await withOfficeSource([
      slice("office-c-0", ["10.244.1.2"], { failClosed: true }),
      sliceObject("gone-g-0", { vip: "gone", failClosed: true, guardOnly: true }, ["10.244.1.3"]),
    ], async ({ s }) => {
      const raw = await s.readInputs();
      assert.deepEqual(podsOf(raw), ["10.244.1.2"]);
      assert.deepEqual(raw.failClosed?.map((g) => g.podIp).sort(), ["10.244.1.2", "10.244.1.3"]);
    });
  },
});

Deno.test({
  name:
    "slice source: with VRRP by unicast, a VIP whose status.nodes is not published yet is not held here (never a lone holder advertising to nobody)",
  ...opts,
  fn: async () => {
    await withOfficeSource([], async ({ api, s }) => {
      assert.equal((await s.readInputs()).vips[0].eligible, false);
      const vip = api.get("EgressVIP", "office")!;
      api.update({
        ...vip,
        status: { routeId: 5, nodes: [{ name: "node1", ip: "192.0.2.11" }] },
      }, { status: true });
      await eventually(async () => (await s.readInputs()).vips[0].eligible === true, "eligible");
      assert.deepEqual((await s.readInputs()).vips[0].peers, ["192.0.2.11"]);
    });
  },
});

Deno.test({
  name:
    "slice source: after a slice rewrite the snapshot is a delta of the last one (the addresses whose entry changed), equal to a rebuild",
  ...opts,
  fn: () =>
    withOfficeSource([
      slice("office-a-0", ["10.244.1.2", "10.244.1.3"]),
      slice("office-a-1", ["10.244.1.4"]),
    ], async ({ api, s }) => {
      const byIp = (raw: { pods: readonly { podIp: unknown }[] }) =>
        [...raw.pods].sort((a, b) => String(a.podIp) < String(b.podIp) ? -1 : 1);
      const rebuilt = async () => {
        const { client, source: fresh } = await source(api);
        try {
          return await fresh.readInputs();
        } finally {
          await fresh.stop();
          client.close();
        }
      };
      let last = await s.readInputs();
      const step = async (object: Record<string, unknown>, until: (ips: string[]) => boolean) => {
        api.apply(object);
        await eventually(async () => until(podsOf(await s.readInputs())), "the slice rewrite");
        const raw = await s.readInputs();
        // Not a chain: a snapshot that held the one before would keep every snapshot alive.
        assert.ok(!reachable(raw).has(last), "the snapshot holds the one before it");
        assert.equal(raw.delta?.since, last.version);
        assert.ok(raw.delta?.since !== undefined);
        assert.deepEqual(byIp(raw), byIp(await rebuilt()));
        last = raw;
        return [...raw.delta!.pods.keys()].sort();
      };
      // .3 leaves, .5 comes: only those two are looked at again (.2 stays as it was).
      assert.deepEqual(
        await step(
          slice("office-a-0", ["10.244.1.2", "10.244.1.5"]),
          (ips) => ips.includes("10.244.1.5"),
        ),
        ["10.244.1.3", "10.244.1.5"],
      );
      // .2 in two slices (a move under way): still the first slice's, nothing changed for it.
      assert.deepEqual(
        await step(
          slice("office-a-1", ["10.244.1.4", "10.244.1.2"]),
          () => s.slices.store.get("office-a-1")?.pods.length === 2,
        ),
        [],
      );
      // The move done: .2 is now the second slice's (another origin).
      assert.deepEqual(
        await step(
          slice("office-a-0", ["10.244.1.5"]),
          () => s.slices.store.get("office-a-0")?.pods.length === 1,
        ),
        ["10.244.1.2"],
      );
      assert.equal(
        last.pods.find((p) => p.podIp === "10.244.1.2")?.origin,
        "EgressSlice office-a-1",
      );
    }),
});
