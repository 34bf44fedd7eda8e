import assert from "node:assert/strict";
import { conntrackdInstances, pairPort, rangesExcept, SYNC_GROUP } from "../core/conntrackd.ts";

const paths = (name: string) => ({
  lock: `/run/ke/conntrackd-${name}.lock`,
  socket: `/run/ke/conntrackd-${name}.ctl`,
  log: `/run/ke/conntrackd-${name}.log`,
});
const base = {
  interface: "eth0",
  podCidrs: ["10.244.0.0/16"],
  localPodCidrs: ["10.244.1.0/24"],
  peers: [] as string[],
};

Deno.test("conntrackd: multicast, FTFW, pod ranges only, this node's files", () => {
  const [instance, ...more] = conntrackdInstances({ ...base, address: "192.0.2.11" }, paths);
  assert.equal(more.length, 0);
  assert.equal(instance.name, "mcast");
  const text = instance.config;
  for (
    const line of [
      "  Mode NOTRACK {",
      "    StartupResync on",
      "    DisableExternalCache off",
      `    IPv4_address ${SYNC_GROUP}`,
      "    IPv4_interface 192.0.2.11",
      "    Interface eth0",
      "      IPv4_address 10.244.0.0/24",
      "      IPv4_address 10.244.2.0/23",
      "      IPv4_address 10.244.128.0/17",
      "  LockFile /run/ke/conntrackd-mcast.lock",
      "    Path /run/ke/conntrackd-mcast.ctl",
      "      TCP",
      "      UDP",
    ]
  ) assert.ok(text.split("\n").includes(line), `missing ${JSON.stringify(line)}:\n${text}`);
  // Equal inputs, equal text: an unchanged pass restarts nothing.
  assert.equal(conntrackdInstances({ ...base, address: "192.0.2.11" }, paths)[0].config, text);
});

Deno.test("conntrackd: unicast peers get one instance each, and both ends of a pair agree on its port", () => {
  const peers = ["192.0.2.13", "192.0.2.11", "192.0.2.12"];
  const of = (address: string) => conntrackdInstances({ ...base, address, peers }, paths);
  const port = (text: string) => Number(/Port (\d+)/.exec(text)![1]);
  const a = of("192.0.2.11");
  const b = of("192.0.2.12");
  assert.deepEqual(a.map((i) => i.name), ["192.0.2.12", "192.0.2.13"]);
  assert.deepEqual(b.map((i) => i.name), ["192.0.2.11", "192.0.2.13"]);
  const ab = a.find((i) => i.name === "192.0.2.12")!.config;
  const ba = b.find((i) => i.name === "192.0.2.11")!.config;
  assert.equal(port(ab), port(ba));
  assert.match(ab, /IPv4_Destination_Address 192\.0\.2\.12/);
  assert.match(ab, /Mode FTFW/);
  assert.match(ba, /IPv4_Destination_Address 192\.0\.2\.11/);
  // Every pair of three nodes has its own port.
  const ports = new Set([...a, ...b, ...of("192.0.2.13")].map((i) => port(i.config)));
  assert.equal(ports.size, 3);
  // A list that leaves this node out still pairs it with the same ports.
  assert.equal(
    port(
      conntrackdInstances(
        { ...base, address: "192.0.2.11", peers: ["192.0.2.12", "192.0.2.13"] },
        paths,
      )[0].config,
    ),
    pairPort(["192.0.2.11", "192.0.2.12", "192.0.2.13"], "192.0.2.11", "192.0.2.12"),
  );
  assert.equal(pairPort(peers, "192.0.2.11", "192.0.2.11"), undefined);
});

Deno.test("conntrackd: this node's own pod ranges are cut out of the replicated ones", () => {
  assert.deepEqual(rangesExcept(["10.244.0.0/16"], ["10.244.1.0/24"]), [
    "10.244.0.0/24",
    "10.244.2.0/23",
    "10.244.4.0/22",
    "10.244.8.0/21",
    "10.244.16.0/20",
    "10.244.32.0/19",
    "10.244.64.0/18",
    "10.244.128.0/17",
  ]);
  assert.deepEqual(rangesExcept(["10.244.0.0/16"], []), ["10.244.0.0/16"]);
  assert.deepEqual(rangesExcept(["10.244.1.0/24"], ["10.244.0.0/16"]), []);
  assert.deepEqual(
    rangesExcept(["10.244.0.0/23", "10.32.0.0/12"], ["10.244.0.0/24", "10.0.0.0/8x"]),
    [
      "10.32.0.0/12",
      "10.244.1.0/24",
    ],
  );
});
