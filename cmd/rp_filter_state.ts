/**
 * The reverse-path filters the agent loosened, as they were before, kept in
 * `<state dir>/rp_filter.json` so that `delete` can give them back. With the
 * DaemonSet the state dir is the host's /run/kube-egress: it outlives the
 * pods and is cleared at reboot, when the sysctls are reset anyway.
 */
import { joinPath } from "./path.ts";
import { z } from "zod";
import { writeAtomically } from "./state_file.ts";

const FILE = "rp_filter.json";

/** Built when first needed: a pass that writes nothing (a one-shot run in sync) never reads the file. */
let originals: z.ZodType<Record<string, number>> | undefined;
const Originals = () =>
  originals ??= z.record(
    z.string().regex(/^net\.ipv4\.conf\..+\.rp_filter$/),
    z.int().min(0).max(2),
  );

/** The remembered originals; none when the file is absent. Throws, naming the file, when it is not valid. */
export async function readRpFilterOriginals(stateDir: string): Promise<Record<string, number>> {
  const path = joinPath(stateDir, FILE);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${path}: not JSON`);
  }
  const parsed = Originals().safeParse(json);
  if (!parsed.success) {
    throw new Error(`${path}: ${parsed.error.issues.map((i) => i.message).join("; ")}`);
  }
  return parsed.data;
}

/** Writes the originals (whole file, renamed into place so a reader never sees half of it). */
export async function writeRpFilterOriginals(
  stateDir: string,
  originals: Readonly<Record<string, number>>,
): Promise<void> {
  await Deno.mkdir(stateDir, { recursive: true });
  await writeAtomically(joinPath(stateDir, FILE), JSON.stringify(originals, null, 2) + "\n");
}

/** Forgets the originals once they were given back. */
export async function removeRpFilterOriginals(stateDir: string): Promise<void> {
  await Deno.remove(joinPath(stateDir, FILE)).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}
