/**
 * End-to-end: `doctor` on simulated nodes. A healthy cluster passes; then each
 * thing doctor looks for is broken on purpose on one node, doctor must fail
 * exactly that check (exit 1), and after the repair pass again.
 * Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { agentArgv, agentCommand, applyOnAllNodes, EXTERNAL } from "../../sim/agents.ts";
import { Cluster, type SimNode } from "../../sim/cluster.ts";
import { placeVip } from "../../sim/vip.ts";
import type { CheckReport } from "../../core/doctor.ts";
import { isRoot } from "../helpers.ts";

const VIP = "192.0.2.50";
const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

interface DoctorRun {
  code: number;
  checks: Record<string, CheckReport>;
  raw: string;
}

async function doctor(cluster: Cluster, node: SimNode): Promise<DoctorRun> {
  const r = await agentCommand(cluster, node, "doctor", [...EXTERNAL, "--json"]);
  const parsed = JSON.parse(r.stdout) as { checks: CheckReport[] };
  return {
    code: r.code,
    checks: Object.fromEntries(parsed.checks.map((c) => [c.id, c])),
    raw: r.stdout + r.stderr,
  };
}

/** Doctor fails with exactly `id` failing; returns that check. */
async function expectOnlyFailure(cluster: Cluster, node: SimNode, id: string) {
  const run = await doctor(cluster, node);
  const failed = Object.values(run.checks).filter((c) => c.verdict === "fail").map((c) => c.id);
  assert.equal(run.code, 1, run.raw);
  assert.deepEqual(failed, [id], run.raw);
  assert.ok(run.checks[id].fix, `${id} names a fix`);
  return run.checks[id];
}

async function expectHealthy(cluster: Cluster, node: SimNode) {
  const run = await doctor(cluster, node);
  const bad = Object.values(run.checks).filter((c) => c.verdict !== "pass");
  assert.deepEqual(bad, [], run.raw);
  assert.equal(run.code, 0);
}

Deno.test({
  name: "e2e doctor: a healthy node passes; each fault broken on purpose fails its check",
  ...e2e,
  fn: async (t) => {
    const cluster = await Cluster.create({ nodes: 2, podsPerNode: 1 });
    try {
      const [n1, n2] = [cluster.node(1), cluster.node(2)];
      const iface = cluster.spec.iface;
      await cluster.writeMappings({ [cluster.pod(1, 1).ip]: VIP, [cluster.pod(2, 1).ip]: VIP }, {
        [VIP]: 5,
      });
      await placeVip(cluster.nodes, VIP, n1, iface);
      await applyOnAllNodes(cluster, EXTERNAL);

      await t.step("healthy holder and forwarder pass every check", async () => {
        await expectHealthy(cluster, n1);
        await expectHealthy(cluster, n2);
      });

      await t.step("ip_forward off", async () => {
        await n1.ns.sysctl("net.ipv4.ip_forward=0");
        await expectOnlyFailure(cluster, n1, "ip-forward");
        await n1.ns.sysctl("net.ipv4.ip_forward=1");
      });

      await t.step("strict rp_filter on the holder", async () => {
        await n1.ns.sysctl(`net.ipv4.conf.${iface}.rp_filter=1`);
        const c = await expectOnlyFailure(cluster, n1, "rp-filter");
        assert.match(c.detail, /holds a VIP/);
        await n1.ns.sysctl(`net.ipv4.conf.${iface}.rp_filter=2`);
      });

      await t.step("another component's MARK in our mark bits", async () => {
        const rule = ["-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-xmark", "0x1/0x1"];
        await n1.ns.run(["iptables", ...rule]);
        const c = await expectOnlyFailure(cluster, n1, "mark-bits");
        assert.match(c.fix!, /--mark-mask 0xff00/);
        await n1.ns.run(["iptables", ...rule.map((w) => (w === "-A" ? "-D" : w))]);
      });

      await t.step("a masquerade inserted above our jump", async () => {
        const rule = [
          "-t",
          "nat",
          "-I",
          "POSTROUTING",
          "1",
          "-s",
          "10.244.0.0/16",
          "-j",
          "MASQUERADE",
        ];
        await n1.ns.run(["iptables", ...rule]);
        await expectOnlyFailure(cluster, n1, "chain-order");
        await n1.ns.run(["iptables", "-t", "nat", "-D", "POSTROUTING", "1"]);
      });

      await t.step("the CNI's masquerade on the other iptables backend", async () => {
        const rule = [
          "-t",
          "nat",
          "-A",
          "POSTROUTING",
          "-s",
          "10.244.0.0/16",
          "!",
          "-d",
          "10.244.0.0/16",
          "-j",
          "MASQUERADE",
        ];
        await n2.ns.run(["iptables-legacy", ...rule]);
        const c = await expectOnlyFailure(cluster, n2, "iptables-backend");
        assert.match(c.detail, /iptables-legacy, including masquerade/);
        await n2.ns.run(["iptables-legacy", ...rule.map((w) => (w === "-A" ? "-D" : w))]);
      });

      await t.step("a routing table of someone else on the VIP's route id", async () => {
        const route = [
          "198.51.100.0/24",
          "via",
          "192.0.2.1",
          "dev",
          iface,
          "table",
          "5",
          "proto",
          "static",
        ];
        await n2.ns.run(["ip", "route", "add", ...route]);
        const c = await expectOnlyFailure(cluster, n2, "route-tables");
        assert.match(c.detail, /route id 5, but table 5 is also used by: route 198.51.100.0\/24/);
        await n2.ns.run(["ip", "route", "del", ...route]);
      });

      await t.step("the VIP on two nodes of the LAN", async () => {
        await n2.ns.run(["ip", "addr", "add", `${VIP}/32`, "dev", iface]);
        const c = await expectOnlyFailure(cluster, n1, "duplicate-vip");
        assert.match(c.detail, /on this node and also answered by/);
        await n2.ns.run(["ip", "addr", "del", `${VIP}/32`, "dev", iface]);
      });

      await t.step("a missing tool", async () => {
        // A PATH with every tool but ipset.
        const bin = join(cluster.workDir, "bin");
        await Deno.mkdir(bin);
        for (
          const tool of [
            "ip",
            "iptables",
            "iptables-save",
            "iptables-restore",
            "iptables-legacy-save",
            "iptables-nft-save",
            "nft",
            "arping",
            "conntrack",
          ]
        ) {
          const path = (await n1.ns.run(["sh", "-c", `command -v ${tool}`])).trim();
          await Deno.symlink(path, join(bin, tool));
        }
        const r = await n1.ns.exec([
          "env",
          `PATH=${bin}`,
          ...agentArgv(cluster, n1, "doctor", [...EXTERNAL, "--json"]),
        ]);
        const checks = (JSON.parse(r.stdout) as { checks: CheckReport[] }).checks;
        assert.equal(r.code, 1);
        const tools = checks.find((c) => c.id === "tools")!;
        assert.equal(tools.verdict, "fail");
        assert.match(tools.detail, /missing: ipset/);
        assert.match(tools.fix!, /apt-get install -y ipset/);
      });

      await t.step("repaired: healthy again", async () => {
        await expectHealthy(cluster, n1);
        await expectHealthy(cluster, n2);
      });
    } finally {
      await cluster.destroy();
    }
  },
});
