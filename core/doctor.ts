/**
 * `doctor`: preflight and live diagnosis of a node. The probes (cmd/doctor.ts)
 * collect facts: tool outputs as printed; each check here turns facts into a
 * verdict, what was found, and the fix. Pure, so every check is tested on
 * captured outputs.
 */
import { GUARD_FAMILY, GUARD_TABLE, type LiveGuard, parseGuard } from "./guard.ts";
import { effectiveRpFilter } from "./sysctl.ts";
import { reachableRules, tableRules } from "./iptables.ts";
import { hex, markFor } from "./marks.ts";
import { CHAINS, MARK_CHAIN, SNAT_CHAIN } from "./names.ts";
import {
  freeMarkWindow,
  FULL,
  ipRuleMarkUses,
  iptablesMarkUses,
  type MarkUse,
  nativeNftRules,
  nftMarkUses,
} from "./mark_usage.ts";
import type { DatapathConfig } from "./schema.ts";
import type { Vip } from "./snapshot.ts";
import { type Address6, checkRpFilter6, checkVipAddresses6 } from "./doctor_ipv6.ts";

export type Verdict = "pass" | "warn" | "fail" | "skip";

export interface CheckReport {
  readonly id: string;
  readonly verdict: Verdict;
  /** What was found. */
  readonly detail: string;
  /** What to do about it (absent when nothing is to be done). */
  readonly fix?: string;
}

/** What the probes found; a field is undefined when it could not be probed (tool missing...). */
export interface DoctorFacts {
  readonly config: DatapathConfig;
  /** Required tools not found, with their package. */
  readonly missingTools: readonly { command: string; pkg: string }[];
  /** Optional tools not found (checks that need them are skipped). */
  readonly missingOptional: readonly { command: string; pkg: string; for: string }[];
  /** IPv4 addresses on the interface (IPv6: `addresses6`); undefined when it does not exist. */
  readonly addresses?: readonly string[];
  /** The inputs' valid VIPs, or why they could not be read. */
  readonly vips?: readonly Vip[];
  readonly inputsError?: string;
  readonly rejected: readonly string[];
  /** The flavour `iptables` is on this node. */
  readonly backend?: "nft" | "legacy";
  /** iptables-save output of each backend (every table), when its tool exists. */
  readonly iptablesSave: { readonly nft?: string; readonly legacy?: string };
  /** `nft -j list ruleset`. */
  readonly nftRuleset?: string;
  /** `ip -N -j rule show` and `ip -4 -N -j route show table all`. */
  readonly ipRules?: string;
  readonly ipRoutes?: string;
  /** sysctl key → value (net.ipv4.ip_forward, conf.<if>.forwarding, rp_filter keys). */
  readonly sysctls: Readonly<Record<string, number>>;
  /** VIP → MAC addresses that answered an ARP probe for it (undefined: not probed). */
  readonly arpReplies?: ReadonlyMap<string, readonly string[]>;
  /** Lines a pass would write now (undefined: unknown). */
  readonly pendingLines?: number;
  /** VIPs configured on another interface of this node (answered by ARP without being held). */
  readonly vipsElsewhere?: readonly { readonly vip: string; readonly iface: string }[];
  /** IPv6 addresses on the interface with their flags (undefined: not read). */
  readonly addresses6?: readonly Address6[];
  /** `ip6tables-save` of the iptables flavour in use. */
  readonly ip6tablesSave?: string;
  /** /etc/firewalld/firewalld.conf, where present. */
  readonly firewalldConf?: string;
  /** `ip -6 -j route show` (main table). */
  readonly ipRoutes6?: string;
}

const held = (facts: DoctorFacts) => {
  const local = new Set(facts.addresses ?? []);
  return (facts.vips ?? []).filter((v) => local.has(v.ip));
};

// ---- tools, interface, inputs, sync ----

function checkTools(f: DoctorFacts): CheckReport {
  if (f.missingTools.length > 0) {
    const pkgs = [...new Set(f.missingTools.map((t) => t.pkg))].sort();
    return {
      id: "tools",
      verdict: "fail",
      detail: `missing: ${f.missingTools.map((t) => t.command).join(", ")}`,
      fix: `apt-get install -y ${pkgs.join(" ")} (or use the kube-egress image, which has them)`,
    };
  }
  if (f.missingOptional.length > 0) {
    return {
      id: "tools",
      verdict: "warn",
      detail: `required tools present; optional missing: ${
        f.missingOptional.map((t) => `${t.command} (for ${t.for})`).join(", ")
      }`,
      fix: `apt-get install -y ${[...new Set(f.missingOptional.map((t) => t.pkg))].join(" ")}`,
    };
  }
  return { id: "tools", verdict: "pass", detail: "every tool the agent and doctor use is present" };
}

