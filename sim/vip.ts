/**
 * Manual VIP placement (the deterministic mode): the address is removed from
 * whichever node has it, added to the chosen node as a /32, and announced with
 * a gratuitous ARP so that the LAN's neighbour caches follow at once.
 */
import { EXTERNAL, hostPidOf } from "./agents.ts";
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

/** The IPv4 (or IPv6) addresses on a node's interface (exact, from `ip -json`). */
export async function nodeAddresses(
  node: SimNode,
  iface: string,
  family: 4 | 6 = 4,
): Promise<string[]> {
  const out = await node.ns.run(["ip", "-json", `-${family}`, "address", "show", "dev", iface]);
  const links = JSON.parse(out || "[]") as { addr_info?: { local?: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).map((a) => String(a.local)));
}

/** Which nodes hold each VIP right now (more than one is a split brain; none is an outage). */
export async function vipHolders(
  nodes: readonly SimNode[],
  vips: readonly string[],
  iface: string,
): Promise<Map<string, SimNode[]>> {
  const six = vips.some((v) => v.includes(":"));
  const addresses = await Promise.all(nodes.map(async (n) => [
    ...await nodeAddresses(n, iface),
    ...(six ? await nodeAddresses(n, iface, 6) : []),
  ]));
  return new Map(vips.map((vip) => [vip, nodes.filter((_, i) => addresses[i].includes(vip))]));
}

/**
 * How the simulator floats VIPs. "manual": the simulator moves the address
 * itself (deterministic); "keepalived": the agents' own keepalived (VRRP, one
 * instance per VIP) places them, and a failover stops the holder's keepalived.
 */
export interface VipDriver {
  readonly mode: VipMode;
  /** Agent flags this mode needs. */
  readonly agentFlags: readonly string[];
  /**
   * Once the agents run: puts each VIP on its node (manual), or waits until
   * keepalived has elected exactly one holder per VIP (keepalived). Resolves
   * with the holders.
   */
  settle(wanted: ReadonlyMap<string, SimNode>): Promise<Map<string, SimNode>>;
  /**
   * Takes `vip` away from `from` (manual: moves it to `to`; keepalived: stops
   * `from`'s keepalived and lets VRRP elect). Resolves with the new holder.
   */
  failover(vip: string, from: SimNode, to: SimNode): Promise<SimNode>;
  /**
   * What happens after a failover on its own, waited for: keepalived's agent
   * restarts keepalived, which takes the VIP back after its preempt delay.
   * Resolves with a sentence for the story, or undefined when nothing happens.
   */
  afterFailover(vip: string, from: SimNode): Promise<string | undefined>;
  /** Removes every VIP it placed (the end of a run; the agents are stopped). */
  release(vips: readonly string[]): Promise<void>;
}

export const VIP_MODES = ["keepalived", "manual"] as const;
export type VipMode = typeof VIP_MODES[number];

/** The manual driver: `ip addr` + gratuitous ARP; the agents only follow (`--vip-mode external`). */
export function manualVips(nodes: readonly SimNode[], iface: string): VipDriver {
  return {
    mode: "manual",
    agentFlags: EXTERNAL,
    async settle(wanted) {
      for (const [vip, node] of wanted) await placeVip(nodes, vip, node, iface);
      return new Map(wanted);
    },
    async failover(vip, _from, to) {
      await placeVip(nodes, vip, to, iface);
      return to;
    },
    afterFailover: () => Promise.resolve(undefined),
    async release(vips) {
      for (const vip of vips) await placeVip(nodes, vip, null, iface);
    },
  };
}

/** Polls `vipHolders` until `done` accepts them, or fails after `timeoutMs` saying what it saw. */
async function waitForHolders(
  nodes: readonly SimNode[],
  vips: readonly string[],
  iface: string,
  done: (holders: Map<string, SimNode[]>) => boolean,
  what: string,
  timeoutMs: number,
): Promise<Map<string, SimNode[]>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const holders = await vipHolders(nodes, vips, iface);
    if (done(holders)) return holders;
    if (Date.now() >= deadline) {
      const seen = [...holders].map(([v, n]) =>
        `${v} on ${n.map((x) => x.name).join("+") || "no node"}`
      );
      throw new Error(`${what} within ${timeoutMs / 1000} s; seen: ${seen.join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The keepalived driver. The agents run keepalived with a preempt delay of
 * `preemptDelay` seconds: a node that comes back waits that long before it
 * takes its VIPs back.
 */
export function keepalivedVips(
  nodes: readonly SimNode[],
  iface: string,
  stateDir: (node: SimNode) => string,
  preemptDelay = 5,
): VipDriver {
  const only = (holders: Map<string, SimNode[]>) =>
    [...holders.values()].every((n) => n.length === 1);
  let failedAt = performance.now();
  return {
    mode: "keepalived",
    // The files source knows no Nodes: the node list makes the guard enforce (core/guard.ts).
    agentFlags: [
      "--vip-mode",
      "keepalived",
      "--vrrp-preempt-delay",
      String(preemptDelay),
      "--node-addresses",
      nodes.map((n) => n.ip).join(","),
    ],
    async settle(wanted) {
      const vips = [...wanted.keys()];
      // Agents that start a little apart may elect a lower node first; the
      // rightful one takes over after the preempt delay.
      const settled = (holders: Map<string, SimNode[]>) =>
        only(holders) && vips.every((v) => holders.get(v)![0] === wanted.get(v));
      const holders = await waitForHolders(
        nodes,
        vips,
        iface,
        (h) => settled(h),
        "keepalived did not elect the expected holders",
        (preemptDelay + 30) * 1000,
      );
      return new Map([...holders].map(([v, n]) => [v, n[0]]));
    },
    async failover(vip, from) {
      const pid = Number((await Deno.readTextFile(`${stateDir(from)}/keepalived.pid`)).trim());
      // The pid file has the number keepalived has in its own PID namespace (a container's).
      const hostPid = await hostPidOf(from, pid, "keepalived");
      // "Stop": keepalived announces priority 0 and removes its VIPs; the next node takes over.
      failedAt = performance.now();
      Deno.kill(hostPid, "SIGTERM");
      const holders = await waitForHolders(
        nodes,
        [vip],
        iface,
        (h) => h.get(vip)!.length === 1 && h.get(vip)![0] !== from,
        `no other node took ${vip} over from ${from.name}`,
        15_000,
      );
      return holders.get(vip)![0];
    },
    async afterFailover(vip, from) {
      await waitForHolders(
        nodes,
        [vip],
        iface,
        (h) => h.get(vip)!.length === 1 && h.get(vip)![0] === from,
        `${from.name} did not take ${vip} back`,
        (preemptDelay + 20) * 1000,
      );
      return `${from.name}'s agent restarted its keepalived, which took ${vip} back ` +
        `${((performance.now() - failedAt) / 1000).toFixed(1)} s after the failover ` +
        `(restart after 1 s, then the preempt delay of ${preemptDelay} s)`;
    },
    async release(vips) {
      // Stopping the agents stopped keepalived, which removed the VIPs: check it.
      await waitForHolders(
        nodes,
        vips,
        iface,
        (h) => [...h.values()].every((n) => n.length === 0),
        "VIPs are still on a node after the agents stopped",
        10_000,
      );
    },
  };
}
