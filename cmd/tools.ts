/**
 * The OS tools each part needs, with the Debian package that provides them.
 * Missing tools are installed with apt-get when running as root (and allowed),
 * otherwise named precisely with the command that installs them.
 */
import { which } from "./exec.ts";

export interface Tool {
  readonly command: string;
  readonly pkg: string;
}

/** What the agent runs on a node (with the iptables backend; see `agentTools`). */
export const AGENT_TOOLS: readonly Tool[] = [
  { command: "ip", pkg: "iproute2" },
  { command: "iptables", pkg: "iptables" },
  { command: "iptables-save", pkg: "iptables" },
  { command: "iptables-restore", pkg: "iptables" },
  { command: "ipset", pkg: "ipset" },
  { command: "conntrack", pkg: "conntrack" },
];

/** What the nftables backend runs instead of iptables and ipset. */
export const NFTABLES_AGENT_TOOLS: readonly Tool[] = [
  { command: "ip", pkg: "iproute2" },
  { command: "nft", pkg: "nftables" },
  { command: "conntrack", pkg: "conntrack" },
];

/** The agent's tools for a backend. */
export function agentTools(backend: "iptables" | "nftables"): readonly Tool[] {
  return backend === "nftables" ? NFTABLES_AGENT_TOOLS : AGENT_TOOLS;
}

/** What `--conntrack-sync on` adds. */
export const SYNC_TOOLS: readonly Tool[] = [{ command: "conntrackd", pkg: "conntrackd" }];

/** What `--vip-mode keepalived` adds. */
export const PLACEMENT_TOOLS: readonly Tool[] = [{ command: "keepalived", pkg: "keepalived" }];

/** What `--vip-mode external` announces the VIPs it takes with (optional: warned once when missing). */
export const ANNOUNCE_TOOLS: readonly Tool[] = [
  { command: "arping", pkg: "arping" },
  // Unsolicited neighbour advertisements for IPv6 VIPs.
  { command: "na6", pkg: "ipv6toolkit" },
];

/** Everything the agent may run, in any mode and backend: what the node image must hold. */
export const NODE_TOOLS: readonly Tool[] = [
  ...AGENT_TOOLS,
  ...NFTABLES_AGENT_TOOLS,
  ...SYNC_TOOLS,
  ...PLACEMENT_TOOLS,
  ...ANNOUNCE_TOOLS,
];

/** What the simulator adds: hosts, probes, VRRP, captures. */
export const SIM_TOOLS: readonly Tool[] = [
  ...AGENT_TOOLS,
  ...PLACEMENT_TOOLS,
  ...SYNC_TOOLS,
  { command: "bridge", pkg: "iproute2" },
  { command: "ss", pkg: "iproute2" },
  { command: "setsid", pkg: "util-linux" },
  { command: "nft", pkg: "nftables" },
  { command: "socat", pkg: "socat" },
  ...ANNOUNCE_TOOLS,
  { command: "tcpdump", pkg: "tcpdump" },
  { command: "ping", pkg: "iputils-ping" },
  { command: "iperf3", pkg: "iperf3" },
];

/** What building and running the node image needs (`deno task image`, `sim --agents image`). */
export const IMAGE_TOOLS: readonly Tool[] = [
  { command: "dockerd", pkg: "docker.io" },
  { command: "debootstrap", pkg: "debootstrap" },
  { command: "npm", pkg: "npm" },
];

/** True when running as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** Returns the tools not found on PATH. */
export function missingTools(tools: readonly Tool[]): Promise<Tool[]> {
  return Promise.resolve(tools.filter((tool) => which(tool.command) === undefined));
}

/** The packages behind a list of tools, once each, sorted. */
export function packagesOf(tools: readonly Tool[]): string[] {
  return [...new Set(tools.map((t) => t.pkg))].sort();
}

const POLICY_RC_D = "/usr/sbin/policy-rc.d";

/**
 * Runs `fn` (an apt-get install) with Debian's policy-rc.d saying "no": the
 * packages' services are not started. Installing docker.io must not start a
 * system dockerd, which would add a bridge and iptables rules to the root
 * namespace. An existing policy-rc.d is left as it is.
 */
async function withoutServiceStarts<T>(fn: () => Promise<T>): Promise<T> {
  const existed = await Deno.lstat(POLICY_RC_D).then(() => true, () => false);
  if (!existed) await Deno.writeTextFile(POLICY_RC_D, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  try {
    return await fn();
  } finally {
    if (!existed) await Deno.remove(POLICY_RC_D).catch(() => {});
  }
}

/**
 * Makes sure the tools exist: installs missing ones with apt-get when root and
 * `install` is set, else throws an error naming the packages.
 */
export async function ensureTools(
  tools: readonly Tool[],
  options: { install: boolean; log?: (line: string) => void },
): Promise<void> {
  let missing = await missingTools(tools);
  if (missing.length === 0) return;
  const pkgs = packagesOf(missing);
  if (options.install && isRoot() && which("apt-get") !== undefined) {
    // dax only here: a node's agent never installs, and loading it costs ~55 ms.
    const { default: $ } = await import("dax");
    options.log?.(`installing missing packages: ${pkgs.join(" ")}`);
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    await $`apt-get update -qq`.env(env).quiet();
    await withoutServiceStarts(async () => {
      await $`apt-get install -y -qq --no-install-recommends ${pkgs}`.env(env).quiet();
    });
    missing = await missingTools(tools);
    if (missing.length === 0) return;
  }
  throw new Error(
    `missing tools: ${missing.map((t) => t.command).join(", ")}; install them with: ` +
      `apt-get install -y ${packagesOf(missing).join(" ")}`,
  );
}
