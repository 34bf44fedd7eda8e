/**
 * The old stack's command lines, for drop-in and migration tests: the
 * kube-egress DaemonSet `args` as kube-egress 0.4's daemonset.yaml and
 * egress-mapper's operator (getArgsForKubeEgressDS, with its example
 * EgressMapper's values) wrote them, the ConfigMap mounts pointed at the
 * simulated cluster's mapping directories. The VIPs were placed by
 * keepalived-vip: sim/keepalived_vip.ts.
 */
import type { Cluster } from "./cluster.ts";
import { POD_CIDR, SERVICE_CIDR } from "./layout.ts";

/** kube-egress 0.4's daemonset.yaml `args`. */
export function oldDaemonSetArgs(cluster: Cluster): string[] {
  return [
    `--pod-subnet=${POD_CIDR}`,
    `--service-subnet=${SERVICE_CIDR}`,
    `--interface=${cluster.spec.iface}`,
    "--update-interval=5",
    `--vip-routeid-mappings=${cluster.vipRouteDir}`,
    `--podip-vip-mappings=${cluster.podVipDir}`,
  ];
}

/** The `args` of the kube-egress DaemonSet that egress-mapper created. */
export function egressMapperArgs(cluster: Cluster): string[] {
  return [
    `--vip-routeid-mappings=${cluster.vipRouteDir}`,
    `--podip-vip-mappings=${cluster.podVipDir}`,
    `--pod-subnet=${POD_CIDR}`,
    `--service-subnet=${SERVICE_CIDR}`,
    `--interface=${cluster.spec.iface}`,
    "--update-interval=5",
  ];
}
