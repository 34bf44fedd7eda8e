/**
 * Run by client_node.test.ts in its own Deno process with --no-lock: the
 * official @kubernetes/client-node brings its own @types/node, which would
 * otherwise enter this project's lockfile and replace Deno's node types for
 * every module that `deno check` reads.
 *
 *   deno run -A --no-lock tests/kube/client_node_informer.ts <kubeconfig>
 *
 * Reads the kubeconfig, lists EgressVIPs, starts an informer, and then reads
 * commands on stdin ("create <name> <ip>", "delete <name>", "quit"), printing
 * one JSON line per thing it sees: {"list": [...]}, {"event": "add", ...}.
 */
// deno-lint-ignore-file no-explicit-any
// A computed name: `deno check` of the project must not follow it (see above).
const CLIENT = ["npm:@kubernetes", "client-node@2.0.1"].join("/");
const k8s: any = await import(CLIENT);
const GROUP = "egress.kube-egress.io";
const VERSION = "v1alpha1";
const print = (o: unknown) => console.log(JSON.stringify(o));

const kc = new k8s.KubeConfig();
kc.loadFromFile(Deno.args[0]);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const list = () =>
  custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: "egressvips" });
print({ list: ((await list()).items as any[]).map((i) => i.metadata.name) });
const informer = k8s.makeInformer(kc, `/apis/${GROUP}/${VERSION}/egressvips`, list);
for (const event of ["add", "update", "delete"]) {
  informer.on(
    event,
    (o: any) => print({ event, name: o.metadata?.name, status: o.status ?? null }),
  );
}
informer.on("error", (e: unknown) => print({ error: String(e) }));
await informer.start();
print({ started: true });
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buffer = "";
for await (const chunk of lines) {
  buffer += chunk;
  let newline: number;
  while ((newline = buffer.indexOf("\n")) >= 0) {
    const [op, name, ip] = buffer.slice(0, newline).trim().split(" ");
    buffer = buffer.slice(newline + 1);
    if (op === "create") {
      await custom.createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: "egressvips",
        body: {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: "EgressVIP",
          metadata: { name },
          spec: { ip },
        },
      });
    } else if (op === "delete") {
      await custom.deleteClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: "egressvips",
        name,
      });
    } else if (op === "quit") {
      await informer.stop();
      Deno.exit(0);
    }
  }
}
