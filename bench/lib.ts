/**
 * Shared pieces of the benchmarks: summary statistics, the machine's load and
 * description, peak memory, and workers run as subprocesses that print one
 * JSON line per sample.
 */
import $ from "dax";

/** Median, spread and count of a list of samples. */
export interface Stats {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly n: number;
}

export function stats(samples: readonly number[]): Stats {
  if (samples.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: sorted.length };
}

/** "12.3 (10.1–15.0)": median and range, with `digits` decimals. */
export function formatStats(s: Stats, digits = 1): string {
  if (s.n === 0) return "–";
  if (s.n === 1) return s.median.toFixed(digits);
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
}

/** The relative spread (max − min) / median, as a percentage. */
export function spreadPercent(s: Stats): number {
  return s.n === 0 || s.median === 0 ? NaN : ((s.max - s.min) / s.median) * 100;
}

/** The 1-minute load average (`/proc/loadavg`). */
export function loadAverage(): number {
  return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
}

/** This process's peak resident set size in MiB (VmHWM). */
export function peakRssMiB(): number {
  return statusField("VmHWM") / 1024;
}

/** This process's current resident set size in MiB (VmRSS). */
export function rssMiB(): number {
  return statusField("VmRSS") / 1024;
}

function statusField(name: string): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n")
    .find((l) => l.startsWith(`${name}:`));
  return Number(line?.split(/\s+/)[1] ?? NaN);
}

/** One line describing the machine: CPU, cores, memory, kernel, tool versions. */
export async function machineDescription(): Promise<string> {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").split("\n")
    .find((l) => l.startsWith("model name"))?.split(":")[1]?.trim() ?? "unknown CPU";
  const memGiB = Deno.systemMemoryInfo().total / 2 ** 30;
  const version = async (cmd: string[]) =>
    (await $`${cmd}`.noThrow().quiet().text().catch(() => "")).split("\n")[0].trim();
  const [iptables, ipset] = await Promise.all([
    version(["iptables", "--version"]),
    version(["ipset", "--version"]),
  ]);
  return [
    `${cpu}, ${navigator.hardwareConcurrency} cores, ${memGiB.toFixed(1)} GiB`,
    `Linux ${Deno.osRelease()}`,
    `Deno ${Deno.version.deno}`,
    iptables,
    ipset.replace(/, protocol version.*/, ""),
  ].filter(Boolean).join("; ");
}

/**
 * The commit being measured: short hash, "+dirty" when tracked files other
 * than bench/results.md (which the benchmark itself appends to) have changes.
 */
export async function commitDescription(): Promise<string> {
  const hash = await $`git rev-parse --short HEAD`.noThrow().quiet().text().catch(() => "");
  const dirty = await $`git status --porcelain --untracked-files=no -- . :!bench/results.md`
    .noThrow().quiet().text().catch(() => "");
  return (hash.trim() || "unknown") + (dirty.trim() ? "+dirty" : "");
}

/**
 * Runs a worker script with Deno and returns the JSON objects it printed, one
 * per line. `prefix` runs it elsewhere (e.g. `ip netns exec <ns>`).
 */
export async function runWorker<T>(
  script: string,
  args: readonly (string | number)[],
  options: { prefix?: readonly string[]; timeoutMs?: number } = {},
): Promise<T[]> {
  const argv = [
    ...(options.prefix ?? []),
    Deno.execPath(),
    "run",
    "-A",
    "--cached-only",
    script,
    ...args.map(String),
  ];
  const result = await $`${argv}`.stdout("piped").stderr("piped").noThrow()
    .timeout(options.timeoutMs ?? 600_000);
  if (result.code !== 0) {
    throw new Error(`${argv.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }
  return result.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as T);
}

const cleanups = new Set<() => Promise<void>>();

/**
 * Registers what must be torn down if the benchmark is interrupted (namespaces,
 * simulated clusters); returns the function that unregisters it.
 */
export function onInterrupt(cleanup: () => Promise<void>): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Runs every registered cleanup (on SIGINT/SIGTERM), then exits with 130. */
export function tearDownOnSignals() {
  let done = false;
  const handler = async () => {
    if (done) return;
    done = true;
    console.error("\ninterrupted: tearing down the benchmark's namespaces");
    for (const cleanup of cleanups) await cleanup().catch(() => {});
    Deno.exit(130);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, handler);
}

/** Environment variables for the processes a benchmark starts (e.g. how the image runs the agent). */
export type RuntimeEnv = Readonly<Record<string, string>>;

/** Runs `start` with `env` set in this process's environment (children inherit it), then restores it. */
export function withEnvironment<T>(env: RuntimeEnv, start: () => T): T {
  const before = Object.keys(env).map((key) => [key, Deno.env.get(key)] as const);
  for (const [key, value] of Object.entries(env)) Deno.env.set(key, value);
  try {
    return start();
  } finally {
    for (const [key, value] of before) {
      if (value === undefined) Deno.env.delete(key);
      else Deno.env.set(key, value);
    }
  }
}

/** "DENO_V8_FLAGS=… GLIBC_TUNABLES=…", or "(defaults)". */
export function describeEnv(env: RuntimeEnv): string {
  const entries = Object.entries(env);
  return entries.length === 0 ? "(defaults)" : entries.map(([k, v]) => `${k}=${v}`).join(" ");
}
