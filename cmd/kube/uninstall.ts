/**
 * `kube-egress uninstall`: the pre-delete step that makes an uninstall
 * complete without the agents. `kubectl delete -k deploy/` removes the agents,
 * their RBAC and the CRDs at the same moment; a VIP still in use then keeps
 * the in-use finalizer (only an agent removes it) and its CRD stays
 * Terminating. Run with the operator's credentials, this deletes every
 * EgressPolicy, takes our finalizer (and only ours) off every EgressVIP and
 * deletes them, so that nothing of ours waits for anyone. It also finishes an
 * uninstall that `kubectl delete` left hanging.
 */
import { VIP_FINALIZER } from "../../core/kube/api.ts";
import {
  EGRESS_POLICIES,
  EGRESS_VIPS,
  type Resource,
  type Verb,
} from "../../core/kube/resources.ts";
import { ApiError, KubeClient } from "./client.ts";

/** What uninstall needs (the operator's kubeconfig grants it; the agents' RBAC does not). */
export const UNINSTALL_PERMISSIONS: { resource: Resource; verbs: Verb[] }[] = [
  { resource: EGRESS_POLICIES, verbs: ["list", "delete"] },
  { resource: EGRESS_VIPS, verbs: ["list", "patch", "delete"] },
];

type Listed = {
  metadata: { name: string; namespace?: string; resourceVersion?: string; finalizers?: string[] };
};

/** Deletes every policy and VIP, releasing our finalizer; returns what it did, line by line. */
export async function uninstall(
  options: { kubeconfig?: string; client?: KubeClient } = {},
): Promise<string[]> {
  const client = options.client ??
    await KubeClient.fromEnvironment({
      kubeconfig: options.kubeconfig,
      permissions: UNINSTALL_PERMISSIONS,
    });
  const lines: string[] = [];
  const gone = (error: unknown) => error instanceof ApiError && error.status === 404;
  try {
    const listOrNone = async (resource: Resource) => {
      try {
        return (await client.list(resource)).items as Listed[];
      } catch (error) {
        if (gone(error)) return []; // the CRD is gone already
        throw error;
      }
    };
    for (const policy of await listOrNone(EGRESS_POLICIES)) {
      const { name, namespace } = policy.metadata;
      await client.delete(EGRESS_POLICIES, name, namespace).catch((e) => {
        if (!gone(e)) throw e;
      });
      lines.push(`deleted EgressPolicy ${namespace}/${name}`);
    }
    for (const vip of await listOrNone(EGRESS_VIPS)) {
      const { name, finalizers = [] } = vip.metadata;
      if (finalizers.includes(VIP_FINALIZER)) {
        const keep = finalizers.filter((f) => f !== VIP_FINALIZER);
        // Only our finalizer goes; the test makes it safe against a concurrent change.
        await client.patch(EGRESS_VIPS, name, undefined, [
          { op: "test", path: "/metadata/finalizers", value: finalizers },
          keep.length > 0
            ? { op: "replace", path: "/metadata/finalizers", value: keep }
            : { op: "remove", path: "/metadata/finalizers" },
        ], "json").catch((e) => {
          if (!gone(e)) throw e;
        });
        lines.push(`released EgressVIP ${name} (finalizer ${VIP_FINALIZER})`);
      }
      await client.delete(EGRESS_VIPS, name).catch((e) => {
        if (!gone(e)) throw e;
      });
      lines.push(`deleted EgressVIP ${name}`);
    }
    lines.push("no kube-egress object is left waiting: `kubectl delete -k deploy/` completes");
    return lines;
  } finally {
    if (!options.client) client.close();
  }
}
