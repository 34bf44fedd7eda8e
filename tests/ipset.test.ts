import assert from "node:assert/strict";
import {
  confirmSets,
  deleteIpsets,
  diffIpsets,
  parseIpsetSave,
  parseIpsetTerse,
  setsAfterApply,
} from "../core/ipset.ts";

const PODS = "kube-egress-pods";
const POD_OPTIONS = "hash:ip family inet hashsize 1024 maxelem 1048576 counters skbinfo";
const SAVE =
  `create kube-egress-pods hash:ip family inet hashsize 1024 maxelem 1048576 counters skbinfo bucketsize 12 initval 0x3a8a7cbf
add kube-egress-pods 10.244.1.5 packets 12 bytes 840 skbmark 0x5/0xff
add kube-egress-pods 10.244.1.6 packets 0 bytes 0 skbmark 0x6/0xff
create kube-egress-nosteer hash:net family inet hashsize 64 maxelem 65536 bucketsize 12 initval 0x36d4f671
add kube-egress-nosteer 10.244.0.0/16
add kube-egress-nosteer 192.0.2.9
create other hash:ip family inet hashsize 1024 maxelem 65536
add other 10.244.1.5
`;

Deno.test("ipset: parses our sets with marks and counters; ignores other sets", () => {
  const live = parseIpsetSave(SAVE);
  assert.deepEqual([...live.pods], [
    ["10.244.1.5", { mark: 5, mask: 0xff, packets: 12, bytes: 840 }],
    ["10.244.1.6", { mark: 6, mask: 0xff, packets: 0, bytes: 0 }],
  ]);
  assert.deepEqual([...live.nosteer], ["10.244.0.0/16", "192.0.2.9/32"]);
  assert.ok(live.podsHeader?.includes("skbinfo"));
});

Deno.test("ipset: pods entries parse in any option order, without counters, with CRLF or blanks", () => {
  const live = parseIpsetSave(
    [
      "add kube-egress-pods 10.244.1.7 skbmark 0x7/0xff00 bytes 60 packets 1\r",
      "  add kube-egress-pods 10.244.1.8 skbmark 0x8  ",
      "add kube-egress-pods 10.244.1.9",
      "add kube-egress-pods 10.244.1.10 skbprio 1:2 packets 4 bytes 240 skbmark 0xa/0xff",
      "",
    ].join("\n"),
  );
  assert.deepEqual([...live.pods], [
    ["10.244.1.7", { mark: 7, mask: 0xff00, packets: 1, bytes: 60 }],
    ["10.244.1.8", { mark: 8, mask: 0xffffffff, packets: 0, bytes: 0 }],
    ["10.244.1.9", { mark: 0, mask: 0xffffffff, packets: 0, bytes: 0 }],
    ["10.244.1.10", { mark: 10, mask: 0xff, packets: 4, bytes: 240 }],
  ]);
});

Deno.test("ipset: missing sets are created with all entries", () => {
  const changes = diffIpsets(parseIpsetSave(""), new Map([["10.244.1.5", 5]]), 0xff, [
    "10.244.0.0/16",
  ]);
  assert.deepEqual(changes, [
    { verb: "create", set: PODS, options: POD_OPTIONS },
    { verb: "add", set: PODS, entry: "10.244.1.5 skbmark 0x5/0xff" },
    {
      verb: "create",
      set: "kube-egress-nosteer",
      options: "hash:net family inet hashsize 64 maxelem 65536",
    },
    { verb: "add", set: "kube-egress-nosteer", entry: "10.244.0.0/16" },
  ]);
});

Deno.test("ipset: only changed entries are written (add, remap, remove)", () => {
  const live = parseIpsetSave(SAVE);
  assert.deepEqual(
    diffIpsets(live, new Map([["10.244.1.5", 5], ["10.244.1.6", 6]]), 0xff, [
      "10.244.0.0/16",
      "192.0.2.9/32",
    ]),
    [],
  );
  assert.deepEqual(
    diffIpsets(live, new Map([["10.244.1.5", 6], ["10.244.1.7", 5]]), 0xff, ["10.244.0.0/16"]),
    [
      { verb: "add", set: PODS, entry: "10.244.1.5 skbmark 0x6/0xff" },
      { verb: "add", set: PODS, entry: "10.244.1.7 skbmark 0x5/0xff" },
      { verb: "del", set: PODS, entry: "10.244.1.6" },
      { verb: "del", set: "kube-egress-nosteer", entry: "192.0.2.9/32" },
    ],
  );
});

