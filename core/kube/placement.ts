/**
 * Which nodes may hold which VIPs, from the EgressVIP objects and the Nodes:
 * a node may hold a VIP when the VIP's nodeSelector matches its labels and
 * it is not cordoned. Each agent uses this for itself (its keepalived runs
 * only the instances it may hold) and, for VRRP over unicast, for all nodes
 * (each instance advertises to the nodes that may hold its VIP).
 */
import { compareIp } from "../ip.ts";
import { EgressVIPSpec, vipAddresses } from "./api.ts";
import type { CustomRecord, NodeRecord } from "./objects.ts";
import { optionalSelectorMatches } from "./selector.ts";

/**
 * The family a VIP's VRRP instance runs in (core/keepalived.ts): IPv4 where
 * the VIP has an IPv4 address, else IPv6. Its unicast peers and the guard's
 * trusted nodes are the nodes' InternalIPs of that family.
 */
export function instanceFamily(spec: EgressVIPSpec): 4 | 6 {
  return vipAddresses(spec).some((ip) => !ip.includes(":")) ? 4 : 6;
}

/** A node's InternalIP in the family of the VIP's instance, if it has one. */
function nodeAddress(spec: EgressVIPSpec, node: NodeRecord): string | undefined {
  return instanceFamily(spec) === 4 ? node.internalIp : node.internalIpv6;
}

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

/** The VIP addresses (each family of a dual-stack VIP) `node` may hold (none for an unknown node). */
export function eligibleVips(
  vips: Iterable<CustomRecord>,
  node: NodeRecord | undefined,
): Set<string> {
  const eligible = new Set<string>();
  if (!node) return eligible;
  for (const spec of validSpecs(vips)) {
    if (mayHold(spec, node)) { for (const ip of vipAddresses(spec)) eligible.add(ip); }
  }
  return eligible;
}

/** For each VIP, `pick` of the nodes with an InternalIP of its instance's family, by address. */
function byVip(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
  pick: (spec: EgressVIPSpec, node: NodeRecord) => boolean,
): Map<string, string[]> {
  const all = [...nodes];
  const result = new Map<string, string[]>();
  for (const spec of validSpecs(vips)) {
    const ips = all.filter((n) => pick(spec, n))
      .map((n) => nodeAddress(spec, n))
      .filter((ip): ip is string => ip !== undefined)
      .sort(compareIp);
    for (const ip of vipAddresses(spec)) result.set(ip, ips);
  }
  return result;
}

/**
 * For each VIP address (both of a dual-stack VIP), the InternalIP addresses
 * of the nodes that may hold it, in the family of its VRRP instance
 * (`instanceFamily`), sorted (equal clusters render equal keepalived
 * configurations). Nodes without an InternalIP of that family cannot take
 * part and are left out.
 */
export function vrrpPeers(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
): Map<string, string[]> {
  return byVip(vips, nodes, mayHold);
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
  return byVip(vips, nodes, (spec, n) => optionalSelectorMatches(spec.nodeSelector, n.labels));
}

/** A node the VIP's nodeSelector selects, as EgressVIP status.nodes lists it. */
export interface SelectedNode {
  readonly name: string;
  /** Its first InternalIP of the VIP's instance family (`instanceFamily`: IPv4 unless the VIP is IPv6-only). */
  readonly ip: string;
  /** Cordoned: it may not take the VIP (still trusted while it hands it over). */
  readonly cordoned?: boolean;
}

/**
 * For each VIP (by name), the nodes with an InternalIP of its instance's
 * family (`instanceFamily`) that its nodeSelector selects, cordoned ones marked, sorted by address: what the
 * controller publishes in status.nodes, so that agents need not watch every
 * Node. The VRRP unicast peers are the ones not cordoned (`vrrpPeers`); the
 * guard trusts them all (`guardNodes`).
 */
export function selectedNodes(
  vips: Iterable<CustomRecord>,
  nodes: Iterable<NodeRecord>,
): Map<string, SelectedNode[]> {
  const all = [...nodes];
  const out = new Map<string, SelectedNode[]>();
  for (const vip of vips) {
    const spec = EgressVIPSpec.safeParse(vip.spec);
    if (!spec.success) continue;
    const selected: SelectedNode[] = [];
    for (const n of all) {
      const ip = nodeAddress(spec.data, n);
      if (ip === undefined || !optionalSelectorMatches(spec.data.nodeSelector, n.labels)) continue;
      selected.push({ name: n.name, ip, ...(n.unschedulable ? { cordoned: true } : {}) });
    }
    out.set(
      vip.metadata.name,
      selected.sort((a, b) => compareIp(a.ip, b.ip) || (a.name < b.name ? -1 : 1)),
    );
  }
  return out;
}
