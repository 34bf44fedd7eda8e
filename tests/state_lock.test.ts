import assert from "node:assert/strict";
import {
  busyMessage,
  LOCK_FILE,
  lockStateDir,
  StateDirBusyError,
  stateDirOwner,
} from "../cmd/state_lock.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "kube-egress-lock-" });
  try {
    await fn(`${dir}/state`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("state lock: one agent per state directory; the second is told who has it", () =>
  withDir(async (dir) => {
    const first = await lockStateDir(dir, { node: "node1" });
    const owner = await stateDirOwner(dir);
    assert.equal(owner?.owner?.pid, Deno.pid);
    assert.equal(owner?.owner?.node, "node1");
    assert.equal(owner?.sameNetns, true);
    assert.match(owner!.owner!.netns, /^net:\[\d+\]$/);
    const waits: string[] = [];
    await assert.rejects(
      lockStateDir(dir, { node: "node1", waitMs: 300, onWait: (m) => waits.push(m) }),
      (e: Error) =>
        e instanceof StateDirBusyError &&
        new RegExp(
          `another kube-egress agent is running on this node with state directory ${dir}: ` +
            `pid ${Deno.pid} \\(node node1, since .*\\)\\. .*stop it first`,
        ).test(e.message),
    );
    assert.equal(waits.length, 1, "told once that it waits for a predecessor");
    await first.release();
    assert.equal(await stateDirOwner(dir), undefined, "released: nobody owns it");
    const again = await lockStateDir(dir, { node: "node1" });
    await again.release();
  }));

Deno.test("state lock: a predecessor that stops within the wait hands the directory over", () =>
  withDir(async (dir) => {
    const first = await lockStateDir(dir, { node: "node1" });
    setTimeout(() => first.release(), 300);
    const second = await lockStateDir(dir, { node: "node1", waitMs: 10_000 });
    assert.equal((await stateDirOwner(dir))?.owner?.pid, Deno.pid);
    await second.release();
  }));

Deno.test("state lock: a dead agent's file (no lock held) owns nothing", () =>
  withDir(async (dir) => {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      `${dir}/${LOCK_FILE}`,
      JSON.stringify({
        pid: 999_999_999,
        node: "gone",
        netns: "net:[1]",
        pidns: "pid:[1]",
        startTicks: 1,
        since: "2026-01-01T00:00:00.000Z",
      }),
    );
    assert.equal(await stateDirOwner(dir), undefined);
    const lock = await lockStateDir(dir, { node: "node2", waitMs: 0 });
    const text = await Deno.readTextFile(`${dir}/${LOCK_FILE}`);
    assert.equal(JSON.parse(text).node, "node2", "the file now names the new owner");
    await lock.release();
  }));

Deno.test("state lock: an owner in another network namespace is named with both namespaces and the fix", () => {
  const message = busyMessage("/run/kube-egress", {
    owner: {
      pid: 4242,
      node: "node1",
      netns: "net:[4026532281]",
      pidns: "pid:[4026531836]",
      startTicks: 100,
      since: "2026-01-01T00:00:00.000Z",
    },
    sameNetns: false,
    ownerNetnsName: "ke12ab34-node1",
    ownNetns: "net:[4026532350]",
    ownNetnsName: "ke12ab34-node2",
  });
  assert.equal(
    message,
    "state directory /run/kube-egress belongs to the kube-egress agent of another network " +
      "namespace: pid 4242 (node node1, since 2026-01-01T00:00:00.000Z) in network namespace " +
      "ke12ab34-node1 net:[4026532281], while this process runs in ke12ab34-node2 " +
      "net:[4026532350]. Network namespaces do not separate files: agents started in several " +
      "node namespaces of one machine need one --state-dir each (e.g. --state-dir " +
      "/run/kube-egress/<node name>)",
  );
  assert.match(
    busyMessage("/x", { sameNetns: false, ownNetns: "net:[1]" }),
    /state directory \/x is locked by another process/,
  );
});
