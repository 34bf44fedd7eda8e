import assert from "node:assert/strict";
import {
  connectionsLine,
  ECHO_PORT,
  storyConnectionsLine,
  summarizeConnections,
  wrongSourcePackets,
} from "../sim/connections.ts";

Deno.test("sim connections: a connection survived only unreset with every byte echoed; the issue's lines", () => {
  const summary = summarizeConnections([
    { localPort: 1, sent: 800, echoed: 800, maxStallMs: 80 },
    { localPort: 2, sent: 800, echoed: 792, maxStallMs: 30 }, // an echo never came back
    { localPort: 3, sent: 400, echoed: 392, maxStallMs: 12, error: "reset" },
    { localPort: 4, sent: 0, echoed: 0, maxStallMs: 0 }, // never sent: not a survivor
  ], 2);
  assert.deepEqual(summary, { survived: 1, total: 4, resets: 1, maxStallMs: 80, wrongSource: 2 });
  assert.equal(
    connectionsLine("link down", summary),
    "link down: connections survived 1/4, resets 1, max stall 80 ms, wrong source 2",
  );
  assert.equal(
    storyConnectionsLine({ ...summary, survived: 10, total: 10 }),
    "established connections: 10/10 survived (stall 80 ms)",
  );
  const packet = { t: 0, proto: "tcp" as const, sport: 1, dst: "198.51.100.10", dport: ECHO_PORT };
  assert.equal(
    wrongSourcePackets([
      { ...packet, src: "192.0.2.50" },
      { ...packet, src: "10.244.1.11" },
      { ...packet, src: "10.244.1.11", dport: 7000 }, // another port: not ours to count
    ], "192.0.2.50"),
    1,
  );
});
