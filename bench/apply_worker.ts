/**
 * Runs inside a network namespace (started by bench/apply.ts): times real
 * passes of the agent against the kernel for a given number of mappings and
 * prints one JSON line per sample. Every operation is repeated; the whole
 * cycle (first apply … delete) runs `cycles` times. With `foreignServices`
 * > 0, the nat table first gets as many kube-proxy-like service chains of five
 * rules each, as on a node of a cluster with that many services.
 *
 * With family `ipv6`, the cluster is IPv6 alone (bench/inputs.ts: pods in
 * fd00:10::/64, VIPs from 2001:db8::50): the same passes through ip6tables
 * and `inet6` ipsets, or the nftables table's IPv6 sets, and `ip -6`.
 *
 * Usage: deno run -A bench/apply_worker.ts <mappings> <vips> <cycles> [foreignServices] [backend]
 *   [family]
 */
import $ from "dax";
import { Agent, type PassOptions } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { systemHost } from "../cmd/system.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { benchConfig, syntheticSnapshot, vipAddress } from "./inputs.ts";

const [mappings, vipCount, cycles, foreignServices = 0] = Deno.args.slice(0, 4).map(Number);
const backend = Deno.args[4] === "nftables" ? "nftables" : "iptables";
const family = Deno.args[5] === "ipv6" ? "ipv6" : "ipv4";
/** Samples of each repeated operation per cycle. */
const REPEAT = 5;

let inputs: RawSnapshot = syntheticSnapshot(mappings, vipCount, family);
const agent = new Agent(systemHost(), createLogger("text", () => {}), {
  config: { ...benchConfig(family), backend },
  readInputs: () => Promise.resolve(inputs),
  dryRun: false,
});

function sample(op: string, r: {
  ms: number;
  processes: number;
  bytes: number;
  lines: number;
  setsRead?: string;
}) {
  console.log(
    JSON.stringify({ op, mappings, vips: vipCount, foreignServices, backend, family, ...r }),
  );
}

async function pass(op: string, options: PassOptions) {
  const r = await agent.pass("bench", options);
  if (!r.ok) throw new Error(`${op}: ${r.error}`);
  sample(op, { ms: r.durationMs, ...r });
}

const full = { setCheck: "full" } as const;
const quick = { setCheck: "quick" } as const;
const withExtra = (extra: number) => {
  const snapshot = syntheticSnapshot(mappings + extra, vipCount, family);
  return () => (inputs = snapshot);
};
const base = syntheticSnapshot(mappings, vipCount, family);
const plusOne = withExtra(1);
// VIP #1 moves onto this node and away again: the role flips twice.
// An IPv6 VIP is placed as the agent places it (nodad: never "tentative").
const movingVip = vipAddress(1, family);
const vipPlacement = family === "ipv6"
  ? [`${movingVip}/128`, "dev", "eth0", "nodad"]
  : [`${movingVip}/32`, "dev", "eth0"];
const podsMap = family === "ipv6" ? "pods6" : "pods";

/** Service chains like kube-proxy's (iptables mode), jumped to from a KUBE-SERVICES chain. */
function kubeProxyLikeNat(services: number): string {
  const lines = ["*nat", ":KUBE-SERVICES - [0:0]"];
  for (let i = 0; i < services; i++) lines.push(`:KUBE-SVC-${i} - [0:0]`);
  lines.push("-A PREROUTING -m comment --comment kube-proxy -j KUBE-SERVICES");
  for (let i = 0; i < services; i++) {
    const ip = `172.16.${i >> 8}.${i & 255}`;
    lines.push(`-A KUBE-SERVICES -d ${ip}/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-${i}`);
    for (let k = 0; k < 4; k++) {
      lines.push(
        `-A KUBE-SVC-${i} -p tcp -m statistic --mode random --probability 0.25 -j DNAT --to-destination 10.200.${
          i >> 8
        }.${(i & 255)}:${8080 + k}`,
      );
    }
  }
  lines.push("-A POSTROUTING -s 10.0.0.0/8 ! -d 10.0.0.0/8 -j MASQUERADE", "COMMIT");
  return lines.join("\n") + "\n";
}

if (foreignServices > 0) {
  await $`iptables-restore --noflush`.stdinText(kubeProxyLikeNat(foreignServices));
}

for (let cycle = 0; cycle < cycles; cycle++) {
  inputs = base;
  await pass("first apply", full);
  for (let i = 0; i < REPEAT; i++) await pass("unchanged pass, full check (resync)", full);
  for (let i = 0; i < REPEAT; i++) await pass("unchanged pass, quick check (event)", quick);
  if (backend === "nftables") {
    // Another table committed to (kube-proxy, say): the generation moved, so our table is listed.
    for (let i = 0; i < REPEAT; i++) {
      await $`nft add table ip ke-bench-other`;
      await $`nft delete table ip ke-bench-other`;
      await pass("unchanged pass, full read (another table changed)", full);
    }
    // An element deleted by hand is put back by the next resync.
    for (let i = 0; i < REPEAT; i++) {
      await $`nft delete element inet kube-egress ${podsMap} ${`{ ${
        String(base.pods[i].podIp)
      } }`}`;
      const r = await agent.pass("bench", full);
      if (!r.ok || r.lines === 0) throw new Error(`hand-deleted element not repaired: ${r.error}`);
      sample("element deleted by hand, full check (resync)", { ms: r.durationMs, ...r });
    }
  }
  for (let i = 0; i < REPEAT; i++) {
    plusOne();
    await pass("one pod added (event)", quick);
    inputs = base;
    await pass("one pod removed (event)", quick);
  }
  plusOne();
  await pass("one pod added, full check (resync)", full);
  inputs = base;
  await pass("one pod removed, full check (resync)", full);
  for (let i = 0; i < REPEAT; i++) {
    await $`ip addr add ${vipPlacement}`;
    await pass("VIP moves here (address event)", quick);
    await $`ip addr del ${vipPlacement.slice(0, 3)}`;
    await pass("VIP moves away (address event)", quick);
  }
  const started = performance.now();
  const deleted = await agent.deleteAll();
  sample("delete", { ms: performance.now() - started, ...deleted });
}