function checkInterface(f: DoctorFacts): CheckReport {
  const iface = f.config.interface;
  if (f.addresses === undefined) {
    return {
      id: "interface",
      verdict: "fail",
      detail: `interface ${iface} does not exist on this node`,
      fix: "pass the node's LAN interface with --interface (see `ip -br link`)",
    };
  }
  // Each family the pod ranges use needs an address of the node's own (IPv6: not link-local).
  const own6 = f.addresses6?.map((a) => a.local).filter((ip) => !/^fe[89ab]/i.test(ip));
  const missing = [
    f.config.podCidrs.some((c) => !c.includes(":")) && f.addresses.length === 0 && "IPv4",
    f.config.podCidrs.some((c) => c.includes(":")) && own6?.length === 0 && "IPv6",
  ].filter((family) => family !== false);
  if (missing.length > 0) {
    return {
      id: "interface",
      verdict: "fail",
      detail: `interface ${iface} has no ${missing.join(" and no ")} address`,
      fix: "use the interface that carries the node's LAN address",
    };
  }
  const all = [...f.addresses, ...(own6 ?? [])];
  return { id: "interface", verdict: "pass", detail: `${iface}: ${all.join(", ")}` };
}

function checkInputs(f: DoctorFacts): CheckReport {
  if (f.inputsError !== undefined) {
    return {
      id: "inputs",
      verdict: "fail",
      detail: f.inputsError,
      fix:
        "check the mapping directories (-v, -r) and that the ConfigMaps are mounted; with --source kubernetes, the kubeconfig and the agent's RBAC",
    };
  }
  const counts = `${f.vips?.length ?? 0} VIP(s) valid`;
  if (f.rejected.length > 0) {
    return {
      id: "inputs",
      verdict: "warn",
      detail: `${counts}; ${f.rejected.length} rejected: ${f.rejected.join("; ")}`,
      fix: "correct or remove the rejected entries; the valid ones are applied meanwhile",
    };
  }
  return { id: "inputs", verdict: "pass", detail: `${counts}, none rejected` };
}

function checkSync(f: DoctorFacts): CheckReport {
  if (f.pendingLines === undefined) {
    return { id: "sync", verdict: "skip", detail: "node state or inputs could not be read" };
  }
  if (f.pendingLines > 0) {
    return {
      id: "sync",
      verdict: "warn",
      detail: `${f.pendingLines} change(s) pending: the node does not match the inputs`,
      fix: "is the agent running on this node? `kube-egress plan` shows the changes",
    };
  }
  return { id: "sync", verdict: "pass", detail: "the node matches the inputs" };
}

// ---- kernel settings ----

function checkForwarding(f: DoctorFacts): CheckReport {
  const iface = f.config.interface;
  const off = ["net.ipv4.ip_forward", `net.ipv4.conf.${iface}.forwarding`].filter((k) =>
    f.sysctls[k] === 0
  );
  if (off.length > 0) {
    return {
      id: "ip-forward",
      verdict: "fail",
      detail: `${off.join(", ")} = 0: pod traffic is not forwarded`,
      fix: "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d/)",
    };
  }
  return { id: "ip-forward", verdict: "pass", detail: "IPv4 forwarding is on" };
}

function checkRpFilter(f: DoctorFacts): CheckReport {
  const iface = f.config.interface;
  const mode = effectiveRpFilter(f.sysctls, iface);
  const holder = held(f).length > 0;
  if (mode !== 1) {
    return {
      id: "rp-filter",
      verdict: "pass",
      detail: `effective rp_filter on ${iface} is ${mode} (${mode === 2 ? "loose" : "off"})`,
    };
  }
  return {
    id: "rp-filter",
    verdict: holder ? "fail" : "warn",
    detail: `effective rp_filter on ${iface} is 1 (strict)${
      holder
        ? ": this node holds a VIP and drops other nodes' pod traffic"
        : ": after a takeover this node would drop other nodes' pod traffic until the agent's next pass"
    }`,
    fix:
      `sysctl -w net.ipv4.conf.${iface}.rp_filter=2 (the agent does this on every pass: is it running?)`,
  };
}

