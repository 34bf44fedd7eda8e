/**
 * End-to-end: a VIP move that the LAN's neighbour caches do not follow.
 * The VIP is moved with no announcement from whoever moves it; on every
 * other move the one node whose role does not change has its neighbour entry
 * for the VIP pinned to the old holder (`ip neigh replace ... nud permanent`,
 * which no announcement changes), and on the others no announcement at all
 * reaches it (gratuitous ARP for the VIP dropped on arrival, the agent's own
 * included), so its entry stays at the old holder until it expires. After
 * one pass of each (long-running) agent, new TCP, UDP and ICMP flows from a
 * mapped pod on every node must leave as the VIP: the pinned node's traffic
 * goes through the old holder, which must forward it to the new one whatever
 * its own conntrack makes of a connection it sees in one direction only.
 * And an IPv6 VIP moved the same way (dual-stack cluster): the agent that
 * takes it sends unsolicited neighbour advertisements (na6), in more than one
 * round, seen by tcpdump on the router, which then sends to the new holder.
 * Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { type AgentProcess, EXTERNAL, startAgent } from "../../sim/agents.ts";
import { type Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { type Proto, sourceSeenRetry } from "../../sim/probe.ts";
import { placeVip } from "../../sim/vip.ts";
import { eachLine } from "../../sim/children.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP = "192.0.2.50";
const MOVES = 20;
const PROTOS: readonly Proto[] = ["tcp", "udp", "icmp"];

/** Drops gratuitous ARP for the VIP arriving at a node (sender and target address both the VIP). */
const NO_GARP = (on: boolean) =>
  on
    ? `table arp ke-test-nogarp {
  chain in {
    type filter hook input priority 0;
    arp operation request arp saddr ip ${VIP} arp daddr ip ${VIP} counter drop
  }
}
`
    : "delete table arp ke-test-nogarp\n";

async function macOf(node: SimNode, iface: string): Promise<string> {
  const links = JSON.parse(await node.ns.run(["ip", "-json", "link", "show", "dev", iface]));
  return links[0].address;
}

type Backend = "iptables" | "nftables";

/** The role the node's SNAT rules give the VIP (route id 5) right now: what its last pass applied. */
async function appliedRole(node: SimNode, backend: Backend): Promise<string | undefined> {
  if (backend === "nftables") {
    const chain = await node.ns.exec(["nft", "list", "chain", "inet", "kube-egress", "snat-5"]);
    if (chain.code !== 0) return undefined;
    return chain.stdout.includes(`snat ip to ${VIP}`) ? "holder" : "forward";
  }
  const rules = await node.ns.exec(["iptables", "-t", "nat", "-S", "KUBE-EGRESS-SNAT"]);
  return /kube-egress [0-9.]+ (holder|forward)/.exec(rules.stdout)?.[1];
}

