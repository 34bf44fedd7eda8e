/**
 * IPv6 and dual stack on the iptables backend, against the fake kernel (as
 * strict as ip6tables-restore, ipset and `ip -6` about families): each family
 * gets its own chains, sets, rules and routes from its part of the intent;
 * an IPv4-only cluster never touches IPv6; delete gives back the baseline.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { intentOf } from "../core/intent.ts";
import { formatIp, parseIPv4 } from "../core/ip.ts";
import {
  nftAfterApply,
  nftChains,
  nftRolesInForce,
  NO_NFTABLES,
  planNftables,
  renderNft,
} from "../core/nftables.ts";
import {
  interfaceAddresses,
  isEmpty,
  planDelete,
  planPass,
  type Transaction,
} from "../core/plan.ts";
import type { Operation } from "../core/operation.ts";
import { toolName } from "../core/render.ts";
import { nodeStatus, renderStatus } from "../core/status.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

const dual = testConfig({
  podCidrs: ["10.244.0.0/16", "fd00:10:244::/56"],
  serviceCidrs: ["10.96.0.0/12", "fd00:10:96::/112"],
});
const MASQ6 = "-s fd00:10:244::/56 ! -d fd00:10:244::/56 -j MASQUERADE";

function dualSnapshot(extra: Record<string, string> = {}) {
  const { snapshot, problems } = validateSnapshot(
    raw(
      { "192.0.2.50": "5", "2001:db8::50": "5", "2001:db8::51": "6" },
      {
        "10.244.1.5": "192.0.2.50",
        "fd00:10:244::5": "2001:db8::50",
        "fd00:10:244:1::7": "2001:db8::51",
        ...extra,
      },
    ),
    dual,
  );
  assert.deepEqual(problems, []);
  return snapshot;
}

function kernelWith(addresses: string[]) {
  const kernel = new FakeKernel();
  kernel.interfaces.set("eth0", addresses);
  kernel.tables6.set("nat", {
    chains: new Map([
      ["PREROUTING", []],
      ["INPUT", []],
      ["OUTPUT", []],
      ["POSTROUTING", [MASQ6]],
    ]),
  });
  return kernel;
}

Deno.test("dual stack: each family gets its chains, sets, rules and routes; the next pass writes nothing", () => {
  // This node holds the IPv6 VIP 2001:db8::51 only; the dual-stack VIP (route id 5) is elsewhere.
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const snap = dualSnapshot();
  const { transaction } = planPass(snap, dual, kernel.live(dual));
  assert.deepEqual(transaction.steps.map((s) => toolName(s.op)), [
    "ip",
    "ip6",
    "ipset",
    "iptables",
    "ipset",
    "ip6tables",
  ]);
  kernel.apply(transaction);
  assert.equal(isEmpty(planPass(snap, dual, kernel.live(dual)).transaction), true);

  // One route id, one mark, a rule and a route in each family's table 5.
  assert.deepEqual(kernel.rules.map((r) => [r.fwmark, r.table]), [["0x5", 5]]);
  assert.deepEqual(kernel.rules6.map((r) => [r.fwmark, r.table]), [["0x5", 5]]);
  assert.deepEqual(kernel.routes.map((r) => r.gateway), ["192.0.2.50"]);
  assert.deepEqual(kernel.routes6.map((r) => [r.table, r.gateway]), [[5, "2001:db8::50"]]);
  assert.deepEqual([...kernel.sets.get("kube-egress6-pods")!.entries.keys()], [
    "fd00:10:244::5",
    "fd00:10:244:1::7",
  ]);
  assert.deepEqual([...kernel.sets.get("kube-egress-pods")!.entries.keys()], ["10.244.1.5"]);
  assert.match(kernel.sets.get("kube-egress6-pods")!.header, /^hash:ip family inet6 /);
  assert.deepEqual([...kernel.sets.get("kube-egress6-nosteer")!.entries.keys()], [
    "fd00:10:96::/112",
    "fd00:10:244::/56",
  ]);
  const nat6 = kernel.iptablesSave("nat", false, "ipv6");
  assert.match(
    nat6,
    /--comment "kube-egress 2001:db8::51 holder" -j SNAT --to-source 2001:db8::51/,
  );
  assert.match(nat6, /--comment "kube-egress 2001:db8::50 forward" -j ACCEPT/);
  // The jump comes before the CNI's IPv6 masquerade.
  assert.deepEqual(kernel.tables6.get("nat")!.chains.get("POSTROUTING"), [
    "-m comment --comment kube-egress -j KUBE-EGRESS-SNAT",
    MASQ6,
  ]);
  assert.match(
    kernel.iptablesSave("mangle", false, "ipv6"),
    /-s fd00:10:244::\/56 -m set ! --match-set kube-egress6-nosteer dst/,
  );
  // The IPv4 nat table knows nothing of IPv6.
  assert.doesNotMatch(kernel.iptablesSave("nat"), /2001:db8/);
});

Deno.test("dual stack: a role change in one family flushes that family's connections only", () => {
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11"]);
  const snap = dualSnapshot();
  kernel.apply(planPass(snap, dual, kernel.live(dual)).transaction);
  // The IPv6 half of the dual-stack VIP arrives; its IPv4 half (same mark) stays elsewhere.
  kernel.interfaces.get("eth0")!.push("2001:db8::50");
  const { transaction } = planPass(snap, dual, kernel.live(dual));
  kernel.apply(transaction);
  assert.deepEqual(
    transaction.steps.map((s) => s.op).filter((op) => op.tool !== "iptables"),
    [
      {
        tool: "ip",
        family: "ipv6",
        protocol: 233,
        changes: [
          { verb: "del", rule: { priority: 1000, mark: 5, mask: 0xff, table: 5 } },
          { verb: "del", route: { table: 5, gateway: "2001:db8::50", dev: "eth0" } },
        ],
      },
      { tool: "conntrack", flushes: [{ why: "role", family: "ipv6", mark: 5, mask: 0xff }] },
    ],
  );
  assert.deepEqual(kernel.rules.map((r) => r.table), [5], "the IPv4 half still forwards");
});

Deno.test("dual stack: an IPv4-only cluster never touches IPv6, even with IPv6 VIPs given", () => {
  const v4 = testConfig();
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11"]);
  const ipv6 = (k: FakeKernel) =>
    JSON.stringify([
      k.iptablesSave("mangle", false, "ipv6"),
      k.iptablesSave("nat", false, "ipv6"),
      [...k.sets.keys()].filter((n) => n.startsWith("kube-egress6")),
      k.rules6,
      k.routes6,
    ]);
  const before = ipv6(kernel);
  const { snapshot } = validateSnapshot(
    raw({ "192.0.2.50": "5", "2001:db8::50": "6" }, { "10.244.1.5": "192.0.2.50" }),
    v4,
  );
  const { transaction } = planPass(snapshot, v4, kernel.live(v4));
  assert.equal(transaction.steps.some((s) => "family" in s.op && s.op.family === "ipv6"), false);
  kernel.apply(transaction);
  assert.equal(ipv6(kernel), before);
  assert.equal(kernel.tables6.get("mangle"), undefined);
});

Deno.test("dual stack: delete gives back the baseline of both families; turning IPv6 off removes its objects", () => {
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const baseline = kernel.dump();
  kernel.apply(planPass(dualSnapshot(), dual, kernel.live(dual)).transaction);
  assert.notEqual(kernel.dump(), baseline);
  kernel.apply(planDelete(kernel.live(dual), dual));
  assert.equal(kernel.dump(), baseline);

  kernel.apply(planPass(dualSnapshot(), dual, kernel.live(dual)).transaction);
  const v4 = testConfig();
  const { snapshot } = validateSnapshot(
    raw({ "192.0.2.50": "5" }, { "10.244.1.5": "192.0.2.50" }),
    v4,
  );
  kernel.apply(planPass(snapshot, v4, kernel.live(v4)).transaction);
  assert.deepEqual(kernel.rules6, []);
  assert.deepEqual(kernel.routes6, []);
  assert.deepEqual([...kernel.sets.keys()].filter((n) => n.startsWith("kube-egress6")), []);
  assert.doesNotMatch(kernel.iptablesSave("nat", false, "ipv6"), /KUBE-EGRESS/);
});

/** a.b.c.d → fd00::a.b.c.d and /n → /96+n: every order and containment kept. */
function toV6(text: string): string {
  const [addr, len] = text.split("/");
  const v4 = parseIPv4(addr);
  if (v4 === undefined) return text;
  const v6 = formatIp((0xfd00n << 112n) | BigInt(v4));
  return len === undefined ? v6 : `${v6}/${Number(len) + 96}`;
}

