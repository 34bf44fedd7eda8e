import assert from "node:assert/strict";
import { join } from "node:path";
import { FileSource, readMappingDir } from "../cmd/files.ts";
import { rawSnapshotFromFiles } from "../core/mapping_files.ts";
import { formatProblem, validateSnapshot } from "../core/snapshot.ts";
import { testConfig } from "./helpers.ts";

/** A ConfigMap-style volume: `..data` → timestamped dir, each key a symlink into `..data`. */
async function configMapDir(entries: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "kube-egress-files-" });
  const data = join(root, "..2026_11_23_12_00_00.1");
  await Deno.mkdir(data);
  for (const [key, value] of Object.entries(entries)) {
    await Deno.writeTextFile(join(data, key), value);
  }
  await Deno.symlink(data, join(root, "..data"));
  for (const key of Object.keys(entries)) await Deno.symlink(join("..data", key), join(root, key));
  return root;
}

Deno.test("files: ConfigMap volumes are read through their symlinks; dot-entries are ignored", async () => {
  const dir = await configMapDir({ "10.244.1.5": "192.0.2.50\n", "10.244.1.6": "  192.0.2.51  " });
  const entries = readMappingDir(dir);
  assert.deepEqual(entries.map((e) => [e.name, "content" in e ? e.content : e.error]), [
    ["10.244.1.5", "192.0.2.50\n"],
    ["10.244.1.6", "  192.0.2.51  "],
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("files: oversized files and directories are reported per entry, not fatal", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "10.244.1.5"), "192.0.2.50");
  await Deno.writeTextFile(join(dir, "10.244.1.6"), "x".repeat(5000));
  await Deno.mkdir(join(dir, "10.244.1.7"));
  const byName = Object.fromEntries(
    readMappingDir(dir).map((e) => [e.name, "content" in e ? e.content : `error: ${e.error}`]),
  );
  assert.equal(byName["10.244.1.5"], "192.0.2.50");
  assert.equal(byName["10.244.1.6"], "error: larger than 1024 bytes");
  assert.match(byName["10.244.1.7"], /^error: .*(directory|Is a directory)/i);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("files: an entry's path is the directory joined with its name, however the directory is written", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(join(root, "pods"));
  await Deno.writeTextFile(join(root, "pods", "10.244.1.5"), "192.0.2.50");
  const cwd = Deno.cwd();
  Deno.chdir(root);
  try {
    for (
      const dir of [`${root}/pods`, `${root}//pods/`, `${root}/./pods/../pods`, "pods", "./pods/"]
    ) {
      assert.deepEqual(readMappingDir(dir).map((e) => e.path), [join(dir, "10.244.1.5")], dir);
    }
    Deno.chdir(join(root, "pods"));
    assert.deepEqual(readMappingDir(".").map((e) => e.path), ["10.244.1.5"]);
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("files: a missing directory is an error naming it", () => {
  assert.throws(
    () => readMappingDir("/nonexistent/kube-egress/pods"),
    /mapping directory \/nonexistent\/kube-egress\/pods does not exist/,
  );
});

Deno.test("files: the source serves passes from memory and re-reads on resync", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(join(root, "p"));
  await Deno.mkdir(join(root, "v"));
  await Deno.writeTextFile(join(root, "v", "192.0.2.50"), "5");
  const source = new FileSource(join(root, "p"), join(root, "v"));
  const first = await source.readFor("start");
  await Deno.writeTextFile(join(root, "p", "10.244.1.5"), "192.0.2.50");
  const moved = await source.readFor("address change");
  assert.equal(moved, first, "a VIP move is served from memory (same object: not validated again)");
  const resync = await source.readFor("resync");
  assert.notEqual(resync, first);
  assert.deepEqual(resync.pods.map((p) => p.podIp), ["10.244.1.5"]);
  await Deno.remove(join(root, "p"), { recursive: true });
  await assert.rejects(source.readFor("resync"), /does not exist/);
  await assert.rejects(source.readFor("address change"), /does not exist/, "still missing");
  // The mount is back: the next pass (a retry, not a resync) reads it again.
  await Deno.mkdir(join(root, "p"));
  await Deno.writeTextFile(join(root, "p", "10.244.1.6"), "192.0.2.50");
  const back = await source.readFor("retry after a failed pass");
  assert.deepEqual(back.pods.map((p) => p.podIp), ["10.244.1.6"]);
  assert.equal(await source.readFor("address change"), back, "then served from memory again");
  await Deno.remove(root, { recursive: true });
});

Deno.test("files: a change in the directories re-reads them and triggers a pass", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(join(root, "p"));
  await Deno.mkdir(join(root, "v"));
  const source = new FileSource(join(root, "p"), join(root, "v"));
  assert.equal((await source.read()).vips.length, 0);
  let changed!: () => void;
  const triggered = new Promise<void>((resolve) => (changed = resolve));
  const watch = source.watch(() => changed());
  try {
    await Deno.writeTextFile(join(root, "v", "192.0.2.50"), "5");
    const timeout = new Promise((_, reject) =>
      setTimeout(() => reject(new Error("no trigger within 5 s")), 5000)
    );
    await Promise.race([triggered, timeout]);
    assert.equal((await source.read()).vips.length, 1);
  } finally {
    watch.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("files: IPv6 keys and values in the same directories, colons or (ConfigMap keys) dashes", async () => {
  const pods = await configMapDir({
    "fd00-10-244--5": "2001:db8::50\n", // a ConfigMap key cannot hold ':'
    "10.244.1.5": "192.0.2.50",
    "fd00-10-244--6": "192.0.2.50", // across families: rejected, naming the file
  });
  const vips = await Deno.makeTempDir();
  await Deno.writeTextFile(join(vips, "2001:db8::50"), "5");
  await Deno.writeTextFile(join(vips, "192.0.2.50"), "5");
  const snapshot = rawSnapshotFromFiles(readMappingDir(pods), readMappingDir(vips));
  const { snapshot: valid, problems } = validateSnapshot(
    snapshot,
    testConfig({ podCidrs: ["10.244.0.0/16", "fd00:10:244::/56"] }),
  );
  assert.deepEqual(valid.pods, [
    { podIp: "10.244.1.5", vip: "192.0.2.50" },
    { podIp: "fd00:10:244::5", vip: "2001:db8::50" },
  ]);
  assert.deepEqual(valid.vips.map((v) => v.ip), ["192.0.2.50", "2001:db8::50"]);
  assert.deepEqual(problems.map(formatProblem), [
    `${join(pods, "fd00-10-244--6")}: VIP 192.0.2.50 is IPv4 but pod IP fd00:10:244::6 is IPv6: ` +
    "a pod's traffic can only leave with a VIP of its own family",
  ]);
  await Deno.remove(pods, { recursive: true });
  await Deno.remove(vips, { recursive: true });
});
