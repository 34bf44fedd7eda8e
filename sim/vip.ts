/**
 * Manual VIP placement (the deterministic mode): the address is removed from
 * whichever node has it, added to the chosen node as a /32, and announced with
 * a gratuitous ARP so that the LAN's neighbour caches follow at once.
 */
import type { SimNode } from "./cluster.ts";

/** Puts `vip` on `node` (and off every other node). `null` removes it everywhere. */
export async function placeVip(
  nodes: readonly SimNode[],
  vip: string,
  node: SimNode | null,
  iface: string,
) {
  for (const other of nodes) {
    if (other !== node) await other.ns.exec(["ip", "addr", "del", `${vip}/32`, "dev", iface]);
  }
  if (!node) return;
  await node.ns.run(["ip", "addr", "replace", `${vip}/32`, "dev", iface]);
  await announce(node, vip, iface);
}

/** Sends unsolicited ARP replies for `vip` from `node` (Habets arping: -U with -P). */
export async function announce(node: SimNode, vip: string, iface: string) {
  const args = ["arping", "-q", "-U", "-P", "-c", "2", "-w", "1", "-i", iface, "-S", vip, "-B"];
  // Exit 1 means "no replies", which is normal for unsolicited ARP; anything else is a failure.
  const result = await node.ns.exec(args);
  if (result.code > 1 || result.stderr.trim()) {
    throw new Error(`arping on ${node.name} failed: ${result.stderr.trim()}`);
  }
}
