/**
 * The file source: reads the two mapping directories (mounted ConfigMaps or
 * plain folders) into a raw snapshot. A missing or unreadable directory fails
 * the pass, so a lost mount never wipes working mappings; a bad file only
 * skips that file.
 */
import { joinPath } from "./path.ts";
import { type FileEntry, isIgnoredName, rawSnapshotFromFiles } from "../core/mapping_files.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { errorMessage } from "../core/errors.ts";

/** Mapping files hold one address or number; anything bigger is not a mapping. */
const MAX_FILE_BYTES = 1024;

/**
 * Reads one entry, at most MAX_FILE_BYTES + 1 bytes of it. Synchronous on
 * purpose: thousands of tiny files read ~8x faster than with async calls
 * (10,000 files: ~35 ms instead of ~300 ms), and the loop is blocked only as
 * long as that. A plain try/finally, not `using`: its transpiled disposal
 * stack costs ~2 ms per 1,000 files of a one-shot run.
 */
function readEntry(
  path: string,
  name: string,
  buffer: Uint8Array,
  decoder: TextDecoder,
): FileEntry {
  try {
    const file = Deno.openSync(path);
    try {
      let length = 0;
      while (length < buffer.length) {
        const n = file.readSync(buffer.subarray(length));
        if (n === null) break;
        length += n;
      }
      if (length > MAX_FILE_BYTES) {
        return { path, name, error: `larger than ${MAX_FILE_BYTES} bytes` };
      }
      return { path, name, content: decoder.decode(buffer.subarray(0, length)) };
    } finally {
      file.close();
    }
  } catch (error) {
    return { path, name, error: errorMessage(error) };
  }
}

/** Reads every entry of a mapping directory, sorted by name. Throws when the directory cannot be listed. */
export function readMappingDir(dir: string): FileEntry[] {
  const names: string[] = [];
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (!isIgnoredName(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "does not exist" : String(error);
    throw new Error(`mapping directory ${dir} ${reason}`);
  }
  names.sort();
  const buffer = new Uint8Array(MAX_FILE_BYTES + 1);
  const decoder = new TextDecoder();
  // An entry's name is one path segment (no "/", never "." or ".."): joined to the
  // directory as joinPath(dir, name) joins it, with the directory normalized once.
  const prefix = joinPath(dir, "_").slice(0, -1);
  return names.map((name) => readEntry(prefix + name, name, buffer, decoder));
}

/** Reads both directories into a raw snapshot. */
export function readMappingDirs(podVipDir: string, vipRouteDir: string): Promise<RawSnapshot> {
  return Promise.resolve().then(() =>
    rawSnapshotFromFiles(readMappingDir(podVipDir), readMappingDir(vipRouteDir))
  );
}

/**
 * The mapping directories as a source for a long-running agent: read once,
 * then served from memory, and re-read only when the files change (watch
 * events) or on the resync pass (in case an event was missed). A pass
 * triggered by a VIP move therefore costs no file I/O at all, whatever the
 * number of mappings. A failed read is read again by the next pass.
 */
export class FileSource {
  #current: Promise<RawSnapshot> | undefined;
  /** The last read failed: the next pass, whatever its trigger, reads again. */
  #failed = false;

  constructor(readonly podVipDir: string, readonly vipRouteDir: string) {}

  /** The inputs as last read (reading them the first time). */
  read(): Promise<RawSnapshot> {
    this.#current ??= this.#load();
    return this.#current;
  }

  #load(): Promise<RawSnapshot> {
    const load = readMappingDirs(this.podVipDir, this.vipRouteDir);
    load.then(() => (this.#failed = false), () => (this.#failed = true));
    return load;
  }

  /** Re-reads now; resolves when the new inputs are in memory (or the error is). */
  async refresh(): Promise<void> {
    const next = this.#load();
    this.#current = next;
    await next.catch(() => {});
  }

  /**
   * The agent's `readInputs`: served from memory, re-read on the resync pass
   * and after a failed read (a retried pass must not replay the old error).
   */
  readFor(trigger: string): Promise<RawSnapshot> {
    return trigger === "resync" || this.#failed
      ? this.refresh().then(() => this.read())
      : this.read();
  }

  /** Re-reads when the files change, then calls back. */
  watch(onChange: () => void): { stop(): void } {
    return watchFiles([this.podVipDir, this.vipRouteDir], () => this.refresh().then(onChange));
  }
}

/** Watches directories (ConfigMap mounts swap a symlink on update) and calls back, debounced. */
export function watchFiles(paths: readonly string[], onChange: () => void): { stop(): void } {
  const existing = paths.filter((p) => {
    try {
      return Deno.statSync(p).isDirectory;
    } catch {
      return false;
    }
  });
  if (existing.length === 0) return { stop() {} };
  const watcher = Deno.watchFs(existing, { recursive: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  (async () => {
    for await (const _event of watcher) {
      clearTimeout(timer);
      timer = setTimeout(onChange, 100);
    }
  })().catch(() => {});
  return {
    stop() {
      clearTimeout(timer);
      watcher.close();
    },
  };
}
