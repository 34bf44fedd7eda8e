/**
 * The official JavaScript client, @kubernetes/client-node, as a second real
 * client of the test API server: it reads the kubeconfig the server writes,
 * lists our kinds, and an informer (list, then watch) sees every change:
 * creation, the elected agent's status write, deletion.
 */
import assert from "node:assert/strict";
import * as k8s from "@kubernetes/client-node";
import { API_VERSION, GROUP, VERSION } from "../../core/kube/api.ts";
import { startLocalApi } from "../../sim/kube_api_local.ts";
import { eventually, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "client-node: lists EgressVIPs and an informer sees every add, update and delete",
  ...opts,
  fn: async () => {
    const api = await startLocalApi({ bookmarkMs: 200 });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(api.kubeconfigPath);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const seen: string[] = [];
    const path = `/apis/${GROUP}/${VERSION}/egressvips`;
    const informer = k8s.makeInformer(
      kc,
      path,
      () =>
        custom.listClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: "egressvips",
        }) as never,
    );
    const name = (o: unknown) => (o as { metadata?: { name?: string } }).metadata?.name;
    informer.on("add", (o) => seen.push(`add ${name(o)}`));
    informer.on(
      "update",
      (o) =>
        seen.push(`update ${name(o)} ${JSON.stringify((o as { status?: unknown }).status ?? {})}`),
    );
    informer.on("delete", (o) => seen.push(`delete ${name(o)}`));
    let informerError: unknown;
    informer.on("error", (e) => (informerError = e));
    try {
      api.server.apply(vipObject("first", { ip: "192.0.2.50" }));
      const list = await custom.listClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: "egressvips",
      }) as {
        items: { metadata: { name: string } }[];
      };
      assert.deepEqual(list.items.map((i) => i.metadata.name), ["first"]);
      await informer.start();
      await eventually(() => seen.includes("add first"), "the informer's list");
      await custom.createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: "egressvips",
        body: {
          apiVersion: API_VERSION,
          kind: "EgressVIP",
          metadata: { name: "second" },
          spec: { ip: "192.0.2.51" },
        },
      });
      await eventually(() => seen.includes("add second"), "a watched add");
      const stored = api.server.get("EgressVIP", "second")!;
      api.server.update({ ...stored, status: { routeId: 3 } }, { status: true });
      await eventually(
        () => seen.includes('update second {"routeId":3}'),
        "a watched status update",
      );
      await custom.deleteClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: "egressvips",
        name: "second",
      });
      await eventually(() => seen.includes("delete second"), "a watched delete");
      assert.equal(informerError, undefined);
    } finally {
      await informer.stop();
      await api.stop();
    }
  },
});
