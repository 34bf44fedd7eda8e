import assert from "node:assert/strict";
import { join } from "node:path";
import { LatestFile, writeAtomically } from "../cmd/state_file.ts";

Deno.test("state file: a slow write never lands after a newer one; updates meanwhile make one write", async () => {
  let state = "a";
  let disk = "";
  let overlapping = 0;
  let writing = 0;
  const delays = [30, 0, 0];
  const writes: string[] = [];
  const file = new LatestFile("/status.json", () => state, async (_path, text) => {
    writing++;
    overlapping = Math.max(overlapping, writing);
    await new Promise((r) => setTimeout(r, delays[writes.length] ?? 0));
    writes.push(text);
    disk = text;
    writing--;
  });
  const first = file.update(); // slow: "a"
  state = "b";
  const second = file.update();
  state = "c";
  const third = file.update();
  await Promise.all([first, second, third]);
  assert.equal(disk, "c", "the file ends with the latest state");
  assert.deepEqual(writes, ["a", "c"], "the updates asked for meanwhile made one write");
  assert.equal(overlapping, 1, "writes never overlap");
  state = "d";
  await file.update();
  assert.deepEqual(writes, ["a", "c", "d"]);
});

Deno.test("state file: a failed write rejects, leaves no temporary, and the next update writes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "status.json");
    // A directory in the file's place: the rename fails after the copy was written.
    await Deno.mkdir(join(path, "in-the-way"), { recursive: true });
    await assert.rejects(new LatestFile(path, () => "one\n").update());
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["status.json"]);
    await Deno.remove(path, { recursive: true });
    await writeAtomically(path, "two\n");
    assert.equal(await Deno.readTextFile(path), "two\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
