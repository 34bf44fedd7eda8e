import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { validateSnapshot } from "../../core/snapshot.ts";
import { startTestApiServer, type TestApiServer } from "../../sim/kube_api.ts";
import { testConfig } from "../helpers.ts";
import { eventually, podObject, policyObject, vipObject } from "./fixtures.ts";

const TOKEN = "s3cret";
const opts = { sanitizeOps: false, sanitizeResources: false };

async function setup(
  fn: (api: TestApiServer, source: KubeSource, logs: string[]) => Promise<void>,
) {
  const api = await startTestApiServer({ token: TOKEN, bookmarkMs: 100 });
  const client = await KubeClient.connect({ server: api.url, token: { data: TOKEN } });
  const logs: string[] = [];
  const source = new KubeSource(client, createLogger("text", (l) => logs.push(l)), {
    syncTimeoutMs: 5000,
  }).start();
  try {
    await fn(api, source, logs);
  } finally {
    await source.stop();
    client.close();
    await api.stop();
  }
}

const mapped = async (source: KubeSource) => {
  const { snapshot } = validateSnapshot(await source.readInputs(), testConfig());
  return Object.fromEntries(snapshot.pods.map((p) => [p.podIp, p.vip]));
};

function seed(api: TestApiServer) {
  api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
  api.apply(vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } }));
  api.apply(
    policyObject("default", "pod1", { vip: "office", targets: [{ kind: "Pod", name: "pod1" }] }),
  );
  api.apply(podObject("default", "pod1", "10.244.1.11"));
  api.apply(podObject("default", "pod2", "10.244.1.12"));
}

Deno.test({
  name: "kube source: list then watch; pod added, deleted and its IP reused by an unselected pod",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      seed(api);
      await eventually(async () => "10.244.1.11" in await mapped(source), "the seeded pod");
      assert.deepEqual(await mapped(source), { "10.244.1.11": "192.0.2.50" });
      let changes = 0;
      source.watchInputs(() => changes++);
      api.apply(podObject("default", "pod1b", "10.244.2.11"));
      api.apply(
        policyObject("default", "more", {
          vip: "office",
          targets: [{ kind: "Pod", name: "pod1b" }],
        }),
      );
      await eventually(async () => Object.keys(await mapped(source)).length === 2, "the new pod");
      assert.ok(changes >= 2, "watch events trigger passes");
      api.delete("Pod", "pod1", "default");
      api.apply(podObject("default", "reuser", "10.244.1.11"));
      await eventually(async () => !("10.244.1.11" in await mapped(source)), "the reused IP to go");
      assert.deepEqual(await mapped(source), { "10.244.2.11": "192.0.2.50" });
    }),
});

Deno.test({
  name:
    "kube source: resumes after dropped watches, relists on 410 Gone, bookmarks advance the version",
  ...opts,
  fn: () =>
    setup(async (api, source, logs) => {
      seed(api);
      await source.waitForSync();
      await eventually(() => source.pods.stats.bookmarks > 0, "a bookmark");
      const lists = source.pods.stats.lists;
      api.dropWatches();
      api.apply(podObject("default", "pod3", "10.244.1.13"));
      api.apply(policyObject("default", "p3", { vip: "office", podSelector: {} }));
      await eventually(async () => "10.244.1.13" in await mapped(source), "pod3 after the resume");
      assert.equal(source.pods.stats.lists, lists, "a resume does not relist");
      // Too old: history compacted while the watch is down.
      api.dropWatches();
      api.store.compact();
      api.delete("Pod", "pod3", "default");
      api.store.compact();
      await eventually(
        async () => !("10.244.1.13" in await mapped(source)),
        "pod3 gone after the relist",
      );
      assert.ok(source.pods.stats.gone >= 1, "410 Gone seen");
      assert.ok(source.pods.stats.lists > lists, "relisted");
      assert.ok(logs.some((l) => l.includes("410 Gone")));
    }),
});