// ---- iptables backend and chain order ----

const NAT_TARGETS = /-j (MASQUERADE|SNAT)\b/;

function foreignRules(save: string): string[] {
  return save.split("\n").filter((l) => l.startsWith("-A ")).filter((l) =>
    !CHAINS.some((c) => l.startsWith(`-A ${c.chain} `) || l.endsWith(`-j ${c.chain}`))
  );
}

function checkBackend(f: DoctorFacts): CheckReport {
  if (f.config.backend === "nftables") {
    return { id: "iptables-backend", verdict: "skip", detail: "the nftables backend is in use" };
  }
  const ours = f.backend;
  if (!ours) return { id: "iptables-backend", verdict: "skip", detail: "iptables not found" };
  const other = ours === "nft" ? "legacy" : "nft";
  const mine = foreignRules(f.iptablesSave[ours] ?? "");
  const theirs = foreignRules(f.iptablesSave[other] ?? "");
  const natTheirs = theirs.filter((l) => NAT_TARGETS.test(l));
  const native = f.nftRuleset ? nativeNftRules(f.nftRuleset) : [];
  const nativeNat = native.filter((r) => r.expr.some((e) => "masquerade" in e || "snat" in e));
  const useSame = ours === "nft"
    ? "update-alternatives --set iptables /usr/sbin/iptables-legacy"
    : "update-alternatives --set iptables /usr/sbin/iptables-nft";
  if (natTheirs.length > 0 || (mine.length === 0 && theirs.length > 0)) {
    return {
      id: "iptables-backend",
      verdict: "fail",
      detail: `kube-egress uses iptables-${ours}, but ${theirs.length} rule(s) of other ` +
        `components are in iptables-${other}${
          natTheirs.length > 0 ? `, including masquerade: ${natTheirs[0]}` : ""
        }. Our ACCEPT cannot keep another backend's masquerade off forwarded pod traffic`,
      fix: `run the agent with the backend the CNI and kube-proxy use (${useSame} in the ` +
        `image, or detect it as kube-proxy's iptables-wrapper does)`,
    };
  }
  if (nativeNat.length > 0) {
    return {
      id: "iptables-backend",
      verdict: "warn",
      detail: `native nftables NAT outside iptables' tables: ${
        nativeNat.map((r) => r.where).join(", ")
      }; our ACCEPT does not stop it, so it must not match mapped pods' traffic`,
      fix: "check that those rules leave pod traffic to the outside alone (e.g. only " +
        "kube-proxy's 0x4000-marked service traffic)",
    };
  }
  return {
    id: "iptables-backend",
    verdict: "pass",
    detail: `iptables-${ours}, shared with ${mine.length} rule(s) of other components; ` +
      `iptables-${other}: ${theirs.length} rule(s)`,
  };
}

/** Chains reachable from `chain` (jumps and gotos) in one table's rules. */
function checkChainOrder(f: DoctorFacts): CheckReport {
  if (f.config.backend === "nftables") {
    return { id: "chain-order", verdict: "skip", detail: "the nftables backend is in use" };
  }
  const save = f.backend ? f.iptablesSave[f.backend] : undefined;
  if (save === undefined) {
    return { id: "chain-order", verdict: "skip", detail: "iptables not read" };
  }
  const problems: string[] = [];
  const warnings: string[] = [];
  for (const { table, chain, hook } of CHAINS) {
    const rules = tableRules(save, table);
    const hookRules = rules.filter((r) => r.startsWith(`-A ${hook} `));
    const at = hookRules.findIndex((r) => r.endsWith(`-j ${chain}`));
    if (at < 0) {
      if ((f.vips?.length ?? 0) > 0) problems.push(`no jump to ${chain} in ${table} ${hook}`);
      continue;
    }
    for (const before of hookRules.slice(0, at)) {
      const effective = [before, ...reachableRules(rules, / -[jg] (\S+)/.exec(before)?.[1] ?? "")];
      const bad = table === "nat"
        ? effective.find((r) => NAT_TARGETS.test(r) || / -j ACCEPT\b/.test(r))
        : effective.find((r) => / -j (ACCEPT|DROP)\b/.test(r));
      if (bad) problems.push(`in ${table} ${hook}, before our jump: ${before}`);
      else warnings.push(`${table} ${hook} has a rule before our jump: ${before}`);
    }
  }
  if (problems.length > 0) {
    return {
      id: "chain-order",
      verdict: "fail",
      detail: problems.join("; "),
      fix: `${MARK_CHAIN} and ${SNAT_CHAIN} must be jumped to first: run a pass ` +
        "(the agent re-inserts its jumps at position 1), and stop whatever keeps inserting " +
        "rules above them",
    };
  }
  if (warnings.length > 0) {
    return {
      id: "chain-order",
      verdict: "warn",
      detail: warnings.join("; "),
      fix: "harmless now; the agent moves its jumps back to the top on its next pass",
    };
  }
  return {
    id: "chain-order",
    verdict: "pass",
    detail: (f.vips?.length ?? 0) > 0
      ? "our jumps come first in mangle PREROUTING and nat POSTROUTING, before any masquerade"
      : "no VIPs: nothing to order",
  };
}

