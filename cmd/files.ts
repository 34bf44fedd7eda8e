/**
 * The file source: reads the two mapping directories (mounted ConfigMaps or
 * plain folders) into a raw snapshot. A missing or unreadable directory fails
 * the pass, so a lost mount never wipes working mappings; a bad file only
 * skips that file.
 */
import { join } from "node:path";
import { type FileEntry, isIgnoredName, rawSnapshotFromFiles } from "../core/mapping_files.ts";
import type { RawSnapshot } from "../core/snapshot.ts";

/** Mapping files hold one address or number; anything bigger is not a mapping. */
const MAX_FILE_BYTES = 1024;

async function readEntry(dir: string, name: string): Promise<FileEntry> {
  const path = join(dir, name);
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) return { path, name, error: "not a regular file" };
    if (info.size > MAX_FILE_BYTES) {
      return { path, name, error: `larger than ${MAX_FILE_BYTES} bytes` };
    }
    return { path, name, content: await Deno.readTextFile(path) };
  } catch (error) {
    return { path, name, error: error instanceof Error ? error.message : String(error) };
  }
}

/** Reads every entry of a mapping directory, sorted by name. Throws when the directory cannot be listed. */
export async function readMappingDir(dir: string): Promise<FileEntry[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!isIgnoredName(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound ? "does not exist" : String(error);
    throw new Error(`mapping directory ${dir} ${reason}`);
  }
  names.sort();
  return await Promise.all(names.map((name) => readEntry(dir, name)));
}

/** Reads both directories into a raw snapshot. */
export async function readMappingDirs(
  podVipDir: string,
  vipRouteDir: string,
): Promise<RawSnapshot> {
  const [pods, vips] = await Promise.all([readMappingDir(podVipDir), readMappingDir(vipRouteDir)]);
  return rawSnapshotFromFiles(pods, vips);
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
