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

/** A node the VIP's nodeSelector selects, as EgressVIP status.nodes lists it. */
export interface SelectedNode {
  readonly name: string;
  /** Its first IPv4 InternalIP. */
  readonly ip: string;
  /** Cordoned: it may not take the VIP (still trusted while it hands it over). */
  readonly cordoned?: boolean;
}

/**
 * For each VIP (by name), the nodes with an IPv4 InternalIP that its
 * nodeSelector selects, cordoned ones marked, sorted by address: what the
 * controller publishes in status.nodes, so that agents need not watch every
 * Node. The VRRP unicast peers are the ones not cordoned (`vrrpPeers`); the
 * guard trusts them all (`guardNodes`).
 */
export function selectedNodes(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
): Map<string, SelectedNode[]> {
  const addressed = [...nodes].filter((n) => n.internalIp !== undefined);
  const out = new Map<string, SelectedNode[]>();
  for (const vip of vips) {
    const spec = EgressVIPSpec.safeParse(vip.spec);
    if (!spec.success) continue;
    out.set(
      vip.metadata.name,
      addressed.filter((n) => optionalSelectorMatches(spec.data.nodeSelector, n.labels))
        .map((n) => ({
          name: n.name,
          ip: n.internalIp!,
          ...(n.unschedulable ? { cordoned: true } : {}),
        }))
        .sort((a, b) => compareIPv4(a.ip, b.ip) || (a.name < b.name ? -1 : 1)),
    );
  }
  return out;
}
