import assert from "node:assert/strict";
import { DatapathConfig, describeIssues, markMask, routeIdText } from "../core/schema.ts";
import { hex, markFor, markShift, routeIdOfMark } from "../core/marks.ts";
import { testConfig } from "./helpers.ts";

Deno.test("schema: mark mask accepts hex and decimal with 8 consecutive low bits", () => {
  assert.equal(markMask.parse("0xff"), 0xff);
  assert.equal(markMask.parse("0xFF00"), 0xff00);
  assert.equal(markMask.parse("65280"), 0xff00);
  assert.equal(markMask.parse("0xff000000"), 0xff000000);
  for (const bad of ["0", "0x7f", "0xf0f0", "0x1ff00000000", "-1", "ff", "0x80000000"]) {
    assert.equal(markMask.safeParse(bad).success, false, bad);
  }
});

Deno.test("schema: marks are route ids shifted into the mask and back", () => {
  assert.equal(markShift(0xff00), 8);
  assert.equal(markFor(5, 0xff), 5);
  assert.equal(markFor(252, 0xff00), 252 << 8);
  assert.equal(markFor(252, 0xff000000), 0xfc000000);
  assert.equal(routeIdOfMark(0xfc000000, 0xff000000), 252);
  assert.equal(hex(0xfc000000), "0xfc000000");
});

Deno.test("schema: route id text is 1..252 digits only", () => {
  assert.equal(routeIdText.parse(" 7\n"), 7);
  for (const bad of ["0", "253", "-1", "7.5", "seven", ""]) {
    assert.equal(routeIdText.safeParse(bad).success, false, bad);
  }
});

Deno.test("schema: datapath config errors name the field and value", () => {
  const result = DatapathConfig.safeParse({
    interface: "this-name-is-too-long",
    podCidrs: ["10.244.0.1/16"],
    serviceCidrs: ["nope"],
    excludeCidrs: [],
    markMask: "0x3",
    rulePriority: 0,
    routeProtocol: 233,
  }, { reportInput: true });
  assert.equal(result.success, false);
  const text = describeIssues(result.error!, { podCidrs: "--pod-subnet" });
  assert.match(text, /interface "this-name-is-too-long" must be a network interface name/);
  assert.match(text, /--pod-subnet "10.244.0.1\/16" has host bits set/);
  assert.match(text, /serviceCidrs "nope" must be an IPv4 or IPv6 range/);
  assert.match(text, /markMask "0x3" needs 8 consecutive bits/);
  assert.match(text, /rulePriority/);
});

Deno.test("schema: defaults of the test config parse", () => {
  assert.equal(testConfig().markMask, 0xff);
});

Deno.test("schema: -p, -s and --exclude-cidr take IPv6 ranges, canonical; host bits still rejected", () => {
  const config = DatapathConfig.parse({
    interface: "eth0",
    podCidrs: ["10.244.0.0/16", "FD00:10:244:0::/56"],
    serviceCidrs: ["fd00:10:96::/112"],
    excludeCidrs: ["2001:db8::/32"],
    markMask: "0xff",
    rulePriority: 1000,
    routeProtocol: 233,
  });
  assert.deepEqual(config.podCidrs, ["10.244.0.0/16", "fd00:10:244::/56"]);
  const bad = DatapathConfig.safeParse({
    interface: "eth0",
    podCidrs: ["fd00::1/8", "fd00::/129", "fd00::", "fe80::/64%eth0"],
    serviceCidrs: [],
    excludeCidrs: [],
    markMask: "0xff",
    rulePriority: 1000,
    routeProtocol: 233,
  }, { reportInput: true });
  const text = describeIssues(bad.error!, { podCidrs: "--pod-subnet" });
  assert.match(text, /--pod-subnet "fd00::1\/8" has host bits set/);
  assert.match(text, /--pod-subnet "fd00::\/129" must be an IPv4 or IPv6 range/);
  assert.match(text, /--pod-subnet "fd00::" must be an IPv4 or IPv6 range/);
  assert.match(text, /--pod-subnet "fe80::\/64%eth0" must be an IPv4 or IPv6 range/);
});
