// Readiness of a set of reflectors, shared by the sources that read the API
// through them (the full-object source and the slice source).
import type { Reflector } from "./reflector.ts";

/**
 * Undefined when every reflector is listed and watched, else what is wrong: a
 * failing list/watch first (its last error), then the collections not yet listed.
 */
export function reflectorsProblem(reflectors: Reflector<unknown>[]): string | undefined {
  const failing = reflectors.filter((r) => r.lastError !== undefined);
  if (failing.length > 0) {
    return `list/watch failing for ${failing.map((r) => r.options.resource.plural).join(", ")}: ${
      failing[0].lastError
    }`;
  }
  const waiting = reflectors.filter((r) => !r.synced);
  if (waiting.length > 0) {
    return `waiting for the first list of ${
      waiting.map((r) => r.options.resource.plural).join(", ")
    }`;
  }
  return undefined;
}

/**
 * Resolves when every reflector has listed once, or throws after the timeout
 * naming the API server, the collections missing and the last error seen.
 */
export async function waitForReflectors(
  reflectors: Reflector<unknown>[],
  server: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!reflectors.every((r) => r.synced)) {
    if (Date.now() >= deadline) {
      const waiting = reflectors.filter((r) => !r.synced);
      const error = waiting.find((r) => r.lastError)?.lastError;
      throw new Error(
        `no complete list yet from the Kubernetes API at ${server} (waiting for ${
          waiting.map((r) => r.options.resource.plural).join(", ")
        })${error ? `: ${error}` : ""}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
