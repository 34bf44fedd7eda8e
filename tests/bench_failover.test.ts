import assert from "node:assert/strict";
import {
  connectionLines,
  type FailoverFigure,
  failoverNotes,
  failoverNotes6,
  failoverTimeline,
  logLineTime,
  renderFailover,
  renderFailover6,
  splitFamilies,
  timelineText,
  wrongFlows,
} from "../bench/failover.ts";
import type { Fault } from "../bench/failover.ts";
import type { ConnectionsSummary } from "../sim/connections.ts";
import { formatLine } from "../cmd/log.ts";

const VIP = "192.0.2.50";
const at = (ms: number) => new Date(Date.parse("2026-12-02T07:23:41.000Z") + ms);
const fault = at(0).getTime();

Deno.test("bench failover: log line times in both formats, undefined for other lines", () => {
  const when = at(957);
  assert.equal(logLineTime(formatLine("text", "info", "VRRP state", { vip: VIP }, when)), +when);
  assert.equal(logLineTime(formatLine("json", "info", "VRRP state", { vip: VIP }, when)), +when);
  assert.equal(logLineTime("[sim] agent on node1 did not stop"), undefined);
  assert.equal(logLineTime("{not json"), undefined);
});

Deno.test("bench failover: the timeline takes the first MASTER and holder role after the fault", () => {
  const events: [number, string, Record<string, string>][] = [
    // Before the fault (the previous run's takeover): not this failover's.
    [-4000, "VRRP state", { vip: VIP, state: "MASTER" }],
    [-3900, "VIP role", { vip: VIP, from: "forwarder", to: "holder" }],
    // Another VIP's transition, and this VIP leaving the holder role, do not count.
    [20, "VRRP state", { vip: "192.0.2.51", state: "MASTER" }],
    [40, "VIP role", { vip: VIP, from: "holder", to: "forwarder" }],
    [60, "pass applied", { trigger: "resync", read_ms: "5", steps: "ipset 2 ms" }],
    [79, "VRRP state", { vip: VIP, state: "MASTER" }],
    [165, "VIP role", { vip: VIP, from: "forwarder", to: "holder" }],
    [165, "pass applied", {
      trigger: "address change",
      read_ms: "8",
      steps: "nft 10, ip 3, conntrack 7, conntrackd 9 ms",
    }],
    [900, "VRRP state", { vip: VIP, state: "MASTER" }],
  ];
  for (const format of ["text", "json"] as const) {
    const lines = events.map(([ms, message, fields]) =>
      formatLine(format, "info", message, fields, at(ms))
    );
    const timeline = failoverTimeline(lines, VIP, fault, fault + 167);
    const pass = "read 8 ms; nft 10, ip 3, conntrack 7, conntrackd 9 ms";
    assert.deepEqual(
      timeline,
      { masterMs: 79, holderMs: 165, firstPacketMs: 167, pass },
      format,
    );
    assert.equal(
      timelineText(timeline),
      `MASTER +79 ms, holder +165 ms, first packet +167 ms (pass: ${pass})`,
    );
    // Nothing of this VIP after the fault: not seen.
    assert.deepEqual(failoverTimeline(lines.slice(0, 3), VIP, fault, undefined), {}, format);
  }
  assert.equal(timelineText(undefined), "MASTER not seen, holder not seen, first packet not seen");
});

Deno.test("bench failover: IPv6 streams (tag -v6) and wire packets are split from the IPv4 ones", () => {
  const split = splitFamilies(
    [
      { tag: "pod1", gapMs: 300 },
      { tag: "pod3", gapMs: 410 },
      { tag: "pod1-v6", gapMs: 280 },
      { tag: "pod3-v6", gapMs: undefined },
    ],
    ["10.244.1.11", "fd00:10:244:3::11", "fd00:10:244:3::11"],
  );
  assert.deepEqual(split.ipv4, {
    gapMs: 410,
    gaps: { pod1: 300, pod3: 410 },
    wrongSource: 1,
  });
  // One IPv6 stream never resumed: the family's gap is undefined (shown as never resumed).
  assert.deepEqual(split.ipv6, {
    gapMs: undefined,
    gaps: { "pod1-v6": 280, "pod3-v6": undefined },
    wrongSource: 2,
  });
});