// ---- the datapath backend ----

/** Our nat chain's priority on the nftables backend (srcnat - 10). */
export const NFT_SNAT_PRIORITY = 90;

interface NftChainFacts {
  family: string;
  table: string;
  name: string;
  type?: string;
  hook?: string;
  prio?: number;
}

/**
 * How the node's other rules sit with our backend: on nftables, a foreign nat
 * chain at postrouting whose priority runs before ours (90) and that
 * masquerades or SNATs rewrites pod traffic before our rule sees it; the other
 * backend's objects still there (a node that switched; its next first pass
 * removes them); kube-proxy in nftables mode while we use iptables.
 */
function checkDatapathBackend(f: DoctorFacts): CheckReport {
  const id = "datapath-backend";
  let items: Record<string, unknown>[] = [];
  try {
    items = f.nftRuleset ? (JSON.parse(f.nftRuleset).nftables ?? []) : [];
  } catch {
    items = [];
  }
  const chains = items.flatMap((i) => i.chain ? [i.chain as NftChainFacts] : []);
  const rules = items.flatMap((i) =>
    i.rule ? [i.rule as { family: string; table: string; chain: string; expr: object[] }] : []
  );
  const ourTable = chains.some((c) => c.family === "inet" && c.table === "kube-egress");
  const ourChains = Object.values(f.iptablesSave).some((save) =>
    (save ?? "").includes(`:${MARK_CHAIN} `) || (save ?? "").includes(`:${SNAT_CHAIN} `)
  );
  const kubeProxyNft = chains.some((c) => c.table === "kube-proxy");
  if (f.config.backend === "nftables") {
    const early = chains.filter((c) =>
      c.table !== "kube-egress" && c.type === "nat" && c.hook === "postrouting" &&
      (c.prio ?? 100) < NFT_SNAT_PRIORITY &&
      rules.some((r) =>
        r.family === c.family && r.table === c.table && r.chain === c.name &&
        r.expr.some((e) => "masquerade" in e || "snat" in e)
      )
    );
    if (early.length > 0) {
      return {
        id,
        verdict: "fail",
        detail:
          `nat postrouting chain(s) that masquerade before ours (priority ${NFT_SNAT_PRIORITY}): ${
            early.map((c) => `${c.family} ${c.table} ${c.name} (priority ${c.prio})`).join(", ")
          }: pod traffic leaves with the node's address, not the VIP`,
        fix: `give them a priority of ${NFT_SNAT_PRIORITY} or more (srcnat is 100), or run ` +
          "with --backend iptables if they are iptables-legacy rules that cannot move",
      };
    }
    if (ourChains) {
      return {
        id,
        verdict: "warn",
        detail: "the iptables backend's chains are still on the node next to our nftables table",
        fix: "an agent's first pass removes them; or run `delete --backend iptables` once",
      };
    }
    return {
      id,
      verdict: "pass",
      detail: ourTable
        ? "nftables: our table inet kube-egress, no masquerade ahead of it"
        : "nftables: no masquerade ahead of our table's priority",
    };
  }
  if (ourTable) {
    return {
      id,
      verdict: "warn",
      detail:
        "our nftables table inet kube-egress is still on the node next to the iptables chains",
      fix: "an agent's first pass removes it; or run `delete --backend nftables` once",
    };
  }
  if (kubeProxyNft) {
    return {
      id,
      verdict: "warn",
      detail: "kube-proxy runs in nftables mode while kube-egress uses iptables",
      fix: "run with --backend nftables (what --backend auto picks on this node)",
    };
  }
  return { id, verdict: "pass", detail: "iptables, and kube-proxy does not run in nftables mode" };
}

