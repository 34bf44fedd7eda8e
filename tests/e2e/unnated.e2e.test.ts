/**
 * End-to-end: no packet of a mapped pod leaves a node with the pod's own
 * address when its VIP goes away under it. A forwarder keeps its pods'
 * connections as null bindings (no NAT, so the holder can translate them);
 * once the VIP is deleted nothing marks them any more, they take the main
 * route out, and NAT (decided on a connection's first packet only) never
 * sees them again. Pods on the forwarders stream to the outside host while
 * the VIP is deleted (fail closed off): short connections and UDP (the
 * stream) and long-lived TCP connections (always open at the deletion, so
 * the old code leaked every time; the stream's only sometimes). Its capture
 * must see none of the pods' addresses, on either backend. And a connection
 * whose entry the pod's node deleted (a role change's flush) while the
 * server's segments still came through the holder: conntrack picks it up
 * from the server's side, reversed, and the pod's packets are replies to it.
 * And the way such connections arose in tests/e2e/vip.e2e.test.ts's three
 * moves: the old holder, the VIP gone but its entries not yet flushed, still
 * translated the server's packets back and passed them to the new holder,
 * which had flushed its pod's entry (UDP here). Needs root; reported as
 * skipped otherwise.
 */
import assert from "node:assert/strict";
import { type AgentProcess, EXTERNAL, startAgent } from "../../sim/agents.ts";
import type { Cluster } from "../../sim/cluster.ts";
import { ECHO_PORT, startConnections, startEchoServer } from "../../sim/connections.ts";
import { measureFailover, startCapture } from "../../sim/stream.ts";
import { placeVip } from "../../sim/vip.ts";
import { OUTSIDE_IP } from "../../sim/layout.ts";
import { roleFlush } from "../../core/conntrack.ts";
import { conntrackArgs } from "../../core/render.ts";
import { markFor } from "../../core/marks.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP = "192.0.2.50";

type Backend = "iptables" | "nftables";

