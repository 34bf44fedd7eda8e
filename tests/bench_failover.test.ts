import assert from "node:assert/strict";
import { failoverTimeline, logLineTime, timelineText } from "../bench/failover.ts";
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
    [79, "VRRP state", { vip: VIP, state: "MASTER" }],
    [165, "VIP role", { vip: VIP, from: "forwarder", to: "holder" }],
    [900, "VRRP state", { vip: VIP, state: "MASTER" }],
  ];
  for (const format of ["text", "json"] as const) {
    const lines = events.map(([ms, message, fields]) =>
      formatLine(format, "info", message, fields, at(ms))
    );
    const timeline = failoverTimeline(lines, VIP, fault, fault + 167);
    assert.deepEqual(timeline, { masterMs: 79, holderMs: 165, firstPacketMs: 167 }, format);
    assert.equal(timelineText(timeline), "MASTER +79 ms, holder +165 ms, first packet +167 ms");
    // Nothing of this VIP after the fault: not seen.
    assert.deepEqual(failoverTimeline(lines.slice(0, 3), VIP, fault, undefined), {}, format);
  }
  assert.equal(timelineText(undefined), "MASTER not seen, holder not seen, first packet not seen");
});
