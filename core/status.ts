/**
 * `status`: what is in force on this node, read back from the kernel (our
 * chains, the pods set and its counters), not from what we meant to write.
 * Rendered as a table for people and as JSON for scripts.
 */
import { parseRoleRule } from "./desired.ts";
import type { PlacementStatus } from "./keepalived.ts";
import { parseRuleCounters } from "./iptables.ts";
import { SCOPED_PREFIX } from "./scoped.ts";
import { compareIp } from "./ip.ts";
import { hex, routeIdOfMark } from "./marks.ts";
import { interfaceAddresses, type LiveState } from "./plan.ts";
import type { LiveRoutes } from "./iproute.ts";
import type { NftFamilyElements } from "./nftables.ts";

export interface VipStatus {
  readonly vip: string;
  readonly routeId: number;
  readonly mark: string;
  /** The role our rules give this node for the VIP. */
  readonly role: "holder" | "forwarder";
  /** Whether the VIP is on the interface right now. */
  readonly held: boolean;
  /** Mapped pods (cluster-wide) whose traffic uses this VIP. */
  readonly pods: number;
  /** Packets/bytes steered through this node for the VIP (pods set counters). */
  readonly packets: number;
  readonly bytes: number;
  /** New connections SNATed (holder) or passed on unmasqueraded (forwarder). */
  readonly connections: number;
  /** keepalived mode: this node's VRRP priority for the VIP (the highest holds it). */
  readonly priority?: number;
  /** keepalived mode: the VRRP virtual router id (the route id, or shifted by --vrrp-vrid-offset). */
  readonly vrid?: number;
  /** keepalived mode: keepalived's state (MASTER/BACKUP/FAULT), "ineligible", or "stopped". */
  readonly vrrp?: string;
  /** keepalived mode: where the instance's adverts go by unicast (absent: multicast). */
  readonly peers?: readonly string[];
}

export interface MappingStatus {
  readonly podIp: string;
  readonly vip: string;
  readonly packets: number;
  readonly bytes: number;
}

export interface NodeStatus {
  readonly interface: string;
  readonly addresses: readonly string[];
  readonly vips: readonly VipStatus[];
  readonly mappings: readonly MappingStatus[];
  /** Lines a pass would write now (undefined when the inputs could not be read). */
  readonly pendingLines?: number;
  readonly problems: readonly string[];
  /** keepalived mode: who this node is for VRRP and whether its keepalived runs. */
  readonly placement?: {
    readonly mode: string;
    readonly node: string;
    readonly running: boolean;
    readonly advertInterval: number;
    readonly preemptDelay: number;
  };
}

/** The nat table read with counters (`iptables-save -c`; nat6: `ip6tables-save -c`, if read). */
export interface NatSaves {
  readonly nat: string;
  readonly nat6?: string;
}

/** Builds the status from a live state read with counters, both families'. */
export function nodeStatus(
  live: LiveState,
  natSaves: NatSaves,
  iface: string,
  extra: {
    pendingLines?: number;
    problems?: readonly string[];
    placement?: PlacementStatus;
  } = {},
): NodeStatus {
  // Both families': an IPv6 VIP is held when its address is on the interface too.
  const addresses = new Set(interfaceAddresses(live));
  // Keyed by family and mark: the two addresses of a dual-stack VIP share its mark.
  const vipOfMark = new Map<string, VipStatus>();
  if (live.nft.present) {
    return finish(iface, addresses, ...nftablesInForce(live, addresses), extra);
  }
  const counted = [
    ...parseRuleCounters(natSaves.nat, "nat"),
    ...parseRuleCounters(natSaves.nat6 ?? "", "nat"),
  ];
  for (const counter of counted) {
    const rule = parseRoleRule(counter.rule);
    if (!rule) continue;
    const { ip, mark, mask, role } = rule;
    vipOfMark.set(familyMark(ip, mark), {
      vip: ip,
      routeId: routeIdOfMark(mark, mask),
      mark: hex(mark),
      role,
      held: addresses.has(ip),
      pods: 0,
      packets: 0,
      bytes: 0,
      connections: counter.packets,
    });
  }
  const mappings: MappingStatus[] = [];
  const familySets = live.ipv6 ? [live.sets, live.ipv6.sets] : [live.sets];
  for (const [podIp, entry] of familySets.flatMap((sets) => [...sets.pods])) {
    const key = familyMark(podIp, entry.mark);
    const vip = vipOfMark.get(key);
    if (!vip) continue;
    vipOfMark.set(key, {
      ...vip,
      pods: vip.pods + 1,
      packets: vip.packets + entry.packets,
      bytes: vip.bytes + entry.bytes,
    });
    mappings.push({ podIp, vip: vip.vip, packets: entry.packets, bytes: entry.bytes });
  }
  // Destination-scoped pods: their own sets, with counters of their own.
  for (const [name, set] of familySets.flatMap((sets) => [...(sets.scoped ?? [])])) {
    if (!name.startsWith(`${SCOPED_PREFIX}p-`)) continue;
    for (const [podIp, args] of set.entries) {
      const key = familyMark(podIp, parseInt(args.split(" skbmark ")[1] ?? "", 16));
      const vip = vipOfMark.get(key);
      if (!vip) continue;
      const { packets, bytes } = set.counters?.get(podIp) ?? { packets: 0, bytes: 0 };
      vipOfMark.set(key, {
        ...vip,
        pods: vip.pods + 1,
        packets: vip.packets + packets,
        bytes: vip.bytes + bytes,
      });
      mappings.push({ podIp, vip: vip.vip, packets, bytes });
    }
  }
  return finish(iface, addresses, vipOfMark, mappings, extra);
}

