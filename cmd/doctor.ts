/**
 * `doctor`'s probes: everything the checks in core/doctor.ts look at, read
 * from this node with the tools an operator would use. Probes never change
 * anything; the only thing sent on the wire is an ARP request per VIP (the
 * duplicate-address probe), which `--no-arp` turns off.
 */
import $ from "dax";
import { type DoctorFacts, parseArpReplies } from "../core/doctor.ts";
import { parseAddresses6 } from "../core/doctor_ipv6.ts";
import { type NatSync, planPass } from "../core/plan.ts";
import { renderedLines } from "../core/render.ts";
import type { DatapathConfig } from "../core/schema.ts";
import {
  formatProblem,
  type RawSnapshot,
  type Snapshot,
  validateSnapshot,
} from "../core/snapshot.ts";
import { rpFilterKeys } from "../core/sysctl.ts";
import { type Host, procSysRoot } from "./system.ts";
import { AGENT_TOOLS, missingTools, type Tool } from "./tools.ts";
import { errorMessage } from "../core/errors.ts";

/** Tools doctor can do without, and the check that needs each. */
const OPTIONAL_TOOLS: readonly (Tool & { for: string })[] = [
  { command: "arping", pkg: "arping", for: "duplicate-vip" },
  { command: "nft", pkg: "nftables", for: "native nftables rules in iptables-backend/mark-bits" },
  { command: "iptables-legacy-save", pkg: "iptables", for: "iptables-backend" },
  { command: "iptables-nft-save", pkg: "iptables", for: "iptables-backend" },
  { command: "ip6tables-save", pkg: "iptables", for: "rp-filter-ipv6" },
];

/** Where firewalld keeps its configuration (read-only; `KUBE_EGRESS_FIREWALLD_CONF` in tests). */
function firewalldConfPath(): string {
  return Deno.env.get("KUBE_EGRESS_FIREWALLD_CONF") || "/etc/firewalld/firewalld.conf";
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

export interface DoctorOptions {
  readonly config: DatapathConfig;
  /** The mappings from the configured source (directories or the Kubernetes API). */
  readonly readInputs: () => Promise<RawSnapshot>;
  /** Send ARP probes for the VIPs (duplicate-vip). */
  readonly arp: boolean;
  /** NAT state sync is on (`--conntrack-sync on`): its VIP guards belong to the desired rules. */
  readonly natSync?: NatSync;
}

async function output(args: string[]): Promise<string | undefined> {
  const r = await $`${args}`.stdout("piped").stderr("piped").noThrow().timeout(30_000);
  return r.code === 0 ? r.stdout : undefined;
}

async function readSysctl(key: string): Promise<number | undefined> {
  try {
    return Number((await Deno.readTextFile(`${procSysRoot()}/${key.replaceAll(".", "/")}`)).trim());
  } catch {
    return undefined;
  }
}

async function addressesOf(iface: string): Promise<string[] | undefined> {
  const text = await output(["ip", "-j", "address", "show", "dev", iface]);
  if (text === undefined) return undefined;
  const links = JSON.parse(text) as { addr_info?: { family: string; local: string }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === "inet"))
    .map((a) => a.local);
}

/** The ARP probe, in whichever arping the node has (Habets' or iputils'). */
async function arpProbe(iface: string, vip: string, habets: boolean): Promise<string[]> {
  const args = habets
    ? ["arping", "-0", "-c", "2", "-w", "2", "-i", iface, vip]
    : ["arping", "-D", "-c", "2", "-w", "2", "-I", iface, vip];
  const r = await $`${args}`.stdout("piped").stderr("piped").noThrow().timeout(10_000);
  return parseArpReplies(r.stdout);
}