Deno.test("bench failover: the IPv4 table and lines stay as they were; IPv6 gets its own", () => {
  const figure = (run: number, gap: number, gap6: number | undefined): FailoverFigure => ({
    fault: "keepalived killed",
    run,
    gapMs: gap,
    gaps: { pod1: gap },
    wrongSource: 0,
    newHolder: "node3",
    connections: { survived: 20, total: 20, resets: 0, maxStallMs: 300, wrongSource: 0 },
    ipv6: { gapMs: gap6, gaps: { "pod1-v6": gap6 }, wrongSource: 0, newHolder: "node3" },
  });
  const figures = [figure(1, 300, 310), figure(2, 320, undefined)];
  const without = figures.map(({ ipv6: _, ...f }) => f);
  assert.equal(renderFailover(figures), renderFailover(without));
  assert.deepEqual(failoverNotes(figures), failoverNotes(without));
  const six = renderFailover6(figures).split("\n");
  assert.equal(
    six[0],
    "IPv6 (the same failovers; streams to 2001:db8:1::50, the VIP's IPv6 address):",
  );
  assert.match(six[2], /^keepalived killed\s+2\s+310\s+310\s+310\s+1\s+0$/);
  assert.deepEqual(failoverNotes6(figures), [
    "IPv6 keepalived killed: run 1 310 ms (new holder node3); run 2 ∞ ms (new holder node3); " +
    "median 310 ms, 1 never resumed; 0 wrong-source packet(s)",
  ]);
  assert.equal(renderFailover6(without).split("\n").length, 2);
});

Deno.test("bench failover: the issue's line per fault, and the holder's own pod apart when measured", () => {
  const summary = (survived: number, total: number, stall: number) => ({
    survived,
    total,
    resets: total - survived,
    maxStallMs: stall,
    wrongSource: 0,
  });
  const figure = (fault: Fault, run: number, holderPod?: ConnectionsSummary): FailoverFigure => ({
    fault,
    run,
    gapMs: 90,
    gaps: {},
    wrongSource: 0,
    newHolder: "node3",
    connections: summary(20, 20, 200 + run),
    ...(holderPod ? { holderPodConnections: holderPod } : {}),
  });
  const figures = [
    figure("keepalived killed", 1, summary(0, 10, 20)),
    figure("keepalived killed", 2, summary(1, 10, 30)),
    figure("power off", 1),
  ];
  assert.deepEqual(connectionLines(figures), [
    "keepalived killed: connections survived 40/40, resets 0, max stall 202 ms, wrong source 0",
    "power off: connections survived 20/20, resets 0, max stall 201 ms, wrong source 0",
    "keepalived killed (holder's own pod): connections survived 1/20, resets 19, max stall 30 ms, wrong source 0",
  ]);
  // Not measured (no BENCH_HOLDER_POD): only the lines.
  assert.deepEqual(connectionLines([figure("power off", 1)]), [
    "power off: connections survived 20/20, resets 0, max stall 201 ms, wrong source 0",
  ]);
});

Deno.test("bench failover: wrong-source packets summed up by flow, the largest first, in ms after the fault", () => {
  const p = (t: number, src: string, sport: number) => ({
    t: fault + t,
    proto: "udp" as const,
    src,
    sport,
    dst: "203.0.113.10",
    dport: 9000,
  });
  assert.deepEqual(
    wrongFlows(
      [p(130, "10.244.3.5", 40000), p(120, "192.0.2.13", 5), p(980, "10.244.3.5", 40000)],
      fault,
    ),
    [
      "udp 10.244.3.5:40000 > 203.0.113.10:9000 x2 at +130..+980 ms",
      "udp 192.0.2.13:5 > 203.0.113.10:9000 x1 at +120 ms",
    ],
  );
});