Deno.test({
  name:
    "kube source: a lost API server keeps the last good snapshot; changes after it returns apply",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      seed(api);
      await eventually(async () => "10.244.1.11" in await mapped(source), "the seeded pod");
      const before = await mapped(source);
      api.setAvailable(false);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await mapped(source), before, "nothing is removed while the API is gone");
      api.apply(podObject("default", "pod4", "10.244.1.14"));
      api.apply(
        policyObject("default", "p4", { vip: "office", targets: [{ kind: "Pod", name: "pod4" }] }),
      );
      api.setAvailable(true);
      await eventually(
        async () => "10.244.1.14" in await mapped(source),
        "pod4 once the API is back",
      );
    }),
});

Deno.test({
  name: "kube source: wrong credentials fail the first pass with a clear error",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ token: TOKEN });
    const client = await KubeClient.connect({ server: api.url, token: { data: "wrong" } });
    const source = new KubeSource(client, createLogger("text", () => {}), { syncTimeoutMs: 300 })
      .start();
    try {
      await assert.rejects(
        source.readInputs(),
        /no complete list yet from the Kubernetes API .*401 Unauthorized/,
      );
    } finally {
      await source.stop();
      client.close();
      await api.stop();
    }
  },
});

Deno.test({
  name: "kube source: eligible VIPs follow the node selector and cordoning",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      api.apply(
        vipObject("a", { ip: "192.0.2.50", nodeSelector: { matchLabels: { egress: "yes" } } }),
      );
      api.apply(vipObject("b", { ip: "192.0.2.51" }));
      api.apply({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: "n1", labels: { egress: "yes" } },
        spec: {},
      });
      api.apply({ apiVersion: "v1", kind: "Node", metadata: { name: "n2", labels: {} }, spec: {} });
      await source.waitForSync();
      await eventually(
        () => source.nodes.store.size === 2 && source.vips.store.size === 2,
        "objects",
      );
      assert.deepEqual([...source.eligibleVips("n1")].sort(), ["192.0.2.50", "192.0.2.51"]);
      assert.deepEqual([...source.eligibleVips("n2")], ["192.0.2.51"]);
      api.apply({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: "n1", labels: { egress: "yes" } },
        spec: { unschedulable: true },
      });
      await eventually(() => source.eligibleVips("n1").size === 0, "cordon");
      // The snapshot carries it for VIP placement (only VIPs with a route id are in it).
      const client = source.client;
      const n2 = new KubeSource(client, createLogger("text", () => {}), { nodeName: "n2" }).start();
      try {
        api.apply(vipObject("b", { ip: "192.0.2.51" }, { status: { routeId: 3 } }));
        await eventually(
          async () => (await n2.readInputs()).vips.length === 1,
          "VIP b in the snapshot",
        );
        assert.deepEqual((await n2.readInputs()).vips.map((v) => [v.ip, v.eligible]), [[
          "192.0.2.51",
          true,
        ]]);
        api.apply({
          apiVersion: "v1",
          kind: "Node",
          metadata: { name: "n2", labels: {} },
          spec: { unschedulable: true },
        });
        await eventually(
          async () => (await n2.readInputs()).vips[0].eligible === false,
          "drained: ineligible",
        );
      } finally {
        await n2.stop();
      }
    }),
});

