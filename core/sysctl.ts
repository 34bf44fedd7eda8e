/**
 * Reverse-path filtering. The holder receives other nodes' pod traffic on the
 * LAN interface, and with an overlay the replies reach pods on another device
 * than the one their route uses; strict mode (1) drops both. The kernel uses
 * max(all, interface), so setting the interface to loose (2) is enough and
 * leaves every other interface as it was. Off (0) is left alone.
 */

/** The sysctl keys a pass reads for these interfaces. */
export function rpFilterKeys(...ifaces: string[]): string[] {
  return ["net.ipv4.conf.all.rp_filter", ...ifaces.map((i) => `net.ipv4.conf.${i}.rp_filter`)];
}

/** The rp_filter mode in force on an interface: the kernel's max(all, interface). */
export function effectiveRpFilter(
  sysctls: Readonly<Record<string, number>>,
  iface: string,
): number {
  const [all, own] = rpFilterKeys(iface).map((key) => sysctls[key] ?? 0);
  return Math.max(all, own);
}

/** "key=value" writes that make each interface's effective mode loose where it is strict. */
export function rpFilterFixes(
  sysctls: Readonly<Record<string, number>>,
  ifaces: readonly string[],
): string[] {
  return ifaces.filter((i) => effectiveRpFilter(sysctls, i) === 1)
    .map((i) => `net.ipv4.conf.${i}.rp_filter=2`);
}
