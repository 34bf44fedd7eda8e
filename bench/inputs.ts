/** Synthetic cluster inputs for the benchmarks: many pods spread over VIPs. */
import type { RawSnapshot } from "../core/snapshot.ts";
import { DatapathConfig } from "../core/schema.ts";
import { formatIPv6 } from "../core/ip.ts";

/** The address family of a synthetic cluster: IPv4 (as before) or IPv6 alone. */
export type BenchFamily = "ipv4" | "ipv6";

/** Pods in 10.0.0.0/8, services in 172.16.0.0/12, on eth0. */
export const BENCH_CONFIG = DatapathConfig.parse({
  interface: "eth0",
  podCidrs: ["10.0.0.0/8"],
  serviceCidrs: ["172.16.0.0/12"],
  excludeCidrs: [],
  markMask: "0xff",
  rulePriority: 1000,
  routeProtocol: 233,
});

/** The IPv6 cluster's: pods in fd00:10::/64, services in fd00:172::/108, on eth0. */
export const BENCH_CONFIG6 = DatapathConfig.parse({
  ...BENCH_CONFIG,
  podCidrs: ["fd00:10::/64"],
  serviceCidrs: ["fd00:172::/108"],
});

/** The benchmark's datapath settings for a family. */
export function benchConfig(family: BenchFamily): DatapathConfig {
  return family === "ipv6" ? BENCH_CONFIG6 : BENCH_CONFIG;
}

/**
 * The i-th VIP (0-based): 192.0.2.50-249, then 198.51.100.50+; in IPv6
 * 2001:db8::50 onwards (the same digits, read as hex).
 * Canonical text (RFC 5952), as `ip` and `nft` print it.
 */
export function vipAddress(i: number, family: BenchFamily = "ipv4"): string {
  if (family === "ipv6") return `2001:db8::${50 + i}`;
  return i < 200 ? `192.0.2.${50 + i}` : `198.51.100.${i - 200 + 50}`;
}

const POD6_BASE = 0xfd00_0010_0000_0000_0000_0000_0000_0000n;

/** The i-th pod IP (0-based), inside 10.0.0.0/8 (IPv6: fd00:10::/64). */
export function podAddress(i: number, family: BenchFamily = "ipv4"): string {
  // 1-based in IPv6, so that no pod is the range's all-zeros address (written "fd00:10::").
  if (family === "ipv6") return formatIPv6(POD6_BASE + BigInt(i + 1));
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** `pods` pods round-robin over `vips` VIPs (route ids 1..vips), as a source would hand them over. */
export function syntheticSnapshot(
  pods: number,
  vips: number,
  family: BenchFamily = "ipv4",
): RawSnapshot {
  const vipList = Array.from({ length: vips }, (_, i) => ({
    origin: `vip_routeid_mapping/${vipAddress(i, family)}`,
    ip: vipAddress(i, family),
    routeId: i + 1,
  }));
  return {
    vips: vipList,
    pods: Array.from({ length: pods }, (_, i) => ({
      origin: `podip_vip_mapping/${podAddress(i, family)}`,
      podIp: podAddress(i, family),
      vip: vipList[i % vips].ip,
    })),
    problems: [],
  };
}
