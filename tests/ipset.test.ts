import assert from "node:assert/strict";
import { deleteIpsets, diffIpsets, parseIpsetSave } from "../core/ipset.ts";

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

Deno.test("ipset: missing sets are created with all entries", () => {
  const lines = diffIpsets(parseIpsetSave(""), new Map([["10.244.1.5", 5]]), 0xff, [
    "10.244.0.0/16",
  ]);
  assert.deepEqual(lines, [
    "create kube-egress-pods hash:ip family inet hashsize 1024 maxelem 1048576 counters skbinfo",
    "add kube-egress-pods 10.244.1.5 skbmark 0x5/0xff",
    "create kube-egress-nosteer hash:net family inet hashsize 64 maxelem 65536",
    "add kube-egress-nosteer 10.244.0.0/16",
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
      "add kube-egress-pods 10.244.1.5 skbmark 0x6/0xff",
      "add kube-egress-pods 10.244.1.7 skbmark 0x5/0xff",
      "del kube-egress-pods 10.244.1.6",
      "del kube-egress-nosteer 192.0.2.9/32",
    ],
  );
});

Deno.test("ipset: a set of the wrong type is rebuilt aside and swapped in", () => {
  const live = parseIpsetSave(
    "create kube-egress-pods hash:ip family inet hashsize 1024 maxelem 65536\nadd kube-egress-pods 10.244.1.5\n",
  );
  const lines = diffIpsets(live, new Map([["10.244.1.5", 5]]), 0xff, []);
  assert.deepEqual(lines.slice(0, 5), [
    "create kube-egress-pods-new hash:ip family inet hashsize 1024 maxelem 1048576 counters skbinfo",
    "flush kube-egress-pods-new",
    "add kube-egress-pods-new 10.244.1.5 skbmark 0x5/0xff",
    "swap kube-egress-pods-new kube-egress-pods",
    "destroy kube-egress-pods-new",
  ]);
});

Deno.test("ipset: delete destroys only our existing sets", () => {
  assert.deepEqual(deleteIpsets(parseIpsetSave(SAVE)), [
    "destroy kube-egress-pods",
    "destroy kube-egress-nosteer",
  ]);
  assert.deepEqual(deleteIpsets(parseIpsetSave("")), []);
});
