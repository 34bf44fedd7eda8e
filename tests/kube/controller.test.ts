import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import { Controller, HolderReporter, type RoundResult } from "../../cmd/kube/controller.ts";
import { LeaderElector } from "../../cmd/kube/leader.ts";
import { uninstall, UNINSTALL_PERMISSIONS } from "../../cmd/kube/uninstall.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { VIP_FINALIZER } from "../../core/kube/api.ts";
import { leaseAction, nextLeaseSpec, observe } from "../../core/kube/lease.ts";
import { startTestApiServer, type TestApiServer } from "../../sim/kube_api.ts";
import { eventually, podObject, policyObject, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

interface Node {
  name: string;
  client: KubeClient;
  source: KubeSource;
  controller: Controller;
  elector: LeaderElector;
  holder: HolderReporter;
  logs: string[];
}

async function node(api: TestApiServer, name: string): Promise<Node> {
  const client = await KubeClient.connect({ server: api.url });
  const logs: string[] = [];
  const log = createLogger("text", (l) => logs.push(l));
  const source = new KubeSource(client, log, { syncTimeoutMs: 5000 }).start();
  const controller = new Controller(client, source, log, name);
  const elector = new LeaderElector(client, log, {
    namespace: "kube-egress",
    name: "kube-egress-leader",
    identity: name,
    leaseDurationSeconds: 2,
    renewDeadlineMs: 1500,
    retryPeriodMs: 100,
    onChange: (leading) => controller.setActive(leading),
  }).start();
  const holder = new HolderReporter(client, source, log, name);
  return { name, client, source, controller, elector, holder, logs };
}

async function stopNode(n: Node) {
  n.holder.stop();
  await n.elector.stop();
  await n.controller.stop();
  await n.source.stop();
  n.client.close();
}

const condition = (object: unknown, type: string) =>
  ((object as {
    status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
  })
    .status?.conditions ?? []).find((c) => c.type === type);

Deno.test("lease: renew own, wait for a live holder, take over after the duration on our clock", () => {
  const held = observe(undefined, { holderIdentity: "a", leaseDurationSeconds: 10 }, 1000);
  assert.equal(leaseAction(held, "a", 1000), "renew");
  assert.equal(leaseAction(held, "b", 10_999), "wait");
  assert.equal(leaseAction(held, "b", 11_000), "acquire");
  // The record changed: the clock restarts.
  const renewed = observe(
    held,
    { holderIdentity: "a", leaseDurationSeconds: 10, renewTime: "x" },
    10_000,
  );
  assert.equal(leaseAction(renewed, "b", 11_000), "wait");
  assert.equal(leaseAction(observe(undefined, { holderIdentity: "" }, 0), "b", 0), "acquire");
  const next = nextLeaseSpec({ holderIdentity: "a", leaseTransitions: 2 }, "b", 15, new Date(0));
  assert.equal(next.leaseTransitions, 3);
  assert.equal(next.holderIdentity, "b");
});

Deno.test({
  name:
    "controller: one elected agent assigns route ids, writes status, finalizers and events; takeover on stop",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ bookmarkMs: 200 });
    api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
    api.apply(vipObject("office", { ip: "192.0.2.50" }));
    api.apply(vipObject("fixed", { ip: "192.0.2.51", routeId: 7 }));
    api.apply(
      policyObject("default", "pod1", { vip: "office", targets: [{ kind: "Pod", name: "pod1" }] }),
    );
    api.apply(policyObject("default", "lost", { vip: "nope", podSelector: {} }));
    api.apply(podObject("default", "pod1", "10.244.1.11"));
    const nodes = [await node(api, "node1"), await node(api, "node2")];
    try {
      await eventually(() => nodes.filter((n) => n.elector.leading).length === 1, "one leader");
      await eventually(() => api.get("EgressVIP", "office")?.status !== undefined, "VIP status");
      await eventually(
        () => condition(api.get("EgressPolicy", "pod1", "default"), "Ready")?.status === "True",
        "ready policy",
      );
      const office = api.get("EgressVIP", "office")!;
      assert.equal((office.status as { routeId: number }).routeId, 1);
      assert.equal((api.get("EgressVIP", "fixed")!.status as { routeId: number }).routeId, 7);
      await eventually(
        () => api.get("EgressVIP", "office")?.metadata.finalizers?.[0] === VIP_FINALIZER,
        "the finalizer",
      );
      const pol = api.get("EgressPolicy", "pod1", "default")!;
      assert.deepEqual((pol.status as { pods: number; ip: string }).pods, 1);
      assert.equal((pol.status as { ip: string }).ip, "192.0.2.50");
      await eventually(
        () =>
          condition(api.get("EgressPolicy", "lost", "default"), "VIPNotFound")?.status === "True",
        "VIPNotFound",
      );
      await eventually(
        () =>
          api.list("Event").some((e) =>
            (e as { reason?: string }).reason === "RejectedVIPNotFound"
          ),
        "a warning event for the rejected policy",
      );

      // Deleting a VIP in use: blocked by the finalizer, says why; released once unused.
      api.delete("EgressVIP", "office");
      await eventually(
        () => condition(api.get("EgressVIP", "office"), "InUse")?.reason === "DeletionBlocked",
        "blocked",
      );
      assert.match(
        condition(api.get("EgressVIP", "office"), "InUse")!.message,
        /used by default\/pod1/,
      );
      api.delete("EgressPolicy", "pod1", "default");
      await eventually(
        () => api.get("EgressVIP", "office") === undefined,
        "the VIP to go once unused",
      );

      // A node reports holding a VIP; the leader records a Moved event when it changes hands.
      const fixedIp = "192.0.2.51";
      nodes[0].holder.transition(fixedIp, "forwarder", "holder");
      await eventually(async () => {
        await nodes[0].holder.sync();
        return (api.get("EgressVIP", "fixed")!.status as { holder?: string }).holder === "node1";
      }, "holder node1");
      nodes[0].holder.transition(fixedIp, "holder", "forwarder");
      nodes[1].holder.transition(fixedIp, "forwarder", "holder");
      await eventually(async () => {
        await nodes[0].holder.sync();
        await nodes[1].holder.sync();
        return (api.get("EgressVIP", "fixed")!.status as { holder?: string }).holder === "node2";
      }, "holder node2");
      await eventually(
        () =>
          api.list("Event").some((e) => {
            const { reason, message } = e as { reason?: string; message?: string };
            return reason === "Moved" && /192.0.2.51 .*node2/.test(String(message));
          }),
        "a Moved event",
      );

      // The leader stops (rolling update): it hands the lease back and the other takes over.
      const leader = nodes.find((n) => n.elector.leading)!;
      const other = nodes.find((n) => n !== leader)!;
      await stopNode(leader);
      nodes.splice(nodes.indexOf(leader), 1);
      await eventually(() => other.elector.leading, "takeover");
      api.apply(vipObject("later", { ip: "192.0.2.52" }));
      await eventually(
        () => (api.get("EgressVIP", "later")?.status as { routeId?: number })?.routeId === 1,
        "the new leader writes",
      );
    } finally {
      for (const n of nodes) await stopNode(n);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "controller: an unchanged cluster gets no writes; a stale write gets 409 and converges after the watch",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ bookmarkMs: 200 });
    api.apply(vipObject("office", { ip: "192.0.2.50" }));
    const n = await node(api, "node1");
    try {
      await eventually(
        () => (api.get("EgressVIP", "office")?.status as { routeId?: number })?.routeId === 1,
        "route id",
      );
      await n.controller.idle();
      const rv = api.get("EgressVIP", "office")!.metadata.resourceVersion;
      const rounds = n.controller.rounds;
      n.controller.trigger();
      await eventually(() => n.controller.rounds > rounds, "another round");
      await n.controller.idle();
      assert.equal(api.get("EgressVIP", "office")!.metadata.resourceVersion, rv, "nothing written");
      // Our cache is stale (someone wrote since): the optimistic write gets 409 and changes nothing.
      const cached = n.source.vips.store.get("office")!;
      n.source.vips.store.set("office", {
        ...cached,
        metadata: { ...cached.metadata, resourceVersion: "1" },
        status: {},
      });
      const stale = await n.controller.round();
      assert.deepEqual([stale.writes, stale.conflicts], [0, 1]);
      assert.equal(api.get("EgressVIP", "office")!.metadata.resourceVersion, rv);
      // The watch brings the next version and the controller converges.
      api.apply(vipObject("office", { ip: "192.0.2.50", routeId: 9 }));
      await eventually(
        () => (api.get("EgressVIP", "office")?.status as { routeId?: number })?.routeId === 9,
        "route id 9",
      );
    } finally {
      await stopNode(n);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "holder: a report that loses the race with the elected agent's write (409) is retried without another pass",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer({ bookmarkMs: 200 });
    api.apply(vipObject("office", { ip: "192.0.2.50", routeId: 3 }));
    const n = await node(api, "node1");
    try {
      await n.source.waitForSync();
      await eventually(() => api.get("EgressVIP", "office")?.status !== undefined, "VIP status");
      await n.controller.idle();
      // The elected agent writes between our cache's version and our report: 409.
      const cached = n.source.vips.store.get("office")!;
      n.source.vips.store.set("office", {
        ...cached,
        metadata: { ...cached.metadata, resourceVersion: "1" },
      });
      n.holder.transition("192.0.2.50", "forwarder", "holder");
      n.holder.pass();
      api.apply(vipObject("office", { ip: "192.0.2.50", routeId: 4 }));
      // No pass follows (with the Kubernetes source the next may be minutes away).
      await eventually(
        () => (api.get("EgressVIP", "office")!.status as { holder?: string }).holder === "node1",
        "the holder reported by the retry",
      );
      await eventually(() => n.logs.some((l) => l.includes("reported holder")), "the log line");
    } finally {
      await stopNode(n);
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "controller: status and finalizer of a new VIP in use are written in one round, without a 409",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    api.apply(vipObject("office", { ip: "192.0.2.50" }));
    api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
    const client = await KubeClient.connect({ server: api.url });
    const log = createLogger("text", () => {});
    const source = new KubeSource(client, log).start();
    try {
      await source.waitForSync();
      const round = await new Controller(client, source, log, "node1").round();
      // The VIP's status, its finalizer, the policy's status.
      assert.deepEqual([round.writes, round.conflicts, round.errors], [3, 0, 0]);
      const vip = api.get("EgressVIP", "office")!;
      assert.deepEqual(vip.metadata.finalizers, [VIP_FINALIZER]);
      assert.equal((vip.status as { routeId: number }).routeId, 1);
    } finally {
      await source.stop();
      client.close();
      await api.stop();
    }
  },
});

