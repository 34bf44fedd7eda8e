import assert from "node:assert/strict";
import { countingExec, ExecError, systemExec } from "../cmd/exec.ts";
import { StepError, systemHost } from "../cmd/system.ts";
import { FakeKernel } from "./fake_kernel.ts";

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
        {
          tool: "ip",
          purpose: "routes",
          lines: ["route add default via 192.0.2.50 dev eth0 onlink table 5 proto 233"],
        },
        { tool: "ipset", purpose: "sets", lines: ["create x hash:ip"] },
        {
          tool: "ip",
          purpose: "later",
          lines: ["rule add pref 1000 fwmark 0x5/0xff lookup 5 proto 233"],
        },
      ],
    }),
    (e) => e instanceof StepError && e.index === 1 && /not installed/.test(e.message),
  );
  assert.equal(kernel.routes.length, 1, "the first step ran");
  assert.equal(kernel.rules.length, 0, "the step after the failed one did not");
  assert.equal(exec.count(), 2);
});
