/**
 * The nftables backend against the real `nft` in a simulated node: what we
 * write reads back as what we meant (destination classes' concatenated
 * interval maps included), and moving a node between the backends leaves no
 * trace of the one before (the story runs both backends end to end); a
 * running agent that lists nothing while the ruleset generation holds still
 * repairs a change by hand at its next resync.
 */
import assert from "node:assert/strict";
import { EXTERNAL, modCommandLine, startAgent } from "../../sim/agents.ts";
import { intentOf } from "../../core/intent.ts";
import {
  NFT_FAMILY,
  NFT_TABLE,
  NO_NFTABLES,
  parseNftJson,
  planNftables,
  renderNft,
} from "../../core/nftables.ts";
import { validateSnapshot } from "../../core/snapshot.ts";
import { testConfig } from "../helpers.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP = "192.0.2.50";

Deno.test({
  name: "e2e nftables: our table reads back as written, classes and exclusions included",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const node = cluster.nodes[0];
      const config = testConfig({ backend: "nftables" });
      const { snapshot } = validateSnapshot({
        vips: [{ origin: "v", ip: VIP, routeId: 5 }, { origin: "w", ip: "192.0.2.51", routeId: 6 }],
        pods: [
          { origin: "a", podIp: "10.244.1.11", vip: VIP },
          {
            origin: "b",
            podIp: "10.244.1.12",
            vip: "192.0.2.51",
            destinations: ["203.0.113.0/24", "198.51.100.0/25"],
            excluded: ["203.0.113.64/26"],
          },
          { origin: "c", podIp: "10.244.1.13", vip: VIP, excluded: ["198.51.100.7/32"] },
        ],
        problems: [],
      }, config);
      const intent = intentOf(snapshot, config, [VIP]);
      const read = async () =>
        parseNftJson(await node.ns.run(["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE]));
      const script = renderNft(planNftables(intent, NO_NFTABLES)).join("\n") + "\n";
      await node.ns.run(["nft", "-f", "-"], { stdin: script });
      const live = await read();
      assert.deepEqual(planNftables(intent, live), [], "nothing to do after applying");
      assert.equal(live.scoped.get("10.244.1.13 . 0.0.0.0/0"), "goto vip-5");
      assert.ok(live.excluded.has("10.244.1.12 . 203.0.113.64/26"));
      // An element removed behind our back is put back, alone.
      await node.ns.run([
        "nft",
        "delete",
        "element",
        NFT_FAMILY,
        NFT_TABLE,
        "pods",
        "{ 10.244.1.11 }",
      ]);
      assert.deepEqual(planNftables(intent, await read()), [
        { op: "add table" },
        { op: "add element", set: "pods", key: "10.244.1.11", value: "goto vip-5" },
      ]);
      await node.ns.run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE]);

      // Our set and base chain declared otherwise (by hand, an older version): the table is
      // replaced in one transaction, and then reads back as written.
      await node.ns.run(["nft", "-f", "-"], {
        stdin: [
          `add table ${NFT_FAMILY} ${NFT_TABLE}`,
          `add map ${NFT_FAMILY} ${NFT_TABLE} pods { type ipv4_addr : mark; }`,
          `add chain ${NFT_FAMILY} ${NFT_TABLE} prerouting { type filter hook prerouting priority 0; }`,
        ].join("\n") + "\n",
      });
      const replace = planNftables(intent, await read());
      assert.deepEqual(replace.slice(0, 2), [{ op: "delete table" }, { op: "add table" }]);
      await node.ns.run(["nft", "-f", "-"], { stdin: renderNft(replace).join("\n") + "\n" });
      assert.deepEqual(planNftables(intent, await read()), [], "nothing to do after replacing");
      await node.ns.run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE]);
    }),
});

Deno.test({
  name:
    "e2e nftables: switching backends leaves no trace of the one before; delete gives the baseline",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const node = cluster.nodes[0];
      await cluster.writeMappings({ [cluster.pod(1, 1).ip]: VIP }, { [VIP]: 5 });
      const baseline = await cluster.ruleset(node);
      const flags = cluster.agentFlags().filter((f, i, all) =>
        f !== "--backend" && all[i - 1] !== "--backend"
      );
      const run = async (command: string, backend: string) => {
        const r = await node.ns.exec(modCommandLine([command, ...flags, "--backend", backend]), {
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 0, r.stderr);
      };
      const tables = async () => (await node.ns.run(["nft", "list", "tables"])).trim();
      const chains = async () => (await node.ns.run(["iptables-save"])).includes("KUBE-EGRESS");
      const ipsets = async () => (await node.ns.run(["ipset", "list", "-n"])).trim();

      await run("run", "iptables");
      assert.equal(await chains(), true);
      await run("run", "nftables");
      assert.match(await tables(), /table inet kube-egress/);
      // status reads the roles and mappings back from our table.
      const status = await node.ns.exec(
        modCommandLine(["status", ...flags, "--backend", "nftables", "--json"]),
        { timeoutMs: 60_000 },
      );
      const shown = JSON.parse(status.stdout);
      assert.deepEqual(
        shown.vips.map((v: { vip: string; role: string; pods: number }) => [v.vip, v.role, v.pods]),
        [[VIP, "forwarder", 1]],
      );
      assert.equal(shown.pendingLines, 0);
      assert.equal(await chains(), false, "no iptables chain of ours is left");
      assert.equal(await ipsets(), "", "no ipset of ours is left");
      await run("run", "iptables");
      assert.doesNotMatch(await tables(), /kube-egress/, "our nftables table is gone");
      assert.equal(await chains(), true);
      await run("run", "nftables");
      await run("delete", "nftables");
      assert.equal(await cluster.ruleset(node), baseline);
    }),
});

Deno.test({
  name:
    "e2e nftables: a running agent puts back an element deleted by hand and drops one added by hand at its next resync",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const node = cluster.node(1);
      const pod = cluster.pod(1, 1);
      await cluster.writeMappings({ [pod.ip]: VIP }, { [VIP]: 5 });
      const pods = async () =>
        parseNftJson(await node.ns.run(["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE]))
          .pods;
      const agent = startAgent(cluster, node, [...EXTERNAL, "--backend", "nftables"], 2);
      try {
        await agent.waitFor(/pass applied/, 30_000);
        assert.deepEqual([...(await pods()).keys()], [pod.ip]);
        // A few resyncs that prove the table by the generation alone change nothing.
        await new Promise((resolve) => setTimeout(resolve, 4500));
        assert.deepEqual([...(await pods()).keys()], [pod.ip]);
        const since = agent.lines.length;
        const element = (verb: string, text: string) =>
          node.ns.run(["nft", verb, "element", NFT_FAMILY, NFT_TABLE, "pods", `{ ${text} }`]);
        await element("delete", pod.ip);
        await element("add", "10.244.9.9 : goto vip-5");
        await agent.waitFor(/pass applied.*trigger=resync/, 10_000, since);
        assert.deepEqual(
          [...await pods()],
          [[pod.ip, "goto vip-5"]],
          "the element is back, the foreign one gone",
        );
      } finally {
        await agent.stop();
      }
    }),
});
