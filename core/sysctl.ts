/**
 * Reverse-path filtering. The holder receives other nodes' pod traffic on the
 * LAN interface, and with an overlay (vxlan, IPIP, ...) the replies the holder
 * un-SNATs reach the pod's node on the overlay device, whose reverse route for
 * an outside source is the LAN: strict mode (1) drops both. The kernel uses
 * max(all, interface), so setting those interfaces to loose (2) is enough and
 * leaves every other interface as it was. Off (0) is left alone.
 */
import type { PodRoute } from "./iproute.ts";
import type { SysctlWrite } from "./operation.ts";

/** The value a loosened reverse-path filter is given. */
const LOOSE = 2;

/** The sysctl keys a pass reads for these interfaces. */
export function rpFilterKeys(...ifaces: string[]): string[] {
  return ["net.ipv4.conf.all.rp_filter", ...ifaces.map((i) => `net.ipv4.conf.${i}.rp_filter`)];
}

/**
 * The interfaces whose reverse-path filter must not be strict: the LAN
 * interface, and every device through which the main table reaches other
 * nodes' pods (a pod-range route with a next hop: flannel/Calico vxlan, IPIP,
 * Antrea, host-gw). Directly connected pod ranges (the node's own pod bridge or
 * per-pod veths) keep their setting: strict there stops pods spoofing sources.
 */
export function rpFilterInterfaces(iface: string, podRoutes: readonly PodRoute[]): string[] {
  const overlays = podRoutes.filter((r) => r.gateway !== undefined && r.dev !== iface)
    .map((r) => r.dev);
  return [iface, ...[...new Set(overlays)].sort()];
}

/** The rp_filter mode in force on an interface: the kernel's max(all, interface). */
export function effectiveRpFilter(
  sysctls: Readonly<Record<string, number>>,
  iface: string,
): number {
  const [all, own] = rpFilterKeys(iface).map((key) => sysctls[key] ?? 0);
  return Math.max(all, own);
}

/** The writes that make each interface's effective mode loose where it is strict. */
export function rpFilterFixes(
  sysctls: Readonly<Record<string, number>>,
  ifaces: readonly string[],
): SysctlWrite[] {
  return ifaces.filter((i) => effectiveRpFilter(sysctls, i) === 1)
    .map((i) => ({ key: `net.ipv4.conf.${i}.rp_filter`, value: LOOSE }));
}

/**
 * The originals to remember before `fixes` (loose writes) are applied: each
 * key's live value, unless one is already remembered (the first original is
 * the one to give back, not the loose value a later pass sees).
 */
export function rememberOriginals(
  remembered: Readonly<Record<string, number>>,
  fixes: readonly SysctlWrite[],
  live: Readonly<Record<string, number>>,
): Record<string, number> {
  const next = { ...remembered };
  for (const { key } of fixes) {
    if (!(key in next) && key in live) next[key] = live[key];
  }
  return next;
}

/**
 * The writes that give back the remembered reverse-path filters: only
 * where the value is still the loose one we set (an operator's later change
 * stands) and the interface is still there (a key the node did not report).
 */
export function rpFilterRestores(
  remembered: Readonly<Record<string, number>>,
  live: Readonly<Record<string, number>>,
): SysctlWrite[] {
  return Object.entries(remembered)
    .filter(([key, original]) => live[key] === LOOSE && original !== LOOSE)
    .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    .map(([key, value]) => ({ key, value }));
}
