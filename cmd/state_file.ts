/**
 * Files in the agent's state directory that other processes read (`status`,
 * `delete`): always whole, and always the latest content.
 */
import { Coalesced } from "./coalesced.ts";

let temporaries = 0;

/** Writes a file by renaming a complete temporary copy over it: readers never see half a file. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${Deno.pid}.${temporaries++}.tmp`;
  try {
    await Deno.writeTextFile(temporary, text);
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

/**
 * A file rewritten from changing state. Writes never overlap: two that did
 * could finish in the wrong order and leave an older state in place for good.
 * A write asked for while one runs renders the state when its turn comes.
 */
export class LatestFile {
  readonly #writes: Coalesced;

  constructor(
    readonly path: string,
    readonly render: () => string,
    readonly write: (path: string, text: string) => Promise<void> = writeAtomically,
  ) {
    this.#writes = new Coalesced(() => this.write(this.path, this.render()));
  }

  /** Resolves once the file holds the state as it was at this call, or later. */
  update(): Promise<void> {
    return this.#writes.run();
  }
}