/** A VIP's (or a pod's) mark within its family: "4 0x500", "6 0x500". */
function familyMark(ip: string, mark: number): string {
  return `${ip.includes(":") ? 6 : 4} ${mark}`;
}

/**
 * The nftables backend's objects as status, per family: the roles map (mark
 * → snat-<id>; IPv6: roles6 → snat6-<id>), the VIP from the holder's SNAT
 * rule or the forwarder's route, the chains' counters (steered packets, new
 * connections) and the pods map. Per-pod counters are the iptables backend's
 * only (its ipset keeps them per entry).
 */
function nftablesInForce(
  live: LiveState,
  addresses: ReadonlySet<string>,
): [Map<string, VipStatus>, MappingStatus[]] {
  const vipOfMark = new Map<string, VipStatus>();
  const mappings: MappingStatus[] = [];
  const seen = new Set<string>();
  // Each family's roles map, chains (IPv6's end in "6": snat6-<id>, vip6-<id>) and routes.
  const families: { suffix: "" | "6"; elements: NftFamilyElements; routes: LiveRoutes }[] = [
    { suffix: "", elements: live.nft, routes: live.routes },
    ...(live.nft.ipv6 && live.ipv6
      ? [{ suffix: "6" as const, elements: live.nft.ipv6, routes: live.ipv6.routes }]
      : []),
  ];
  for (const { suffix, elements, routes } of families) {
    const markOfChain = new Map<string, number>();
    for (const [mark, target] of elements.roles) {
      const chain = target.replace(/^goto /, "");
      const routeId = Number(chain.replace(`snat${suffix}-`, ""));
      const holderIp = live.nft.snatTo.get(chain);
      const ip = holderIp ?? routes.routes.find((r) => r.table === routeId)?.gateway;
      if (ip === undefined || !Number.isInteger(routeId)) continue;
      const vipChain = `vip${suffix}-${routeId}`;
      const steered = live.nft.counters.get(vipChain) ?? { packets: 0, bytes: 0 };
      markOfChain.set(`goto ${vipChain}`, mark);
      vipOfMark.set(familyMark(ip, mark), {
        vip: ip,
        routeId,
        mark: hex(mark),
        role: holderIp !== undefined ? "holder" : "forwarder",
        held: addresses.has(ip),
        pods: 0,
        packets: steered.packets,
        bytes: steered.bytes,
        connections: live.nft.counters.get(chain)?.packets ?? 0,
      });
    }
    const podTargets = [
      ...elements.pods,
      ...[...elements.scoped].map(([k, v]) => [k.split(" . ")[0], v] as [string, string]),
    ];
    for (const [podIp, target] of podTargets) {
      const mark = markOfChain.get(target);
      const key = mark === undefined ? undefined : familyMark(podIp, mark);
      const vip = key === undefined ? undefined : vipOfMark.get(key);
      if (!vip || seen.has(podIp)) continue;
      seen.add(podIp);
      vipOfMark.set(key!, { ...vip, pods: vip.pods + 1 });
      mappings.push({ podIp, vip: vip.vip, packets: 0, bytes: 0 });
    }
  }
  return [vipOfMark, mappings];
}

