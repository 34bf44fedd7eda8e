/**
 * Each test node's own state directory (what /run/kube-egress is on a real
 * node), so that no test reads or writes the machine's: `withStateDir` points
 * the agent's default (--state-dir, $KUBE_EGRESS_STATE_DIR) at a directory of
 * the test's while a command runs in-process. Removed when the test file ends.
 */
import { join } from "node:path";
import { STATE_DIR_ENV } from "../cmd/options.ts";

const root = Deno.makeTempDirSync({ prefix: "kube-egress-test-state-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(root, { recursive: true });
  } catch {
    // Already gone.
  }
});

const dirs = new WeakMap<object, string>();
let made = 0;

/** The state directory of a test node (any object standing for one, e.g. a FakeKernel). */
export function stateDirOf(node: object): string {
  let dir = dirs.get(node);
  if (dir === undefined) {
    dir = join(root, `node${++made}`);
    Deno.mkdirSync(dir);
    dirs.set(node, dir);
  }
  return dir;
}

/** Runs `fn` with the default state directory pointed at `dir`. */
export async function withStateDir<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const saved = Deno.env.get(STATE_DIR_ENV);
  Deno.env.set(STATE_DIR_ENV, dir);
  try {
    return await fn();
  } finally {
    if (saved === undefined) Deno.env.delete(STATE_DIR_ENV);
    else Deno.env.set(STATE_DIR_ENV, saved);
  }
}
