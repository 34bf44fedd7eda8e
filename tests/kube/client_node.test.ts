/**
 * The official JavaScript client, @kubernetes/client-node, as a second real
 * client of the test API server (in its own process: see
 * client_node_informer.ts): it reads the kubeconfig the server writes, lists
 * our kinds, creates and deletes one, and its informer (list, then watch) sees
 * every change, the elected agent's status write included.
 */
import assert from "node:assert/strict";
import { startLocalApi } from "../../sim/kube_api_local.ts";
import { eventually, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const SCRIPT = new URL("./client_node_informer.ts", import.meta.url).pathname;

Deno.test({
  name: "client-node: lists EgressVIPs and an informer sees every add, update and delete",
  ...opts,
  fn: async () => {
    const api = await startLocalApi({ bookmarkMs: 200 });
    api.server.apply(vipObject("first", { ip: "192.0.2.50" }));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", SCRIPT, api.kubeconfigPath],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const seen: Record<string, unknown>[] = [];
    const reading = (async () => {
      let buffer = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) if (line.trim()) seen.push(JSON.parse(line));
      }
    })();
    const writer = child.stdin.getWriter();
    const send = (line: string) => writer.write(new TextEncoder().encode(`${line}\n`));
    const saw = (check: (e: Record<string, unknown>) => boolean, what: string) =>
      eventually(() => seen.some(check), what);
    try {
      // Bounded: the first run may download the client from npm.
      for (let i = 0; i < 1200 && !seen.some((e) => e.started); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(seen.find((e) => e.list)?.list, ["first"]);
      await saw((e) => e.event === "add" && e.name === "first", "the informer's list");
      await send("create second 192.0.2.51");
      await saw((e) => e.event === "add" && e.name === "second", "a watched add");
      const stored = api.server.get("EgressVIP", "second")!;
      api.server.update({ ...stored, status: { routeId: 3 } }, { status: true });
      await saw(
        (e) =>
          e.event === "update" && e.name === "second" &&
          JSON.stringify(e.status) === '{"routeId":3}',
        "a watched status update",
      );
      await send("delete second");
      await saw((e) => e.event === "delete" && e.name === "second", "a watched delete");
      assert.equal(api.server.get("EgressVIP", "second"), undefined);
      assert.ok(!seen.some((e) => e.error), JSON.stringify(seen));
      await send("quit");
      assert.equal((await child.status).code, 0);
    } finally {
      await writer.close().catch(() => {});
      try {
        child.kill();
      } catch {
        // Exited already.
      }
      await reading.catch(() => {});
      await api.stop();
    }
  },
});