// ---- marks ----

function describeUse(u: MarkUse): string {
  return `${u.where}: ${u.rule} (${u.access}s ${u.bits === FULL ? "all bits" : hex(u.bits)})`;
}

function checkMarks(f: DoctorFacts): CheckReport {
  const mask = f.config.markMask;
  const uses: MarkUse[] = [
    ...Object.entries(f.iptablesSave).flatMap(([backend, save]) =>
      save ? iptablesMarkUses(save, `iptables-${backend}`) : []
    ),
    ...(f.nftRuleset ? nftMarkUses(f.nftRuleset) : []),
    ...(f.ipRules ? ipRuleMarkUses(f.ipRules, f.config.routeProtocol) : []),
  ];
  const ourMarks = (f.vips ?? []).map((v) => markFor(v.routeId, mask));
  const fails: MarkUse[] = [];
  const warns: MarkUse[] = [];
  for (const u of uses) {
    if ((u.bits & mask) === 0) continue;
    if (u.access === "write") (u.bits === FULL ? warns : fails).push(u);
    else if (u.priority !== undefined) {
      // An ip rule before ours that one of our marks matches steals our traffic.
      const stolen = u.priority < f.config.rulePriority &&
        ourMarks.some((m) => (m & u.bits) === u.value);
      (stolen ? fails : warns).push(u);
    } else if (u.bits === FULL) {
      // An exact full-width match only sees our marks when its value is one of them.
      if (ourMarks.includes(u.value ?? -1)) fails.push(u);
    } else warns.push(u);
  }
  const partial = uses.filter((u) => u.bits !== FULL).reduce((a, u) => a | u.bits, 0) >>> 0;
  const window = freeMarkWindow(partial);
  const suggestion = window !== undefined && window !== mask
    ? `pick a free window, e.g. --mark-mask ${hex(window)}`
    : "no 8-bit window is free of other components' bits; find the owner and move one of them";
  if (fails.length > 0) {
    return {
      id: "mark-bits",
      verdict: "fail",
      detail: `mark mask ${hex(mask)} collides with: ${fails.map(describeUse).join("; ")}`,
      fix: suggestion,
    };
  }
  if (warns.length > 0) {
    return {
      id: "mark-bits",
      verdict: "warn",
      detail: `mark mask ${hex(mask)} overlaps: ${warns.map(describeUse).join("; ")}`,
      fix: warns.every((u) => u.bits === FULL)
        ? "these rules set or compare the whole mark, whatever mask we use: make sure they " +
          "never match mapped pods' outgoing traffic"
        : suggestion,
    };
  }
  return {
    id: "mark-bits",
    verdict: "pass",
    detail: `mark mask ${hex(mask)} is not used by any of ${uses.length} other mark rule(s)`,
  };
}

// ---- routing tables ----

function checkRouteTables(f: DoctorFacts): CheckReport {
  if (f.ipRules === undefined || f.ipRoutes === undefined) {
    return { id: "route-tables", verdict: "skip", detail: "ip rules/routes not read" };
  }
  const protocol = String(f.config.routeProtocol);
  const users = new Map<number, string[]>();
  const note = (table: number, what: string) => {
    if (table >= 1 && table <= 252) users.set(table, [...(users.get(table) ?? []), what]);
  };
  for (const r of JSON.parse(f.ipRoutes) as Record<string, unknown>[]) {
    if (String(r.protocol) !== protocol && r.table !== undefined) {
      note(Number(r.table), `route ${r.dst}`);
    }
  }
  for (const r of JSON.parse(f.ipRules) as Record<string, unknown>[]) {
    if (String(r.protocol) !== protocol) note(Number(r.table), `rule pref ${r.priority}`);
  }
  const clashes = (f.vips ?? []).filter((v) => users.has(v.routeId));
  if (clashes.length > 0) {
    return {
      id: "route-tables",
      verdict: "fail",
      detail: clashes.map((v) =>
        `VIP ${v.ip} uses route id ${v.routeId}, but table ${v.routeId} is also used by: ${
          users.get(v.routeId)!.join(", ")
        }`
      ).join("; "),
      fix: "give the VIP a route id no one else uses on any node",
    };
  }
  const taken = [...users.keys()].sort((a, b) => a - b);
  return {
    id: "route-tables",
    verdict: "pass",
    detail: taken.length > 0
      ? `no VIP's table is used by others; tables taken by others here: ${taken.join(", ")}`
      : "no other routing tables in 1..252",
  };
}

