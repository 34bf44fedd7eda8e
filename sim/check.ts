/**
 * The check behind every ✓/✗ of the simulator: for each pod, the source
 * address the outside hosts (behind the router and on the LAN) saw over TCP,
 * UDP and ICMP, and the source the ClusterIP service's backend saw (which must
 * stay the pod's own address), compared with what was expected.
 */
import { table } from "../core/status.ts";
import type { Cluster, OutsideHost, SimPod } from "./cluster.ts";
import { SERVICE_IP } from "./layout.ts";
import { type Proto, sourceSeenRetry } from "./probe.ts";

/** One pod's observed sources. */
export interface PodCheck {
  readonly pod: string;
  readonly podIp: string;
  readonly node: string;
  /** The address every outside host should see. */
  readonly expected: string;
  /** Per outside host name, per protocol: what it saw. */
  readonly outside: Readonly<Record<string, Readonly<Record<Proto, string>>>>;
  /** What the ClusterIP backend saw over TCP and UDP (expected: the pod's own address). */
  readonly service: Readonly<Record<"tcp" | "udp", string>>;
  readonly ok: boolean;
}

const PROTOS: readonly Proto[] = ["tcp", "udp", "icmp"];

/** Whether every observation matches. */
export function podCheckOk(check: Omit<PodCheck, "ok">): boolean {
  return Object.values(check.outside).every((seen) =>
    PROTOS.every((p) => seen[p] === check.expected)
  ) && check.service.tcp === check.podIp && check.service.udp === check.podIp;
}

async function seenBy(pod: SimPod, host: OutsideHost): Promise<Record<Proto, string>> {
  const [tcp, udp, icmp] = await Promise.all(
    PROTOS.map((proto) => sourceSeenRetry(pod.ns, host.ip, proto, { witness: host.icmp })),
  );
  return { tcp, udp, icmp };
}

/** Probes one pod against every outside host and the service. */
export async function checkPod(
  cluster: Cluster,
  pod: SimPod,
  expected: string,
  hosts: readonly OutsideHost[] = [cluster.outside, cluster.lanHost],
): Promise<PodCheck> {
  const [outside, svcTcp, svcUdp] = await Promise.all([
    Promise.all(hosts.map(async (h) => [h.name, await seenBy(pod, h)] as const)),
    sourceSeenRetry(pod.ns, SERVICE_IP, "tcp"),
    sourceSeenRetry(pod.ns, SERVICE_IP, "udp"),
  ]);
  const check = {
    pod: pod.name,
    podIp: pod.ip,
    node: pod.node.name,
    expected,
    outside: Object.fromEntries(outside),
    service: { tcp: svcTcp, udp: svcUdp },
  };
  return { ...check, ok: podCheckOk(check) };
}

/** Probes every pod of `expectations` (pod → expected source), a few pods at a time. */
export async function checkPods(
  cluster: Cluster,
  expectations: ReadonlyMap<SimPod, string>,
  options: { hosts?: readonly OutsideHost[]; parallel?: number } = {},
): Promise<PodCheck[]> {
  const parallel = options.parallel ?? 3;
  const entries = [...expectations];
  const results: PodCheck[] = new Array(entries.length);
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const i = next++;
      results[i] = await checkPod(cluster, entries[i][0], entries[i][1], options.hosts);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, entries.length) }, worker));
  return results;
}

/** One cell: the address when every host saw the same, else each host's view. */
function cell(check: PodCheck, proto: Proto): string {
  const seen = Object.entries(check.outside).map(([host, s]) => [host, s[proto]] as const);
  const values = new Set(seen.map(([, v]) => v));
  return values.size === 1 ? seen[0][1] : seen.map(([host, v]) => `${host}: ${v}`).join(", ");
}

/** The table the story prints: pod, node, expected source, what was seen, ✓/✗. */
export function renderChecks(checks: readonly PodCheck[]): string {
  return table(
    ["POD", "NODE", "SHOULD LEAVE AS", "TCP", "UDP", "ICMP", "SERVICE SAW", ""],
    checks.map((c) => [
      c.pod,
      c.node,
      c.expected,
      cell(c, "tcp"),
      cell(c, "udp"),
      cell(c, "icmp"),
      c.service.tcp === c.service.udp ? c.service.tcp : `${c.service.tcp} / ${c.service.udp}`,
      c.ok ? "✓" : "✗",
    ]),
  );
}

/** The legend printed above a table. */
export function checksLegend(cluster: Cluster): string {
  return `sources seen by ${cluster.outside.ip} (behind the router) and ${cluster.lanHost.ip} ` +
    `(on the LAN); SERVICE SAW: what the backend of ClusterIP ${SERVICE_IP} saw ` +
    `(must be the pod itself)`;
}