/** A class's sets are named by a hash of its ranges' text (a name, not a behaviour): numbered in order of appearance. */
function unnamed(ops: readonly Operation[]): Operation[] {
  const ids = new Map<string, number>();
  return ops.map((op) =>
    mapStrings(op, (text) =>
      text.replace(/-s([pdx])-([0-9a-f]{8})\b/g, (_, kind, id) => {
        if (!ids.has(id)) ids.set(id, ids.size);
        return `-s${kind}-#${ids.get(id)}`;
      }))
  );
}

/** `value` with every string in it (keys and values) mapped. */
function mapStrings<T>(value: T, map: (text: string) => string): T {
  if (typeof value === "string") return map(value) as T;
  if (Array.isArray(value)) return value.map((v) => mapStrings(v, map)) as T;
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, mapStrings(v, map)]),
    ) as T;
  }
  return value;
}

/** An IPv4 transaction's operations as the IPv6 one's must be: addresses, families, sets and set types mapped. */
function asIPv6(tx: Transaction): Operation[] {
  return tx.steps.map((s) =>
    mapStrings(s.op, (text) =>
      text === "ipv4" ? "ipv6" : text.replace(
        /\b\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?\b/g,
        (m) => toV6(m),
      )
        .replaceAll("kube-egress-", "kube-egress6-")
        .replaceAll("family inet ", "family inet6 "))
  );
}

