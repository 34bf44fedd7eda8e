/**
 * One agent per state directory. The directory holds one node's keepalived
 * configuration and pid files, vips.json and the rp_filter values to give
 * back; two agents sharing it would stop each other's keepalived and restore
 * each other's sysctls. On a real node there is one agent and one /run, but
 * network namespaces do not separate files: agents started by hand in several
 * node namespaces of one machine with the default --state-dir share it.
 *
 * So a running agent holds an exclusive flock on `<state dir>/agent.lock`
 * (the kernel drops it when the process dies, however it dies: no stale
 * lock) and writes its identity into the file: pid, node name, network
 * namespace. A second agent is refused with a message that says who owns the
 * directory and whether it is this node (another agent running here) or
 * another network namespace (give each node its own --state-dir). Commands
 * that run once (`run` without -u, `delete`, `status`) take no lock, but
 * refuse (or, for `status`, ignore) a directory owned from another network
 * namespace: its contents describe another node.
 */
import { joinPath } from "./path.ts";
import { z } from "zod";

export const LOCK_FILE = "agent.lock";

/** What the owning agent writes into the lock file. */
const OwnerSchema = z.object({
  pid: z.number().int().positive(),
  node: z.string(),
  /** The owner's network namespace, as /proc/<pid>/ns/net reads: "net:[4026531840]". */
  netns: z.string(),
  /** The owner's pid namespace: pids are checked only where they mean the same process. */
  pidns: z.string(),
  /** Start time (clock ticks since boot, /proc/<pid>/stat): tells a reused pid apart. */
  startTicks: z.number().int().nonnegative(),
  since: z.string(),
});
export type StateDirOwner = z.output<typeof OwnerSchema>;

/** Who owns a state directory, as seen from this process. */
export interface OwnerView {
  /** Undefined when the file does not say (the owner is just starting, or an older version). */
  readonly owner?: StateDirOwner;
  /** The owner's network namespace is this process's. */
  readonly sameNetns: boolean;
  /** Names of the network namespaces (from /run/netns), where they have one. */
  readonly ownerNetnsName?: string;
  readonly ownNetns: string;
  readonly ownNetnsName?: string;
}

/** A state directory owned from elsewhere. */
export class StateDirBusyError extends Error {
  constructor(readonly view: OwnerView, message: string) {
    super(message);
  }
}

/** The held lock; `release` clears the identity and unlocks. */
export interface StateDirLock {
  readonly path: string;
  release(): Promise<void>;
}

