import assert from "node:assert/strict";
import {
  ackErrno,
  flushRequest,
  kernelCanFlush,
  type KernelFlush,
} from "../cmd/conntrack_flush.ts";
import { countingExec } from "../cmd/exec.ts";
import { systemHost } from "../cmd/system.ts";
import type { ConntrackFlush, Operation } from "../core/operation.ts";
import { FakeKernel } from "./fake_kernel.ts";

const byMark = (family: "ipv4" | "ipv6", mark: number, source?: string): ConntrackFlush => ({
  why: "role",
  family,
  mark,
  mask: 0xff,
  ...(source ? { source } : {}),
});
const mapped = (pod: string): ConntrackFlush => ({
  why: "mapped",
  family: "ipv4",
  pod,
  srcNat: "192.0.2.11",
});

Deno.test("conntrack flush: the ctnetlink message of a flush by family and mark, and its acknowledgement", () => {
  const request = flushRequest({ why: "role", family: "ipv6", mark: 0x105, mask: 0xff00 }, 7);
  // deno-fmt-ignore
  const expected = [
    36, 0, 0, 0, // length
    2, 1, // IPCTNL_MSG_CT_DELETE of NFNL_SUBSYS_CTNETLINK
    5, 0, // NLM_F_REQUEST | NLM_F_ACK
    7, 0, 0, 0, // seq
    0, 0, 0, 0, // port id
    10, 1, 0, 0, // AF_INET6, version 1 (the kernel filters by family), res_id
    8, 0, 8, 0, 0, 0, 1, 5, // CTA_MARK, big-endian
    8, 0, 21, 0, 0, 0, 0xff, 0, // CTA_MARK_MASK
  ];
  assert.deepEqual([...request], expected);
  const ack = (errno: number, seq: number) => {
    const reply = new Uint8Array(36);
    const view = new DataView(reply.buffer);
    view.setUint32(0, 36, true);
    view.setUint16(4, 2, true); // NLMSG_ERROR
    view.setUint32(8, seq, true);
    view.setInt32(16, -errno, true);
    return reply;
  };
  assert.equal(ackErrno(ack(0, 7), 7), 0);
  assert.equal(ackErrno(ack(95, 7), 7), 95, "EOPNOTSUPP");
  assert.equal(ackErrno(ack(0, 6), 7), undefined, "another request's");
  assert.equal(ackErrno(new Uint8Array(8), 7), undefined);
});

Deno.test("conntrack flush: the kernel runs flushes by mark alone, from Linux 4.19", () => {
  assert.ok(kernelCanFlush(byMark("ipv4", 5), "6.1.0-27-amd64"));
  assert.ok(kernelCanFlush(byMark("ipv6", 5), "4.19.0-6-amd64"));
  assert.ok(!kernelCanFlush(byMark("ipv4", 5), "4.18.0-553.el8_10.x86_64"), "no family filter");
  assert.ok(!kernelCanFlush(byMark("ipv4", 5), ""), "release unknown");
  assert.ok(!kernelCanFlush(byMark("ipv6", 6, "fd00:10:244:1::/64"), "6.1.0"), "a source range");
  assert.ok(!kernelCanFlush(mapped("10.244.1.6"), "6.1.0"));
});

Deno.test("host over exec: a takeover's flushes by mark go to the kernel; the rest run as processes, the families side by side, each family's in order; the commits side by side", async () => {
  const kernel = new FakeKernel();
  kernel.connections = [
    { family: "ipv4", src: "10.244.1.6", mark: 0, srcNat: "192.0.2.11" },
    { family: "ipv4", src: "10.244.1.7", mark: 0, srcNat: "192.0.2.11" },
    { family: "ipv6", src: "fd00:10:244:1::6", mark: 6 },
  ];
  const events: string[] = [];
  const exec = countingExec(async (args, options) => {
    const what = args.join(" ");
    events.push(`start ${what}`);
    // Slow enough for the other family's process to start meanwhile, if it may.
    await new Promise((r) => setTimeout(r, 20));
    const result = await kernel.exec(args, options);
    events.push(`end ${what}`);
    return result;
  });
  const inKernel: ConntrackFlush[] = [];
  const kernelFlush: KernelFlush = (flush) => {
    if (flush.why !== "role" || flush.source !== undefined) return false;
    inKernel.push(flush);
    return true;
  };
  const host = systemHost(exec, kernel.sysctlIO, () => undefined, kernelFlush);
  const flushes: Operation = {
    tool: "conntrack",
    flushes: [
      byMark("ipv4", 5),
      byMark("ipv6", 6, "fd00:10:244:1::/64"),
      mapped("10.244.1.6"),
      mapped("10.244.1.7"),
    ],
  };
  const commits: Operation = {
    tool: "conntrackd",
    commits: [{ config: "/run/ke/conntrackd-a.conf" }, { config: "/run/ke/conntrackd-b.conf" }],
  };
  const report = await host.apply({
    steps: [{ purpose: "flush", op: flushes }, { purpose: "commit", op: commits }],
  });
  assert.deepEqual(inKernel, [byMark("ipv4", 5)]);
  assert.deepEqual(kernel.connections, [], "every process flush ran");
  assert.equal(report.processes, 5, "3 conntrack, 2 conntrackd");
  assert.deepEqual(events, [
    "start conntrack -D -f ipv4 -s 10.244.1.6 --src-nat 192.0.2.11",
    "start conntrack -D -f ipv6 --mark 0x6/0xff -s fd00:10:244:1::/64",
    "end conntrack -D -f ipv4 -s 10.244.1.6 --src-nat 192.0.2.11",
    "start conntrack -D -f ipv4 -s 10.244.1.7 --src-nat 192.0.2.11",
    "end conntrack -D -f ipv6 --mark 0x6/0xff -s fd00:10:244:1::/64",
    "end conntrack -D -f ipv4 -s 10.244.1.7 --src-nat 192.0.2.11",
    "start conntrackd -C /run/ke/conntrackd-a.conf -c",
    "start conntrackd -C /run/ke/conntrackd-b.conf -c",
    "end conntrackd -C /run/ke/conntrackd-a.conf -c",
    "end conntrackd -C /run/ke/conntrackd-b.conf -c",
  ]);
});

Deno.test("fake kernel: two overlapping conntrack -D processes fail as the real tool does", async () => {
  const kernel = new FakeKernel();
  kernel.connections = [{ family: "ipv4", src: "10.244.1.6", mark: 5 }];
  const [a, b] = await Promise.all([
    kernel.exec(["conntrack", "-D", "-f", "ipv4", "--mark", "0x5/0xff"]),
    kernel.exec(["conntrack", "-D", "-f", "ipv4", "-s", "10.244.1.6"]),
  ]);
  assert.equal(a.code, 0);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /such conntrack doesn't exist/);
});
