/**
 * Watching and breaking VIP placement in the simulator (agents in keepalived
 * mode): who should hold a VIP, who does, what each agent thinks, and the two
 * faults the failover benchmark injects (a dead keepalived, a pulled cable).
 */
import { vrrpPriority } from "../core/keepalived.ts";
import { type AgentProcess, stateDirOf } from "./agents.ts";
import type { Cluster, SimNode } from "./cluster.ts";

/** Nodes by their VRRP priority for a VIP: where keepalived puts it first, then who takes over. */
export function ranking(cluster: Cluster, vip: string): SimNode[] {
  return [...cluster.nodes].sort((a, b) => vrrpPriority(vip, b.name) - vrrpPriority(vip, a.name));
}

/** The nodes that have the VIP on their interface right now (exact address match). */
export async function holdersOf(cluster: Cluster, vip: string): Promise<string[]> {
  const found: string[] = [];
  for (const node of cluster.nodes) {
    const out = await node.ns.run(["ip", "-4", "-o", "address", "show", "dev", cluster.spec.iface]);
    if (out.split(/\s+/).includes(`${vip}/32`)) found.push(node.name);
  }
  return found;
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
      Deno.kill(Number(text.trim()), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}