async function readLinkOr(path: string): Promise<string | undefined> {
  try {
    return await Deno.readLink(path);
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat (the command may hold spaces and parentheses: count from the last ")"). */
async function startTicks(pid: number | "self"): Promise<number | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** The name under /run/netns (`ip netns`) of a network namespace, if it has one. */
async function netnsName(netns: string): Promise<string | undefined> {
  const inode = /^net:\[(\d+)\]$/.exec(netns)?.[1];
  if (!inode) return undefined;
  try {
    for await (const entry of Deno.readDir("/run/netns")) {
      const stat = await Deno.stat(joinPath("/run/netns", entry.name)).catch(() => undefined);
      if (stat?.ino != null && String(stat.ino) === inode) return entry.name;
    }
  } catch {
    // No named namespaces.
  }
  return undefined;
}

/** This process's identity for the lock file. */
async function selfIdentity(node: string): Promise<StateDirOwner> {
  return {
    pid: Deno.pid,
    node,
    netns: (await readLinkOr("/proc/self/ns/net")) ?? "unknown",
    pidns: (await readLinkOr("/proc/self/ns/pid")) ?? "unknown",
    startTicks: (await startTicks("self")) ?? 0,
    since: new Date().toISOString(),
  };
}

async function readOwner(path: string): Promise<StateDirOwner | undefined> {
  try {
    const parsed = OwnerSchema.safeParse(JSON.parse(await Deno.readTextFile(path)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How the owner recorded in the file looks from here. Its live network
 * namespace is read from /proc where its pid means the same process here
 * (same pid namespace, same start time); else the recorded one stands.
 */
async function viewOf(owner: StateDirOwner | undefined): Promise<OwnerView> {
  const ownNetns = (await readLinkOr("/proc/self/ns/net")) ?? "unknown";
  const ownNetnsName = await netnsName(ownNetns);
  if (!owner) return { sameNetns: false, ownNetns, ownNetnsName };
  let netns = owner.netns;
  const ownPidns = await readLinkOr("/proc/self/ns/pid");
  if (ownPidns === owner.pidns && (await startTicks(owner.pid)) === owner.startTicks) {
    netns = (await readLinkOr(`/proc/${owner.pid}/ns/net`)) ?? netns;
  }
  return {
    owner: { ...owner, netns },
    sameNetns: netns === ownNetns,
    ownerNetnsName: await netnsName(netns),
    ownNetns,
    ownNetnsName,
  };
}

const named = (netns: string, name: string | undefined) => (name ? `${name} ${netns}` : netns);

/** The error for a directory that another agent owns. */
export function busyMessage(dir: string, view: OwnerView): string {
  const owner = view.owner;
  if (!owner) {
    return `state directory ${dir} is locked by another process (${
      joinPath(dir, LOCK_FILE)
    } names no owner yet): is another kube-egress agent starting with it?`;
  }
  const who = `pid ${owner.pid} (node ${owner.node}, since ${owner.since})`;
  if (view.sameNetns) {
    return `another kube-egress agent is running on this node with state directory ${dir}: ${who}. ` +
      "Two agents would fight over the node's rules and keepalived: stop it first";
  }
  return `state directory ${dir} belongs to the kube-egress agent of another network namespace: ` +
    `${who} in network namespace ${named(owner.netns, view.ownerNetnsName)}, ` +
    `while this process runs in ${named(view.ownNetns, view.ownNetnsName)}. ` +
    "Network namespaces do not separate files: agents started in several node namespaces of one " +
    `machine need one --state-dir each (e.g. --state-dir ${joinPath(dir, "<node name>")})`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Takes the state directory for a running agent. An owner in this network
 * namespace may be a predecessor still stopping (a restart, a rolling
 * update): waited for up to `waitMs`. An owner in another network namespace
 * is refused at once.
 */
export async function lockStateDir(
  dir: string,
  options: { node: string; waitMs?: number; onWait?: (message: string) => void },
): Promise<StateDirLock> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const path = joinPath(dir, LOCK_FILE);
  const file = await Deno.open(path, { read: true, write: true, create: true });
  const deadline = performance.now() + (options.waitMs ?? 10_000);
  let told = false;
  try {
    while (!(await file.tryLock(true))) {
      const view = await viewOf(await readOwner(path));
      if ((view.owner && !view.sameNetns) || performance.now() >= deadline) {
        throw new StateDirBusyError(view, busyMessage(dir, view));
      }
      if (!told) options.onWait?.(busyMessage(dir, view));
      told = true;
      await sleep(200);
    }
    const identity = new TextEncoder().encode(
      JSON.stringify(await selfIdentity(options.node)) + "\n",
    );
    await file.truncate(0);
    await file.seek(0, Deno.SeekMode.Start);
    await file.write(identity);
  } catch (error) {
    file.close();
    throw error;
  }
  return {
    path,
    async release() {
      try {
        await file.truncate(0);
      } finally {
        file.close(); // closing the last descriptor drops the flock
      }
    },
  };
}

/**
 * The agent that owns a state directory right now, if any (a shared-lock
 * probe: it fails only while an agent holds the lock).
 */
export async function stateDirOwner(dir: string): Promise<OwnerView | undefined> {
  const path = joinPath(dir, LOCK_FILE);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return undefined;
  }
  try {
    if (await file.tryLock(false)) {
      await file.unlock();
      return undefined;
    }
  } finally {
    file.close();
  }
  return viewOf(await readOwner(path));
}