const vipIp = fc.integer({ min: 40, max: 60 }).map((n) => `192.0.2.${n}`);
const podIp = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 2, max: 40 }))
  .map(([a, b]) => `10.244.${a}.${b}`);
// One destination class per run: classes are ordered by a hash of their ranges' text, which
// differs between the families (the intent-level property in plan_property.test.ts covers many).
const raw4: fc.Arbitrary<RawSnapshot> = fc.record({
  vips: fc.array(fc.record({ ip: vipIp, routeId: fc.integer({ min: 1, max: 12 }) }), {
    maxLength: 6,
  }),
  pods: fc.array(fc.record({ podIp, vip: vipIp, scoped: fc.boolean() }), { maxLength: 20 }),
  destinations: fc.subarray(["203.0.113.0/24", "198.51.100.0/25"], { minLength: 1 }),
}).map(({ vips, pods, destinations }) => ({
  vips: vips.map((v, i) => ({ origin: `vips/${i}`, ...v })),
  pods: pods.map((p, i) => ({
    origin: `pods/${i}`,
    podIp: p.podIp,
    vip: p.vip,
    ...(p.scoped ? { destinations } : {}),
  })),
  problems: [],
  failClosed: pods.slice(0, 2).map((p, i) => ({ origin: `guard/${i}`, podIp: p.podIp })),
}));

