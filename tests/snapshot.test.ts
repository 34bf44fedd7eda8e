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
  assert.match(text, /^vips\/192.0.2.062: VIP must be an IPv4 address/m);
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
  assert.match(text, /^pods\/10.244.1.x: pod IP must be an IPv4 address/m);
  assert.match(text, /^pods\/10.244.1.7: VIP must be an IPv4 address/m);
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
