/**
 * Watching and breaking VIP placement in the simulator (agents in keepalived
 * mode): who should hold a VIP, who does, what each agent thinks, and the two
 * faults the failover benchmark injects (a dead keepalived, a pulled cable).
 */
import { vrrpPriority } from "../core/keepalived.ts";
import { type AgentProcess, hostPidOf, stateDirOf } from "./agents.ts";
import type { Cluster, SimNode } from "./cluster.ts";
import { type VipDriver, vipHolders } from "./vip.ts";

/**
 * Nodes in the order keepalived elects them for a VIP: by VRRP priority (the
 * agent's hash of VIP and node name), equal priorities broken by the higher
 * address (in the simulator: the higher node index), as VRRP does. Pure, for
 * layouts as well as running clusters.
 */
export function rankNodes<T extends { readonly name: string; readonly index: number }>(
  vip: string,
  nodes: readonly T[],
): T[] {
  return [...nodes].sort((a, b) =>
    vrrpPriority(vip, b.name) - vrrpPriority(vip, a.name) || b.index - a.index
  );
}

/** Nodes by their VRRP priority for a VIP: where keepalived puts it first, then who takes over. */
export function ranking(cluster: Cluster, vip: string): SimNode[] {
  return rankNodes(vip, cluster.nodes);
}

/** The nodes that have the VIP on their interface right now (exact address match). */
export async function holdersOf(cluster: Cluster, vip: string): Promise<string[]> {
  const holders = await vipHolders(cluster.nodes, [vip], cluster.spec.iface);
  return holders.get(vip)!.map((n) => n.name);
}

/** The role an agent last logged for a VIP ("holder", "forwarder", "none"), or undefined. */
export function lastRole(agent: AgentProcess, vip: string): string | undefined {
  const pattern = new RegExp(`VIP role vip=${vip.replaceAll(".", "\\.")} from=\\S+ to=(\\S+)`);
  for (let i = agent.lines.length - 1; i >= 0; i--) {
    const match = pattern.exec(agent.lines[i]);
    if (match) return match[1];
  }
  return undefined;
}

/**
 * Waits (bounded) until exactly `node` holds the VIP and every agent's last
 * logged role agrees: holder there, forwarder everywhere else.
 */
export async function waitForPlacement(
  cluster: Cluster,
  agents: readonly AgentProcess[],
  vip: string,
  node: SimNode,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let last = "";
  while (performance.now() < deadline) {
    const holders = await holdersOf(cluster, vip);
    const roles = agents.map((a) => `${a.node.name}=${lastRole(a, vip)}`);
    const ok = holders.length === 1 && holders[0] === node.name &&
      agents.every((a) => lastRole(a, vip) === (a.node === node ? "holder" : "forwarder"));
    if (ok) return;
    last = `held by [${holders.join(", ")}], roles ${roles.join(" ")}`;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${vip} not settled on ${node.name} within ${timeoutMs} ms: ${last}`);
}

/**
 * SIGKILLs a node's keepalived (its VRRP child and the parent), as a crash
 * would: keepalived gets no chance to clean up or to say goodbye to its peers.
 */
export async function killKeepalived(cluster: Cluster, node: SimNode): Promise<void> {
  for (const file of ["vrrp.pid", "keepalived.pid"]) {
    const text = await Deno.readTextFile(`${stateDirOf(cluster, node)}/${file}`);
    try {
      Deno.kill(await hostPidOf(node, Number(text.trim()), "keepalived"), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** VRRP's multicast group, as a node's OUTPUT rule that drops it (a LAN without multicast). */
const DROP_VRRP_MULTICAST = ["OUTPUT", "-d", "224.0.0.18", "-j", "DROP"];

/** Every node drops what it sends to the VRRP multicast group: only unicast adverts get through. */
export async function dropVrrpMulticast(cluster: Cluster): Promise<void> {
  for (const node of cluster.nodes) {
    const r = await node.ns.exec(["iptables", "-I", ...DROP_VRRP_MULTICAST]);
    if (r.code !== 0) throw new Error(`${node.name}: ${r.stderr.trim()}`);
  }
}

/**
 * A LAN without multicast: drops VRRP multicast on every node and returns
 * `driver` with its agents told every node as unicast peer (VRRP adverts and
 * the NAT state sync, FTFW per peer, go by unicast).
 */
export async function overUnicast(cluster: Cluster, driver: VipDriver): Promise<VipDriver> {
  await dropVrrpMulticast(cluster);
  return {
    ...driver,
    agentFlags: [
      ...driver.agentFlags,
      "--vrrp-unicast-peers",
      cluster.nodes.map((n) => n.ip).join(","),
    ],
  };
}

/** Packets the node sent to the VRRP multicast group since `dropVrrpMulticast` (undefined: no rule). */
export async function multicastAdvertsDropped(node: SimNode): Promise<number | undefined> {
  const listing = await node.ns.exec(["iptables", "-nvxL", "OUTPUT"]);
  const dropped = /^\s*(\d+)\s+\d+\s+DROP\b.*224\.0\.0\.18/m.exec(listing.stdout);
  return dropped ? Number(dropped[1]) : undefined;
}