Deno.test("property: planning is family-independent: an IPv6-only cluster gets the IPv4 operations, mapped", () => {
  const v4 = testConfig({ excludeCidrs: ["192.0.2.0/28"] });
  const v6 = testConfig({
    podCidrs: v4.podCidrs.map(toV6),
    serviceCidrs: v4.serviceCidrs.map(toV6),
    excludeCidrs: v4.excludeCidrs.map(toV6),
  });
  const held = fc.subarray(["192.0.2.40", "192.0.2.45", "192.0.2.50"]);
  fc.assert(
    fc.property(fc.array(fc.tuple(raw4, held), { minLength: 1, maxLength: 3 }), (passes) => {
      const k4 = new FakeKernel();
      const k6 = new FakeKernel();
      for (const [snap4, addresses] of passes) {
        k4.interfaces.set("eth0", ["192.0.2.11", ...addresses]);
        k6.interfaces.set("eth0", ["192.0.2.11", toV6("192.0.2.11"), ...addresses.map(toV6)]);
        const snap6: RawSnapshot = {
          vips: snap4.vips.map((v) => ({ ...v, ip: toV6(String(v.ip)) })),
          pods: snap4.pods.map((p) => ({
            ...p,
            podIp: toV6(String(p.podIp)),
            vip: toV6(String(p.vip)),
            ...(p.destinations ? { destinations: (p.destinations as string[]).map(toV6) } : {}),
          })),
          problems: [],
          failClosed: snap4.failClosed!.map((g) => ({ ...g, podIp: toV6(String(g.podIp)) })),
        };
        const a = planPass(validateSnapshot(snap4, v4).snapshot, v4, k4.live(v4)).transaction;
        const b = planPass(validateSnapshot(snap6, v6).snapshot, v6, k6.live(v6)).transaction;
        assert.deepEqual(unnamed(b.steps.map((s) => s.op)), unnamed(asIPv6(a)));
        k4.apply(a);
        k6.apply(b);
      }
      // And back to the baseline, in either family.
      k6.apply(planDelete(k6.live(v6), v6));
      assert.deepEqual(k6.rules6, []);
      assert.deepEqual(k6.sets.size, 0);
    }),
    { numRuns: 150 },
  );
});

Deno.test("dual stack: the real host's reads and applies (cmd/system.ts) program and read back both families", async () => {
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const host = kernel.host();
  const snap = dualSnapshot();
  for (const ourChainsOnly of [false, true]) {
    const live = await host.readLive(dual, { ourChainsOnly });
    await host.apply(planPass(snap, dual, live).transaction);
    const again = await host.readLive(dual, { ourChainsOnly });
    assert.deepEqual(
      planPass(snap, dual, again).transaction.steps,
      [],
      `ourChainsOnly ${ourChainsOnly}`,
    );
    assert.deepEqual(again.ipv6?.routes.addresses, ["2001:db8::11", "2001:db8::51"]);
    assert.deepEqual([...again.ipv6!.sets.pods.keys()], ["fd00:10:244::5", "fd00:10:244:1::7"]);
  }
  // An IPv4-only cluster's quick pass does not even read IPv6.
  const v4 = testConfig();
  assert.equal((await host.readLive(v4, { ourChainsOnly: true })).ipv6, undefined);
  await host.apply(planDelete(await host.readLive(dual), dual));
  assert.deepEqual(kernel.rules6, []);
  assert.deepEqual([...kernel.sets.keys()], []);
});

const dualNft = testConfig({ ...dual, backend: "nftables" });

