import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import type { Exec, ExecResult } from "../cmd/exec.ts";
import { createLogger } from "../cmd/log.ts";
import { parseGenReply } from "../cmd/nft_generation.ts";
import { systemHost } from "../cmd/system.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { testConfig } from "./helpers.ts";

Deno.test("nft generation: the id of a NEWGEN reply; an error reply is no generation", () => {
  // As the kernel answered `nft` (strace): nlmsghdr, nfgenmsg, GEN_ID 334, PROC_PID, PROC_NAME.
  const reply = new Uint8Array([
    44,
    0,
    0,
    0,
    0x0f,
    0x0a,
    0,
    0,
    0,
    0,
    0,
    0,
    0xbc,
    0x7f,
    0,
    0, // nlmsghdr
    0,
    0,
    0x01,
    0x4e, // nfgenmsg
    8,
    0,
    1,
    0,
    0,
    0,
    0x01,
    0x4e, // NFTA_GEN_ID
    8,
    0,
    2,
    0,
    0,
    0,
    0x7f,
    0xbc, // NFTA_GEN_PROC_PID
    8,
    0,
    3,
    0,
    0x6e,
    0x66,
    0x74,
    0, // NFTA_GEN_PROC_NAME "nft"
  ]);
  assert.equal(parseGenReply(reply), 334);
  const error = reply.slice();
  error[4] = 2; // NLMSG_ERROR
  error[5] = 0;
  assert.equal(parseGenReply(error), undefined);
  assert.equal(parseGenReply(reply.subarray(0, 12)), undefined);
});

/** Our table with these chains (no rules, sets or elements), as `nft -j` lists it. */
function listing(chains: ReadonlySet<string>, table = true): string {
  const items: unknown[] = [{ metainfo: { version: "1.0.6" } }];
  if (table) items.push({ table: { family: "inet", name: "kube-egress", handle: 1 } });
  for (const name of chains) items.push({ chain: { family: "inet", table: "kube-egress", name } });
  return JSON.stringify({ nftables: items }) + "\n";
}

/**
 * A node whose nf_tables generation the test controls: every `nft -f` is one
 * commit, as in the kernel; `foreign()` is someone else's. Listings return
 * our table with the chains written so far and nothing else (rules,
 * sets and elements are not kept: the tests count reads and writes).
 */
function generationNode({ known = true } = {}) {
  const kernel = new FakeKernel();
  const node = {
    generation: 100,
    lists: 0,
    chainLists: 0,
    writes: 0,
    /** Commits by others while we list or write. */
    duringList: 0,
    duringWrite: 0,
    failWrite: false,
    /** A commit by someone else after our read, before our write. */
    betweenReadAndWrite: false,
    chains: new Set<string>(),
    foreign() {
      node.generation++;
    },
  };
  const ok = (stdout = ""): ExecResult => ({ code: 0, stdout, stderr: "" });
  const exec: Exec = (args, options = {}) => {
    const line = args.join(" ");
    if (line === "nft -j list table inet kube-egress") {
      node.lists++;
      node.generation += node.duringList;
      return Promise.resolve(ok(listing(node.chains)));
    }
    if (line === "nft -j list chains inet") {
      node.chainLists++;
      return Promise.resolve(ok(listing(node.chains, false)));
    }
    if (line === "nft -f -") {
      node.writes++;
      if (node.failWrite) {
        return Promise.resolve({ code: 1, stdout: "", stderr: "Error: injected\n" });
      }
      node.generation += 1 + node.duringWrite;
      for (const m of (options.stdin ?? "").matchAll(/^add chain inet kube-egress (\S+)/gm)) {
        node.chains.add(m[1]);
      }
      return Promise.resolve(ok());
    }
    return kernel.exec(args, options);
  };
  // The host reads sysctls last: a commit there lands between the read of our table and the write.
  const sysctls = {
    ...kernel.sysctlIO,
    read: (key: string) => {
      if (node.betweenReadAndWrite) node.foreign();
      node.betweenReadAndWrite = false;
      return kernel.sysctlIO.read(key);
    },
  };
  const host = systemHost(exec, sysctls, () => known ? node.generation : undefined);
  let raw: RawSnapshot = {
    vips: [{ origin: "v", ip: "192.0.2.50", routeId: 5 }],
    pods: [{ origin: "p", podIp: "10.244.1.11", vip: "192.0.2.50" }],
    problems: [],
  };
  /** One more pod mapped: the next pass writes one element. */
  const addPod = () => {
    const podIp = `10.244.2.${raw.pods.length}`;
    raw = { ...raw, pods: [...raw.pods, { origin: podIp, podIp, vip: "192.0.2.50" }] };
  };
  const agent = new Agent(host, createLogger("text", () => {}), {
    config: testConfig({ backend: "nftables" }),
    readInputs: () => Promise.resolve(raw),
    dryRun: false,
  });
  return { node, agent, addPod };
}

