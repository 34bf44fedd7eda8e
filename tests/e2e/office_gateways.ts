/**
 * The Kubernetes setup the VRRP e2e tests share (kube.e2e unicast peers,
 * rogue.e2e): node1 and node2 labelled gateways, the EgressVIP "office" on
 * them, and node3's first pod sent through it by a policy.
 */
import type { Cluster, SimNode, SimPod } from "../../sim/cluster.ts";
import {
  egressPolicy,
  egressVip,
  nodeObject,
  podObject,
  type SimApiServer,
} from "../../sim/kube_sim.ts";

/** The label that makes a node eligible for the office VIP. */
export const GATEWAY_LABEL = { "egress.kube-egress.io/gateway": "true" };

/**
 * Applies the gateway labels, the EgressVIP "office" (`vip`, route id 4,
 * gateways only), the policy default/apps (pods labelled egress=office) and
 * node3's first pod with that label; returns the gateways and the pod.
 */
export async function applyOfficeGateways(
  cluster: Cluster,
  api: SimApiServer,
  vip: string,
): Promise<{ gateways: SimNode[]; pod: SimPod }> {
  const gateways = cluster.nodes.slice(0, 2);
  for (const node of gateways) await api.apply(nodeObject(node, { ...GATEWAY_LABEL }));
  await api.apply(egressVip("office", {
    ip: vip,
    routeId: 4,
    nodeSelector: { matchLabels: { ...GATEWAY_LABEL } },
  }));
  await api.apply(egressPolicy("default", "apps", {
    vip: "office",
    podSelector: { matchLabels: { egress: "office" } },
  }));
  const pod = cluster.pod(3, 1);
  await api.apply(podObject(pod, "app", { labels: { egress: "office" } }));
  return { gateways, pod };
}
