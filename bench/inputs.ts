/** Synthetic cluster inputs for the benchmarks: many pods spread over VIPs. */
import type { RawSnapshot } from "../core/snapshot.ts";
import { DatapathConfig } from "../core/schema.ts";

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

/** The i-th VIP (0-based): 192.0.2.50-249, then 198.51.100.50+. */
export function vipAddress(i: number): string {
  return i < 200 ? `192.0.2.${50 + i}` : `198.51.100.${i - 200 + 50}`;
}

/** The i-th pod IP (0-based), inside 10.0.0.0/8. */
export function podAddress(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

/** `pods` pods round-robin over `vips` VIPs (route ids 1..vips), as a source would hand them over. */
export function syntheticSnapshot(pods: number, vips: number): RawSnapshot {
  const vipList = Array.from({ length: vips }, (_, i) => ({
    origin: `vip_routeid_mapping/${vipAddress(i)}`,
    ip: vipAddress(i),
    routeId: i + 1,
  }));
  return {
    vips: vipList,
    pods: Array.from({ length: pods }, (_, i) => ({
      origin: `podip_vip_mapping/${podAddress(i)}`,
      podIp: podAddress(i),
      vip: vipList[i % vips].ip,
    })),
    problems: [],
  };
}
