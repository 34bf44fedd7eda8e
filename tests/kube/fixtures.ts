/** Builders for Kubernetes objects in tests: short specs in, API-shaped objects out. */
import { API_VERSION } from "../../core/kube/api.ts";
import type { CustomRecord, PodRecord } from "../../core/kube/objects.ts";

let clock = 0;
/** Increasing creation timestamps, so "older" is the order of creation in a test. */
export function tick(): string {
  clock++;
  return new Date(Date.UTC(2026, 0, 1, 0, 0, clock)).toISOString();
}

export function vipObject(
  name: string,
  spec: Record<string, unknown>,
  extra: { status?: Record<string, unknown>; created?: string; deleting?: boolean } = {},
) {
  return {
    apiVersion: API_VERSION,
    kind: "EgressVIP",
    metadata: {
      name,
      uid: `uid-${name}`,
      resourceVersion: "1",
      generation: 1,
      creationTimestamp: extra.created ?? tick(),
      ...(extra.deleting ? { deletionTimestamp: "2026-02-01T00:00:00Z" } : {}),
    },
    spec,
    ...(extra.status ? { status: extra.status } : {}),
  };
}

export function policyObject(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  extra: { status?: Record<string, unknown>; created?: string } = {},
) {
  return {
    apiVersion: API_VERSION,
    kind: "EgressPolicy",
    metadata: {
      namespace,
      name,
      uid: `uid-${namespace}-${name}`,
      resourceVersion: "1",
      generation: 1,
      creationTimestamp: extra.created ?? tick(),
    },
    spec,
    ...(extra.status ? { status: extra.status } : {}),
  };
}

export function record(object: ReturnType<typeof vipObject>): CustomRecord {
  return { metadata: object.metadata, spec: object.spec, status: object.status };
}

export function pod(
  namespace: string,
  name: string,
  ip: string | undefined,
  extra: Partial<PodRecord> = {},
): PodRecord {
  return {
    namespace,
    name,
    labels: {},
    ip,
    node: "node1",
    hostNetwork: false,
    finished: false,
    created: tick(),
    ...extra,
  };
}

/** A Pod object as the API returns it. */
export function podObject(
  namespace: string,
  name: string,
  ip: string | undefined,
  extra: {
    labels?: Record<string, string>;
    node?: string;
    owner?: { kind: string; name: string };
    phase?: string;
  } = {},
) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      namespace,
      name,
      uid: `uid-${namespace}-${name}`,
      creationTimestamp: tick(),
      labels: extra.labels ?? {},
      ...(extra.owner
        ? {
          ownerReferences: [{
            apiVersion: "apps/v1",
            kind: extra.owner.kind,
            name: extra.owner.name,
            uid: `uid-${extra.owner.name}`,
            controller: true,
          }],
        }
        : {}),
    },
    spec: { nodeName: extra.node ?? "node1", containers: [{ name: "c", image: "busybox" }] },
    status: {
      phase: extra.phase ?? "Running",
      ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}),
    },
  };
}

/** Waits until `check` holds (bounded: 100 tries, 50 ms apart). */
export async function eventually(check: () => boolean | Promise<boolean>, what: string) {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
