/**
 * Manual VIP placement (the deterministic mode): the address is removed from
 * whichever node has it, added to the chosen node as a /32, and announced with
 * a gratuitous ARP so that the LAN's neighbour caches follow at once.
 */
import { EXTERNAL } from "./agents.ts";
import type { SimNode } from "./cluster.ts";

/** Puts `vip` on `node` (and off every other node). `null` removes it everywhere. */
export async function placeVip(
  nodes: readonly SimNode[],
  vip: string,
  node: SimNode | null,
  iface: string,
) {
  await Promise.all(
    nodes.filter((other) => other !== node).map((other) =>
      other.ns.exec(["ip", "addr", "del", `${vip}/32`, "dev", iface])
    ),
  );
  if (!node) return;
  await node.ns.run(["ip", "addr", "replace", `${vip}/32`, "dev", iface]);
  await announce(node, vip, iface);
}

/**
 * Sends gratuitous ARP for `vip` from `node`: broadcast requests whose sender
 * and target address are both the VIP (Habets arping: -U, -S vip, target vip),
 * the form neighbours apply at once. (A reply aimed at 255.255.255.255 is
 * ignored by a neighbour whose entry changed within its locktime, 1 s, which
 * is exactly when traffic is flowing.)
 */
export async function announce(node: SimNode, vip: string, iface: string) {
  const args = ["arping", "-q", "-U", "-c", "2", "-W", "0.05", "-i", iface, "-S", vip, vip];
  // Exit 1 means "no replies", which is normal for unsolicited ARP; anything else is a failure.
  const result = await node.ns.exec(args);
  if (result.code > 1 || result.stderr.trim()) {
    throw new Error(`arping on ${node.name} failed: ${result.stderr.trim()}`);
  }
}

/** The IPv4 addresses on a node's interface (exact, from `ip -json`). */
export async function nodeAddresses(node: SimNode, iface: string): Promise<string[]> {
  const out = await node.ns.run(["ip", "-json", "-4", "address", "show", "dev", iface]);
  const links = JSON.parse(out || "[]") as { addr_info?: { local?: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).map((a) => String(a.local)));
}

/** Which nodes hold each VIP right now (more than one is a split brain; none is an outage). */
export async function vipHolders(
  nodes: readonly SimNode[],
  vips: readonly string[],
  iface: string,
): Promise<Map<string, SimNode[]>> {
  const addresses = await Promise.all(nodes.map((n) => nodeAddresses(n, iface)));
  return new Map(vips.map((vip) => [vip, nodes.filter((_, i) => addresses[i].includes(vip))]));
}

/**
 * How the simulator floats VIPs. "manual": the simulator itself moves the
 * address and announces it (deterministic, for tests and the story).
 */
export interface VipDriver {
  readonly mode: string;
  /** Agent flags this mode needs. */
  readonly agentFlags: readonly string[];
  /** Puts each VIP on its node. */
  place(wanted: ReadonlyMap<string, SimNode>): Promise<void>;
  /** Takes `vip` away from `from`; resolves with the node that holds it now. */
  failover(vip: string, from: SimNode): Promise<SimNode>;
  /** Removes every VIP it placed (the end of a run). */
  release(vips: readonly string[]): Promise<void>;
}

/** The manual driver: `ip addr` + gratuitous ARP, the new holder being the next node. */
export function manualVips(nodes: readonly SimNode[], iface: string): VipDriver {
  return {
    mode: "manual",
    agentFlags: EXTERNAL,
    async place(wanted) {
      for (const [vip, node] of wanted) await placeVip(nodes, vip, node, iface);
    },
    async failover(vip, from) {
      if (nodes.length < 2) throw new Error("a failover needs at least two nodes");
      const to = nodes[(nodes.indexOf(from) + nodes.length - 1) % nodes.length];
      await placeVip(nodes, vip, to, iface);
      return to;
    },
    async release(vips) {
      for (const vip of vips) await placeVip(nodes, vip, null, iface);
    },
  };
}