/** Reads everything the checks need. */
export async function collectFacts(host: Host, options: DoctorOptions): Promise<DoctorFacts> {
  const { config } = options;
  const missing = await missingTools(AGENT_TOOLS);
  const missingOptional = (await missingTools(OPTIONAL_TOOLS)) as (Tool & { for: string })[];
  const has = (command: string) =>
    ![...missing, ...missingOptional].some((t) => t.command === command);

  let snapshot: Snapshot | undefined;
  let inputsError: string | undefined;
  let rejected: string[] = [];
  try {
    const validated = validateSnapshot(await options.readInputs(), config);
    snapshot = validated.snapshot;
    rejected = validated.problems.map(formatProblem);
  } catch (error) {
    inputsError = errorMessage(error);
  }

  const vips = snapshot?.vips;
  const version = has("iptables") ? await output(["iptables", "--version"]) : undefined;
  const backend = version === undefined ? undefined : version.includes("legacy") ? "legacy" : "nft";
  const save = async (variant: "nft" | "legacy") => {
    if (has(`iptables-${variant}-save`)) return await output([`iptables-${variant}-save`]);
    // Only plain iptables-save: it shows the backend in use.
    return variant === backend && has("iptables-save")
      ? await output(["iptables-save"])
      : undefined;
  };
  const [
    nftSave,
    legacySave,
    nftRuleset,
    ipRules,
    ipRoutes,
    addresses,
    allAddresses,
    addresses6,
    ipRoutes6,
    ip6tablesSave,
    firewalldConf,
  ] = await Promise
    .all([
      save("nft"),
      save("legacy"),
      has("nft") ? output(["nft", "-j", "list", "ruleset"]) : undefined,
      has("ip") ? output(["ip", "-N", "-j", "rule", "show"]) : undefined,
      has("ip") ? output(["ip", "-4", "-N", "-j", "route", "show", "table", "all"]) : undefined,
      has("ip") ? addressesOf(config.interface) : undefined,
      has("ip") ? output(["ip", "-4", "-j", "address", "show"]) : undefined,
      has("ip")
        ? output(["ip", "-6", "-j", "address", "show", "dev", config.interface])
        : undefined,
      has("ip") ? output(["ip", "-6", "-j", "route", "show"]) : undefined,
      has("ip6tables-save") ? output(["ip6tables-save"]) : undefined,
      readOptional(firewalldConfPath()),
    ]);
  // A VIP on another interface is answered by ARP on the LAN too (arp_ignore 0), held or not.
  const elsewhere = allAddresses === undefined ? [] : (JSON.parse(allAddresses) as {
    ifname: string;
    addr_info?: { family: string; local: string }[];
  }[]).flatMap((l) =>
    l.ifname === config.interface
      ? []
      : (l.addr_info ?? []).filter((a) => a.family === "inet").map((a) => ({
        vip: a.local,
        iface: l.ifname,
      }))
  );

  const sysctls: Record<string, number> = {};
  for (
    const key of [
      "net.ipv4.ip_forward",
      `net.ipv4.conf.${config.interface}.forwarding`,
      ...rpFilterKeys(config.interface),
    ]
  ) {
    const value = await readSysctl(key);
    if (value !== undefined) sysctls[key] = value;
  }

  let arpReplies: Map<string, string[]> | undefined;
  if (options.arp && has("arping") && addresses !== undefined && vips) {
    const help = await $`arping --help`.stdout("piped").stderr("piped").noThrow();
    const habets = /Habets/.test(help.stdout + help.stderr);
    const replies = await Promise.all(
      vips.map((v) => arpProbe(config.interface, v.ip, habets)),
    );
    arpReplies = new Map(vips.map((v, i) => [v.ip, replies[i]]));
  }

  let pendingLines: number | undefined;
  if (missing.length === 0 && addresses !== undefined && snapshot) {
    try {
      const { transaction } = planPass(snapshot, config, await host.readLive(config), {
        natSync: options.natSync,
      });
      pendingLines = renderedLines(transaction.steps);
    } catch {
      pendingLines = undefined;
    }
  }

  return {
    config,
    missingTools: missing,
    missingOptional,
    addresses,
    vips,
    inputsError,
    rejected,
    backend,
    iptablesSave: { nft: nftSave, legacy: legacySave },
    nftRuleset,
    ipRules,
    ipRoutes,
    sysctls,
    arpReplies,
    pendingLines,
    vipsElsewhere: elsewhere.filter((e) => (vips ?? []).some((v) => v.ip === e.vip)),
    addresses6: addresses6 === undefined ? undefined : parseAddresses6(addresses6),
    ipRoutes6,
    ip6tablesSave,
    firewalldConf,
  };
}