/** One controller round against the server, with a synced source (no election). */
async function oneRound(
  api: TestApiServer,
  fn: (round: () => Promise<RoundResult>) => Promise<void>,
) {
  const client = await KubeClient.connect({ server: api.url });
  const log = createLogger("text", () => {});
  const source = new KubeSource(client, log).start();
  try {
    await source.waitForSync();
    const controller = new Controller(client, source, log, "node1");
    await fn(async () => {
      // The round reads the caches: let the watch bring the last writes first.
      await new Promise((r) => setTimeout(r, 100));
      return await controller.round();
    });
  } finally {
    await source.stop();
    client.close();
  }
}

Deno.test({
  name:
    "controller: the finalizer write keeps annotations and complete ownerReferences (a patch, not a PUT of the cached metadata)",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const owner = {
      apiVersion: "argoproj.io/v1alpha1",
      kind: "Application",
      name: "egress",
      uid: "6f1e0c2a-0000-4000-8000-000000000001",
      controller: true,
      blockOwnerDeletion: true,
    };
    const annotations = {
      "meta.helm.sh/release-name": "egress",
      "kubectl.kubernetes.io/last-applied-configuration": '{"spec":{"ip":"192.0.2.50"}}',
    };
    api.apply({
      ...vipObject("office", { ip: "192.0.2.50" }),
      metadata: { name: "office", annotations, ownerReferences: [owner], labels: { team: "a" } },
    });
    api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
    try {
      await oneRound(api, async (round) => {
        let result = await round();
        for (
          let i = 0;
          i < 3 && api.get("EgressVIP", "office")!.metadata.finalizers === undefined;
          i++
        ) {
          result = await round();
        }
        assert.equal(result.errors, 0, "no write refused");
        const vip = api.get("EgressVIP", "office")!;
        assert.deepEqual(vip.metadata.finalizers, [VIP_FINALIZER]);
        assert.deepEqual(vip.metadata.annotations, annotations);
        assert.deepEqual(vip.metadata.ownerReferences, [owner]);
        assert.deepEqual(vip.metadata.labels, { team: "a" });
      });
      // Only patches of the main resource: never a PUT that replaces metadata.
      assert.ok(
        !api.log.some((l) =>
          l.startsWith("PUT /apis/egress.kube-egress.io/v1alpha1/egressvips/office?") ||
          l === "PUT /apis/egress.kube-egress.io/v1alpha1/egressvips/office"
        ),
      );
      assert.ok(api.requests.has("egress.kube-egress.io/egressvips patch"));
    } finally {
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "controller: no finalizer is added to a VIP already being deleted (the API refuses it with 422)",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    // Someone else's finalizer keeps the VIP while it is being deleted.
    api.apply({
      ...vipObject("office", { ip: "192.0.2.50" }),
      metadata: { name: "office", finalizers: ["example.com/keep"] },
    });
    api.delete("EgressVIP", "office");
    api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
    try {
      await oneRound(api, async (round) => {
        for (let i = 0; i < 3; i++) {
          const result = await round();
          assert.equal(result.errors, 0, `round ${i}: no write refused`);
        }
        assert.deepEqual(api.get("EgressVIP", "office")!.metadata.finalizers, ["example.com/keep"]);
        // Still reported: its deletion waits for a finalizer that is not ours.
        assert.equal(condition(api.get("EgressVIP", "office"), "InUse")?.reason, "DeletionBlocked");
      });
    } finally {
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "controller: a VIP carries the in-use finalizer only while a policy uses it, so deleting the CRDs without agents completes",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    api.apply(vipObject("office", { ip: "192.0.2.50" }));
    api.apply(vipObject("spare", { ip: "192.0.2.51" }));
    api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
    try {
      await oneRound(api, async (round) => {
        for (let i = 0; i < 3; i++) await round();
        assert.deepEqual(api.get("EgressVIP", "office")!.metadata.finalizers, [VIP_FINALIZER]);
        assert.equal(api.get("EgressVIP", "spare")!.metadata.finalizers, undefined, "unused: none");
        api.delete("EgressPolicy", "p", "default");
        for (let i = 0; i < 3 && api.get("EgressVIP", "office")!.metadata.finalizers; i++) {
          await round();
        }
        assert.equal(
          api.get("EgressVIP", "office")!.metadata.finalizers,
          undefined,
          "released once unused",
        );
      });
      // The agents are gone (uninstall): deleting the CRDs deletes every object and completes.
      api.delete("CustomResourceDefinition", "egressvips.egress.kube-egress.io");
      await eventually(
        () => api.get("CustomResourceDefinition", "egressvips.egress.kube-egress.io") === undefined,
        "the CRD to go",
      );
      assert.deepEqual(api.store.list("egress.kube-egress.io/egressvips"), []);
    } finally {
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "controller: Events about an object with a long name still have a valid name (at most 253 characters)",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const name = `office-${"a".repeat(240)}`;
    api.apply(vipObject(name, { ip: "192.0.2.50" }));
    try {
      await oneRound(api, async (round) => {
        const result = await round();
        assert.equal(result.errors, 0);
        assert.ok(result.events > 0);
      });
      const events = api.list("Event", "default") as {
        metadata: { name: string };
        reason?: string;
      }[];
      assert.ok(events.some((e) => e.reason === "RouteIdAssigned"));
      for (const e of events) assert.ok(e.metadata.name.length <= 253, e.metadata.name);
    } finally {
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "uninstall: with a VIP in use and no agent left, `kube-egress uninstall` releases it and the CRDs' deletion completes",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    api.apply(vipObject("office", { ip: "192.0.2.50" }));
    api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
    try {
      await oneRound(api, async (round) => {
        for (let i = 0; i < 3; i++) await round();
      });
      assert.deepEqual(api.get("EgressVIP", "office")!.metadata.finalizers, [VIP_FINALIZER]);
      // `kubectl delete -k deploy/`: agents gone, CRDs deleted; the VIP in use keeps its CRD.
      for (const crd of ["egresspolicies", "egressvips"]) {
        api.delete("CustomResourceDefinition", `${crd}.egress.kube-egress.io`);
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(api.get("CustomResourceDefinition", "egressvips.egress.kube-egress.io"), "stuck");
      const lines = await uninstall({
        client: await KubeClient.connect({ server: api.url }, {
          permissions: UNINSTALL_PERMISSIONS,
        }),
      });
      assert.ok(lines.some((l) => l.includes("released EgressVIP office")), lines.join("\n"));
      await eventually(
        () => api.get("CustomResourceDefinition", "egressvips.egress.kube-egress.io") === undefined,
        "the CRD deletion to complete",
      );
    } finally {
      await api.stop();
    }
  },
});
