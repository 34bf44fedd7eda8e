/**
 * A rogue on the simulated LAN (`deno task sim --rogue`): a host that is no
 * node of the cluster and tries to take every VIP's traffic, the three ways
 * an unauthenticated LAN allows. Its keepalived advertises each VIP's router
 * id with priority 255 (multicast, or unicast to the nodes' addresses) and,
 * as VRRP master, puts every VIP on its interface, so its kernel answers ARP
 * for them; a loop sends gratuitous ARPs for every VIP every 300 ms on top.
 * An nftables counter at its interface's ingress counts the packets of mapped
 * pods that reach it (source a pod address or a VIP): the guard's target is 0.
 * It lives in its own namespace of the run, attached to the LAN switch only.
 */
import { join } from "node:path";
import type { Cluster } from "./cluster.ts";
import type { Netns } from "./netns.ts";
import { spawnVrrpKeepalived } from "./vrrp_keepalived.ts";
import { LAN_PREFIX, POD_CIDR } from "./layout.ts";
import { vrrpRouterId } from "../core/keepalived.ts";

/** The rogue's own address: on the LAN, no node's. */
export const ROGUE_IP = `${LAN_PREFIX}.250`;
/** Gratuitous ARPs: one per VIP this often (ms). */
const GARP_EVERY_MS = 300;

export interface RogueOptions {
  /** VIP → route id (its router id is route id + vridOffset, as the agents compute it). */
  readonly vips: Readonly<Record<string, number>>;
  readonly vridOffset?: number;
  /** Send adverts to these addresses (the nodes') instead of the multicast group. */
  readonly unicastPeers?: readonly string[];
}

/** keepalived.conf of the rogue: one instance per VIP, priority 255, adverts every 0.1 s. */
export function renderRogueConf(iface: string, options: RogueOptions): string {
  const offset = options.vridOffset ?? 0;
  const lines = ["global_defs {", "  vrrp_version 3", "}", ""];
  for (const [vip, routeId] of Object.entries(options.vips)) {
    const vrid = vrrpRouterId(routeId, offset);
    lines.push(
      `vrrp_instance rogue_${routeId} {`,
      "  state MASTER",
      `  interface ${iface}`,
      `  virtual_router_id ${vrid}`,
      "  priority 255",
      "  advert_int 0.1",
      ...(options.unicastPeers && options.unicastPeers.length > 0
        ? ["  unicast_peer {", ...options.unicastPeers.map((p) => `    ${p}`), "  }"]
        : []),
      "  virtual_ipaddress {",
      `    ${vip}/32`,
      "  }",
      "}",
      "",
    );
  }
  return lines.join("\n");
}

/** How the holders answered the rogue's claims on the wire: per claim, the delay to a node's announcement. */
export interface DefenceFigures {
  /** Claims (gratuitous ARPs or replies with a VIP as sender) the rogue sent. */
  readonly claims: number;
  /** Delay (ms) from each claim to the next announcement of the same VIP by another MAC, sorted. */
  readonly delaysMs: readonly number[];
}

/**
 * Reads `tcpdump -n -e -tt arp` lines: for every ARP from `rogueMac` whose
 * sender address is one of `vips`, the time until another MAC next sent an
 * ARP with that VIP as sender (the holder re-announcing it).
 */
export function analyzeDefence(
  lines: readonly string[],
  rogueMac: string,
  vips: readonly string[],
): DefenceFigures {
  const events: { t: number; mac: string; vip: string }[] = [];
  for (const line of lines) {
    const m = /^(\d+\.\d+) ([0-9a-f:]{17}) > .*ARP.*?(?:tell ([0-9.]+)|Reply ([0-9.]+) is-at)/i
      .exec(line);
    if (!m) continue;
    const vip = m[3] ?? m[4];
    if (vips.includes(vip)) events.push({ t: Number(m[1]) * 1000, mac: m[2].toLowerCase(), vip });
  }
  const rogue = rogueMac.toLowerCase();
  const delays: number[] = [];
  let claims = 0;
  for (const [i, e] of events.entries()) {
    if (e.mac !== rogue) continue;
    claims++;
    const answer = events.slice(i + 1).find((x) => x.vip === e.vip && x.mac !== rogue);
    if (answer) delays.push(Math.round(answer.t - e.t));
  }
  return { claims, delaysMs: delays.sort((a, b) => a - b) };
}

export class Rogue {
  #keepalived: Deno.ChildProcess | undefined;
  #garps: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  readonly log: string[] = [];

  private constructor(readonly ns: Netns, readonly options: RogueOptions) {}

  /** Plugs the rogue into the LAN and starts all three attacks. */
  static async start(cluster: Cluster, options: RogueOptions): Promise<Rogue> {
    const ns = await cluster.addLanHost("rogue", ROGUE_IP);
    const rogue = new Rogue(ns, options);
    const vips = Object.keys(options.vips);
    await ns.run(["nft", "-f", "-"], {
      stdin: [
        "table netdev rogue {",
        "  counter attracted {}",
        `  set sources { type ipv4_addr; flags interval; elements = { ${
          [POD_CIDR, ...vips].join(", ")
        } } }`,
        "  chain ingress {",
        '    type filter hook ingress device "eth0" priority 0; policy accept;',
        '    ip saddr @sources counter name "attracted"',
        "  }",
        "}",
        "",
      ].join("\n"),
    });
    const dir = join(cluster.workDir, "rogue");
    await Deno.mkdir(dir, { recursive: true });
    const conf = join(dir, "keepalived.conf");
    await Deno.writeTextFile(conf, renderRogueConf("eth0", options));
    rogue.#keepalived = spawnVrrpKeepalived(ns, dir, conf, rogue.log);
    let sending = false;
    rogue.#garps = setInterval(async () => {
      if (sending || rogue.#stopped) return;
      sending = true;
      try {
        await Promise.all(vips.map((vip) =>
          ns.exec(
            ["arping", "-q", "-U", "-c", "1", "-W", "0.01", "-i", "eth0", "-S", vip, vip],
            { timeoutMs: 5_000 },
          )
        ));
      } finally {
        sending = false;
      }
    }, GARP_EVERY_MS);
    return rogue;
  }

  /** The rogue's MAC on the LAN. */
  async mac(): Promise<string> {
    const links = JSON.parse(await this.ns.run(["ip", "-j", "link", "show", "eth0"]));
    return String(links[0].address).toLowerCase();
  }

  /** Packets of mapped pods (source a pod address or a VIP) that reached the rogue. */
  async attracted(): Promise<number> {
    const text = await this.ns.run([
      "nft",
      "-j",
      "list",
      "counter",
      "netdev",
      "rogue",
      "attracted",
    ]);
    const items = (JSON.parse(text) as { nftables: { counter?: { packets: number } }[] }).nftables;
    return items.find((i) => i.counter)?.counter?.packets ?? 0;
  }

  /** Ends all three attacks and unplugs the rogue (its namespace goes with the run). */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#garps);
    const child = this.#keepalived;
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status;
    }
    // No priority-0 advert, no address left: the rogue simply falls silent.
    await this.ns.ip(["link set eth0 down"]);
  }
}