/** Waits (bounded) until every agent has applied the roles of `holder` holding the VIP. */
async function waitForRoles(
  cluster: Cluster,
  backend: Backend,
  holder: SimNode,
  timeoutMs = 20_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const roles = await Promise.all(cluster.nodes.map((n) => appliedRole(n, backend)));
    const want = cluster.nodes.map((n) => (n === holder ? "holder" : "forward"));
    if (roles.every((r, i) => r === want[i])) return;
    if (Date.now() >= deadline) {
      throw new Error(`roles after ${timeoutMs} ms: ${roles.join(", ")}; want ${want.join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The router's neighbour entry for the VIP once it is `mac` (waits up to 4 s), else what it is then. */
async function waitForNeighbour(cluster: Cluster, mac: string): Promise<string | undefined> {
  const deadline = Date.now() + 4000;
  while (true) {
    const entries = JSON.parse(
      await cluster.router.run(["ip", "-json", "neigh", "show", "to", VIP]) || "[]",
    ) as { lladdr?: string }[];
    const lladdr = entries[0]?.lladdr;
    if (lladdr === mac || Date.now() >= deadline) return lladdr;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Moves the VIP from every node to `to` the way an unannounced move does: addresses only. */
async function moveSilently(cluster: Cluster, to: SimNode) {
  const iface = cluster.spec.iface;
  for (const node of cluster.nodes) {
    if (node !== to) await node.ns.exec(["ip", "addr", "del", `${VIP}/32`, "dev", iface]);
  }
  await to.ns.run(["ip", "addr", "replace", `${VIP}/32`, "dev", iface]);
}

/** 20 moves with the agents on `backend` (see the module doc). */
async function staleNeighbourMoves(cluster: Cluster, backend: Backend) {
  const iface = cluster.spec.iface;
  const pods = cluster.nodes.map((n) => cluster.pod(n.index, 1));
  const witness = cluster.outsideHosts.find((h) => h.ip === OUTSIDE_IP)!.icmp!;
  await cluster.writeMappings(Object.fromEntries(pods.map((p) => [p.ip, VIP])), { [VIP]: 5 });
  const macs = await Promise.all(cluster.nodes.map((n) => macOf(n, iface)));
  await placeVip(cluster.nodes, VIP, cluster.node(1), iface);
  const agents: AgentProcess[] = cluster.nodes.map((n) =>
    startAgent(cluster, n, [...EXTERNAL, "--backend", backend])
  );
  const failures: string[] = [];
  let good = 0;
  try {
    await waitForRoles(cluster, backend, cluster.node(1));
    let holder = cluster.node(1);
    for (let move = 1; move <= MOVES; move++) {
      const next = cluster.nodes[holder.index % cluster.nodes.length];
      const bystander = cluster.nodes.find((n) => n !== holder && n !== next)!;
      // Every node's cache points at the holder before the move (the last checks used it).
      const pinned = move % 2 === 0;
      if (pinned) {
        await bystander.ns.run([
          "ip",
          "neigh",
          "replace",
          VIP,
          "lladdr",
          macs[holder.index - 1],
          "dev",
          iface,
          "nud",
          "permanent",
        ]);
      }
      // Unpinned: no announcement reaches the bystander (the agent's own gratuitous ARP is dropped).
      if (!pinned) await bystander.ns.run(["nft", "-f", "-"], { stdin: NO_GARP(true) });
      await moveSilently(cluster, next);
      await waitForRoles(cluster, backend, next);
      const routerFollowed = waitForNeighbour(cluster, macs[next.index - 1]);
      const seen = await Promise.all(
        pods.flatMap((pod) =>
          PROTOS.map(async (proto) => ({
            what: `${pod.name} ${proto}`,
            source: await sourceSeenRetry(pod.ns, OUTSIDE_IP, proto, { witness }),
          }))
        ),
      );
      const wrong = seen.filter((s) => s.source !== VIP);
      // The new holder's gratuitous ARP moved the router's entry (it saw replies go to the old one).
      const router = await routerFollowed;
      if (router !== macs[next.index - 1]) {
        wrong.push({ what: "router's neighbour entry", source: String(router) });
      }
      const label = `move ${move} ${holder.name}→${next.name}` +
        (pinned
          ? ` (${bystander.name} pinned to ${holder.name})`
          : ` (no announcement reaches ${bystander.name})`);
      if (wrong.length === 0) good++;
      else failures.push(`${label}: ${wrong.map((w) => `${w.what}: ${w.source}`).join(", ")}`);
      if (pinned) await bystander.ns.exec(["ip", "neigh", "del", VIP, "dev", iface]);
      else await bystander.ns.run(["nft", "-f", "-"], { stdin: NO_GARP(false) });
      holder = next;
    }
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
  console.log(
    `stale neighbours (${backend}): ${good}/${MOVES} moves with tcp, udp and icmp from every node as the VIP`,
  );
  assert.deepEqual(failures, [], `${failures.length} of ${MOVES} moves lost flows`);
}

Deno.test({
  name:
    "e2e neighbour: 20 unannounced VIP moves, a neighbour pinned to the old holder on every other one: tcp, udp and icmp from every node leave as the VIP after one pass",
  ...e2e,
  fn: () => withCluster((cluster) => staleNeighbourMoves(cluster, "iptables")),
});

Deno.test({
  name: "e2e neighbour, nftables backend: the same 20 moves",
  ...e2e,
  fn: () => withCluster((cluster) => staleNeighbourMoves(cluster, "nftables")),
});

const VIP6 = "2001:db8:1::50";

/** The role node's ip6tables SNAT rules give the IPv6 VIP, once its agent applied one. */
async function appliedRole6(node: SimNode): Promise<string | undefined> {
  const rules = await node.ns.exec(["ip6tables", "-t", "nat", "-S"]);
  return new RegExp(`kube-egress ${VIP6} (holder|forward)`).exec(rules.stdout)?.[1];
}

/** The IPv6 VIP placed as the agent places it (no DAD, deprecated), on `to` only. */
async function moveVip6(cluster: Cluster, to: SimNode) {
  const iface = cluster.spec.iface;
  for (const node of cluster.nodes) {
    if (node !== to) await node.ns.exec(["ip", "-6", "addr", "del", `${VIP6}/128`, "dev", iface]);
  }
  await to.ns.run(
    ["ip", "-6", "addr", "replace", `${VIP6}/128`, "dev", iface, "nodad", "preferred_lft", "0"],
  );
}

async function waitUntil(what: string, ms: number, ok: () => Promise<boolean>) {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name:
    "e2e neighbour, IPv6: the agent that takes an IPv6 VIP sends unsolicited neighbour advertisements (override, its MAC) in rounds; the router follows",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const iface = cluster.spec.iface;
      const [n1, n2] = cluster.nodes;
      await cluster.writeMappings(
        Object.fromEntries(cluster.nodes.map((n) => [cluster.pod(n.index, 1).ip6!, VIP6])),
        { [VIP6]: 5 },
      );
      const macs = await Promise.all(cluster.nodes.map((n) => macOf(n, iface)));
      await moveVip6(cluster, n1);
      const agents = cluster.nodes.map((n) => startAgent(cluster, n, EXTERNAL));
      const capture = cluster.router.spawn(
        ["tcpdump", "-l", "-n", "-e", "-vv", "-Q", "in", "-i", "eth0", "icmp6 and ip6[40] == 136"],
        { stdout: "piped", stderr: "null" },
      );
      const seen: { at: number; line: string }[] = [];
      const read = eachLine(capture.stdout!, (line) => {
        // -vv prints the target link-layer address option on lines of its own, indented.
        if (/^\d/.test(line)) seen.push({ at: performance.now(), line });
        else if (seen.length > 0) seen[seen.length - 1].line += " " + line.trim();
      }).catch(() => {});
      try {
        const roles = () => Promise.all(cluster.nodes.map(appliedRole6));
        await waitUntil("node1 holds the IPv6 VIP", 20_000, async () =>
          (await roles()).join() === "holder,forward");
        // The router learns node1's MAC for the VIP (traffic to it), as a router on a LAN would.
        await cluster.router.run(["ping", "-6", "-c", "1", "-W", "2", VIP6]);
        await new Promise((r) =>
          setTimeout(r, 1000)
        ); // tcpdump attached, earlier NAs passed
        seen.length = 0;
        const movedAt = performance.now();
        await moveVip6(cluster, n2);
        await waitUntil("node2 holds the IPv6 VIP", 20_000, async () =>
          (await roles()).join() === "forward,holder");
        const fromNew = () =>
          seen.filter((s) =>
            s.line.includes(`${macs[1]} > 33:33:00:00:00:01`) &&
            s.line.includes(`${VIP6} > ff02::1`) && s.line.includes(`tgt is ${VIP6}`)
          );
        await waitUntil("two rounds of NA from node2, over a second apart", 6_000, () => {
          const times = fromNew().map((s) =>
            s.at
          );
          return Promise.resolve(
            times.length >= 2 && Math.max(...times) - Math.min(...times) > 500,
          );
        });
        await new Promise((r) =>
          setTimeout(r, 200)
        ); // the last packet's option lines
        for (const { line } of fromNew()) {
          assert.match(line, /Flags \[[^\]]*override/, line);
          assert.ok(line.includes(`link-address option (2), length 8 (1): ${macs[1]}`), line);
        }
        const addr = JSON.parse(
          await n2.ns.run(["ip", "-json", "-6", "addr", "show", "dev", iface]),
        )
          .flatMap((l: { addr_info: { local: string; tentative?: boolean }[] }) => l.addr_info)
          .find((a: { local: string }) => a.local === VIP6);
        assert.ok(addr && !addr.tentative, `never tentative: ${JSON.stringify(addr)}`);
        const entries = JSON.parse(
          await cluster.router.run(["ip", "-json", "-6", "neigh", "show", "to", VIP6]) || "[]",
        ) as { lladdr?: string }[];
        assert.equal(entries[0]?.lladdr, macs[1], "the router's entry names the new holder");
        console.log(
          `[neighbour ipv6] ${fromNew().length} NA from the new holder; first ${
            Math.round(fromNew()[0].at - movedAt)
          } ms after the move (loaded machine: indicative)`,
        );
      } finally {
        capture.kill("SIGTERM");
        await capture.status;
        await read;
        await Promise.all(agents.map((a) => a.stop()));
      }
    }, { family: "dual", nodes: 2 }),
});