Deno.test("ipset: a set of the wrong type is rebuilt aside and swapped in", () => {
  const live = parseIpsetSave(
    "create kube-egress-pods hash:ip family inet hashsize 1024 maxelem 65536\nadd kube-egress-pods 10.244.1.5\n",
  );
  const changes = diffIpsets(live, new Map([["10.244.1.5", 5]]), 0xff, []);
  const scratch = "kube-egress-pods-new";
  assert.deepEqual(changes.slice(0, 5), [
    { verb: "create", set: scratch, options: POD_OPTIONS },
    { verb: "flush", set: scratch },
    { verb: "add", set: scratch, entry: "10.244.1.5 skbmark 0x5/0xff" },
    { verb: "swap", set: scratch, with: PODS },
    { verb: "destroy", set: scratch },
  ]);
});

Deno.test("ipset: delete destroys only our existing sets", () => {
  assert.deepEqual(deleteIpsets(parseIpsetSave(SAVE)), [
    { verb: "destroy", set: PODS },
    { verb: "destroy", set: "kube-egress-nosteer" },
  ]);
  assert.deepEqual(deleteIpsets(parseIpsetSave("")), []);
});

/** `ipset list -t` as ipset v7.17 prints it. */
const TERSE = `Name: kube-egress-pods
Type: hash:ip
Revision: 6
Header: family inet hashsize 1024 maxelem 1048576 counters skbinfo bucketsize 12 initval 0x3a8a7cbf
Size in memory: 504
References: 1
Number of entries: 2

Name: kube-egress-nosteer
Type: hash:net
Revision: 7
Header: family inet hashsize 64 maxelem 65536 bucketsize 12 initval 0x36d4f671
Size in memory: 712
References: 1
Number of entries: 2

Name: other
Type: list:set
Revision: 3
Header: size 8
Size in memory: 88
References: 0
Number of entries: 0
`;

Deno.test("ipset: list -t gives each set's header as a create line and its size", () => {
  const summary = parseIpsetTerse(TERSE);
  assert.deepEqual([...summary.keys()], ["kube-egress-pods", "kube-egress-nosteer", "other"]);
  assert.deepEqual(summary.get("kube-egress-pods"), {
    header:
      "create kube-egress-pods hash:ip family inet hashsize 1024 maxelem 1048576 counters skbinfo bucketsize 12 initval 0x3a8a7cbf",
    entries: 2,
  });
  assert.deepEqual(summary.get("other"), { header: "create other list:set size 8", entries: 0 });
  assert.equal(parseIpsetTerse("").size, 0);
});

Deno.test("ipset: known sets are confirmed only when the kernel has them with as many entries", () => {
  const known = parseIpsetSave(SAVE);
  const confirmed = confirmSets(known, parseIpsetTerse(TERSE));
  assert.equal(confirmed?.pods, known.pods);
  assert.equal(confirmed?.nosteer, known.nosteer);
  // A flushed set, a missing set, a set we did not know of: list in full.
  assert.equal(
    confirmSets(
      known,
      parseIpsetTerse(TERSE.replace("Number of entries: 2", "Number of entries: 0")),
    ),
    undefined,
  );
  const podsOnly = parseIpsetTerse(TERSE);
  podsOnly.delete("kube-egress-nosteer");
  assert.equal(confirmSets(known, podsOnly), undefined);
  assert.equal(confirmSets(parseIpsetSave(""), parseIpsetTerse(TERSE)), undefined);
  assert.deepEqual(confirmSets(parseIpsetSave(""), new Map()), parseIpsetSave(""));
});

Deno.test("ipset: a confirmed set still takes the kernel's header, so a changed type is rebuilt", () => {
  const known = parseIpsetSave(SAVE);
  const retyped = TERSE.replace("maxelem 1048576 counters skbinfo", "maxelem 65536");
  const confirmed = confirmSets(known, parseIpsetTerse(retyped))!;
  assert.match(confirmed.podsHeader!, /maxelem 65536 bucketsize/);
  const changes = diffIpsets(confirmed, new Map([["10.244.1.5", 5], ["10.244.1.6", 6]]), 0xff, [
    "10.244.0.0/16",
    "192.0.2.9/32",
  ]);
  assert.deepEqual(changes[0], { verb: "create", set: `${PODS}-new`, options: POD_OPTIONS });
  assert.deepEqual(changes.filter((c) => c.verb === "swap"), [
    { verb: "swap", set: `${PODS}-new`, with: PODS },
  ]);
});

Deno.test("ipset: the sets after an apply are what a fresh read would find", () => {
  const live = parseIpsetSave(SAVE);
  const pods = new Map([["10.244.1.5", 6], ["10.244.1.7", 5]]);
  const after = setsAfterApply(live, pods, 0xff, ["10.244.0.0/16"]);
  assert.equal(after.podsHeader, live.podsHeader, "the kernel's header is kept");
  assert.deepEqual(diffIpsets(after, pods, 0xff, ["10.244.0.0/16"]), []);
  assert.deepEqual([...after.pods.keys()], ["10.244.1.5", "10.244.1.7"]);
  const created = setsAfterApply(parseIpsetSave(""), pods, 0xff, []);
  assert.deepEqual(diffIpsets(created, pods, 0xff, []), []);
});