function finish(
  iface: string,
  addresses: ReadonlySet<string>,
  vipOfMark: ReadonlyMap<string, VipStatus>,
  mappings: MappingStatus[],
  extra: {
    pendingLines?: number;
    problems?: readonly string[];
    placement?: PlacementStatus;
  },
): NodeStatus {
  const placement = extra.placement;
  const vrrpOf = (vip: VipStatus): VipStatus => {
    if (!placement) return vip;
    // A dual-stack VIP's IPv6 address rides in its IPv4 instance (`excluded`).
    const instance = placement.vips.find((v) =>
      v.vip === vip.vip || (v.excluded ?? []).includes(vip.vip)
    );
    if (!instance) {
      return placement.ineligible.includes(vip.vip) ? { ...vip, vrrp: "ineligible" } : vip;
    }
    return {
      ...vip,
      priority: instance.priority,
      vrid: instance.vrid,
      vrrp: placement.running ? instance.state : "stopped",
      ...(instance.peers ? { peers: instance.peers } : {}),
    };
  };
  return {
    interface: iface,
    addresses: [...addresses].sort(compareIp),
    vips: [...vipOfMark.values()].map(vrrpOf).sort((a, b) => compareIp(a.vip, b.vip)),
    mappings: mappings.sort((a, b) => compareIp(a.podIp, b.podIp)),
    pendingLines: extra.pendingLines,
    problems: extra.problems ?? [],
    ...(placement
      ? {
        placement: {
          mode: placement.mode,
          node: placement.node,
          running: placement.running,
          advertInterval: placement.advertInterval,
          preemptDelay: placement.preemptDelay,
        },
      }
      : {}),
  };
}

/** Formats a byte count for people: 1.5 KiB, 3.2 MiB. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Lays rows out in aligned columns under a header. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((row) =>
    row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd()
  )
    .join("\n");
}

/** The human-readable status. */
export function renderStatus(status: NodeStatus): string {
  const out: string[] = [];
  out.push(`interface ${status.interface}: ${status.addresses.join(", ") || "no address"}`);
  if (status.pendingLines === undefined) out.push("sync: unknown (inputs unreadable)");
  else if (status.pendingLines === 0) out.push("sync: in sync with the inputs");
  else out.push(`sync: ${status.pendingLines} change(s) pending; run \`plan\` to see them`);
  const placement = status.placement;
  if (placement) {
    out.push(
      `placement: ${placement.mode} as node ${placement.node}, ${
        placement.running ? "running" : "not running"
      } (adverts every ${placement.advertInterval} s, preempt delay ${placement.preemptDelay} s)`,
    );
  }
  out.push("");
  if (status.vips.length === 0) out.push("no VIPs programmed on this node");
  else {
    const vrrp = placement !== undefined;
    out.push(table(
      [
        "VIP",
        "ROUTE",
        "MARK",
        "ROLE",
        "HELD",
        ...(vrrp ? ["PRIORITY", "VRRP"] : []),
        "PODS",
        "PACKETS",
        "BYTES",
        "NEW CONNS",
      ],
      status.vips.map((v) => [
        v.vip,
        String(v.routeId),
        v.mark,
        v.role,
        v.held ? "yes" : "no",
        ...(vrrp ? [v.priority === undefined ? "-" : String(v.priority), v.vrrp ?? "-"] : []),
        String(v.pods),
        String(v.packets),
        formatBytes(v.bytes),
        String(v.connections),
      ]),
    ));
  }
  const unicast = status.vips.filter((v) => v.peers !== undefined);
  if (unicast.length > 0) {
    out.push(
      "",
      "VRRP adverts by unicast to:",
      ...unicast.map((v) => `  ${v.vip}: ${v.peers!.join(", ")}`),
    );
  }
  if (status.mappings.length > 0) {
    out.push(
      "",
      table(
        ["POD IP", "VIP", "PACKETS", "BYTES"],
        status.mappings.map((m) => [m.podIp, m.vip, String(m.packets), formatBytes(m.bytes)]),
      ),
    );
  }
  if (status.problems.length > 0) {
    out.push(
      "",
      `rejected inputs (${status.problems.length}):`,
      ...status.problems.map((p) => `  ${p}`),
    );
  }
  return out.join("\n") + "\n";
}