/** Whether every node has (or, `false`, none has) a SNAT-chain rule of ours for the VIP. */
async function rolesApplied(cluster: Cluster, backend: Backend, present: boolean) {
  const deadline = Date.now() + 20_000;
  while (true) {
    const found = await Promise.all(cluster.nodes.map(async (node) => {
      if (backend === "nftables") {
        const r = await node.ns.exec(["nft", "list", "chain", "inet", "kube-egress", "snat-5"]);
        return r.code === 0;
      }
      const r = await node.ns.exec(["iptables", "-t", "nat", "-S", "KUBE-EGRESS-SNAT"]);
      return r.stdout.includes(`kube-egress ${VIP} `);
    }));
    if (found.every((f) => f === present)) return;
    if (Date.now() >= deadline) throw new Error(`VIP rules on the nodes: ${found.join(", ")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function vipDeletedWhileStreaming(cluster: Cluster, backend: Backend) {
  const pods = cluster.nodes.map((n) => cluster.pod(n.index, 1));
  const mappings = Object.fromEntries(pods.map((p) => [p.ip, VIP]));
  await cluster.writeMappings(mappings, { [VIP]: 5 });
  await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
  const agents: AgentProcess[] = cluster.nodes.map((n) =>
    startAgent(cluster, n, [...EXTERNAL, "--backend", backend], 30)
  );
  try {
    await rolesApplied(cluster, backend, true);
    // The forwarders' pods (node2, node3): their flows are null bindings there.
    const forwarded = pods.slice(1);
    const echo = await startEchoServer(cluster.outside.ns);
    const echoCapture = await startCapture(cluster.outside.ns, { ports: [ECHO_PORT] });
    const connections = await Promise.all(
      forwarded.map((p) => startConnections(p.ns, { count: 3, maxMs: 60_000 })),
    );
    const run = await measureFailover(cluster.outside, {
      vip: VIP,
      senders: forwarded.map((p) => ({ tag: p.name, ns: p.ns })),
      fault: async () => {
        await cluster.writeMappings(mappings, {});
        await rolesApplied(cluster, backend, false);
      },
      beforeMs: 600,
      afterMs: 2000,
    });
    await Promise.all(connections.map((c) => c.stop()));
    const echoPackets = await echoCapture.stop();
    await echo.stop();
    const podIps = new Set(pods.map((p) => p.ip));
    const own = [...run.wire.packets, ...echoPackets].filter((p) => podIps.has(p.src));
    console.log(
      `  ${backend}: VIP deleted while streaming: ${own.length} packets with a pod's own address; ` +
        `sources outside other than the VIP: ${JSON.stringify(run.wire.sources)}`,
    );
    assert.deepEqual(own, [], "packets that left with the pod's own address");
    // The VIP is gone and fail closed is off: the pods leave as their nodes now (the CNI's
    // masquerade), so the capture did see traffic after the deletion.
    const nodeIps = new Set(cluster.nodes.map((n) => n.ip));
    assert.ok(run.wire.packets.some((p) => nodeIps.has(p.src)), "the pods leave as their nodes");
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
}

Deno.test({
  name:
    "e2e un-NATed: a VIP deleted while forwarders' pods stream: no packet leaves with a pod's own address",
  ...e2e,
  fn: () => withCluster((cluster) => vipDeletedWhileStreaming(cluster, "iptables")),
});

Deno.test({
  name:
    "e2e un-NATed, nftables backend: a VIP deleted while forwarders' pods stream: no packet leaves with a pod's own address",
  ...e2e,
  fn: () => withCluster((cluster) => vipDeletedWhileStreaming(cluster, "nftables")),
});

const PUSH_PORT = 7201;

/** The TCP entries on `node` from `src` to `dst` (`conntrack -L` lines). */
async function entries(node: Cluster["nodes"][number], src: string, dst: string) {
  const out = await node.ns.run(["conntrack", "-L", "-p", "tcp", "-s", src, "-d", dst]);
  return out.split("\n").filter((l) =>
    l.includes(`dport=${PUSH_PORT}`) || l.includes(`sport=${PUSH_PORT}`)
  );
}

/**
 * A forwarder's pod reads from a server that sends every 50 ms (the pod only acknowledges). The
 * forwarder's entry of the connection is deleted as a role change's flush deletes it (by the
 * VIP's connection mark); the holder keeps its own, so the server's next segment is translated
 * there and reaches the pod first: the forwarder's new entry is reversed. Before, the pod's
 * acknowledgements were replies to it, unmarked, and left by the main route with the pod's own
 * address (4 in 1 s, both backends); now they go to the holder and leave as the VIP.
 */
async function pickedUpFromTheServer(cluster: Cluster, backend: Backend) {
  const pod = cluster.pod(2, 1);
  await cluster.writeMappings({ [pod.ip]: VIP }, { [VIP]: 5 });
  await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
  const agents = cluster.nodes.map((n) =>
    startAgent(cluster, n, [...EXTERNAL, "--backend", backend], 30)
  );
  const children: Deno.ChildProcess[] = [];
  try {
    await rolesApplied(cluster, backend, true);
    const capture = await startCapture(cluster.outside.ns, { ports: [PUSH_PORT] });
    children.push(cluster.outside.ns.spawn([
      "socat",
      `TCP-LISTEN:${PUSH_PORT},reuseaddr,fork`,
      "SYSTEM:while true; do echo tick; sleep 0.05; done",
    ]));
    const forwarder = cluster.node(2);
    let open: string[] = [];
    for (let i = 0; i < 100 && open.length === 0; i++) {
      if (i % 20 === 0) {
        children.push(pod.ns.spawn(["socat", `TCP:${OUTSIDE_IP}:${PUSH_PORT}`, "EXEC:sleep 30"]));
      }
      await new Promise((r) => setTimeout(r, 100));
      open = (await entries(forwarder, pod.ip, OUTSIDE_IP)).filter((l) =>
        l.includes("ESTABLISHED")
      );
    }
    assert.ok(open.length >= 1, "the pod's connection is established through the holder");
    // The default mask 0xff: the VIP's connection mark is its route id.
    await forwarder.ns.run(["conntrack", ...conntrackArgs(roleFlush(markFor(5, 0xff), 0xff))]);
    const deletedAt = Date.now();
    await new Promise((r) => setTimeout(r, 1000));
    const packets = await capture.stop();
    const reversed = await entries(forwarder, OUTSIDE_IP, pod.ip);
    const own = packets.filter((p) => p.src === pod.ip);
    const asVip = packets.filter((p) => p.src === VIP && p.t > deletedAt);
    console.log(
      `  ${backend}: entry picked up from the server's side: ${own.length} packets with the ` +
        `pod's own address, ${asVip.length} as the VIP after the deletion`,
    );
    assert.equal(
      reversed.length,
      1,
      `the forwarder picked the connection up reversed: ${reversed}`,
    );
    assert.deepEqual(own, [], "packets that left with the pod's own address");
    assert.ok(asVip.length > 0, "the pod's acknowledgements leave as the VIP, through the holder");
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await child.status;
    }
    await Promise.all(agents.map((a) => a.stop()));
  }
}

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name:
      `e2e un-NATed, ${backend}: a forwarder's connection picked up from the server's side after its entry was flushed: no packet leaves with the pod's own address`,
    ...e2e,
    fn: () => withCluster((cluster) => pickedUpFromTheServer(cluster, backend)),
  });
}

