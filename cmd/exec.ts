/**
 * The one runner for the datapath's tools (the shape of knftables' execer and
 * kube-proxy's utilexec): every `ip`, `iptables`, `ipset`, `nft` and
 * `conntrack` process of a pass goes through an `Exec`, with a timeout, and a
 * failure to start or to finish in time is classified, never a bare throw
 * from the runtime. Tests plug a fake kernel in here, below the host, so the
 * host's read and apply orchestration is the same code in tests and on nodes.
 *
 * It runs processes with `Deno.Command` rather than dax: loading dax costs
 * ~55 ms of a one-shot command's ~120 ms budget, and a pass needs no shell.
 */

/** What a finished process said. A non-zero exit is a result, not an error. */
export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Written to the process's stdin, which is then closed. */
  readonly stdin?: string;
  /** Killed (SIGKILL) after this long; default `DEFAULT_TIMEOUT_MS`. */
  readonly timeoutMs?: number;
  /** Variables added to the agent's environment for this process. */
  readonly env?: Readonly<Record<string, string>>;
}

/** Runs `args[0]` with the rest as arguments. Throws only `ExecError`. */
export type Exec = (args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

/** How long a datapath tool may run before it is killed: a wedged tool must not wedge the agent. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** Why a process gave no result: the tool is not installed, or it did not finish in time. */
export type ExecErrorKind = "not_found" | "timeout" | "spawn";

/** A process that could not be run to its end; `kind` says why. */
export class ExecError extends Error {
  constructor(
    readonly kind: ExecErrorKind,
    readonly args: readonly string[],
    detail: string,
  ) {
    super(`${args.join(" ")}: ${detail}`);
  }
}

/**
 * Each tool's path, found once: searching PATH on every start costs the
 * agent's own thread (a pass starts 6-9 processes). A tool not found is
 * looked up again next time (it may be installed meanwhile).
 */
const toolPaths = new Map<string, string>();

/** The path of a tool on PATH, or undefined. */
export function which(name: string): string | undefined {
  if (name.includes("/")) return name;
  const known = toolPaths.get(name);
  if (known !== undefined) return known;
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    const path = `${dir || "."}/${name}`;
    try {
      if (Deno.statSync(path).isFile) {
        toolPaths.set(name, path);
        return path;
      }
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

const decoder = new TextDecoder();

/** The real runner: one child process per call, stdout and stderr collected as text. */
export const systemExec: Exec = async (args, options = {}) => {
  const [tool, ...rest] = args;
  const path = which(tool);
  if (path === undefined) throw new ExecError("not_found", args, `${tool} is not installed`);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(path, {
      args: rest,
      ...(options.env ? { env: { ...options.env } } : {}),
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    toolPaths.delete(tool);
    const kind = error instanceof Deno.errors.NotFound ? "not_found" : "spawn";
    throw new ExecError(kind, args, error instanceof Error ? error.message : String(error));
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  try {
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      // A tool that exits early (bad payload) closes its stdin: its exit code tells why.
      await writer.write(new TextEncoder().encode(options.stdin)).catch(() => {});
      await writer.close().catch(() => {});
    }
    const output = await child.output();
    if (timedOut) throw new ExecError("timeout", args, `did not finish within ${timeoutMs} ms`);
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
};

/** An `Exec` that counts the processes it starts (a pass reports how many it needed). */
export function countingExec(exec: Exec): Exec & { readonly count: () => number } {
  let started = 0;
  const counted = ((args: readonly string[], options?: ExecOptions) => {
    started++;
    return exec(args, options);
  }) as Exec & { count: () => number };
  counted.count = () => started;
  return counted;
}
