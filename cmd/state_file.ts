/**
 * Files in the agent's state directory that other processes read (`status`,
 * `delete`): always whole, and always the latest content.
 */

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
 * A write asked for while one runs renders the state when its turn comes, so
 * any number asked for meanwhile make one more write.
 */
export class LatestFile {
  #running?: Promise<void>;
  #again = false;

  constructor(
    readonly path: string,
    readonly render: () => string,
    readonly write: (path: string, text: string) => Promise<void> = writeAtomically,
  ) {}

  /** Resolves once the file holds the state as it was at this call, or later. */
  update(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.write(this.path, this.render());
        } while (this.#again);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }
}
