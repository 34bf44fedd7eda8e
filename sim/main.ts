/**
 * `deno task sim`: builds a simulated bare-metal cluster in network
 * namespaces, runs the real agent on every node, maps pods to two VIPs held
 * by different nodes, and shows the source address the outside world sees
 * for each pod; then deletes the rules and shows the node addresses again.
 * Everything is torn down at the end, on failure and on Ctrl-C.
 * Exit code 0 only when every check held.
 */
import { applyOnAllNodes, EXTERNAL } from "./agents.ts";
import { Cluster, OUTSIDE_IP, type SimPod } from "./cluster.ts";
import { sourceSeenRetry } from "./probe.ts";
import { placeVip } from "./vip.ts";
import { ensureTools, isRoot, SIM_TOOLS } from "../cmd/tools.ts";
import { table } from "../core/status.ts";

const VIPS = { "192.0.2.50": 5, "192.0.2.51": 6 };

interface Row {
  pod: SimPod;
  expected: string;
  tcp: string;
  udp: string;
}

async function probeRows(expectations: Map<SimPod, string>): Promise<Row[]> {
  const rows: Row[] = [];
  for (const [pod, expected] of expectations) {
    const [tcp, udp] = await Promise.all([
      sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"),
      sourceSeenRetry(pod.ns, OUTSIDE_IP, "udp"),
    ]);
    rows.push({ pod, expected, tcp, udp });
  }
  return rows;
}

function printRows(title: string, rows: Row[]): boolean {
  console.log(`\n${title}`);
  console.log(table(
    ["POD", "POD IP", "NODE", "SHOULD LEAVE AS", "TCP SOURCE", "UDP SOURCE", ""],
    rows.map((r) => {
      const ok = r.tcp === r.expected && r.udp === r.expected;
      return [r.pod.name, r.pod.ip, r.pod.node.name, r.expected, r.tcp, r.udp, ok ? "✓" : "✗"];
    }),
  ));
  return rows.every((r) => r.tcp === r.expected && r.udp === r.expected);
}

async function story(cluster: Cluster): Promise<boolean> {
  const [vipA, vipB] = Object.keys(VIPS);
  const holderA = cluster.node(1);
  const holderB = cluster.node(Math.min(2, cluster.nodes.length));
  // Map the first pod of every node to A and the second to B; leave the rest unmapped.
  const mapped = new Map<SimPod, string>();
  for (const pod of cluster.pods) {
    const k = Number(pod.name.split("-")[1]);
    if (k === 1) mapped.set(pod, vipA);
    else if (k === 2) mapped.set(pod, vipB);
  }
  await cluster.writeMappings(Object.fromEntries([...mapped].map(([p, v]) => [p.ip, v])), VIPS);
  console.log(
    `\nVIP ${vipA} on ${holderA.name}, VIP ${vipB} on ${holderB.name}; running the agent on every node`,
  );
  await placeVip(cluster.nodes, vipA, holderA, cluster.spec.iface);
  await placeVip(cluster.nodes, vipB, holderB, cluster.spec.iface);
  await applyOnAllNodes(cluster, EXTERNAL);
  const expectations = new Map(cluster.pods.map((p) => [p, mapped.get(p) ?? p.node.ip]));
  let ok = printRows(
    `sources seen by the outside host ${OUTSIDE_IP}:`,
    await probeRows(expectations),
  );

  console.log("\ndeleting kube-egress from every node (mod.ts run -d)");
  await applyOnAllNodes(cluster, [...EXTERNAL, "-d"]);
  const after = new Map(cluster.pods.map((p) => [p, p.node.ip]));
  ok = printRows(
    "after delete, every pod leaves as its node again:",
    await probeRows(after),
  ) && ok;
  return ok;
}

async function main(): Promise<number> {
  if (!isRoot()) {
    console.error(
      "deno task sim needs root: it creates network namespaces (run it with sudo, or as root)",
    );
    return 1;
  }
  await ensureTools(SIM_TOOLS, { install: true, log: (l) => console.log(l) });
  let cluster: Cluster | undefined;
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\ninterrupted: tearing the simulated cluster down");
    await cluster?.destroy();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    cluster = await Cluster.create({}, { progress: (line) => console.log(line) });
    const ok = await story(cluster);
    console.log(ok ? "\nall checks ✓" : "\nsome checks ✗");
    return ok ? 0 : 1;
  } finally {
    console.log("tearing down");
    await cluster?.destroy();
  }
}

if (import.meta.main) Deno.exit(await main());
