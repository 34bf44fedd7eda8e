import assert from "node:assert/strict";
import type { Operation, RouteChange } from "../core/operation.ts";
import { countingExec, ExecError, systemExec } from "../cmd/exec.ts";
import { StepError, systemHost } from "../cmd/system.ts";
import { stepTimes } from "../cmd/agent.ts";
import { FakeKernel } from "./fake_kernel.ts";

const ROUTE = { table: 5, gateway: "192.0.2.50", dev: "eth0" };
const ipOp = (...changes: RouteChange[]): Operation => ({
  tool: "ip",
  family: "ipv4",
  protocol: 233,
  changes,
});
const createSet = (set: string): Operation => ({
  tool: "ipset",
  family: "ipv4",
  changes: [{ verb: "create", set, options: "hash:ip" }],
});

Deno.test("exec: stdin in, stdout and exit code out; a non-zero exit is a result", async () => {
  assert.deepEqual(await systemExec(["cat"], { stdin: "a\nb\n" }), {
    code: 0,
    stdout: "a\nb\n",
    stderr: "",
  });
  assert.equal((await systemExec(["sh", "-c", "echo no >&2; exit 3"])).code, 3);
});

Deno.test("exec: a tool that is not installed and one that does not finish in time are classified", async () => {
  await assert.rejects(
    systemExec(["kube-egress-no-such-tool"]),
    (e) => e instanceof ExecError && e.kind === "not_found",
  );
  const started = performance.now();
  await assert.rejects(
    systemExec(["sleep", "30"], { timeoutMs: 200 }),
    (e) => e instanceof ExecError && e.kind === "timeout" && /within 200 ms/.test(e.message),
  );
  assert.ok(performance.now() - started < 10_000, "killed, not waited for");
});

Deno.test("host over exec: a step whose tool is missing fails that step, the next ones do not run", async () => {
  const kernel = new FakeKernel();
  const exec = countingExec((args, options) =>
    args[0] === "ipset" ? systemExec(["kube-egress-no-such-tool"]) : kernel.exec(args, options)
  );
  const host = systemHost(exec, kernel.sysctlIO);
  await assert.rejects(
    host.apply({
      steps: [
        { purpose: "routes", op: ipOp({ verb: "add", route: ROUTE }) },
        { purpose: "sets", op: createSet("x") },
        {
          purpose: "later",
          op: ipOp({ verb: "add", rule: { priority: 1000, mark: 5, mask: 0xff, table: 5 } }),
        },
      ],
    }),
    (e) => e instanceof StepError && e.index === 1 && /not installed/.test(e.message),
  );
  assert.equal(kernel.routes.length, 1, "the first step ran");
  assert.equal(kernel.rules.length, 0, "the step after the failed one did not");
  assert.equal(exec.count(), 2);
});

Deno.test("host over exec: apply reports each step's time in order (a takeover taken apart)", async () => {
  const kernel = new FakeKernel();
  // The ip step is slow (60 ms); the others answer at once.
  const exec = countingExec(async (args, options) => {
    if (args[0] === "ip") await new Promise((r) => setTimeout(r, 60));
    return await kernel.exec(args, options);
  });
  const host = systemHost(exec, kernel.sysctlIO);
  const transaction = {
    steps: [
      { purpose: "sets", op: createSet("x") },
      { purpose: "routes", op: ipOp({ verb: "add", route: ROUTE }) },
      { purpose: "more", op: createSet("y") },
    ],
  };
  const report = await host.apply(transaction);
  assert.equal(report.stepMs?.length, 3);
  const [first, slow, last] = report.stepMs!;
  assert.ok(slow >= 55, `the ip step took ${slow} ms`);
  assert.ok(first < slow && last < slow, report.stepMs!.join(","));
  assert.equal(stepTimes(transaction, [1.2, 60.4, 0.4]), "ipset 1, ip 60, ipset 0 ms");
});

Deno.test("exec: env adds variables to the agent's environment for that process", async () => {
  const result = await systemExec(["sh", "-c", 'echo "$KE_EXEC_TEST:${PATH:+path}"'], {
    env: { KE_EXEC_TEST: "given" },
  });
  assert.equal(result.stdout, "given:path\n");
});
