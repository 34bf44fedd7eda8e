/** sim/rogue.ts: the rogue's keepalived configuration and the reading of the holders' defence. */
import assert from "node:assert/strict";
import { analyzeDefence, renderRogueConf } from "../sim/rogue.ts";

Deno.test("rogue: one VRRP instance per VIP, priority 255, our router ids (offset too), unicast peers", () => {
  const conf = renderRogueConf("eth0", {
    vips: { "192.0.2.50": 5, "192.0.2.51": 6 },
    vridOffset: 100,
    unicastPeers: ["192.0.2.11", "192.0.2.12"],
  });
  assert.equal(conf.match(/vrrp_instance/g)?.length, 2);
  assert.match(conf, /virtual_router_id 105\n {2}priority 255/);
  assert.match(conf, /virtual_router_id 106/);
  assert.match(conf, /unicast_peer \{\n {4}192\.0\.2\.11\n {4}192\.0\.2\.12\n {2}\}/);
  assert.match(conf, /192\.0\.2\.50\/32/);
  assert.doesNotMatch(renderRogueConf("eth0", { vips: { "192.0.2.50": 5 } }), /unicast_peer/);
});

Deno.test("rogue: each claim's delay to another MAC announcing the same VIP", () => {
  const rogue = "9e:ef:de:a2:52:8a";
  const holder = "a2:41:09:fa:7b:c6";
  const garp = (t: string, mac: string, vip: string) =>
    `${t} ${mac} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has ${vip} (ff:ff:ff:ff:ff:ff) tell ${vip}, length 28`;
  const lines = [
    garp("1000.000000", rogue, "192.0.2.50"),
    garp("1000.012000", holder, "192.0.2.50"),
    garp("1000.300000", rogue, "192.0.2.51"),
    `1000.301000 ${holder} > 02:00:00:00:00:01, ethertype ARP (0x0806), length 42: Reply 192.0.2.51 is-at ${holder}, length 28`,
    garp("1000.600000", rogue, "192.0.2.50"),
    garp("1000.700000", holder, "192.0.2.99"), // another address: not an answer
    "1000.800000 unparsable",
  ];
  assert.deepEqual(analyzeDefence(lines, rogue.toUpperCase(), ["192.0.2.50", "192.0.2.51"]), {
    claims: 3,
    delaysMs: [1, 12],
  });
});
