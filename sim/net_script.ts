// A helper script of the simulation (stream_sender.ts, connection_sender.ts,
// echo_server.ts) run inside a namespace: it prints a "ready" line once it
// sends or listens, then its report lines.
import { eachLine, readyWithin, terminate } from "./children.ts";
import type { Netns } from "./netns.ts";

/** A running script; stop ends it and resolves once its output is read. */
export interface NetScript {
  stop(): Promise<void>;
}

/**
 * Runs the Deno script `script` with network access only inside `from`;
 * resolves once it prints its `"ready"` line, else kills it after 20 s and
 * throws `notReady()`. Every other non-blank stdout line goes to `onLine`;
 * stderr (piped by Netns.spawn) is drained so the script never blocks on it.
 */
export async function startNetScript(
  from: Netns,
  script: string,
  args: readonly string[],
  onLine: (line: string) => void,
  notReady: () => string,
): Promise<NetScript> {
  const child = from.spawn([Deno.execPath(), "run", "--allow-net", script, ...args], {
    stdout: "piped",
  });
  let ready!: () => void;
  const started = new Promise<void>((resolve) => (ready = resolve));
  const reading = eachLine(child.stdout, (line) => {
    if (line.includes('"ready"')) ready();
    else if (line.trim()) onLine(line);
  }).catch(() => {});
  child.stderr.pipeTo(new WritableStream()).catch(() => {});
  await readyWithin(child, started, 20_000, notReady);
  return { stop: () => terminate(child, reading) };
}