Deno.test("dual stack, nftables: one table, IPv6 sets typed ipv6_addr, IPv6 chains, one transaction; re-planning finds nothing", () => {
  const intent = intentOf(dualSnapshot(), dualNft, ["192.0.2.11", "2001:db8::51"]);
  const ops = planNftables(intent, NO_NFTABLES);
  const sets = ops.flatMap((o) => (o.op === "add set" ? [[o.set.name, o.set.type]] : []));
  assert.deepEqual(sets, [
    ["pods", "ipv4_addr"],
    ["nosteer", "ipv4_addr"],
    ["scoped", "ipv4_addr . ipv4_addr"],
    ["scoped-excluded", "ipv4_addr . ipv4_addr"],
    ["roles", "mark"],
    ["pods6", "ipv6_addr"],
    ["nosteer6", "ipv6_addr"],
    ["scoped6", "ipv6_addr . ipv6_addr"],
    ["scoped-excluded6", "ipv6_addr . ipv6_addr"],
    ["roles6", "mark"],
  ]);
  const elements = (set: string) =>
    ops.flatMap((
      o,
    ) => (o.op === "add element" && o.set === set ? [`${o.key} ${o.value ?? ""}`] : []));
  assert.deepEqual(elements("pods6"), [
    "fd00:10:244::5 goto vip6-5",
    "fd00:10:244:1::7 goto vip6-6",
  ]);
  assert.deepEqual(elements("pods"), ["10.244.1.5 goto vip-5"]);
  assert.deepEqual(elements("roles6"), ["0x5 goto snat6-5", "0x6 goto snat6-6"]);
  const chains = nftChains(intent);
  // Route id 5 is both families' (a dual-stack VIP): each has its own chains and roles map.
  assert.deepEqual(chains.get("snat-5"), ["counter snat ip to ip saddr"]);
  assert.deepEqual(chains.get("snat6-5"), ["counter snat ip6 to ip6 saddr"]);
  assert.deepEqual(chains.get("snat6-6"), ["counter snat ip6 to 2001:db8::51 fully-random"]);
  assert.deepEqual(chains.get("postrouting"), [
    'meta nfproto ipv4 oifname "eth0" meta mark & 0xff vmap @roles',
    'meta nfproto ipv6 oifname "eth0" meta mark & 0xff vmap @roles6',
  ]);
  const pre = chains.get("prerouting")!;
  assert.ok(pre.indexOf("ip6 saddr vmap @pods6") > pre.indexOf("ip saddr vmap @pods"));
  assert.ok(
    pre.indexOf("ip6 saddr vmap @pods6") <
      pre.findIndex((r) => r.startsWith("ct direction original")),
  );
  assert.ok(pre.includes("ip6 saddr { fd00:10:244::/56 } ct state invalid drop"));
  assert.deepEqual(planNftables(intent, nftAfterApply(intent)), []);
  // Roles per family from the table's own maps: this node holds only the IPv6 VIP of route id 6.
  const live = nftAfterApply(intent);
  assert.deepEqual([...nftRolesInForce(live, 0xff, "ipv4")], [[5, "forwarder"]]);
  assert.deepEqual([...nftRolesInForce(live, 0xff, "ipv6")], [[5, "forwarder"], [6, "holder"]]);
  // The rendering: one `nft -f` script with the families' element lines.
  const script = renderNft(ops).join("\n");
  assert.match(script, /add map inet kube-egress pods6 \{ type ipv6_addr : verdict; \}/);
  assert.match(
    script,
    /add element inet kube-egress nosteer6 \{ fd00:10:96::\/112, fd00:10:244::\/56 \}/,
  );
});

Deno.test("dual stack, nftables: an IPv4-only cluster's table is what it always was; turning IPv6 off removes its sets and chains", () => {
  const v4 = testConfig({ backend: "nftables" });
  const only4 = intentOf(
    validateSnapshot(raw({ "192.0.2.50": "5" }, { "10.244.1.5": "192.0.2.50" }), v4).snapshot,
    v4,
    [],
  );
  const ops4 = planNftables(only4, NO_NFTABLES);
  assert.doesNotMatch(renderNft(ops4).join("\n"), /ip6|pods6|nfproto/);
  const both = intentOf(dualSnapshot(), dualNft, []);
  const off = planNftables(only4, nftAfterApply(both));
  const deleted = off.filter((o) => o.op === "delete set" || o.op === "delete chain")
    .map((o) => o.op === "delete set" ? o.set : o.op === "delete chain" ? o.chain : "");
  assert.deepEqual(deleted, [
    "snat6-5",
    "snat6-6",
    "vip6-5",
    "vip6-6",
    "pods6",
    "nosteer6",
    "scoped6",
    "scoped-excluded6",
    "roles6",
  ]);
  // The rules that use them are rewritten first, in the same transaction.
  const firstDelete = off.findIndex((o) => o.op === "delete set");
  assert.ok(off.findIndex((o) => o.op === "flush chain" && o.chain === "prerouting") < firstDelete);
  const after = nftAfterApply(only4);
  assert.equal(after.ipv6, undefined);
  assert.deepEqual(planNftables(only4, after), []);
});

