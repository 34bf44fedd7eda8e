/**
 * The old stack's VIP placement in the simulator: kube-keepalived-vip
 * (kubernetes/contrib), which egress-mapper ran next to kube-egress, as its
 * keepalived.tmpl and keepalived.go configured keepalived for VIP-only
 * entries (no virtual servers): one VRRP instance "vips" carrying every VIP,
 * `virtual_router_id` 50 (its --vrid), `priority` 100 + the node's position
 * among the cluster's node addresses sorted as text, `nopreempt`,
 * `advert_int 1`, VRRPv3, `state BACKUP`, multicast adverts, keepalived run
 * with `--release-vips` (the VIPs go with the process). All VIPs therefore
 * sit on one node, and a backup takes over after about 3.6 s.
 *
 * It is the "something else" that places VIPs for the agent's drop-in
 * (external) mode, and the system a migration to our own placement starts
 * from (README "Migration"). Its keepalived runs in the node's namespace next
 * to ours, with its own configuration and pid files.
 */
import { join } from "node:path";
import type { Cluster, SimNode } from "./cluster.ts";
import { spawnVrrpKeepalived } from "./vrrp_keepalived.ts";

/** keepalived-vip's defaults. */
export const KEEPALIVED_VIP_VRID = 50;
const IPTABLES_CHAIN = "KUBE-KEEPALIVED-VIP";

/** keepalived-vip's keepalived.conf for one node (its template, VIP-only entries). */
export function renderKeepalivedVipConf(options: {
  readonly iface: string;
  readonly vrid: number;
  readonly priority: number;
  readonly vips: readonly string[];
}): string {
  return [
    "global_defs {",
    "  vrrp_version 3",
    `  vrrp_iptables ${IPTABLES_CHAIN}`,
    "}",
    "",
    "vrrp_instance vips {",
    "  state BACKUP",
    `  interface ${options.iface}`,
    `  virtual_router_id ${options.vrid}`,
    `  priority ${options.priority}`,
    "  nopreempt",
    "  advert_int 1",
    "",
    "  track_interface {",
    `    ${options.iface}`,
    "  }",
    "",
    "  virtual_ipaddress {",
    ...options.vips.map((vip) => `    ${vip}`),
    "  }",
    "}",
    "",
  ].join("\n");
}

/** keepalived-vip's priority for a node: 100 + its index among the node addresses, sorted as text. */
export function keepalivedVipPriority(node: SimNode, nodes: readonly SimNode[]): number {
  return 100 + nodes.map((n) => n.ip).sort().indexOf(node.ip);
}

/** keepalived-vip on some nodes of a cluster. */
export class KeepalivedVip {
  readonly #running = new Map<SimNode, { child: Deno.ChildProcess; lines: string[] }>();

  constructor(
    readonly cluster: Cluster,
    readonly vips: readonly string[],
    readonly vrid = KEEPALIVED_VIP_VRID,
  ) {}

  #dir(node: SimNode): string {
    return join(this.cluster.workDir, "keepalived-vip", node.name);
  }

  /** Starts it on `nodes` (default: all), as its DaemonSet's pods would start. */
  async start(nodes: readonly SimNode[] = this.cluster.nodes): Promise<void> {
    for (const node of nodes) {
      if (this.#running.has(node)) continue;
      const dir = this.#dir(node);
      await Deno.mkdir(dir, { recursive: true });
      const conf = join(dir, "keepalived.conf");
      await Deno.writeTextFile(
        conf,
        renderKeepalivedVipConf({
          iface: this.cluster.spec.iface,
          vrid: this.vrid,
          priority: keepalivedVipPriority(node, this.cluster.nodes),
          vips: this.vips,
        }),
      );
      // keepalived-vip makes sure its chain exists before it starts keepalived.
      await node.ns.exec(["iptables", "-N", IPTABLES_CHAIN]);
      const lines: string[] = [];
      const child = spawnVrrpKeepalived(node.ns, dir, conf, lines);
      this.#running.set(node, { child, lines });
    }
  }

  /** keepalived's log on a node (for failure messages). */
  log(node: SimNode): string[] {
    return this.#running.get(node)?.lines ?? [];
  }

  /** Whether it runs on a node. */
  runs(node: SimNode): boolean {
    return this.#running.has(node);
  }

  /**
   * Stops it on `nodes` (default: all), as deleting its pods does: SIGTERM,
   * keepalived sends priority-0 adverts and removes the VIPs. Waits (bounded)
   * for each to exit.
   */
  async stop(nodes: readonly SimNode[] = [...this.#running.keys()]): Promise<void> {
    await Promise.all(nodes.map(async (node) => {
      const running = this.#running.get(node);
      if (!running) return;
      this.#running.delete(node);
      try {
        running.child.kill("SIGTERM");
      } catch {
        return; // already gone
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), 10_000)));
      if (await Promise.race([running.child.status, late]) === "late") {
        try {
          running.child.kill("SIGKILL");
        } catch {
          // Exited meanwhile.
        }
      }
      clearTimeout(timer);
      await running.child.status;
    }));
  }
}