Deno.test({
  name:
    "kube source: with VRRP peers from the Nodes each VIP lists the InternalIPs of the nodes that may hold it",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      const node = (name: string, ip: string | undefined, labels = {}, spec = {}) => ({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name, labels },
        spec,
        status: { addresses: ip ? [{ type: "InternalIP", address: ip }] : [] },
      });
      api.apply(vipObject("a", { ip: "192.0.2.50", nodeSelector: { matchLabels: { gw: "y" } } }, {
        status: { routeId: 1 },
      }));
      api.apply(vipObject("b", { ip: "192.0.2.51" }, { status: { routeId: 2 } }));
      api.apply(node("n1", "192.0.2.12", { gw: "y" }));
      api.apply(node("n2", "192.0.2.11", { gw: "y" }));
      api.apply(node("n3", "192.0.2.13"));
      api.apply(node("n4", undefined, { gw: "y" })); // no address: cannot take part
      const n3 = new KubeSource(source.client, createLogger("text", () => {}), {
        nodeName: "n3",
        vrrpPeers: true,
      }).start();
      const peers = async () =>
        Object.fromEntries((await n3.readInputs()).vips.map((v) => [v.ip, v.peers]));
      try {
        await eventually(async () => (await n3.readInputs()).vips.length === 2, "both VIPs");
        await eventually(async () => (await peers())["192.0.2.51"]?.length === 3, "all nodes");
        assert.deepEqual(await peers(), {
          "192.0.2.50": ["192.0.2.11", "192.0.2.12"],
          "192.0.2.51": ["192.0.2.11", "192.0.2.12", "192.0.2.13"],
        });
        // The guard's node lists (core/guard.ts): the same nodes, with or without the option.
        const guardNodes = async () =>
          Object.fromEntries((await n3.readInputs()).vips.map((v) => [v.ip, v.nodes]));
        assert.deepEqual(await guardNodes(), await peers());
        // A cordoned node leaves the peer lists, but stays trusted by the guard: it holds
        // the VIP until its keepalived hands it over.
        api.apply(node("n2", "192.0.2.11", { gw: "y" }, { unschedulable: true }));
        await eventually(async () => (await peers())["192.0.2.50"]?.length === 1, "cordon");
        assert.deepEqual((await peers())["192.0.2.51"], ["192.0.2.12", "192.0.2.13"]);
        assert.deepEqual((await guardNodes())["192.0.2.50"], ["192.0.2.11", "192.0.2.12"]);
        // Without the option the snapshot carries no peers.
        assert.ok((await source.readInputs()).vips.every((v) => v.peers === undefined));
      } finally {
        await n3.stop();
      }
    }),
});

Deno.test({
  name:
    "kube source: status writes reach the caches but trigger no pass; the inputs stay the same object",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      seed(api);
      await eventually(async () => "10.244.1.11" in await mapped(source), "the seeded pod");
      const before = await source.readInputs();
      let passes = 0;
      let cacheChanges = 0;
      source.watchInputs(() => passes++);
      source.watchCaches(() => cacheChanges++);
      // What the agents themselves write: a holder, policy counts, pod conditions.
      api.apply(
        vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5, holder: "n1" } }),
      );
      api.apply(
        policyObject(
          "default",
          "pod1",
          { vip: "office", targets: [{ kind: "Pod", name: "pod1" }] },
          {
            status: { pods: 1 },
          },
        ),
      );
      await eventually(() => cacheChanges >= 2, "the status writes in the caches");
      assert.equal(
        (source.vips.store.get("office")?.status as { holder?: string }).holder,
        "n1",
        "the cache has the new status (the elected writer reads it)",
      );
      assert.equal(passes, 0, "no pass for writes that change no egress");
      assert.equal(await source.readInputs(), before, "the same inputs: not validated again");
      // A change that matters still does.
      api.apply(
        vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 6, holder: "n1" } }),
      );
      await eventually(() => passes >= 1, "a pass for the new route id");
      assert.notEqual(await source.readInputs(), before);
    }),
});

Deno.test({
  name: "kube source: readiness names the collections not yet listed or whose watch fails",
  ...opts,
  fn: () =>
    setup(async (api, source) => {
      seed(api);
      await source.waitForSync();
      assert.equal(source.problem(), undefined);
      api.setAvailable(false);
      await eventually(
        () => /^list\/watch failing for .*pods.*503/.test(source.problem() ?? ""),
        "not ready while the API server refuses",
      );
      api.setAvailable(true);
      await eventually(() => source.problem() === undefined, "ready again once watches resume");
    }),
});
