/**
 * Which nodes may hold which VIPs, from the EgressVIP objects and the Nodes:
 * a node may hold a VIP when the VIP's nodeSelector matches its labels and
 * it is not cordoned. Each agent uses this for itself (its keepalived runs
 * only the instances it may hold) and, for VRRP over unicast, for all nodes
 * (each instance advertises to the nodes that may hold its VIP).
 */
import { compareIPv4 } from "../ip.ts";
import { EgressVIPSpec } from "./api.ts";
import type { CustomRecord, NodeRecord } from "./objects.ts";
import { optionalSelectorMatches } from "./selector.ts";

function mayHold(spec: EgressVIPSpec, node: NodeRecord): boolean {
  return !node.unschedulable && optionalSelectorMatches(spec.nodeSelector, node.labels);
}

function validSpecs(vips: Iterable<CustomRecord>): EgressVIPSpec[] {
  const specs: EgressVIPSpec[] = [];
  for (const vip of vips) {
    const spec = EgressVIPSpec.safeParse(vip.spec);
    if (spec.success) specs.push(spec.data);
  }
  return specs;
}

/** The VIP addresses `node` may hold (none for an unknown node). */
export function eligibleVips(
  vips: Iterable<CustomRecord>,
  node: NodeRecord | undefined,
): Set<string> {
  const eligible = new Set<string>();
  if (!node) return eligible;
  for (const spec of validSpecs(vips)) if (mayHold(spec, node)) eligible.add(spec.ip);
  return eligible;
}

/**
 * For each VIP, the InternalIP addresses of the nodes that may hold it,
 * sorted (equal clusters render equal keepalived configurations). Nodes
 * without an IPv4 InternalIP cannot take part and are left out.
 */
export function vrrpPeers(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
): Map<string, string[]> {
  const addressed = [...nodes].filter((n) => n.internalIp !== undefined);
  const peers = new Map<string, string[]>();
  for (const spec of validSpecs(vips)) {
    const ips = addressed.filter((n) => mayHold(spec, n)).map((n) => n.internalIp!);
    peers.set(spec.ip, ips.sort(compareIPv4));
  }
  return peers;
}

/**
 * For each VIP, the InternalIPs of the nodes its nodeSelector selects,
 * cordoned ones included: the guard (core/guard.ts) lets only these attract
 * its traffic and advertise it. A node being cordoned still holds the VIP
 * until its keepalived hands it over, so it stays trusted meanwhile.
 */
export function guardNodes(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
): Map<string, string[]> {
  const addressed = [...nodes].filter((n) => n.internalIp !== undefined);
  const result = new Map<string, string[]>();
  for (const spec of validSpecs(vips)) {
    const ips = addressed.filter((n) => optionalSelectorMatches(spec.nodeSelector, n.labels))
      .map((n) => n.internalIp!);
    result.set(spec.ip, ips.sort(compareIPv4));
  }
  return result;
}
