import assert from "node:assert/strict";
import { customRecord, podRecord, sameForSelection, sameRecord } from "../../core/kube/objects.ts";
import { podObject, policyObject, vipObject } from "./fixtures.ts";

Deno.test("kube objects: a pod update that keeps its record (conditions, resourceVersion) is the same", () => {
  const pod = podObject("default", "web", "10.244.1.11", { labels: { app: "web" } });
  const updated = {
    ...pod,
    metadata: { ...pod.metadata, resourceVersion: "99" },
    status: { ...pod.status, conditions: [{ type: "Ready", status: "True" }] },
  };
  assert.equal(sameRecord(podRecord(pod), podRecord(updated)), true);
  const relabelled = { ...pod, metadata: { ...pod.metadata, labels: { app: "db" } } };
  assert.equal(sameRecord(podRecord(pod), podRecord(relabelled)), false);
});

Deno.test("kube objects: status writes other than a VIP's route id select the same egress", () => {
  const created = "2026-01-01T00:00:00Z";
  const vip = customRecord(
    vipObject("office", { ip: "192.0.2.50" }, { created, status: { routeId: 5 } }),
  )!;
  const withHolder = customRecord(
    vipObject("office", { ip: "192.0.2.50" }, { created, status: { routeId: 5, holder: "node1" } }),
  )!;
  assert.equal(sameForSelection(vip, withHolder), true);
  const renumbered = customRecord(
    vipObject("office", { ip: "192.0.2.50" }, { created, status: { routeId: 6 } }),
  )!;
  assert.equal(sameForSelection(vip, renumbered), false);
  const moved = customRecord(
    vipObject("office", { ip: "192.0.2.51" }, { created, status: { routeId: 5 } }),
  )!;
  assert.equal(sameForSelection(vip, moved), false);

  const policy = customRecord(
    policyObject("default", "all", { vip: "office", podSelector: {} }, { created }),
  )!;
  const counted = customRecord(
    policyObject("default", "all", { vip: "office", podSelector: {} }, {
      created,
      status: { pods: 3 },
    }),
  )!;
  assert.equal(sameForSelection(policy, counted), true);
  const narrowed = customRecord(
    policyObject("default", "all", { vip: "office", podSelector: { matchLabels: { a: "b" } } }, {
      created,
    }),
  )!;
  assert.equal(sameForSelection(policy, narrowed), false);
});
