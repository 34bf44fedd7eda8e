/**
 * Properties of the agent's quick set checks (fast-check): through any
 * sequence of inputs, VIP moves, tampering with our pods set and quick or full
 * passes, the node matches the inputs after every pass, except after an entry
 * changed in place (same set size), which only the next full check repairs.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { isEmpty, planPass } from "../core/plan.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { testConfig } from "./helpers.ts";

const config = testConfig();
const vips = ["192.0.2.40", "192.0.2.45", "192.0.2.50"];
const inputs: fc.Arbitrary<RawSnapshot> = fc.array(
  fc.record({ host: fc.integer({ min: 2, max: 30 }), vip: fc.constantFrom(...vips) }),
  { maxLength: 20 },
).map((pods) => ({
  vips: vips.map((ip, i) => ({ origin: `vips/${ip}`, ip, routeId: i + 1 })),
  pods: pods.map((p, i) => ({ origin: `pods/${i}`, podIp: `10.244.1.${p.host}`, vip: p.vip })),
  problems: [],
}));
const tampering = fc.constantFrom("none", "flush", "drop one", "add foreign", "remap one");
type Tampering = typeof tampering extends fc.Arbitrary<infer T> ? T : never;

function tamper(kernel: FakeKernel, how: Tampering) {
  const entries = kernel.sets.get("kube-egress-pods")?.entries;
  if (!entries) return;
  const first = [...entries.keys()][0];
  if (how === "flush") entries.clear();
  else if (how === "drop one" && first) entries.delete(first);
  else if (how === "add foreign") entries.set("10.244.9.9", "skbmark 0x3/0xff");
  else if (how === "remap one" && first) entries.set(first, "skbmark 0x7/0xff");
}

Deno.test("property: quick checks keep the node in sync, save for in-place changes until the next full check", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          inputs,
          held: fc.subarray(vips),
          tampering,
          check: fc.constantFrom("quick" as const, "full" as const),
        }),
        { minLength: 1, maxLength: 8 },
      ),
      async (steps) => {
        const kernel = new FakeKernel();
        let current = steps[0].inputs;
        const agent = new Agent(kernel.host(), createLogger("text", () => {}), {
          config,
          readInputs: () => Promise.resolve(current),
          dryRun: false,
        });
        let changedInPlace = false;
        for (const step of steps) {
          current = step.inputs;
          kernel.interfaces.set("eth0", ["192.0.2.11", ...step.held]);
          tamper(kernel, step.tampering);
          const remapped = step.tampering === "remap one" && kernel.sets.has("kube-egress-pods");
          changedInPlace = (changedInPlace || remapped) && step.check === "quick";
          assert.equal((await agent.pass("test", { setCheck: step.check })).ok, true);
          if (changedInPlace) continue;
          const { snapshot } = validateSnapshot(current, config);
          const after = planPass(snapshot, config, kernel.live(config)).transaction;
          assert.ok(isEmpty(after), JSON.stringify(after.steps));
        }
      },
    ),
    { numRuns: 200 },
  );
});