// ---- the VIP on the LAN ----

function checkDuplicates(f: DoctorFacts): CheckReport {
  if (f.arpReplies === undefined) {
    return { id: "duplicate-vip", verdict: "skip", detail: "ARP probe not run" };
  }
  const mine = new Set(held(f).map((v) => v.ip));
  const fails: string[] = [];
  const warns: string[] = [];
  for (const [vip, macs] of f.arpReplies) {
    if (mine.has(vip) && macs.length > 0) {
      fails.push(`${vip} is on this node and also answered by ${macs.join(", ")}`);
    } else if (!mine.has(vip) && macs.length > 1) {
      fails.push(`${vip} is answered by several machines: ${macs.join(", ")}`);
    } else if (!mine.has(vip) && macs.length === 0) {
      warns.push(`${vip}: no machine on the LAN answers for it`);
    }
  }
  if (fails.length > 0) {
    return {
      id: "duplicate-vip",
      verdict: "fail",
      detail: fails.join("; "),
      fix: "a VIP must be on exactly one node: remove it from the others " +
        "(check keepalived/VIP placement and static addresses)",
    };
  }
  if (warns.length > 0) {
    return {
      id: "duplicate-vip",
      verdict: "warn",
      detail: warns.join("; ") + ": pods mapped to it have no egress",
      fix: "place the VIP on a node (VIP placement / keepalived)",
    };
  }
  return {
    id: "duplicate-vip",
    verdict: "pass",
    detail: f.arpReplies.size > 0
      ? `each of ${f.arpReplies.size} VIP(s) is on exactly one machine`
      : "no VIPs to probe",
  };
}

// ---- the guard: who else tried to take the VIPs' traffic ----

function checkGuard(f: DoctorFacts): CheckReport {
  if (f.nftRuleset === undefined) {
    return { id: "guard", verdict: "skip", detail: "nft not available: the guard table not read" };
  }
  const vips = f.vips ?? [];
  let live: LiveGuard | undefined;
  try {
    live = parseGuard(f.nftRuleset);
  } catch {
    return { id: "guard", verdict: "skip", detail: "nft's listing could not be read" };
  }
  if (!live) {
    return vips.length === 0
      ? { id: "guard", verdict: "pass", detail: "no VIPs, no guard table" }
      : {
        // Informational: one-shot runs and `--guard off` have none (README, the guard).
        id: "guard",
        verdict: "pass",
        detail:
          `not guarded (no ${GUARD_FAMILY} ${GUARD_TABLE} table): any host on the LAN can attract the ` +
          "mapped pods' traffic (VRRP adverts and ARP answers for the VIPs are believed)",
        fix: "run the agent (run -u) with --guard on (the default) and, with --source files, " +
          "--node-addresses <the nodes' LAN addresses>",
      };
  }
  const mine = new Set(held(f).map((v) => v.ip));
  const stale = (f.vipsElsewhere ?? []).filter((e) => !mine.has(e.vip));
  if (stale.length > 0) {
    return {
      id: "guard",
      verdict: "fail",
      detail: stale.map((e) =>
        `${e.vip} is configured on ${e.iface}, not held on ${f.config.interface}: this node ` +
        "answers ARP for it anyway (the kernel answers for any local address), a stale holder"
      ).join("; "),
      fix: stale.map((e) => `ip address del ${e.vip}/32 dev ${e.iface}`).join("; "),
    };
  }
  const byMark = new Map(vips.map((v) => [markFor(v.routeId, f.config.markMask), v.ip]));
  const findings: string[] = [];
  for (const c of live.claims) {
    findings.push(
      mine.has(c.vip)
        ? `address conflict: MAC ${c.mac} claims ${c.vip}, which this node holds (${c.packets} ARP packet(s) refused, re-announced)`
        : `MAC ${c.mac} answered for ${c.vip} but is no node that may hold it (${c.packets} ARP packet(s) refused)`,
    );
  }
  for (const a of live.adverts) {
    findings.push(
      `${a.source} advertised VRRP router id ${a.vrid} but is no node that may hold its VIP (${a.packets} advert(s) refused)`,
    );
  }
  for (const h of live.nextHops) {
    findings.push(
      `${h.packets} packet(s) of pods mapped to ${
        byMark.get(h.mark) ?? `mark 0x${h.mark.toString(16)}`
      } were headed for MAC ${h.mac}, which is no node that may hold it: dropped`,
    );
  }
  if (findings.length > 0) {
    return {
      id: "guard",
      verdict: "fail",
      detail: findings.join("; "),
      fix: "find the host by its MAC (the switch's MAC table) and take it off the LAN; " +
        "what it sent was refused (the lists keep each offender for an hour)",
    };
  }
  const guarded = live.sets["guarded"]?.length ?? 0;
  if (vips.length > 0 && guarded === 0) {
    return {
      id: "guard",
      verdict: "pass",
      detail: "the guard only watches: no VIP has a node list, so forwarders believe any ARP " +
        "answer and keepalived any advert",
      fix: "with --source files give --node-addresses <the nodes' LAN addresses> " +
        "(or --vrrp-unicast-peers)",
    };
  }
  return {
    id: "guard",
    verdict: "pass",
    detail: `${guarded} VIP(s) guarded; nothing refused (claims, adverts and next hops of ` +
      "non-nodes are dropped and listed here)",
  };
}

