import assert from "node:assert/strict";
import { newTag, parseTcpdump } from "../sim/witness.ts";

// `tcpdump -l -n -x -Q in -i eth0 'icmp[icmptype] == icmp-echo'` as tcpdump 4.99.3 printed it
// for `ping -c1 -p 0a1b2c3d4e5f6071` from 192.0.2.50, followed by an untagged request.
const OUTPUT =
  `12:19:02.858476 IP 192.0.2.50 > 198.51.100.10: ICMP echo request, id 461, seq 1, length 64
\t0x0000:  4500 0054 e041 4000 4001 6df7 c000 0232
\t0x0010:  c633 640a 0800 f2b1 01cd 0001 362f 046b
\t0x0020:  0000 0000 4219 0d00 0000 0000 0a1b 2c3d
\t0x0030:  4e5f 6071 0a1b 2c3d 4e5f 6071 0a1b 2c3d
\t0x0040:  4e5f 6071 0a1b 2c3d 4e5f 6071 0a1b 2c3d
\t0x0050:  4e5f 6071
12:19:03.000000 IP 192.0.2.12 > 198.51.100.10: ICMP echo request, id 77, seq 1, length 64
\t0x0000:  4500 0054 8a2c 4000 3e01 1b3e c000 020c
\t0x0010:  c633 640a 0800 5d1c 004d 0001 ffff ffff`;

Deno.test("sim witness: tcpdump's hex dump is read into source + bytes, packet by packet", () => {
  const captures = parseTcpdump(OUTPUT.split("\n"));
  assert.equal(captures.length, 2);
  assert.equal(captures[0].src, "192.0.2.50");
  assert.ok(captures[0].hex.includes("0a1b2c3d4e5f6071"));
  assert.equal(captures[1].src, "192.0.2.12");
  assert.ok(!captures[1].hex.includes("0a1b2c3d4e5f6071"));
  assert.ok(captures[0].hex.startsWith("45000054e041"));
});

Deno.test("sim witness: tags are 16 hex digits and differ", () => {
  const tags = new Set(Array.from({ length: 100 }, newTag));
  assert.equal(tags.size, 100);
  for (const tag of tags) assert.match(tag, /^[0-9a-f]{16}$/);
});

// `tcpdump -l -n -x -Q in -i eth0 'icmp6 and ip6[40] == 128'` (tcpdump 4.99.3) for
// `ping -c1 -p 0a1b2c3d4e5f6071 2001:db8:2::10` from a pod of a dual-stack simulated cluster.
const OUTPUT6 =
  `10:09:03.110176 IP6 2001:db8:1::11 > 2001:db8:2::10: ICMP6, echo request, id 5416, seq 1, length 64
\t0x0000:  6002 8b36 0040 3a3e 2001 0db8 0001 0000
\t0x0010:  0000 0000 0000 0011 2001 0db8 0002 0000
\t0x0020:  0000 0000 0000 0010 8000 71f2 1528 0001
\t0x0030:  3fee 0f6b 0000 0000 d2ad 0100 0000 0000
\t0x0040:  0a1b 2c3d 4e5f 6071 0a1b 2c3d 4e5f 6071`;

Deno.test("sim witness: an ICMPv6 echo request is read into source + bytes", () => {
  const captures = parseTcpdump(OUTPUT6.split("\n"));
  assert.equal(captures.length, 1);
  assert.equal(captures[0].src, "2001:db8:1::11");
  assert.ok(captures[0].hex.includes("0a1b2c3d4e5f6071"));
});