const PUSH_UDP_PORT = 7202;

/**
 * A pod on node3 talks UDP to a server that sends every 50 ms; node1 holds the VIP and
 * translates. The router keeps node1's MAC for the VIP (a router that ignores gratuitous ARP)
 * and node1's agent is paused, so node1 keeps its rules and entries: the VIP then moves to
 * node3, whose agent takes it over and flushes its pod's entry. Before, node1 translated the
 * server's next packets back and passed them to node3, which picked the flow up reversed: the
 * pod's next datagrams were replies to it and left with the pod's own address (every one of
 * them, for as long as the flow lasted). Now node1 drops them (the VIP is not on it), and the
 * pod's datagrams leave as the VIP from node3.
 */
async function oldHolderTranslatesAfterTheMove(cluster: Cluster, backend: Backend) {
  const [n1, , n3] = cluster.nodes;
  const pod = cluster.pod(3, 1);
  await cluster.writeMappings({ [pod.ip]: VIP }, { [VIP]: 5 });
  await placeVip(cluster.nodes, VIP, n1, cluster.spec.iface);
  const agents = cluster.nodes.map((n) =>
    startAgent(cluster, n, [...EXTERNAL, "--backend", backend], 30)
  );
  const children: Deno.ChildProcess[] = [];
  let paused = false;
  try {
    await rolesApplied(cluster, backend, true);
    const n1Mac = JSON.parse(await n1.ns.run(["ip", "-j", "link", "show", cluster.spec.iface]))[0]
      .address as string;
    await cluster.router.run(
      ["ip", "neigh", "replace", VIP, "lladdr", n1Mac, "dev", "eth0", "nud", "permanent"],
    );
    const capture = await startCapture(cluster.outside.ns, { ports: [PUSH_UDP_PORT] });
    children.push(cluster.outside.ns.spawn([
      "socat",
      `UDP-LISTEN:${PUSH_UDP_PORT},fork`,
      "SYSTEM:while true; do echo tick; sleep 0.05; done",
    ]));
    await new Promise((r) => setTimeout(r, 300));
    const client = new Deno.Command("ip", {
      args: ["netns", "exec", pod.ns.name, "socat", "-", `UDP:${OUTSIDE_IP}:${PUSH_UDP_PORT}`],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    children.push(client);
    const writer = client.stdin.getWriter();
    const say = () => writer.write(new TextEncoder().encode("hi\n"));
    await say();
    await new Promise((r) => setTimeout(r, 500));
    const n1Agent = agents[0];
    Deno.kill(n1Agent.pid, "SIGSTOP");
    paused = true;
    const n3Agent = agents[2];
    const since = n3Agent.lines.length;
    await placeVip(cluster.nodes, VIP, n3, cluster.spec.iface);
    await n3Agent.waitFor(/VIP role vip=192\.0\.2\.50 from=forwarder to=holder/, 20_000, since);
    // The server keeps sending to the VIP, through node1; then the pod speaks.
    await new Promise((r) => setTimeout(r, 300));
    const movedAt = Date.now();
    for (let i = 0; i < 3; i++) {
      await say();
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 300));
    const packets = await capture.stop();
    await writer.close().catch(() => {});
    const own = packets.filter((p) => p.src === pod.ip);
    const asVip = packets.filter((p) => p.src === VIP && p.t >= movedAt);
    const reversed = (await n3.ns.run(["conntrack", "-L", "-p", "udp", "-s", OUTSIDE_IP]))
      .split("\n").filter((l) => l.includes(`sport=${PUSH_UDP_PORT}`)).length;
    console.log(
      `  ${backend}: the old holder's entries after the move: ${own.length} packets with the ` +
        `pod's own address, ${asVip.length} as the VIP; entries picked up reversed on node3: ${reversed}`,
    );
    assert.deepEqual(own, [], "packets that left with the pod's own address");
    assert.equal(asVip.length, 3, "the pod's datagrams after the move leave as the VIP");
  } finally {
    if (paused) Deno.kill(agents[0].pid, "SIGCONT");
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch {
        // Exited already.
      }
      await child.status;
    }
    await Promise.all(agents.map((a) => a.stop()));
  }
}

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name:
      `e2e un-NATed, ${backend}: the old holder, its VIP gone and its agent behind, does not translate the server's packets back to a pod whose entry the new holder flushed`,
    ...e2e,
    fn: () => withCluster((cluster) => oldHolderTranslatesAfterTheMove(cluster, backend)),
  });
}