Deno.test("nft generation: while nobody committed since our write, a resync lists nothing; a foreign commit makes it list and repair", async () => {
  const { node, agent } = generationNode();
  const first = await agent.pass("start", { setCheck: "full" });
  assert.ok(first.ok && first.lines > 0, first.error);
  assert.deepEqual([node.lists, node.writes], [1, 1]);

  const resync = await agent.pass("resync", { setCheck: "full" });
  assert.equal(resync.setsRead, "generation");
  assert.equal(resync.lines, 0);
  const event = await agent.pass("event", { setCheck: "quick" });
  assert.equal(event.setsRead, "generation");
  assert.deepEqual([node.lists, node.chainLists, node.writes], [1, 0, 1], "no nft process at all");

  // Someone committed (an element deleted by hand, say): the resync lists our table and repairs it.
  node.foreign();
  const repaired = await agent.pass("resync", { setCheck: "full" });
  assert.equal(repaired.setsRead, "entries");
  assert.ok(repaired.lines > 0, "the listed table lacks our objects: rewritten");
  assert.deepEqual([node.lists, node.writes], [2, 2]);
  assert.equal((await agent.pass("resync", { setCheck: "full" })).setsRead, "generation");

  // An event after a foreign commit confirms our chains only; the copy is then not exact, so the
  // next resync lists in full even though the generation has not moved since.
  node.foreign();
  assert.equal((await agent.pass("event", { setCheck: "quick" })).setsRead, "summary");
  assert.equal(node.chainLists, 1);
  const after = await agent.pass("resync", { setCheck: "full" });
  assert.equal(after.setsRead, "entries");
});

Deno.test("nft generation: a commit by someone else while we list or write leaves our copy unproven", async () => {
  const { node, agent, addPod } = generationNode();
  node.duringList = 1;
  await agent.pass("start", { setCheck: "full" });
  node.duringList = 0;
  assert.equal(
    (await agent.pass("resync", { setCheck: "full" })).setsRead,
    "entries",
    "the listing was not at one generation: listed again",
  );
  assert.equal((await agent.pass("resync", { setCheck: "full" })).setsRead, "generation");
  node.duringWrite = 1;
  addPod();
  const wrote = await agent.pass("event", { setCheck: "quick" });
  assert.ok(wrote.ok && wrote.lines > 0 && wrote.setsRead === "generation");
  node.duringWrite = 0;
  const lists = node.lists;
  assert.equal(
    (await agent.pass("resync", { setCheck: "full" })).setsRead,
    "entries",
    "our write was not the only commit: listed again",
  );
  assert.equal(node.lists, lists + 1);
  node.betweenReadAndWrite = true;
  addPod();
  await agent.pass("event", { setCheck: "quick" });
  assert.equal(
    (await agent.pass("resync", { setCheck: "full" })).setsRead,
    "entries",
    "someone committed between our read and our write: listed again",
  );
  // Read alone and written alone: proven again.
  assert.equal((await agent.pass("resync", { setCheck: "full" })).setsRead, "generation");
});

Deno.test("nft generation: unknown (no FFI) means every resync lists; a failed write forgets the copy", async () => {
  const { node, agent } = generationNode({ known: false });
  await agent.pass("start", { setCheck: "full" });
  assert.equal((await agent.pass("resync", { setCheck: "full" })).setsRead, "entries");
  assert.equal(node.lists, 2);

  const proven = generationNode();
  await proven.agent.pass("start", { setCheck: "full" });
  proven.node.failWrite = true;
  proven.node.foreign();
  assert.equal((await proven.agent.pass("resync", { setCheck: "full" })).ok, false);
  proven.node.failWrite = false;
  const lists = proven.node.lists;
  // Nothing committed since the failed write, but what it did is unknown: listed.
  assert.equal((await proven.agent.pass("resync", { setCheck: "full" })).setsRead, "entries");
  assert.equal(proven.node.lists, lists + 1);
});