Deno.test("dual stack: status and plan name the interface's addresses of both families", () => {
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const read = kernel.live(dual);
  assert.deepEqual(interfaceAddresses(read), ["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const status = nodeStatus(read, read.raw, "eth0");
  assert.deepEqual(status.addresses, ["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  assert.match(
    renderStatus(status),
    /^interface eth0: 192\.0\.2\.11, 2001:db8::11, 2001:db8::51$/m,
  );
  // An IPv6-only node: no "no address" where it has one.
  const v6only = kernelWith(["2001:db8::11"]).live(dual);
  assert.match(
    renderStatus(nodeStatus(v6only, { nat: "" }, "eth0")),
    /^interface eth0: 2001:db8::11$/m,
  );
});

Deno.test("dual stack, nftables: status shows the IPv6 VIPs (roles6) beside the IPv4 ones, held where their address is", () => {
  // This node holds the IPv6 VIP 2001:db8::51 only; the dual-stack VIP (route id 5) is elsewhere.
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  const snapshot = dualSnapshot();
  const { desired, transaction } = planPass(snapshot, dualNft, kernel.live(dualNft));
  kernel.apply({ steps: transaction.steps.filter((s) => s.op.tool !== "nft") });
  const live = { ...kernel.live(dualNft), nft: nftAfterApply(desired) };
  const status = nodeStatus(live, { nat: "" }, "eth0");
  assert.deepEqual(
    status.vips.map((v) => [v.vip, v.routeId, v.role, v.held, v.pods]),
    [
      ["192.0.2.50", 5, "forwarder", false, 1],
      ["2001:db8::50", 5, "forwarder", false, 1],
      ["2001:db8::51", 6, "holder", true, 1],
    ],
  );
  assert.deepEqual(status.mappings.map((m) => [m.podIp, m.vip]), [
    ["10.244.1.5", "192.0.2.50"],
    ["fd00:10:244::5", "2001:db8::50"],
    ["fd00:10:244:1::7", "2001:db8::51"],
  ]);
});

Deno.test("dual stack, iptables: status shows the IPv6 VIPs (ip6tables' SNAT chain, the inet6 pods set) with their pods' counters", () => {
  const kernel = kernelWith(["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
  kernel.apply(planPass(dualSnapshot(), dual, kernel.live(dual)).transaction);
  kernel.setCounters.set("fd00:10:244:1::7", { packets: 4, bytes: 400 });
  const live = kernel.live(dual, true);
  const status = nodeStatus(live, live.raw, "eth0");
  assert.deepEqual(
    status.vips.map((v) => [v.vip, v.routeId, v.role, v.held, v.pods, v.packets]),
    [
      ["192.0.2.50", 5, "forwarder", false, 1, 0],
      ["2001:db8::50", 5, "forwarder", false, 1, 0],
      ["2001:db8::51", 6, "holder", true, 1, 4],
    ],
  );
  assert.deepEqual(status.mappings.map((m) => [m.podIp, m.vip, m.bytes]), [
    ["10.244.1.5", "192.0.2.50", 0],
    ["fd00:10:244::5", "2001:db8::50", 0],
    ["fd00:10:244:1::7", "2001:db8::51", 400],
  ]);
});