/** The checks, in the order they are shown. */
export const CHECKS: readonly { id: string; run: (f: DoctorFacts) => CheckReport }[] = [
  { id: "tools", run: checkTools },
  { id: "interface", run: checkInterface },
  { id: "inputs", run: checkInputs },
  { id: "datapath-backend", run: checkDatapathBackend },
  { id: "iptables-backend", run: checkBackend },
  { id: "chain-order", run: checkChainOrder },
  { id: "mark-bits", run: checkMarks },
  { id: "ip-forward", run: checkForwarding },
  { id: "rp-filter", run: checkRpFilter },
  {
    id: "rp-filter-ipv6",
    run: (f) =>
      checkRpFilter6({
        iface: f.config.interface,
        podCidrs: f.config.podCidrs,
        vips: (f.vips ?? []).map((v) => v.ip),
        ip6tablesSave: f.ip6tablesSave,
        nftRuleset: f.nftRuleset,
        firewalldConf: f.firewalldConf,
        routes6: f.ipRoutes6,
      }),
  },
  {
    id: "vip-address-ipv6",
    run: (f) =>
      checkVipAddresses6(f.config.interface, (f.vips ?? []).map((v) => v.ip), f.addresses6),
  },
  { id: "route-tables", run: checkRouteTables },
  { id: "duplicate-vip", run: checkDuplicates },
  { id: "guard", run: checkGuard },
  { id: "sync", run: checkSync },
];

/** Runs every check (except those skipped by id). */
export function diagnose(facts: DoctorFacts, skip: readonly string[] = []): CheckReport[] {
  return CHECKS.map((c) =>
    skip.includes(c.id)
      ? { id: c.id, verdict: "skip" as const, detail: "skipped (--skip)" }
      : c.run(facts)
  );
}

/** Distinct MAC addresses in arping output (Habets' "bytes from MAC (IP)" or iputils' "reply from IP [MAC]"). */
export function parseArpReplies(output: string): string[] {
  const macs = new Set<string>();
  for (const line of output.split("\n")) {
    if (!/\bfrom\b/i.test(line)) continue;
    const mac = /\b([0-9a-f]{2}(?::[0-9a-f]{2}){5})\b/i.exec(line)?.[1];
    if (mac) macs.add(mac.toLowerCase());
  }
  return [...macs].sort();
}

const MARK: Record<Verdict, string> = { pass: "PASS", warn: "WARN", fail: "FAIL", skip: "SKIP" };

/** The report for people: one block per check, fixes indented, then a summary line. */
export function renderDoctor(reports: readonly CheckReport[]): string {
  const width = Math.max(...reports.map((r) => r.id.length));
  const out = reports.map((r) =>
    `${MARK[r.verdict]}  ${r.id.padEnd(width)}  ${r.detail}` +
    (r.fix ? `\n${" ".repeat(width + 8)}fix: ${r.fix}` : "")
  );
  out.push("", summarize(reports));
  return out.join("\n") + "\n";
}

/** "doctor: 1 failed, 2 warnings, 7 passed, 1 skipped". */
export function summarize(reports: readonly CheckReport[]): string {
  const n = (v: Verdict) => reports.filter((r) => r.verdict === v).length;
  return `doctor: ${n("fail")} failed, ${n("warn")} warning(s), ${n("pass")} passed, ${
    n("skip")
  } skipped`;
}
