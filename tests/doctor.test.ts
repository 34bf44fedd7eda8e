import assert from "node:assert/strict";
import {
  type CheckReport,
  diagnose,
  type DoctorFacts,
  parseArpReplies,
  renderDoctor,
} from "../core/doctor.ts";
import {
  freeMarkWindow,
  FULL,
  ipRuleMarkUses,
  iptablesMarkUses,
  nftMarkUses,
} from "../core/mark_usage.ts";
import { testConfig } from "./helpers.ts";

// Captured on this machine in a scratch namespace: kube-proxy-like rules and
// kube-egress's chains on the nft backend, a CNI masquerade inserted above our
// jump, an Istio-like MARK in our byte, a CONNMARK restore; a masquerade and a
// MARK on the legacy backend; a native nftables table (kube-proxy nft-like);
// a foreign table 5 and fwmark rule 0x6/0xf.
const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/doctor/${name}`, import.meta.url));
const NFT_SAVE = fixture("nft_save.txt");
const LEGACY_SAVE = fixture("legacy_save.txt");
const NFT_JSON = fixture("nft_ruleset.json");
const IP_RULES = fixture("ip_rules.json");
const IP_ROUTES = fixture("ip_routes.json");

/** Our chains only, jumped to first, plus kube-proxy's rules: a healthy node. */
const CLEAN_SAVE = NFT_SAVE.split("\n").filter((l) =>
  !/flannel masq|istio-like|CONNMARK|--mark 0x10\/0xf0/.test(l)
).join("\n");

function facts(overrides: Partial<DoctorFacts> = {}): DoctorFacts {
  return {
    config: testConfig(),
    missingTools: [],
    missingOptional: [],
    addresses: ["192.0.2.11", "192.0.2.50"],
    vips: [{ ip: "192.0.2.50", routeId: 7 }, { ip: "192.0.2.51", routeId: 8 }],
    rejected: [],
    backend: "nft",
    iptablesSave: { nft: CLEAN_SAVE, legacy: "" },
    nftRuleset: '{"nftables": []}',
    ipRules: "[]",
    ipRoutes: "[]",
    sysctls: {
      "net.ipv4.ip_forward": 1,
      "net.ipv4.conf.eth0.forwarding": 1,
      "net.ipv4.conf.all.rp_filter": 0,
      "net.ipv4.conf.eth0.rp_filter": 2,
    },
    arpReplies: new Map([["192.0.2.50", []], ["192.0.2.51", ["aa:bb:cc:00:00:02"]]]),
    pendingLines: 0,
    ...overrides,
  };
}

function check(id: string, f: DoctorFacts): CheckReport {
  return diagnose(f).find((r) => r.id === id)!;
}

Deno.test("doctor: a healthy node passes every check and renders a summary", () => {
  const reports = diagnose(facts());
  for (const r of reports) assert.equal(r.verdict, "pass", `${r.id}: ${r.detail}`);
  const text = renderDoctor(reports);
  assert.match(text, /^PASS {2}tools {12}/m);
  assert.match(text, /doctor: 0 failed, 0 warning\(s\), 15 passed, 0 skipped\n$/);
});

Deno.test("mark usage: iptables-save MARK/CONNMARK/mark-match forms, our chains skipped", () => {
  const uses = iptablesMarkUses(NFT_SAVE, "iptables-nft");
  const show = uses.map((u) => `${u.where} ${u.access} 0x${u.bits.toString(16)}`);
  assert.deepEqual(show.sort(), [
    "iptables-nft filter KUBE-FIREWALL read 0x8000",
    "iptables-nft mangle OUTPUT read 0xf0",
    "iptables-nft mangle PREROUTING write 0xfff", // --set-xmark 0x539/0xfff
    "iptables-nft mangle PREROUTING write 0xffffffff", // CONNMARK --restore-mark
    "iptables-nft nat KUBE-MARK-MASQ write 0x4000",
    "iptables-nft nat KUBE-POSTROUTING read 0x4000",
    "iptables-nft nat KUBE-POSTROUTING write 0x4000",
  ]);
});

Deno.test("mark usage: native nftables rules (JSON) and foreign ip rules", () => {
  const nft = nftMarkUses(NFT_JSON).map((u) => `${u.access} 0x${u.bits.toString(16)}`);
  assert.deepEqual(nft.sort(), [
    "read 0x4000", // meta mark & 0x4000 == 0
    "read 0xffffffff", // meta mark 0x539
    "write 0x4000", // meta mark set meta mark ^ 0x4000
    "write 0xff00", // meta mark set meta mark and 0xffff00ff or 0x100
    "write 0xffffffff", // meta mark set 0x7
    "write 0xffffffff", // meta mark set ct mark and 0xff00
  ]);
  const rules = ipRuleMarkUses(IP_RULES, 233);
  assert.deepEqual(rules.map((r) => [r.priority, r.bits, r.value]), [[900, 0xf, 6]]);
  assert.equal(freeMarkWindow(0xfff | 0x4000), 0xff0000);
  assert.equal(freeMarkWindow(FULL), undefined);
});

Deno.test("doctor mark-bits: a MARK in our byte fails and a free window is suggested", () => {
  const r = check("mark-bits", facts({ iptablesSave: { nft: NFT_SAVE } }));
  assert.equal(r.verdict, "fail");
  assert.match(r.detail, /istio-like -j MARK --set-xmark 0x539\/0xfff \(writes 0xfff\)/);
  assert.match(r.fix!, /--mark-mask 0xff0000/);
});

Deno.test("doctor mark-bits: a foreign ip rule that our mark matches first fails; full-width writers warn", () => {
  const vips = [{ ip: "192.0.2.50", routeId: 6 }];
  const stolen = check("mark-bits", facts({ vips, ipRules: IP_RULES }));
  assert.equal(stolen.verdict, "fail");
  assert.match(stolen.detail, /ip rule 900: pref 900 fwmark 0x6\/0xf lookup 100/);
  const other = check("mark-bits", facts({ ipRules: IP_RULES })); // route ids 7, 8: not matched
  assert.equal(other.verdict, "warn");
  const full = check("mark-bits", facts({ nftRuleset: NFT_JSON }));
  assert.equal(full.verdict, "warn");
  assert.match(full.fix!, /whole mark/);
});

Deno.test("doctor iptables-backend: the CNI's masquerade on the other backend fails", () => {
  const r = check(
    "iptables-backend",
    facts({ iptablesSave: { nft: CLEAN_SAVE, legacy: LEGACY_SAVE } }),
  );
  assert.equal(r.verdict, "fail");
  assert.match(r.detail, /iptables-legacy, including masquerade: -A POSTROUTING -s 10.244.0.0\/16/);
  assert.match(r.fix!, /update-alternatives --set iptables \/usr\/sbin\/iptables-legacy/);
  const nothingHere = check(
    "iptables-backend",
    facts({ backend: "legacy", iptablesSave: { nft: CLEAN_SAVE, legacy: "" } }),
  );
  assert.equal(nothingHere.verdict, "fail", "every other rule lives in the backend we do not use");
  const native = check("iptables-backend", facts({ nftRuleset: NFT_JSON }));
  assert.equal(native.verdict, "warn");
  assert.match(native.detail, /nft ip kp post/);
});

Deno.test("doctor chain-order: a masquerade above our jump fails; a harmless rule warns", () => {
  const r = check("chain-order", facts({ iptablesSave: { nft: NFT_SAVE } }));
  assert.equal(r.verdict, "fail");
  assert.match(r.detail, /nat POSTROUTING, before our jump: .*flannel masq.*MASQUERADE/);
  const harmless = CLEAN_SAVE.replace(
    "-A POSTROUTING -m comment --comment kube-egress",
    "-A POSTROUTING -s 10.9.0.0/16 -j RETURN\n-A POSTROUTING -m comment --comment kube-egress",
  );
  assert.equal(check("chain-order", facts({ iptablesSave: { nft: harmless } })).verdict, "warn");
  const missing = CLEAN_SAVE.replace(/^-A PREROUTING .*KUBE-EGRESS-MARK$/m, "");
  const gone = check("chain-order", facts({ iptablesSave: { nft: missing } }));
  assert.equal(gone.verdict, "fail");
  assert.match(gone.detail, /no jump to KUBE-EGRESS-MARK in mangle PREROUTING/);
});

Deno.test("doctor route-tables: a VIP's table used by another route or rule fails", () => {
  const vips = [{ ip: "192.0.2.50", routeId: 5 }, { ip: "192.0.2.52", routeId: 100 }];
  const r = check("route-tables", facts({ vips, ipRules: IP_RULES, ipRoutes: IP_ROUTES }));
  assert.equal(r.verdict, "fail");
  assert.match(r.detail, /route id 5, but table 5 is also used by: route default/);
  assert.match(r.detail, /table 100 is also used by: route 198.51.100.0\/24, rule pref 900/);
  const ok = check("route-tables", facts({ ipRules: IP_RULES, ipRoutes: IP_ROUTES }));
  assert.equal(ok.verdict, "pass");
  assert.match(ok.detail, /tables taken by others here: 5, 100/);
});

Deno.test("doctor rp-filter and ip-forward: strict on a holder fails, elsewhere warns", () => {
  const strict = { ...facts().sysctls, "net.ipv4.conf.eth0.rp_filter": 1 };
  const holder = check("rp-filter", facts({ sysctls: strict }));
  assert.equal(holder.verdict, "fail");
  assert.match(holder.fix!, /sysctl -w net.ipv4.conf.eth0.rp_filter=2/);
  assert.equal(
    check("rp-filter", facts({ sysctls: strict, addresses: ["192.0.2.11"] })).verdict,
    "warn",
  );
  const off = check("ip-forward", facts({ sysctls: { ...strict, "net.ipv4.ip_forward": 0 } }));
  assert.equal(off.verdict, "fail");
  assert.match(off.detail, /net.ipv4.ip_forward = 0/);
});

Deno.test("doctor duplicate-vip: ARP answers decide, from both arping flavours", () => {
  const habets = "ARPING 192.0.2.50\n" +
    "42 bytes from aa:65:8d:2d:1f:2d (192.0.2.50): index=0 time=9.720 usec\n" +
    "42 bytes from AA:65:8D:2D:1F:2D (192.0.2.50): index=1 time=6.261 usec\n" +
    "42 bytes from 02:00:00:00:00:07 (192.0.2.50): index=2 time=7.1 usec\n\n" +
    "--- 192.0.2.50 statistics ---\n3 packets transmitted, 3 packets received";
  assert.deepEqual(parseArpReplies(habets), ["02:00:00:00:00:07", "aa:65:8d:2d:1f:2d"]);
  const iputils = "ARPING 192.0.2.51 from 0.0.0.0 eth0\n" +
    "Unicast reply from 192.0.2.51 [02:42:C0:00:02:0C]  0.702ms\nSent 1 probes (1 broadcast(s))";
  assert.deepEqual(parseArpReplies(iputils), ["02:42:c0:00:02:0c"]);

  const here = check(
    "duplicate-vip",
    facts({ arpReplies: new Map([["192.0.2.50", ["02:00:00:00:00:09"]]]) }),
  );
  assert.equal(here.verdict, "fail");
  assert.match(here.detail, /192.0.2.50 is on this node and also answered by 02:00:00:00:00:09/);
  const two = check("duplicate-vip", facts({ arpReplies: new Map([["192.0.2.51", ["a", "b"]]]) }));
  assert.equal(two.verdict, "fail");
  const none = check("duplicate-vip", facts({ arpReplies: new Map([["192.0.2.51", []]]) }));
  assert.equal(none.verdict, "warn");
  assert.equal(check("duplicate-vip", facts({ arpReplies: undefined })).verdict, "skip");
});

Deno.test("doctor tools, interface, inputs, sync: each says what to do", () => {
  const tools = check("tools", facts({ missingTools: [{ command: "ipset", pkg: "ipset" }] }));
  assert.equal(tools.verdict, "fail");
  assert.match(tools.fix!, /apt-get install -y ipset/);
  assert.equal(check("interface", facts({ addresses: undefined })).verdict, "fail");
  const inputs = check("inputs", facts({ rejected: ["vips/x: route id must be 1..252"] }));
  assert.equal(inputs.verdict, "warn");
  assert.equal(
    check("inputs", facts({ inputsError: "mapping directory /x does not exist" })).verdict,
    "fail",
  );
  const sync = check("sync", facts({ pendingLines: 4 }));
  assert.equal(sync.verdict, "warn");
  assert.match(sync.detail, /4 change\(s\) pending/);
  const skipped = diagnose(facts(), ["duplicate-vip"]).find((r) => r.id === "duplicate-vip")!;
  assert.equal(skipped.verdict, "skip");
});

Deno.test("doctor guard: names the MAC and the address that answered or advertised, a conflict on the holder", () => {
  const table = (extra: unknown[]) =>
    JSON.stringify({
      nftables: [
        { metainfo: {} },
        { table: { family: "inet", name: "someone-else" } },
        { set: { family: "inet", table: "someone-else", name: "seen_claims", elem: ["x"] } },
        { table: { family: "netdev", name: "kube-egress-guard" } },
        {
          set: {
            family: "netdev",
            table: "kube-egress-guard",
            name: "guarded",
            elem: ["192.0.2.50"],
          },
        },
        ...extra,
      ],
    });
  const seen = (name: string, val: unknown, packets: number) => ({
    set: {
      family: "netdev",
      table: "kube-egress-guard",
      name,
      elem: [{ elem: { val, counter: { packets } } }],
    },
  });
  assert.equal(check("guard", facts({ nftRuleset: table([]) })).verdict, "pass");
  const rogue = check(
    "guard",
    facts({
      nftRuleset: table([
        seen("seen_claims", { concat: ["192.0.2.50", "9e:ef:de:a2:52:8a"] }, 4),
        seen("seen_adverts", { concat: ["192.0.2.250", 5] }, 9),
        seen("seen_next_hops", { concat: [7, "9e:ef:de:a2:52:8a"] }, 2),
      ]),
    }),
  );
  assert.equal(rogue.verdict, "fail");
  // 192.0.2.50 is on this node's interface (facts()): a claim on it is a conflict.
  assert.match(rogue.detail, /address conflict: MAC 9e:ef:de:a2:52:8a claims 192\.0\.2\.50/);
  assert.match(rogue.detail, /192\.0\.2\.250 advertised VRRP router id 5/);
  assert.match(
    rogue.detail,
    /2 packet\(s\) of pods mapped to 192\.0\.2\.50 were headed for MAC 9e:ef:de:a2:52:8a/,
  );
  assert.ok(rogue.fix);
  assert.match(
    check("guard", facts({ nftRuleset: JSON.stringify({ nftables: [] }) })).detail,
    /not guarded/,
  );
  // A VIP left on another interface: answered by ARP without being held (OVN-Kubernetes #6553).
  const stale = check(
    "guard",
    facts({ nftRuleset: table([]), vipsElsewhere: [{ vip: "192.0.2.51", iface: "lo" }] }),
  );
  assert.equal(stale.verdict, "fail");
  assert.match(stale.detail, /192\.0\.2\.51 is configured on lo, not held on eth0/);
  assert.equal(stale.fix, "ip address del 192.0.2.51/32 dev lo");
});

Deno.test("doctor datapath-backend: on nftables, a masquerade ahead of our nat priority fails; the other backend's leftovers warn", () => {
  const nft = testConfig({ backend: "nftables" });
  const ruleset = (prio: number) =>
    JSON.stringify({
      nftables: [
        {
          chain: {
            family: "ip",
            table: "cni",
            name: "post",
            type: "nat",
            hook: "postrouting",
            prio,
          },
        },
        {
          rule: {
            family: "ip",
            table: "cni",
            chain: "post",
            expr: [{ match: {} }, { masquerade: null }],
          },
        },
      ],
    });
  const run = (f: DoctorFacts) => diagnose(f).find((c) => c.id === "datapath-backend")!;
  const early = run(facts({ config: nft, nftRuleset: ruleset(50), iptablesSave: {} }));
  assert.equal(early.verdict, "fail");
  assert.match(early.detail, /ip cni post \(priority 50\)/);
  assert.match(early.fix!, /priority of 90 or more/);
  assert.equal(
    run(facts({ config: nft, nftRuleset: ruleset(100), iptablesSave: {} })).verdict,
    "pass",
  );
  // Our iptables chains next to the nftables backend: a switch not finished.
  assert.equal(run(facts({ config: nft, nftRuleset: ruleset(100) })).verdict, "warn");
  // iptables backend while kube-proxy runs in nftables mode.
  const kubeProxy = JSON.stringify({
    nftables: [{ chain: { family: "ip", table: "kube-proxy", name: "services" } }],
  });
  const kp = run(facts({ nftRuleset: kubeProxy }));
  assert.equal(kp.verdict, "warn");
  assert.match(kp.fix!, /--backend nftables/);
  // And the iptables checks stand aside on nftables.
  assert.equal(
    diagnose(facts({ config: nft })).find((c) => c.id === "chain-order")!.verdict,
    "skip",
  );
});

Deno.test("doctor interface: each family of the pod ranges needs an address of the node's own", () => {
  const addr6 = (local: string) => ({
    local,
    prefixlen: 64,
    tentative: false,
    dadfailed: false,
    deprecated: false,
    nodad: true,
  });
  const v6only = testConfig({ podCidrs: ["fd00:10:244::/56"], serviceCidrs: [] });
  const dual = testConfig({ podCidrs: ["10.244.0.0/16", "fd00:10:244::/56"] });
  const ok = check(
    "interface",
    facts({ config: v6only, addresses: [], addresses6: [addr6("2001:db8::11")] }),
  );
  assert.equal(ok.verdict, "pass", ok.detail);
  assert.equal(ok.detail, "eth0: 2001:db8::11");
  const linkLocal = check(
    "interface",
    facts({ config: v6only, addresses: [], addresses6: [addr6("fe80::1")] }),
  );
  assert.deepEqual([linkLocal.verdict, linkLocal.detail], [
    "fail",
    "interface eth0 has no IPv6 address",
  ]);
  const none = check("interface", facts({ config: dual, addresses: [], addresses6: [] }));
  assert.equal(none.detail, "interface eth0 has no IPv4 and no IPv6 address");
  const v4 = check("interface", facts({ addresses: [] }));
  assert.deepEqual([v4.verdict, v4.detail], ["fail", "interface eth0 has no IPv4 address"]);
});
