import assert from "node:assert/strict";
import { formatProblem, validateSnapshot, ValidationMemo } from "../core/snapshot.ts";
import { raw, testConfig } from "./helpers.ts";

const config = testConfig();

Deno.test("snapshot: valid entries pass, sorted by address", () => {
  const { snapshot, problems } = validateSnapshot(
    raw({ "192.0.2.51": "6", "192.0.2.50": 5 }, {
      "10.244.2.9": "192.0.2.51",
      "10.244.1.10": "192.0.2.50",
      "10.244.1.9": "192.0.2.50",
    }),
    config,
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(snapshot.vips, [{ ip: "192.0.2.50", routeId: 5 }, {
    ip: "192.0.2.51",
    routeId: 6,
  }]);
  assert.deepEqual(snapshot.pods.map((p) => p.podIp), ["10.244.1.9", "10.244.1.10", "10.244.2.9"]);
});

Deno.test("snapshot: each bad entry is reported with its origin and skipped; the valid ones stay", () => {
  const { snapshot, problems } = validateSnapshot(
    raw(
      {
        "192.0.2.50": "5",
        "192.0.2.60": "300",
        "192.0.2.61": "x",
        "192.0.2.062": "7",
        "10.244.9.9": "8",
      },
      {
        "10.244.1.5": "192.0.2.50", // valid
        "10.244.1.6": "192.0.2.99", // VIP with no route id
        "10.1.2.3": "192.0.2.50", // outside the pod range
        "10.244.1.x": "192.0.2.50", // not an IP
        "10.244.1.7": "not-an-ip", // bad VIP
      },
    ),
    config,
  );
  assert.deepEqual(snapshot, {
    vips: [{ ip: "192.0.2.50", routeId: 5 }],
    pods: [{ podIp: "10.244.1.5", vip: "192.0.2.50" }],
  });
  const text = problems.map(formatProblem).join("\n");
  assert.match(text, /^vips\/192.0.2.60: route id must be between 1 and 252$/m);
  assert.match(text, /^vips\/192.0.2.61: route id must be a whole number$/m);
  assert.match(text, /^vips\/192.0.2.062: VIP must be an IP address/m);
  assert.match(
    text,
    /^vips\/10.244.9.9: VIP 10.244.9.9 lies inside the cluster range 10.244.0.0\/16$/m,
  );
  assert.match(
    text,
    /^pods\/10.244.1.6: pod 10.244.1.6 is mapped to VIP 192.0.2.99, which has no route id$/m,
  );
  assert.match(
    text,
    /^pods\/10.1.2.3: pod IP 10.1.2.3 is outside the pod ranges \(10.244.0.0\/16\)$/m,
  );
  assert.match(text, /^pods\/10.244.1.x: pod IP must be an IP address/m);
  assert.match(text, /^pods\/10.244.1.7: VIP must be an IP address/m);
  assert.equal(problems.length, 8);
});

Deno.test("snapshot: two VIPs with one route id are both rejected, and so are their pods", () => {
  const { snapshot, problems } = validateSnapshot(
    raw({ "192.0.2.50": "6", "192.0.2.64": "6", "192.0.2.70": "7" }, {
      "10.244.1.5": "192.0.2.50",
      "10.244.1.6": "192.0.2.70",
    }),
    config,
  );
  assert.deepEqual(snapshot.vips, [{ ip: "192.0.2.70", routeId: 7 }]);
  assert.deepEqual(snapshot.pods, [{ podIp: "10.244.1.6", vip: "192.0.2.70" }]);
  const text = problems.map(formatProblem).join("\n");
  assert.match(
    text,
    /vips\/192.0.2.50: route id 6 of VIP 192.0.2.50 is also used by 192.0.2.64 \(vips\/192.0.2.64\)/,
  );
  assert.match(text, /vips\/192.0.2.64: route id 6 of VIP 192.0.2.64 is also used by 192.0.2.50/);
  assert.match(
    text,
    /pods\/10.244.1.5: pod 10.244.1.5 is mapped to a rejected VIP: VIP 192.0.2.50 shares route id 6/,
  );
});

Deno.test("snapshot: a VIP defined twice and a pod mapped to two VIPs are rejected", () => {
  const { snapshot, problems } = validateSnapshot({
    vips: [
      { origin: "a", ip: "192.0.2.50", routeId: 5 },
      { origin: "b", ip: "192.0.2.50", routeId: 6 },
      { origin: "c", ip: "192.0.2.51", routeId: 7 },
      { origin: "d", ip: "192.0.2.52", routeId: 8 },
    ],
    pods: [
      { origin: "p1", podIp: "10.244.1.5", vip: "192.0.2.51" },
      { origin: "p2", podIp: "10.244.1.5", vip: "192.0.2.52" },
      { origin: "p3", podIp: "10.244.1.6", vip: "192.0.2.51" },
      { origin: "p4", podIp: "10.244.1.6", vip: "192.0.2.51" },
    ],
    problems: [{ origin: "pods/unreadable", reason: "unreadable: permission denied" }],
  }, config);
  assert.deepEqual(snapshot.vips.map((v) => v.ip), ["192.0.2.51", "192.0.2.52"]);
  assert.deepEqual(snapshot.pods, [{ podIp: "10.244.1.6", vip: "192.0.2.51" }]);
  const text = problems.map(formatProblem).join("\n");
  assert.match(text, /^a: VIP 192.0.2.50 is also defined by b$/m);
  assert.match(text, /^p1: pod 10.244.1.5 is mapped to several VIPs \(192.0.2.51, 192.0.2.52\)$/m);
  assert.match(text, /^pods\/unreadable: unreadable: permission denied$/m);
});

Deno.test("snapshot: VIP .22 and .222 are different VIPs", () => {
  const { snapshot, problems } = validateSnapshot(
    raw({ "192.0.2.22": 1, "192.0.2.222": 2 }, {
      "10.244.0.22": "192.0.2.22",
      "10.244.0.222": "192.0.2.222",
    }),
    config,
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(snapshot.pods, [{ podIp: "10.244.0.22", vip: "192.0.2.22" }, {
    podIp: "10.244.0.222",
    vip: "192.0.2.222",
  }]);
});

Deno.test("snapshot: a VIP's eligibility (placement) is kept when given and checked", () => {
  const { snapshot, problems } = validateSnapshot(
    {
      vips: [
        { origin: "vip/a", ip: "192.0.2.50", routeId: 5, eligible: false },
        { origin: "vip/b", ip: "192.0.2.51", routeId: 6, eligible: true },
        { origin: "vip/c", ip: "192.0.2.52", routeId: 7 },
        { origin: "vip/d", ip: "192.0.2.53", routeId: 8, eligible: "no" },
      ],
      pods: [],
      problems: [],
    },
    config,
  );
  assert.deepEqual(snapshot.vips, [
    { ip: "192.0.2.50", routeId: 5, eligible: false },
    { ip: "192.0.2.51", routeId: 6, eligible: true },
    { ip: "192.0.2.52", routeId: 7 },
  ]);
  assert.deepEqual(problems.map(formatProblem), ["vip/d: eligible must be true or false"]);
});

Deno.test("validation memo: the same results as without it, each problem with its own entry's origin", () => {
  const vips = [{ origin: "v/a", ip: "192.0.2.50", routeId: 5 }];
  const pod = (origin: string, podIp: unknown, vip: unknown) => ({ origin, podIp, vip });
  const rounds = [
    [pod("p/1", "10.244.1.11", "192.0.2.50"), pod("p/2", "10.244.1.12", "nope")],
    // One changed, one added, one with the same (bad) input from another origin.
    [
      pod("p/1", "10.244.1.11", "192.0.2.50"),
      pod("p/2", "10.244.1.12", "192.0.2.50"),
      pod("p/3", "10.244.1.12", "nope"),
      pod("p/4", "10.244.1.12", "nope"),
      pod("p/5", 42, "192.0.2.50"),
    ],
    [pod("p/2", "10.244.1.12", "nope"), pod("p/6", "10.9.9.9", "192.0.2.50")],
  ];
  const memo = new ValidationMemo();
  for (const pods of rounds) {
    const raw = { vips, pods, problems: [] };
    assert.deepEqual(validateSnapshot(raw, config, memo), validateSnapshot(raw, config));
  }
  const twice = validateSnapshot({ vips, pods: rounds[1], problems: [] }, config, memo);
  assert.deepEqual(
    twice.problems.filter((p) => /VIP/.test(p.reason)).map((p) => p.origin).sort(),
    ["p/3", "p/4"],
  );
});

const dualStack = testConfig({
  podCidrs: ["10.244.0.0/16", "fd00:10:244::/56"],
  serviceCidrs: ["10.96.0.0/12", "fd00:10:96::/112"],
});

Deno.test("snapshot: IPv6 pods and VIPs in the same directories, canonical, IPv4 first", () => {
  const { snapshot, problems } = validateSnapshot(
    raw({ "2001:DB8::50": "5", "192.0.2.50": "5", "2001:db8::51": "6" }, {
      "fd00:10:244:1::9": "2001:db8::51",
      "fd00:10:244::a": "2001:db8:0::50",
      "10.244.1.9": "192.0.2.50",
    }),
    dualStack,
  );
  assert.deepEqual(problems, []);
  // An IPv4 and an IPv6 VIP may share a route id (a dual-stack VIP): each family has its own rules.
  assert.deepEqual(snapshot.vips, [
    { ip: "192.0.2.50", routeId: 5 },
    { ip: "2001:db8::50", routeId: 5 },
    { ip: "2001:db8::51", routeId: 6 },
  ]);
  assert.deepEqual(snapshot.pods, [
    { podIp: "10.244.1.9", vip: "192.0.2.50" },
    { podIp: "fd00:10:244::a", vip: "2001:db8::50" },
    { podIp: "fd00:10:244:1::9", vip: "2001:db8::51" },
  ]);
});

Deno.test("snapshot: a mapping across families is an error naming its file, the valid ones stay", () => {
  const { snapshot, problems } = validateSnapshot(
    raw({ "2001:db8::50": "5", "192.0.2.50": "6", "2001:db8::60": "6", "2001:db8::61": "6" }, {
      "fd00:10:244::5": "192.0.2.50", // IPv6 pod, IPv4 VIP
      "10.244.1.5": "2001:db8::50", // IPv4 pod, IPv6 VIP
      "fd00:10:244::6": "2001:db8::50", // valid
      "10.244.1.6": "192.0.2.50", // valid
      "fd00:99::1": "2001:db8::50", // outside the pod ranges
      "::ffff:10.244.1.7": "192.0.2.50", // IPv4-mapped
      "fe80::1%eth0": "2001:db8::50", // zone id
      "fd00:10:244::7": "fd00:10:96::1", // a VIP inside the service range: no route id
    }),
    dualStack,
  );
  assert.deepEqual(snapshot.pods, [
    { podIp: "10.244.1.6", vip: "192.0.2.50" },
    { podIp: "fd00:10:244::6", vip: "2001:db8::50" },
  ]);
  const text = problems.map(formatProblem).join("\n");
  assert.match(
    text,
    /^pods\/fd00:10:244::5: VIP 192.0.2.50 is IPv4 but pod IP fd00:10:244::5 is IPv6: a pod's traffic can only leave with a VIP of its own family$/m,
  );
  assert.match(text, /^pods\/10.244.1.5: VIP 2001:db8::50 is IPv6 but pod IP 10.244.1.5 is IPv4/m);
  assert.match(text, /^pods\/fd00:99::1: pod IP fd00:99::1 is outside the pod ranges/m);
  assert.match(
    text,
    /^pods\/::ffff:10.244.1.7: pod IP is an IPv4-mapped IPv6 address: write the IPv4 address 10.244.1.7 instead$/m,
  );
  assert.match(text, /^pods\/fe80::1%eth0: pod IP must be an IP address/m);
  // Two IPv6 VIPs with one route id clash; the IPv4 VIP with the same id does not.
  assert.match(
    text,
    /^vips\/2001:db8::60: route id 6 of VIP 2001:db8::60 is also used by 2001:db8::61/m,
  );
  assert.deepEqual(snapshot.vips.map((v) => v.ip), ["192.0.2.50", "2001:db8::50"]);
});
