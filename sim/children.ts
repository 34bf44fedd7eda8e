/**
 * Long-running helper processes of the simulator (senders, captures): their
 * output line by line, a bounded wait for them to say they are ready, and a
 * clean stop.
 */

/** Calls `onLine` for every line of `stream` (text), until the stream ends. */
export async function eachLine(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let buffer = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    const lines = buffer.split("\n");
    buffer = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (buffer) onLine(buffer);
}

/**
 * Waits until `ready` resolves; if it does not within `ms`, kills the child
 * and throws `describe()`.
 */
export async function readyWithin(
  child: Deno.ChildProcess,
  ready: Promise<unknown>,
  ms: number,
  describe: () => string,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), ms)));
  const outcome = await Promise.race([ready, late]);
  clearTimeout(timer);
  if (outcome !== "late") return;
  try {
    child.kill("SIGKILL");
  } catch {
    // Already gone.
  }
  await child.status;
  throw new Error(describe());
}

/** SIGTERMs the child (if still running) and waits for it and for its output to be read. */
export async function terminate(child: Deno.ChildProcess, output: Promise<unknown>): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already ended.
  }
  await child.status;
  await output;
}
