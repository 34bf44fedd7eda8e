import assert from "node:assert/strict";
import fc from "fast-check";
import { VIP_FINALIZER } from "../../core/kube/api.ts";
import { reconcileWrites } from "../../core/kube/reconcile.ts";
import { assignRouteIds, type VipClaim } from "../../core/kube/route_ids.ts";
import { selectEgress } from "../../core/kube/selection.ts";
import type { CustomRecord } from "../../core/kube/objects.ts";
import { pod, policyObject, record, vipObject } from "./fixtures.ts";

const NOW = "2026-03-01T00:00:00.000Z";

function writes(
  vips: CustomRecord[],
  policies: CustomRecord[],
  pods = [pod("default", "p", "10.244.1.1")],
) {
  const selection = selectEgress({
    vips,
    policies,
    pods,
    namespaces: new Map([["default", { name: "default", labels: {} }]]),
    replicaSets: new Map(),
  });
  return reconcileWrites(vips, policies, selection, NOW);
}

Deno.test("route ids: explicit honoured, oldest wins a clash, assigned ids are kept, lowest free otherwise", () => {
  const result = assignRouteIds([
    { name: "b", created: "2", ip: "192.0.2.2", specRouteId: 1 },
    { name: "a", created: "1", ip: "192.0.2.1", statusRouteId: 1 },
    { name: "c", created: "3", ip: "192.0.2.3" },
    { name: "d", created: "4", ip: "192.0.2.1" },
    { name: "e", created: "5", invalid: "invalid spec: ip bad" },
    { name: "f", created: "6", ip: "192.0.2.6", statusRouteId: 9 },
  ]);
  assert.deepEqual(result.get("a"), { routeId: 1, explicit: false });
  assert.deepEqual(result.get("b"), {
    problem: "RouteIdConflict",
    message: "route id 1 is already used by the older EgressVIP a",
  });
  assert.deepEqual(result.get("c"), { routeId: 2, explicit: false });
  assert.equal((result.get("d") as { problem: string }).problem, "DuplicateIP");
  assert.equal((result.get("e") as { problem: string }).problem, "InvalidSpec");
  assert.deepEqual(result.get("f"), { routeId: 9, explicit: false });
});

Deno.test("property: route ids are unique, in range, and stable once written back", () => {
  const claim = fc.record({
    ip: fc.integer({ min: 1, max: 20 }),
    spec: fc.option(fc.integer({ min: 1, max: 252 }), { nil: undefined }),
    status: fc.option(fc.integer({ min: 1, max: 252 }), { nil: undefined }),
  });
  fc.assert(
    fc.property(fc.array(claim, { maxLength: 30 }), (list) => {
      const claims: VipClaim[] = list.map((c, i) => ({
        name: `v${i}`,
        created: String(i).padStart(3, "0"),
        ip: `192.0.2.${c.ip}`,
        specRouteId: c.spec,
        statusRouteId: c.status,
      }));
      const first = assignRouteIds(claims);
      const ids = [...first.values()].flatMap((a) => ("routeId" in a ? [a.routeId] : []));
      assert.equal(new Set(ids).size, ids.length, "unique");
      assert.ok(ids.every((id) => id >= 1 && id <= 252));
      // Written back to status, the next round changes nothing.
      const again = assignRouteIds(claims.map((c) => {
        const a = first.get(c.name)!;
        return { ...c, statusRouteId: "routeId" in a ? a.routeId : undefined };
      }));
      assert.deepEqual(Object.fromEntries(again), Object.fromEntries(first));
    }),
    { numRuns: 300 },
  );
});

Deno.test("reconcile: statuses, conditions and events for a working policy and VIP; then no writes", () => {
  const vip = record(vipObject("office", { ip: "192.0.2.50" }));
  const policy = record(policyObject("default", "pol", { vip: "office", podSelector: {} }));
  const first = writes([vip], [policy]);
  assert.equal(first.statuses.length, 2);
  const vipWrite = first.statuses.find((s) => s.object.kind === "EgressVIP")!;
  assert.equal(vipWrite.status.routeId, 1);
  assert.deepEqual(vipWrite.events.map((e) => e.reason), ["RouteIdAssigned"]);
  assert.deepEqual(first.finalizers.map((f) => f.finalizers), [[VIP_FINALIZER]]);
  // The policy waits for the route id: not ready yet, with a warning.
  const polWrite = first.statuses.find((s) => s.object.kind === "EgressPolicy")!;
  assert.equal(polWrite.events[0].reason, "RejectedVIPNotReady");

  // Apply the writes; the next round sees a ready policy with one pod.
  const vip2 = {
    ...vip,
    status: vipWrite.status,
    metadata: { ...vip.metadata, finalizers: [VIP_FINALIZER] },
  };
  const policy2 = { ...policy, status: polWrite.status };
  const second = writes([vip2], [policy2]);
  const pol = second.statuses.find((s) => s.object.kind === "EgressPolicy")!;
  const conditions = pol.status.conditions as { type: string; status: string; reason: string }[];
  assert.deepEqual(conditions.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "True", "Applied"],
    ["VIPNotFound", "False", "VIPFound"],
    ["NotAllowed", "False", "Allowed"],
    ["Conflict", "False", "NoConflict"],
  ]);
  assert.equal(pol.status.pods, 1);
  assert.deepEqual(pol.events.map((e) => e.reason), ["Applied"]);
  const vip3 = {
    ...vip2,
    status: second.statuses.find((s) => s.object.kind === "EgressVIP")!.status,
  };
  const third = writes([vip3], [{ ...policy2, status: pol.status }]);
  assert.deepEqual(third, { statuses: [], finalizers: [] }, "an unchanged cluster gets no writes");
});

Deno.test("reconcile: a deleted VIP in use keeps its finalizer and says why; released when unused", () => {
  const vip = record(
    vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 3 }, deleting: true }),
  );
  vip.metadata.finalizers = [VIP_FINALIZER, "other/keep"];
  const policy = record(policyObject("default", "pol", { vip: "office", podSelector: {} }));
  const blocked = writes([vip], [policy]);
  assert.deepEqual(blocked.finalizers, []);
  const status = blocked.statuses.find((s) => s.object.kind === "EgressVIP")!;
  const inUse = (status.status.conditions as { type: string; reason: string; message: string }[])
    .find((c) => c.type === "InUse")!;
  assert.equal(inUse.reason, "DeletionBlocked");
  assert.match(inUse.message, /deletion waits until no EgressPolicy uses it; used by default\/pol/);
  assert.ok(status.events.some((e) => e.reason === "DeletionBlocked"));
  const released = writes([vip], []);
  assert.deepEqual(released.finalizers.map((f) => f.finalizers), [["other/keep"]]);
});

Deno.test("reconcile: the holder a node reported is kept; lastTransitionTime survives unchanged conditions", () => {
  const vip = record(vipObject("office", { ip: "192.0.2.50" }, {
    status: {
      routeId: 1,
      holder: "node2",
      conditions: [{
        type: "Ready",
        status: "True",
        reason: "Old",
        message: "m",
        lastTransitionTime: "2020-01-01T00:00:00Z",
      }],
    },
  }));
  const w = writes([vip], []);
  const status = w.statuses[0].status as {
    holder: string;
    conditions: { type: string; lastTransitionTime: string }[];
  };
  assert.equal(status.holder, "node2");
  assert.equal(
    status.conditions.find((c) => c.type === "Ready")!.lastTransitionTime,
    "2020-01-01T00:00:00Z",
  );
  assert.equal(status.conditions.find((c) => c.type === "InUse")!.lastTransitionTime, NOW);
});
