import assert from "node:assert/strict";
import { summarize, type Trial } from "../bench/forwarding.ts";

Deno.test("bench forwarding: ratios pair each round with its own baseline", () => {
  // Round 2 runs on a machine twice as busy: every figure halves, the ratios do not move.
  const trials: Trial[] = [1, 2].flatMap((round) => {
    const load = round === 1 ? 1 : 0.5;
    return [
      { round, pod: "mapped", config: "1 mapping", gbps: 10 * load, connPerSec: 1000 * load },
      { round, pod: "mapped", config: "10,000 mappings", gbps: 9 * load, connPerSec: 950 * load },
      { round, pod: "unmapped", config: "absent", gbps: 8 * load, connPerSec: 800 * load },
      { round, pod: "unmapped", config: "10,000 mappings", gbps: 8 * load, connPerSec: 760 * load },
    ] as Trial[];
  });
  const { figures, ratios } = summarize(trials);
  const mapped = ratios.find((r) => r.pod === "mapped" && r.base === "1 mapping")!;
  assert.equal(mapped.gbps.median, 0.9);
  assert.equal(mapped.gbps.max - mapped.gbps.min, 0);
  const unmapped = ratios.find((r) => r.pod === "unmapped" && r.base === "absent")!;
  assert.equal(unmapped.connPerSec.median, 0.95);
  // Comparisons without data in any round stay empty rather than invented.
  assert.equal(ratios.find((r) => r.pod === "mapped" && r.base === "absent")!.gbps.n, 0);
  assert.equal(
    figures.find((f) => f.pod === "mapped" && f.config === "1 mapping")!.gbps.median,
    7.5,
  );
});
