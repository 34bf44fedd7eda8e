import assert from "node:assert/strict";
import { analyzeFailover, parseTcpdumpLine, streamArrivals, wireLeaks } from "../sim/stream.ts";
import type { ReporterEvent } from "../sim/cluster.ts";

const VIP = "192.0.2.50";

/** UDP every 10 ms from `from` to `to` (exclusive), with a source per time. */
function udp(tag: string, from: number, to: number, src: (t: number) => string): ReporterEvent[] {
  const events: ReporterEvent[] = [];
  for (let t = from; t < to; t += 10) {
    events.push({ t, proto: "udp", src: src(t), data: `${tag} u ${t / 10}` });
  }
  return events;
}

Deno.test("stream: the gap runs from the last good packet before the fault to the first after", () => {
  // Good until 1000 (fault at 995), silence, good again from 1420.
  const events = [
    ...udp("a", 0, 1000, () => VIP),
    ...udp("a", 1420, 2000, () => VIP),
    { t: 1500, proto: "tcp", src: VIP, data: "a t 30" },
  ];
  const result = analyzeFailover(events, { tag: "a", vip: VIP, faultAt: 995 });
  assert.equal(result.gapMs, 430);
  assert.equal(result.lastBefore, 990);
  assert.equal(result.firstAfter, 1420);
  assert.equal(result.wrongSource, 0);
  assert.deepEqual(result.received, { udp: 158, tcp: 1 });
  assert.equal(result.udpLost, 42);
});

Deno.test("stream: packets with another source are counted as wrong, by source; other tags are ignored", () => {
  const events = [
    ...udp("a", 0, 500, () => VIP),
    ...udp("a", 500, 530, () => "10.244.2.11"), // the pod's own address leaked
    ...udp("a", 700, 900, () => VIP),
    ...udp("b", 0, 900, () => "192.0.2.12"), // another stream: not ours
    { t: 600, proto: "tcp", src: "192.0.2.12", data: "a t 12" }, // a node address
    { t: 610, proto: "tcp", src: VIP, data: "probe" }, // not a stream packet at all
  ];
  const result = analyzeFailover(events, { tag: "a", vip: VIP, faultAt: 480 });
  assert.equal(result.wrongSource, 4);
  assert.deepEqual(result.wrongSources, { "10.244.2.11": 3, "192.0.2.12": 1 });
  assert.equal(result.gapMs, 210, "wrong-source packets do not close the gap");
});

Deno.test("stream: no good packet after the fault gives no gap; `until` cuts off a later move", () => {
  const never = analyzeFailover(udp("a", 0, 500, () => VIP), { tag: "a", vip: VIP, faultAt: 600 });
  assert.equal(never.gapMs, undefined);
  const events = [
    ...udp("a", 0, 1000, () => VIP),
    ...udp("a", 1300, 5000, () => VIP),
    ...udp("a", 6000, 7000, () => VIP), // a second, longer gap later (preemption back)
  ];
  assert.equal(analyzeFailover(events, { tag: "a", vip: VIP, faultAt: 1000 }).gapMs, 1010);
  assert.equal(
    analyzeFailover(events, { tag: "a", vip: VIP, faultAt: 1000, until: 5500 }).gapMs,
    310,
  );
  // A stream that starts only after the fault: the gap counts from the fault.
  assert.equal(
    analyzeFailover(udp("a", 400, 600, () => VIP), { tag: "a", vip: VIP, faultAt: 100 }).gapMs,
    300,
  );
});

Deno.test("stream: arrivals are parsed from the reporter's data and sorted by time", () => {
  const arrivals = streamArrivals([
    { t: 20, proto: "tcp", src: VIP, port: 4000, data: "x t 1" },
    { t: 10, proto: "udp", src: VIP, port: 5000, data: "x u 7" },
    { t: 15, proto: "udp", src: VIP, data: "x u seven" },
  ], "x");
  assert.deepEqual(arrivals, [
    { t: 10, proto: "udp", seq: 7, src: VIP, port: 5000 },
    { t: 20, proto: "tcp", seq: 1, src: VIP, port: 4000 },
  ]);
});

Deno.test("stream: tcpdump lines become packets; leaks are packets with none of the VIPs as source", () => {
  const lines = [
    "1795437065.350123 IP 192.0.2.50.35902 > 198.51.100.10.7001: UDP, length 10",
    "1795437065.351000 IP 10.244.3.11.44814 > 198.51.100.10.7000: Flags [F.], seq 10, ack 13, win 63, length 0",
    "1795437065.352000 IP 192.0.2.51.4000 > 198.51.100.10.7000: Flags [S], seq 1, win 64240, length 0",
    "1795437065.353000 ARP, Request who-has 192.0.2.50 tell 192.0.2.11, length 28",
  ];
  const packets = lines.map(parseTcpdumpLine).filter((p) => p !== undefined);
  assert.deepEqual(packets[0], {
    t: 1795437065350,
    proto: "udp",
    src: "192.0.2.50",
    sport: 35902,
    dst: "198.51.100.10",
    dport: 7001,
  });
  assert.equal(packets[1].flags, "F.");
  assert.equal(packets.length, 3);
  assert.deepEqual(wireLeaks(packets, VIP).sources, { "10.244.3.11": 1, "192.0.2.51": 1 });
  assert.equal(wireLeaks(packets, [VIP, "192.0.2.51"]).count, 1);
});

Deno.test("stream: IPv6 tcpdump lines become packets, UDP printed as AFS rx among them", () => {
  // tcpdump 4.99.3 in a dual-stack simulated cluster (sim --family dual), UDP to 7001 and TCP to 7000.
  const lines = [
    "1796206143.119274 IP6 2001:db8:1::11.34010 > 2001:db8:2::10.7001:  [|rx] (2)",
    "1796206143.635870 IP6 2001:db8:1::11.38650 > 2001:db8:2::10.7000: Flags [S], seq 3273044474, " +
    "win 64800, options [mss 1440,sackOK,TS val 1299792406 ecr 0,nop,wscale 10], length 0",
  ];
  const packets = lines.map(parseTcpdumpLine);
  assert.deepEqual(packets[0], {
    t: 1796206143119,
    proto: "udp",
    src: "2001:db8:1::11",
    sport: 34010,
    dst: "2001:db8:2::10",
    dport: 7001,
  });
  assert.equal(packets[1]?.proto, "tcp");
  assert.equal(packets[1]?.flags, "S");
  assert.equal(packets[1]?.dport, 7000);
  assert.equal(wireLeaks(packets.filter((p) => p !== undefined), "2001:db8:1::50").count, 2);
});
