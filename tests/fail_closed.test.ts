import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import { fileInputs } from "../cmd/inputs.ts";
import { createLogger } from "../cmd/log.ts";
import { desiredState, markRule, saveMarkRule } from "../core/desired.ts";
import { FAIL_CLOSED_SET, failClosedRules } from "../core/fail_closed.ts";
import { intentOf } from "../core/intent.ts";
import { nftAfterApply, NO_NFTABLES, planNftables, renderNft } from "../core/nftables.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

const VIP = "192.0.2.50";
const guarded = (snap: RawSnapshot, ips: unknown[]): RawSnapshot => ({
  ...snap,
  failClosed: ips.map((podIp) => ({ origin: `pods/${podIp}`, podIp })),
});

Deno.test("fail closed: guarded pods are valid pod IPs, sorted, once; a scoped mapping in force guards itself", () => {
  const input = guarded(
    {
      ...raw({ [VIP]: 5 }, { "10.244.2.7": VIP, "10.244.1.5": "192.0.2.99" }),
      pods: [
        { origin: "pods/10.244.2.7", podIp: "10.244.2.7", vip: VIP },
        { origin: "pods/10.244.1.5", podIp: "10.244.1.5", vip: "192.0.2.99" },
        { origin: "p/3", podIp: "10.244.3.3", vip: VIP, destinations: ["203.0.113.0/24"] },
      ],
    },
    ["10.244.2.7", "10.244.1.5", "10.244.1.5", "10.99.0.1", "not an ip", 7, "10.244.3.3"],
  );
  const { snapshot, problems } = validateSnapshot(input, testConfig());
  assert.deepEqual(
    snapshot.failClosed,
    ["10.244.1.5", "10.244.2.7"],
    "the pod whose VIP has no route id stays guarded; outside the pod range, bad and scoped are not",
  );
  assert.deepEqual(problems.map((p) => p.origin), ["pods/10.244.1.5"], "no problems of its own");
  const none = validateSnapshot(raw({ [VIP]: 5 }, { "10.244.2.7": VIP }), testConfig()).snapshot;
  assert.equal("failClosed" in none, false, "default off: the snapshot is today's");
});

Deno.test("fail closed: off, the rules are today's; on, a set and two drops after the mark rules", () => {
  const config = testConfig();
  const plain = validateSnapshot(raw({ [VIP]: 5 }, { "10.244.2.7": VIP }), config).snapshot;
  const off = desiredState(plain, config, []);
  assert.equal(off.chains.mangle.some((r) => r.includes("fail closed")), false);
  assert.equal(off.scopedSets.has(FAIL_CLOSED_SET), false);
  const on = desiredState(
    validateSnapshot(guarded(raw({ [VIP]: 5 }, { "10.244.2.7": VIP }), ["10.244.2.7"]), config)
      .snapshot,
    config,
    [],
  );
  assert.deepEqual([...on.scopedSets.get(FAIL_CLOSED_SET)!.entries.keys()], ["10.244.2.7/32"]);
  const rules = failClosedRules(0xff);
  assert.deepEqual(rules, [
    `-A KUBE-EGRESS-MARK -m set --match-set ${FAIL_CLOSED_SET} src -m set ! --match-set kube-egress-nosteer dst -m mark --mark 0x0/0xff -m conntrack --ctdir ORIGINAL -m comment --comment "kube-egress fail closed" -j DROP`,
    `-A KUBE-EGRESS-MARK -m set --match-set ${FAIL_CLOSED_SET} src -m set ! --match-set kube-egress-nosteer dst -m mark --mark 0x0/0xff -m conntrack --ctstate INVALID -m comment --comment "kube-egress fail closed" -j DROP`,
  ]);
  const at = (rule: string) => on.chains.mangle.indexOf(rule);
  assert.ok(at(markRule()) < at(rules[0]) && at(rules[1]) < at(saveMarkRule(0xff)));
});

