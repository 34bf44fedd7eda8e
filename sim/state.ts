/**
 * What `sim up` leaves for `sim status`, `sim exec` and `sim down`: one JSON
 * file per running cluster, in /run/kube-egress-sim (a tmpfs, so it vanishes
 * at reboot together with the namespaces it describes). KE_SIM_STATE_DIR
 * overrides the directory (tests).
 */
import { join } from "node:path";
import { z } from "zod";
import { ClusterSpec } from "./layout.ts";
import { errorMessage } from "../core/errors.ts";

export const RUN_ID = z.string().regex(/^ke[0-9a-f]{6}$/, {
  error: "must be a run id such as ke1a2b3c (see `deno task sim status`)",
});

export const RunState = z.object({
  runId: RUN_ID,
  spec: ClusterSpec,
  workDir: z.string().min(1),
  vipMode: z.string(),
  /** VIP → route id. */
  vips: z.record(z.string(), z.number()),
  createdAt: z.string(),
});
export type RunState = z.output<typeof RunState>;

/** Where state files live. */
export function stateDir(): string {
  return Deno.env.get("KE_SIM_STATE_DIR") ?? "/run/kube-egress-sim";
}

function statePath(runId: string): string {
  return join(stateDir(), `${runId}.json`);
}

/** Records a running cluster. */
export async function saveState(state: RunState): Promise<void> {
  await Deno.mkdir(stateDir(), { recursive: true });
  await Deno.writeTextFile(statePath(state.runId), JSON.stringify(state, null, 2) + "\n");
}

/** Forgets a cluster (after `down`). */
export async function removeState(runId: string): Promise<void> {
  await Deno.remove(statePath(runId)).catch(() => {});
}

/** Every recorded cluster; a file that does not parse is reported, not fatal. */
export async function listStates(): Promise<{ states: RunState[]; broken: string[] }> {
  const states: RunState[] = [];
  const broken: string[] = [];
  try {
    for await (const entry of Deno.readDir(stateDir())) {
      if (!entry.name.endsWith(".json")) continue;
      const path = join(stateDir(), entry.name);
      try {
        states.push(RunState.parse(JSON.parse(await Deno.readTextFile(path))));
      } catch (error) {
        broken.push(`${path}: ${errorMessage(error)}`);
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  states.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  return { states, broken };
}

/**
 * The cluster a command is about: the one named by `runId`, or the only one
 * running. Throws a message that says what to do otherwise.
 */
export async function findState(runId?: string): Promise<RunState> {
  const { states } = await listStates();
  if (runId !== undefined) {
    const state = states.find((s) => s.runId === runId);
    if (!state) {
      throw new Error(
        `no simulated cluster ${runId} is recorded in ${stateDir()}` +
          (states.length ? ` (running: ${states.map((s) => s.runId).join(", ")})` : ""),
      );
    }
    return state;
  }
  if (states.length === 0) {
    throw new Error("no simulated cluster is up; start one with `deno task sim up`");
  }
  if (states.length > 1) {
    throw new Error(
      `${states.length} simulated clusters are up (${
        states.map((s) => s.runId).join(", ")
      }); choose one with --run <id>`,
    );
  }
  return states[0];
}
