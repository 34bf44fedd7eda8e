import assert from "node:assert/strict";
import { Agent, runLoop } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { type FakeConnection, FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

function setup(inputs: () => RawSnapshot | Promise<RawSnapshot>, dryRun = false) {
  const kernel = new FakeKernel();
  const host = kernel.host();
  const lines: string[] = [];
  const printed: string[] = [];
  const log = createLogger("text", (line) => lines.push(line.replace(/^\S+ /, "")));
  const agent = new Agent(host, log, {
    config: testConfig(),
    readInputs: async () => await inputs(),
    dryRun,
    print: (t) => printed.push(t),
  });
  return { kernel, host, lines, printed, agent, log };
}

/** Runs the agent loop until the returned `stop` is called; `stop` resolves when the loop has ended. */
function startLoop(
  agent: Agent,
  host: ReturnType<FakeKernel["host"]>,
  log: ReturnType<typeof createLogger>,
  options: { intervalSeconds: number; cleanupOnExit?: boolean; retryFirstMs?: number },
): { stop(): Promise<void> } {
  let stop!: () => void;
  const loop = runLoop(agent, host, testConfig(), log, {
    intervalSeconds: options.intervalSeconds,
    cleanupOnExit: options.cleanupOnExit ?? false,
    retryFirstMs: options.retryFirstMs,
    stop: new Promise<void>((r) => (stop = r)),
  });
  return {
    stop: async () => {
      stop();
      await loop;
    },
  };
}

const GOOD = raw({ "192.0.2.50": "5" }, { "10.244.1.5": "192.0.2.50" });

Deno.test("agent: a bad input is reported once, not every pass, and its fix is reported", async () => {
  let inputs = raw({ "192.0.2.50": "5" }, {
    "10.244.1.5": "192.0.2.50",
    "10.244.1.6": "192.0.2.99",
  });
  const { agent, lines, kernel } = setup(() => inputs);
  for (let i = 0; i < 3; i++) assert.equal((await agent.pass("test")).ok, true);
  const rejected = lines.filter((l) => l.includes("input rejected"));
  assert.equal(rejected.length, 1);
  assert.match(
    rejected[0],
    /pods\/10.244.1.6: pod 10.244.1.6 is mapped to VIP 192.0.2.99, which has no route id/,
  );
  // The valid mapping is in force despite the bad one.
  assert.deepEqual([...kernel.sets.get("kube-egress-pods")!.entries.keys()], ["10.244.1.5"]);
  inputs = GOOD;
  await agent.pass("test");
  assert.equal(lines.filter((l) => l.includes("input problem gone")).length, 1);
});

Deno.test("agent: a VIP transition is logged once with old and new role; unchanged passes are silent", async () => {
  const { agent, lines, kernel } = setup(() => GOOD);
  await agent.pass("start");
  const count = lines.length;
  await agent.pass("resync");
  assert.equal(lines.length, count, "an unchanged pass logs nothing");
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  await agent.pass("address change");
  await agent.pass("resync");
  const roles = lines.filter((l) => l.includes("VIP role"));
  assert.deepEqual(roles, [
    "INFO  VIP role vip=192.0.2.50 from=none to=forwarder",
    "INFO  VIP role vip=192.0.2.50 from=forwarder to=holder",
  ]);
});

Deno.test("agent: a conntrack flush that failed after the role changed is retried by the next pass", async () => {
  const { agent, kernel } = setup(() => GOOD);
  await agent.pass("start");
  // The pod's connection forwarded un-NATed to the holder, and one not ours.
  const forwarded: FakeConnection = { family: "ipv4", src: "10.244.1.5", mark: 5 };
  const other: FakeConnection = {
    family: "ipv4",
    src: "10.244.9.9",
    mark: 0,
    srcNat: "192.0.2.11",
  };
  kernel.connections = [forwarded, other];
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  kernel.failNext = "conntrack";
  const failed = await agent.pass("address change");
  assert.equal(failed.ok, false);
  assert.equal(failed.errorKind, "apply_conntrack");
  assert.deepEqual(
    kernel.connections,
    [forwarded, other],
    "the roles changed, the flush did not run",
  );
  const retry = await agent.pass("resync");
  assert.equal(retry.ok, true);
  assert.deepEqual(kernel.connections, [other], "the owed flush ran");
  // A connection of the new role: the next pass owes nothing and keeps it.
  const snat: FakeConnection = { family: "ipv4", src: "10.244.1.5", mark: 5, srcNat: "192.0.2.50" };
  kernel.connections.push(snat);
  assert.equal((await agent.pass("resync")).changed, false, "owed once, then nothing");
  assert.deepEqual(kernel.connections, [other, snat]);
});

Deno.test("agent: unreadable inputs fail the pass and keep the applied state; the error is logged once", async () => {
  let fail = false;
  const { agent, lines, kernel } = setup(() => {
    if (fail) throw new Error("mapping directory /x does not exist");
    return GOOD;
  });
  await agent.pass("start");
  const before = kernel.dump();
  fail = true;
  for (let i = 0; i < 3; i++) assert.equal((await agent.pass("resync")).ok, false);
  assert.equal(kernel.dump(), before);
  assert.equal(lines.filter((l) => l.includes("pass failed")).length, 1);
  fail = false;
  assert.equal((await agent.pass("resync")).ok, true);
  assert.equal(lines.filter((l) => l.includes("pass succeeded again")).length, 1);
});

Deno.test("agent: a missing interface is reported before anything changes", async () => {
  const { agent, kernel } = setup(() => GOOD);
  kernel.interfaces.clear();
  const result = await agent.pass("start");
  assert.equal(result.ok, false);
  assert.equal(result.interfaceMissing, true);
  assert.match(result.error!, /interface eth0 does not exist/);
  assert.equal(kernel.applied.length, 0);
});

Deno.test("agent: dry run prints the transaction and changes nothing", async () => {
  const { agent, kernel, printed } = setup(() => GOOD, true);
  const result = await agent.pass("once");
  assert.equal(result.changed, true);
  assert.equal(kernel.applied.length, 0);
  assert.match(printed.join(""), /add kube-egress-pods 10.244.1.5 skbmark 0x5\/0xff/);
});

Deno.test("agent loop: reacts to an address change without waiting for the interval; keeps rules on stop", async () => {
  const { agent, kernel, host, log, lines } = setup(() => GOOD);
  const loop = startLoop(agent, host, log, { intervalSeconds: 3600 });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(kernel.rules.length, 1);
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  host.fireAddressChange();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(kernel.rules.length, 0, "the VIP arrived: its policy rule is gone");
  await loop.stop();
  assert.ok(kernel.sets.has("kube-egress-pods"), "rules stay in place on a normal stop");
  assert.ok(lines.some((l) => l.includes("rules stay in place")));
});

Deno.test("agent loop: a failed pass is tried again soon, with growing delays, not after the interval", async () => {
  const { agent, kernel, host, log, lines } = setup(() => GOOD);
  let failures = 3;
  const apply = host.apply.bind(host);
  const started: number[] = [];
  host.apply = (tx) => {
    started.push(performance.now());
    if (failures-- > 0) return Promise.reject(new Error("xtables lock held (injected)"));
    return apply(tx);
  };
  const loop = startLoop(agent, host, log, { intervalSeconds: 3600, retryFirstMs: 20 });
  for (let waited = 0; kernel.rules.length === 0 && waited < 5000; waited += 10) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await loop.stop();
  assert.equal(kernel.rules.length, 1, "applied by the third retry");
  assert.equal(started.length, 4);
  const gaps = started.slice(1).map((t, i) => t - started[i]);
  assert.ok(gaps[0] >= 19 && gaps[1] >= 39 && gaps[2] >= 79, `delays double: ${gaps.join(", ")}`);
  assert.ok(lines.some((l) => l.includes("pass succeeded again") && l.includes("retry")));
});

Deno.test("agent loop: --cleanup-on-exit removes everything on stop", async () => {
  const { agent, kernel, host, log } = setup(() => GOOD);
  const baseline = kernel.dump();
  const loop = startLoop(agent, host, log, { intervalSeconds: 3600, cleanupOnExit: true });
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(kernel.sets.size > 0);
  await loop.stop();
  assert.equal(kernel.dump(), baseline);
});

Deno.test("agent loop: triggers during a pass coalesce into one more pass", async () => {
  let reads = 0;
  const { agent, host, log } = setup(async () => {
    reads++;
    await new Promise((r) => setTimeout(r, 30));
    return GOOD;
  });
  const loop = startLoop(agent, host, log, { intervalSeconds: 3600 });
  await new Promise((r) => setTimeout(r, 5));
  for (let i = 0; i < 5; i++) host.fireAddressChange();
  await new Promise((r) => setTimeout(r, 120));
  await loop.stop();
  assert.equal(reads, 2, "the start pass plus one coalesced pass");
});

Deno.test("agent: observers hear every pass, each transition and changes of the rejected set", async () => {
  const passes: boolean[] = [];
  const transitions: string[] = [];
  const rejected: number[] = [];
  const kernel = new FakeKernel();
  let inputs = raw({ "192.0.2.50": "5" }, { "10.244.1.5": "192.0.2.50", "10.9.9.9": "192.0.2.50" });
  const agent = new Agent(kernel.host(), createLogger("text", () => {}), {
    config: testConfig(),
    readInputs: () => Promise.resolve(inputs),
    dryRun: false,
    observers: [{
      pass: (r) => passes.push(r.ok),
      transition: (vip, from, to) => transitions.push(`${vip} ${from}->${to}`),
      rejected: (p) => rejected.push(p.length),
    }],
  });
  await agent.pass("a");
  await agent.pass("b");
  inputs = raw({}, {});
  await agent.pass("c");
  assert.deepEqual(passes, [true, true, true]);
  assert.deepEqual(transitions, ["192.0.2.50 none->forwarder", "192.0.2.50 forwarder->none"]);
  assert.deepEqual(rejected, [1, 0]);
});

Deno.test("agent: a persistent error is logged once, then reminded at a low rate", async () => {
  let clock = 0;
  const lines: string[] = [];
  const agent = new Agent(new FakeKernel().host(), createLogger("text", (l) => lines.push(l)), {
    config: testConfig(),
    readInputs: () => Promise.reject(new Error("mapping directory /x does not exist")),
    dryRun: false,
    now: () => clock,
  });
  // A pass every 30 s for 25 minutes: one error line, two reminders (10 and 20 minutes).
  for (; clock <= 25 * 60_000; clock += 30_000) await agent.pass("resync");
  assert.equal(lines.filter((l) => l.includes("pass failed")).length, 1);
  const reminders = lines.filter((l) => l.includes("pass still failing"));
  assert.equal(reminders.length, 2);
  assert.match(reminders[0], /failed_passes=21 failing_for_s=600/);
});

/** Ten pods on one VIP, plus `extra` more. */
function manyPods(extra = 0): RawSnapshot {
  const pods: Record<string, string> = {};
  for (let i = 0; i < 10 + extra; i++) pods[`10.244.1.${10 + i}`] = "192.0.2.50";
  return raw({ "192.0.2.50": "5" }, pods);
}

const podsSet = (kernel: FakeKernel) => kernel.sets.get("kube-egress-pods")!.entries;

Deno.test("agent: quick checks confirm the sets by size and write only what changed", async () => {
  let inputs = manyPods();
  const { agent, kernel } = setup(() => inputs);
  assert.equal((await agent.pass("start", { setCheck: "quick" })).setsRead, "entries");
  const unchanged = await agent.pass("event", { setCheck: "quick" });
  assert.equal(unchanged.setsRead, "summary");
  assert.equal(unchanged.lines, 0);
  inputs = manyPods(1);
  const added = await agent.pass("event", { setCheck: "quick" });
  assert.equal(added.setsRead, "summary");
  assert.deepEqual(kernel.applied.at(-1)!.steps.map((s) => s.op), [{
    tool: "ipset",
    family: "ipv4",
    changes: [{ verb: "add", set: "kube-egress-pods", entry: "10.244.1.20 skbmark 0x5/0xff" }],
  }]);
  // What the agent now believes is exactly what a full listing finds.
  assert.equal((await agent.pass("event", { setCheck: "quick" })).lines, 0);
  const full = await agent.pass("resync", { setCheck: "full" });
  assert.equal(full.setsRead, "entries");
  assert.equal(full.lines, 0);
});

Deno.test("agent: a set flushed or destroyed behind our back is repaired by the next quick pass", async () => {
  const { agent, kernel } = setup(() => manyPods());
  await agent.pass("start");
  podsSet(kernel).clear();
  const repaired = await agent.pass("event", { setCheck: "quick" });
  assert.equal(repaired.setsRead, "entries", "the size differs: listed in full");
  assert.equal(podsSet(kernel).size, 10);
  // Destroyed (with the rule that uses it, as `ipset destroy` requires).
  kernel.tables.get("mangle")!.chains.set("KUBE-EGRESS-MARK", []);
  kernel.sets.delete("kube-egress-pods");
  assert.equal((await agent.pass("event", { setCheck: "quick" })).setsRead, "entries");
  assert.equal(podsSet(kernel).size, 10);
  assert.equal((await agent.pass("resync", { setCheck: "full" })).lines, 0);
});

Deno.test("agent: an entry changed in place is missed by quick checks and repaired by the next full check", async () => {
  const { agent, kernel } = setup(() => manyPods());
  await agent.pass("start");
  // Same size, other mark: only a full listing can tell.
  podsSet(kernel).set("10.244.1.10", "skbmark 0x9/0xff");
  const quick = await agent.pass("event", { setCheck: "quick" });
  assert.equal(quick.setsRead, "summary");
  assert.equal(quick.lines, 0);
  const full = await agent.pass("resync", { setCheck: "full" });
  assert.equal(full.setsRead, "entries");
  assert.equal(full.lines, 1);
  assert.equal(podsSet(kernel).get("10.244.1.10"), "skbmark 0x5/0xff");
});

Deno.test("agent: after a failed pass the sets are listed in full again", async () => {
  let inputs = manyPods();
  const { agent, kernel } = setup(() => inputs);
  await agent.pass("start");
  inputs = manyPods(2);
  kernel.failNext = "ipset";
  assert.equal((await agent.pass("event", { setCheck: "quick" })).ok, false);
  const retry = await agent.pass("event", { setCheck: "quick" });
  assert.equal(retry.setsRead, "entries");
  assert.equal(podsSet(kernel).size, 12);
  // A dry run writes nothing, so what it read stays true.
  const dry = setup(() => manyPods(), true);
  await dry.agent.pass("start");
  assert.equal((await dry.agent.pass("event", { setCheck: "quick" })).setsRead, "summary");
});

Deno.test("agent loop: events check the sets quickly; the start and every resync list them in full", async () => {
  const { agent, host, log, kernel } = setup(() => manyPods());
  const loop = startLoop(agent, host, log, { intervalSeconds: 0.2 });
  const until = async (done: () => boolean) => {
    for (let waited = 0; !done() && waited < 10_000; waited += 10) {
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await until(() => kernel.reads.entries >= 1);
  host.fireAddressChange();
  // The start pass, the address change, then at least one resync.
  await until(() => kernel.reads.summary >= 1 && kernel.reads.entries >= 2);
  await loop.stop();
  assert.equal(kernel.reads.summary, 1, "only the address change checked quickly");
  assert.ok(kernel.reads.entries >= 2, "the start and the resyncs listed in full");
});

Deno.test("agent: placement is offered each pass's valid VIPs; on stop it hands them over, then one pass forwards", async () => {
  const kernel = new FakeKernel();
  const host = kernel.host();
  const offered: string[][] = [];
  const events: string[] = [];
  const placement = {
    update(vips: readonly { ip: string; eligible?: boolean }[]) {
      offered.push(vips.map((v) => `${v.ip}${v.eligible === false ? " (ineligible)" : ""}`));
      return Promise.resolve();
    },
    stop() {
      events.push("placement stopped");
      // keepalived removes the VIP it held on its way out.
      kernel.interfaces.set("eth0", ["192.0.2.11"]);
      return Promise.resolve();
    },
  };
  const log = createLogger("text", () => {});
  const agent = new Agent(host, log, {
    config: testConfig(),
    readInputs: () =>
      Promise.resolve({
        ...GOOD,
        vips: [...GOOD.vips, { origin: "v/bad", ip: "192.0.2.300", routeId: 7 }, {
          origin: "v/x",
          ip: "192.0.2.52",
          routeId: 8,
          eligible: false,
        }],
      }),
    dryRun: false,
    placement,
    observers: [{ transition: (vip, from, to) => events.push(`${vip} ${from}→${to}`) }],
  });
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  const loop = startLoop(agent, host, log, { intervalSeconds: 3600 });
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(offered[0], ["192.0.2.50", "192.0.2.52 (ineligible)"]);
  await loop.stop();
  assert.deepEqual(events, [
    "192.0.2.50 none→holder",
    "192.0.2.52 none→forwarder",
    "placement stopped",
    "192.0.2.50 holder→forwarder",
  ]);
  assert.deepEqual(kernel.conntrackRuns, ["-D -f ipv4 --mark 0x5/0xff"]);
  assert.equal(kernel.rules.length, 2, "this node now forwards both VIPs' traffic");
});

Deno.test("agent loop: a resync that coalesces with an event keeps its name and its full check", async () => {
  const kernel = new FakeKernel();
  const host = kernel.host();
  const log = createLogger("text", () => {});
  const triggers: string[] = [];
  const agent = new Agent(host, log, {
    config: testConfig(),
    readInputs: async (trigger) => {
      triggers.push(trigger);
      // The start pass is slow: an event and then a resync arrive while it runs.
      if (triggers.length === 1) await new Promise((r) => setTimeout(r, 1000));
      return manyPods();
    },
    dryRun: false,
  });
  const loop = startLoop(agent, host, log, { intervalSeconds: 0.2 });
  await new Promise((r) => setTimeout(r, 20));
  host.fireAddressChange();
  for (let waited = 0; triggers.length < 2 && waited < 10_000; waited += 10) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await loop.stop();
  // Sources re-read their inputs on "resync" (the file source does): the name must survive.
  assert.deepEqual(triggers.slice(0, 2), ["start", "resync"]);
  assert.equal(kernel.reads.summary, 0, "the coalesced pass listed the sets in full");
});

Deno.test("agent: loosened reverse-path filters are remembered in the state dir and restored by delete", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "kube-egress-state-" });
  try {
    const kernel = new FakeKernel();
    kernel.sysctls["net.ipv4.conf.eth0.rp_filter"] = 1;
    const settings = {
      config: testConfig(),
      readInputs: () => Promise.resolve(GOOD),
      dryRun: false,
      stateDir,
    };
    const agent = new Agent(kernel.host(), createLogger("text", () => {}), settings);
    assert.ok((await agent.pass("start")).ok);
    assert.equal(kernel.sysctls["net.ipv4.conf.eth0.rp_filter"], 2);
    const file = `${stateDir}/rp_filter.json`;
    assert.deepEqual(JSON.parse(await Deno.readTextFile(file)), {
      "net.ipv4.conf.eth0.rp_filter": 1,
    });
    // A new agent (a restarted pod) sees the loose value, keeps the original.
    const next = new Agent(kernel.host(), createLogger("text", () => {}), settings);
    assert.ok((await next.pass("start")).ok);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(file)), {
      "net.ipv4.conf.eth0.rp_filter": 1,
    });
    await next.deleteAll();
    assert.equal(kernel.sysctls["net.ipv4.conf.eth0.rp_filter"], 1);
    await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

Deno.test("agent: a bad state file is named in a warning; delete removes the rest", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "kube-egress-state-" });
  try {
    await Deno.writeTextFile(`${stateDir}/rp_filter.json`, '{"net.ipv4.conf.eth0.rp_filter": 7}');
    const kernel = new FakeKernel();
    const lines: string[] = [];
    const agent = new Agent(kernel.host(), createLogger("text", (l) => lines.push(l)), {
      config: testConfig(),
      readInputs: () => Promise.resolve(GOOD),
      dryRun: false,
      stateDir,
    });
    assert.ok((await agent.pass("start")).ok);
    await agent.deleteAll();
    assert.equal(kernel.rules.length, 0);
    assert.ok(lines.some((l) => l.includes("rp_filter.json") && l.includes("not restored")));
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

/** An agent with NAT state sync; `meanwhile` runs between its read of the node and its apply. */
function syncSetup(meanwhile: (kernel: FakeKernel) => void, kernel = new FakeKernel()) {
  const lines: string[] = [];
  const agent = new Agent(kernel.host(), createLogger("text", (l) => lines.push(l)), {
    config: testConfig(),
    readInputs: () => Promise.resolve(GOOD),
    dryRun: false,
    conntrackSync: {
      update: () => Promise.resolve(meanwhile(kernel)),
      natSync: () => ({
        commits: [{ config: "/run/sync.conf" }],
        localPodCidrs: ["10.244.1.0/24"],
      }),
    },
  });
  return { kernel, agent, lines };
}

Deno.test("agent: a takeover whose forwarding rule and route the kernel dropped meanwhile succeeds and commits", async () => {
  let takeover = false;
  const { kernel, agent } = syncSetup((k) => {
    // The VIP's arrival took the forwarding rule and route away after our read (the kernel does).
    if (takeover) [k.rules, k.routes] = [[], []];
  });
  assert.equal((await agent.pass("start")).ok, true);
  assert.equal(kernel.rules.length, 1);
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  takeover = true;
  const result = await agent.pass("address change");
  assert.equal(result.ok, true, result.error);
  assert.deepEqual(kernel.conntrackRuns, ["-D -f ipv4 --mark 0x5/0xff"]);
  assert.deepEqual(kernel.conntrackdRuns, ["-C /run/sync.conf -c"]);
  takeover = false;
  assert.equal((await agent.pass("resync")).changed, false, "nothing left to do");
});

Deno.test("agent: a takeover whose route step fails still flushes and commits, and owes no flush after", async () => {
  const { kernel, agent } = syncSetup(() => {});
  assert.equal((await agent.pass("start")).ok, true);
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  kernel.failNext = "ip";
  const failed = await agent.pass("address change");
  assert.equal(failed.ok, false);
  assert.equal(failed.errorKind, "apply_ip");
  assert.deepEqual(kernel.conntrackRuns, ["-D -f ipv4 --mark 0x5/0xff"], "flushed once");
  assert.deepEqual(kernel.conntrackdRuns, ["-C /run/sync.conf -c"], "committed");
  const retry = await agent.pass("resync");
  assert.equal(retry.ok, true, retry.error);
  assert.equal(kernel.rules.length, 0, "the forwarding rule goes with the retry");
  assert.deepEqual(
    kernel.conntrackRuns,
    ["-D -f ipv4 --mark 0x5/0xff"],
    "a flush after the commit would delete the synced connections",
  );
  assert.deepEqual(kernel.conntrackdRuns, ["-C /run/sync.conf -c"]);
});

/**
 * A fake kernel where, while `yielding.on`, keepalived takes 192.0.2.50 off
 * eth0 right after our rule step (a peer won the same election).
 */
function yieldingKernel() {
  const fake = new FakeKernel();
  const eth0 = fake.interfaces.get("eth0")!;
  const yielding = { on: false };
  const exec = fake.exec;
  fake.exec = (args, options) => {
    const result = exec(args, options);
    if (yielding.on && args[0] === "iptables-restore") eth0.splice(eth0.indexOf("192.0.2.50"), 1);
    return result;
  };
  return { fake, eth0, yielding };
}

Deno.test("agent: a takeover whose VIP leaves while it applies runs no flush and no commit; the next pass gives the role back", async () => {
  const { fake, eth0, yielding } = yieldingKernel();
  const { kernel, agent, lines } = syncSetup(() => {}, fake);
  assert.equal((await agent.pass("start")).ok, true);
  eth0.push("192.0.2.50");
  yielding.on = true;
  const abandoned = await agent.pass("address change");
  assert.equal(abandoned.ok, false);
  assert.match(abandoned.error ?? "", /192\.0\.2\.50 left the interface during the takeover/);
  assert.deepEqual(kernel.conntrackdRuns, [], "the peers' NAT state is not loaded here");
  assert.deepEqual(kernel.conntrackRuns, [], "this node's forwarded connections are kept");
  assert.equal(kernel.rules.length, 0, "the holder role was applied");
  yielding.on = false;
  const back = await agent.pass("address change");
  assert.equal(back.ok, true, back.error);
  assert.equal(kernel.rules.length, 1, "the forwarding rule is back");
  assert.deepEqual(kernel.conntrackRuns, [
    "-D -f ipv4 --mark 0x5/0xff -s 10.244.1.0/24",
    "-D -f ipv4 --mark 0x5/0xff",
  ], "its own pods' entries made meanwhile go; the abandoned flush is owed");
  assert.deepEqual(kernel.conntrackdRuns, []);
  assert.ok(lines.some((l) => l.includes("left the interface")));
});

Deno.test("agent: a takeover stopped because its VIP left, back by the next pass, flushes and commits then", async () => {
  const { fake, eth0, yielding } = yieldingKernel();
  const { kernel, agent } = syncSetup(() => {}, fake);
  assert.equal((await agent.pass("start")).ok, true);
  eth0.push("192.0.2.50");
  yielding.on = true;
  assert.equal((await agent.pass("address change")).ok, false);
  yielding.on = false;
  // keepalived went MASTER, BACKUP, MASTER: the VIP is back before the next pass reads.
  eth0.push("192.0.2.50");
  const back = await agent.pass("address change");
  assert.equal(back.ok, true, back.error);
  assert.equal(kernel.rules.length, 0, "still the holder");
  assert.deepEqual(kernel.conntrackRuns, ["-D -f ipv4 --mark 0x5/0xff"], "the owed flush");
  assert.deepEqual(kernel.conntrackdRuns, ["-C /run/sync.conf -c"], "the owed commit, after it");
  assert.equal((await agent.pass("resync")).changed, false, "nothing owed any more");
  assert.deepEqual(kernel.conntrackdRuns, ["-C /run/sync.conf -c"]);
});

Deno.test("agent: a route step failing before the roles change runs no flush and no commit", async () => {
  const { kernel, agent } = syncSetup(() => {});
  kernel.failNext = "ip";
  const failed = await agent.pass("start");
  assert.equal(failed.ok, false);
  assert.deepEqual([kernel.conntrackRuns, kernel.conntrackdRuns], [[], []]);
});

Deno.test("agent: the node is read while placement updates, not after it", async () => {
  const kernel = new FakeKernel();
  const host = kernel.host();
  let readBegan!: () => void;
  const read = new Promise<void>((r) => (readBegan = r));
  const seen: string[] = [];
  const agent = new Agent(
    {
      ...host,
      readLive: (config, options) => {
        readBegan();
        return host.readLive(config, options);
      },
    },
    createLogger("text", () => {}),
    {
      config: testConfig(),
      readInputs: () => Promise.resolve(GOOD),
      dryRun: false,
      placement: {
        // Bounded: a placement the read waited for would see no read within 1 s.
        update: async () => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const late = new Promise<string>((r) => (timer = setTimeout(() => r("no read"), 1000)));
          seen.push(await Promise.race([read.then(() => "read"), late]));
          clearTimeout(timer);
        },
        stop: () => Promise.resolve(),
      },
    },
  );
  assert.equal((await agent.pass("address change")).ok, true);
  assert.deepEqual(seen, ["read"]);
});