Deno.test("fail closed: the guard outlives the VIP and goes with the last guarded pod (agent, fake kernel)", async () => {
  const kernel = new FakeKernel();
  let input = guarded(raw({ [VIP]: 5 }, { "10.244.2.7": VIP }), ["10.244.2.7"]);
  const agent = new Agent(kernel.host(), createLogger("text", () => {}), {
    config: testConfig(),
    readInputs: () => Promise.resolve(input),
    dryRun: false,
  });
  const guard = () => kernel.iptablesSave("mangle").includes("fail closed");
  assert.equal((await agent.pass("start")).ok, true);
  assert.ok(guard() && kernel.ipsetSave(FAIL_CLOSED_SET).includes("10.244.2.7"));
  assert.equal((await agent.pass("resync")).changed, false, "an unchanged pass writes nothing");
  input = guarded(raw({}, { "10.244.2.7": VIP }), ["10.244.2.7"]);
  assert.equal((await agent.pass("VIP deleted")).ok, true);
  assert.ok(guard(), "the VIP's rules are gone, the guard stays");
  assert.equal(kernel.iptablesSave("nat").includes(VIP), false);
  const lines: string[] = [];
  const deleting = new Agent(kernel.host(), createLogger("text", (l) => lines.push(l)), {
    config: testConfig(),
    readInputs: () => Promise.resolve(input),
    dryRun: false,
  });
  await deleting.deleteAll();
  assert.ok(
    lines.some((l) => /removing the fail-closed guard.*pods=1/.test(l)),
    `delete says it opens the guard: ${lines.join(" | ")}`,
  );
  assert.equal(guard(), false, "delete is the uninstall: the guard goes too");
  await agent.pass("again");
  assert.ok(guard());
  input = raw({}, {});
  await agent.pass("pod gone");
  assert.equal(guard(), false);
  assert.equal(kernel.sets.has(FAIL_CLOSED_SET), false, "the set is destroyed");
});

Deno.test("fail closed: nftables declares the set only while guarding, and removes it after", () => {
  const config = testConfig();
  const on = intentOf(
    validateSnapshot(guarded(raw({ [VIP]: 5 }, { "10.244.2.7": VIP }), ["10.244.2.7"]), config)
      .snapshot,
    config,
    [],
  );
  const script = renderNft(planNftables(on, NO_NFTABLES)).join("\n");
  assert.match(script, /add set inet kube-egress failclosed \{ type ipv4_addr; \}/);
  assert.match(script, /add element inet kube-egress failclosed \{ 10\.244\.2\.7 \}/);
  assert.match(script, /ip saddr @failclosed ct direction original drop/);
  assert.deepEqual(planNftables(on, nftAfterApply(on)), [], "applied: nothing to do");
  const off = intentOf(validateSnapshot(raw({ [VIP]: 5 }, {}), config).snapshot, config, []);
  const removal = renderNft(planNftables(off, nftAfterApply(on)));
  assert.equal(removal.at(-1), "delete set inet kube-egress failclosed");
  assert.doesNotMatch(renderNft(planNftables(off, NO_NFTABLES)).join("\n"), /failclosed/);
});

Deno.test("fail closed: --fail-closed guards every pod of the mapping files, VIP or not", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/pods`);
    await Deno.mkdir(`${dir}/vips`);
    await Deno.writeTextFile(`${dir}/pods/10.244.1.5`, VIP);
    await Deno.writeTextFile(`${dir}/pods/10.244.1.6`, "192.0.2.99");
    await Deno.writeTextFile(`${dir}/vips/${VIP}`, "5");
    const settings = { podVipDir: `${dir}/pods`, vipRouteDir: `${dir}/vips` };
    const on = fileInputs({ ...settings, failClosed: true });
    const first = await on.readInputs("start");
    assert.deepEqual(first.failClosed?.map((g) => g.podIp).sort(), ["10.244.1.5", "10.244.1.6"]);
    assert.equal(await on.readInputs("event"), first, "unchanged files: the same snapshot object");
    const off = await fileInputs(settings).readInputs("start");
    assert.equal(off.failClosed, undefined, "default off");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
