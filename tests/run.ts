/**
 * `deno task test`: installs what the end-to-end tests need (as root), runs
 * every test, and ends with the summary line CI reads:
 *   "<n> passed, <n> failed" (", <n> skipped" when some were skipped).
 * End-to-end tests need root; without it they are skipped and the reason is
 * printed, never counted as passed.
 *
 * Usage: deno task test [-- <deno test args, e.g. tests/ip.test.ts or --filter e2e>]
 */
import { ensureTools, IMAGE_TOOLS, isRoot, SIM_TOOLS } from "../cmd/tools.ts";
import { leftoverNamespaces } from "../sim/netns.ts";
import { testEnvironment } from "./host_env.ts";

interface Summary {
  passed: number;
  failed: number;
  skipped: number;
}

/** Counts top-level tests in Deno's JUnit report (steps appear as "parent > step" and are not counted). */
export function summarizeJunit(xml: string): Summary {
  const cases = [...xml.matchAll(/<testcase name="([^"]*)"[^>]*>([\s\S]*?)<\/testcase>/g)];
  const names = new Set(cases.map((c) => c[1]));
  const summary = { passed: 0, failed: 0, skipped: 0 };
  for (const [, name, body] of cases) {
    const parent = name.split(" &gt; ").slice(0, -1).join(" &gt; ");
    if (parent && names.has(parent)) continue;
    if (body.includes("<failure")) summary.failed++;
    else if (body.includes("<skipped")) summary.skipped++;
    else summary.passed++;
  }
  return summary;
}

export function summaryLine(s: Summary): string {
  return `${s.passed} passed, ${s.failed} failed${s.skipped > 0 ? `, ${s.skipped} skipped` : ""}`;
}

async function main(): Promise<number> {
  const root = isRoot();
  if (root) {
    // The image tools too: an end-to-end test builds the node image and runs the story from it.
    await ensureTools([...SIM_TOOLS, ...IMAGE_TOOLS], {
      install: true,
      log: (l) => console.log(`[test] ${l}`),
    });
  } else {
    console.log(
      "[test] not running as root: end-to-end tests (network namespaces) will be skipped",
    );
  }
  const junit = await Deno.makeTempFile({ prefix: "kube-egress-junit-", suffix: ".xml" });
  // `deno task test -- <files>` hands the "--" on: it would make deno test run every file.
  const given = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
  const args = given.length > 0 ? given : ["tests/"];
  // Agents started inside namespaces run with --cached-only: cache their modules first.
  const cache = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "mod.ts", "sim/reporter.ts", "sim/kube_api.ts"],
  }).output();
  if (!cache.success) console.error(new TextDecoder().decode(cache.stderr));
  // The tests' own state directory and every other host path (tests/host_env.ts).
  const hostRoot = await Deno.makeTempDir({ prefix: "kube-egress-test-host-" });
  const test = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", `--junit-path=${junit}`, ...args],
    stdout: "inherit",
    stderr: "inherit",
    clearEnv: true,
    env: testEnvironment(hostRoot),
  }).output();
  await Deno.remove(hostRoot, { recursive: true }).catch(() => {});
  let summary: Summary = { passed: 0, failed: 0, skipped: 0 };
  try {
    summary = summarizeJunit(await Deno.readTextFile(junit));
  } finally {
    await Deno.remove(junit).catch(() => {});
  }
  // A run that failed outside any test (type errors, a crash) must not look green.
  if (!test.success && summary.failed === 0) {
    console.log("[test] the test run failed outside the individual tests (see the output above)");
    summary.failed = 1;
  }
  if (summary.skipped > 0 && !root) {
    console.log(
      `[test] ${summary.skipped} skipped: end-to-end tests need root to create network namespaces`,
    );
  }
  if (root) {
    const left = await leftoverNamespaces();
    if (left.length > 0) console.log(`[test] warning: namespaces left behind: ${left.join(" ")}`);
  }
  console.log(summaryLine(summary));
  return summary.failed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
