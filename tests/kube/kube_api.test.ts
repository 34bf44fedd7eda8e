/**
 * sim/kube_api.ts is as strict as kube-apiserver where kube-egress and kubectl
 * depend on it: CRD schema and CEL validation (with the agents' own messages),
 * pruning and strict field validation, metadata rules, resourceVersion on
 * custom resource updates, the status subresource, and patches.
 */
import assert from "node:assert/strict";
import { EgressPolicySpec } from "../../core/kube/api.ts";
import { describeIssues } from "../../core/schema.ts";
import { startTestApiServer, type TestApiServer } from "../../sim/kube_api.ts";
import { policyObject, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const POLICIES = "/apis/egress.kube-egress.io/v1alpha1/namespaces/default/egresspolicies";
const VIPS = "/apis/egress.kube-egress.io/v1alpha1/egressvips";

async function call(
  api: TestApiServer,
  method: string,
  path: string,
  body?: unknown,
  type = "application/json",
) {
  const response = await fetch(api.url + path, {
    method,
    headers: { "content-type": type },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

async function withServer(fn: (api: TestApiServer) => Promise<void>) {
  const api = await startTestApiServer();
  try {
    await fn(api);
  } finally {
    await api.stop();
  }
}

Deno.test({
  name:
    "kube api: the CRDs' CEL rules refuse what the agents' zod schemas refuse, with the same messages",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const cases: [Record<string, unknown>, string][] = [
        [{ vip: "office", targets: [] }, "needs a podSelector or at least one target"],
        [
          { vip: "office", podSelector: { matchExpressions: [{ key: "a", operator: "In" }] } },
          "are required with In",
        ],
        [
          {
            vip: "office",
            podSelector: { matchExpressions: [{ key: "a", operator: "Exists", values: ["x"] }] },
          },
          "must be empty with Exists",
        ],
        [{ vip: "office", podSelector: {}, destinationCIDRs: ["10.0.0.1/8"] }, "has host bits set"],
        [
          { vip: "office", podSelector: {}, excludedCIDRs: ["10.0.0/8"] },
          "must be an IPv4 range such as",
        ],
      ];
      for (const [i, [spec, message]] of cases.entries()) {
        const r = await call(api, "POST", POLICIES, policyObject("default", `p${i}`, spec));
        assert.equal(r.status, 422, JSON.stringify(r.body));
        assert.equal(r.body.reason, "Invalid");
        assert.ok(r.body.message.includes(message), `${r.body.message} names "${message}"`);
        const zod = EgressPolicySpec.safeParse(spec);
        assert.equal(zod.success, false);
        assert.ok(describeIssues(zod.error!).includes(message), describeIssues(zod.error!));
      }
      const ok = await call(
        api,
        "POST",
        POLICIES,
        policyObject("default", "good", { vip: "office", podSelector: {} }),
      );
      assert.equal(ok.status, 201);
      // The OpenAPI schema itself: types, ranges, enums, required fields.
      const bad = await call(api, "POST", VIPS, vipObject("v", { ip: "192.0.2.500", routeId: 0 }));
      assert.equal(bad.status, 422);
      assert.match(bad.body.message, /spec\.ip/);
      assert.match(
        bad.body.message,
        /spec\.routeId: Invalid value: 0: .*greater than or equal to 1/,
      );
      const missing = await call(api, "POST", VIPS, { ...vipObject("w", {}), spec: undefined });
      assert.match(missing.body.message, /spec: Required value/);
    }),
});

Deno.test({
  name: "kube api: unknown fields are pruned with a warning, refused with fieldValidation=Strict",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const object = { ...vipObject("office", { ip: "192.0.2.50", colour: "blue" }), extra: 1 };
      const strict = await call(api, "POST", `${VIPS}?fieldValidation=Strict`, object);
      assert.equal(strict.status, 400);
      assert.match(strict.body.message, /unknown field "spec.colour"/);
      const r = await call(api, "POST", VIPS, object);
      assert.equal(r.status, 201);
      assert.deepEqual(r.body.spec, { ip: "192.0.2.50" });
      assert.equal(r.body.extra, undefined);
      assert.match(r.headers.get("warning") ?? "", /unknown field \\"spec.colour\\"/);
    }),
});

Deno.test({
  name:
    "kube api: metadata rules (owner references, finalizers while deleting, names of objects and Events) and resourceVersion on updates",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const owner = await call(api, "POST", VIPS, {
        ...vipObject("office", { ip: "192.0.2.50" }),
        metadata: { name: "office", ownerReferences: [{ kind: "Application", name: "x" }] },
      });
      assert.equal(owner.status, 422);
      assert.match(owner.body.message, /metadata.ownerReferences.apiVersion/);
      assert.match(owner.body.message, /metadata.ownerReferences.uid/);
      const long = await call(api, "POST", "/api/v1/namespaces/default/events", {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${"a".repeat(250)}.17f0c0ffee` },
        involvedObject: { kind: "EgressVIP", name: "x" },
      });
      assert.equal(long.status, 422);
      assert.match(long.body.message, /must be no more than 253 characters/);
      const created = await call(api, "POST", VIPS, {
        ...vipObject("keep", { ip: "192.0.2.51" }),
        metadata: { name: "keep", finalizers: ["example.com/keep"] },
      });
      assert.equal(created.status, 201);
      // A custom resource's update needs its resourceVersion.
      const blind = await call(api, "PUT", `${VIPS}/keep`, {
        ...created.body,
        metadata: { name: "keep", finalizers: ["example.com/keep"] },
      });
      assert.equal(blind.status, 422);
      assert.match(
        blind.body.message,
        /metadata.resourceVersion: Invalid value: 0: must be specified for an update/,
      );
      await call(api, "DELETE", `${VIPS}/keep`);
      const adding = await call(api, "PATCH", `${VIPS}/keep`, {
        metadata: { finalizers: ["example.com/keep", "egress.kube-egress.io/in-use"] },
      }, "application/merge-patch+json");
      assert.equal(adding.status, 422);
      assert.match(
        adding.body.message,
        /no new finalizers can be added if the object is being deleted/,
      );
    }),
});

Deno.test({
  name:
    "kube api: /status ignores all but status, the main resource ignores status; merge, JSON (with test) and strategic patches",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const created =
        (await call(api, "POST", VIPS, vipObject("office", { ip: "192.0.2.50" }))).body;
      const s = await call(api, "PUT", `${VIPS}/office/status`, {
        ...created,
        metadata: { ...created.metadata, labels: { changed: "yes" } },
        spec: { ip: "192.0.2.99" },
        status: { routeId: 4 },
      });
      assert.equal(s.status, 200);
      assert.deepEqual(s.body.spec, { ip: "192.0.2.50" });
      assert.equal(s.body.metadata.labels, undefined);
      assert.deepEqual(s.body.status, { routeId: 4 });
      const m = await call(api, "PUT", `${VIPS}/office`, { ...s.body, status: { routeId: 9 } });
      assert.deepEqual(m.body.status, { routeId: 4 });
      // A JSON patch whose test fails changes nothing: 422.
      const failed = await call(api, "PATCH", `${VIPS}/office`, [
        { op: "test", path: "/metadata/resourceVersion", value: "1" },
        { op: "add", path: "/metadata/labels", value: { a: "b" } },
      ], "application/json-patch+json");
      assert.equal(failed.status, 422);
      // A merge patch with a stale resourceVersion: 409.
      const stale = await call(api, "PATCH", `${VIPS}/office`, {
        metadata: { resourceVersion: "1", labels: { a: "b" } },
      }, "application/merge-patch+json");
      assert.equal(stale.status, 409);
      // No strategic merge patch for custom resources; built-ins merge lists by key.
      const smp = await call(
        api,
        "PATCH",
        `${VIPS}/office`,
        { metadata: { labels: { a: "b" } } },
        "application/strategic-merge-patch+json",
      );
      assert.equal(smp.status, 415);
      api.apply({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "p", namespace: "default" },
        spec: { containers: [{ name: "a", image: "x:1" }, { name: "b", image: "y:1" }] },
      });
      const pod = await call(api, "PATCH", "/api/v1/namespaces/default/pods/p", {
        spec: { containers: [{ name: "b", image: "y:2" }] },
      }, "application/strategic-merge-patch+json");
      assert.deepEqual(pod.body.spec.containers, [{ name: "a", image: "x:1" }, {
        name: "b",
        image: "y:2",
      }]);
    }),
});

Deno.test({
  name:
    "kube api: EgressPolicy spec.failClosed is in the CRD schema: a boolean is kept, anything else refused",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const good = policyObject("default", "strict", {
        vip: "office",
        podSelector: {},
        failClosed: true,
      });
      const created = await call(api, "POST", `${POLICIES}?fieldValidation=Strict`, good);
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.spec.failClosed, true, "not pruned");
      const bad = policyObject("default", "loose", {
        vip: "office",
        podSelector: {},
        failClosed: "yes",
      });
      const refused = await call(api, "POST", POLICIES, bad);
      assert.equal(refused.status, 422);
      assert.match(JSON.stringify(refused.body), /failClosed/);
    }),
});

Deno.test({
  name:
    "kube api: watches share each event's encoding, full or metadata-only, and every watch gets every event whole",
  ...opts,
  fn: () =>
    withServer(async (api) => {
      const version = String(api.store.resourceVersion);
      const open = async (accept: string) => {
        const response = await fetch(
          `${api.url}/api/v1/namespaces/default/pods?watch=true&resourceVersion=${version}`,
          { headers: { accept } },
        );
        return response.body!.pipeThrough(new TextDecoderStream()).getReader();
      };
      const full = "application/json";
      const meta = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
      const readers = await Promise.all([open(full), open(meta), open(full), open(meta)]);
      const pod = (name: string, ip: string) => ({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace: "default" },
        spec: { nodeName: "node-1", containers: [{ name: "app", image: "app" }] },
        status: { podIP: ip },
      });
      api.apply(pod("a", "10.244.1.2"));
      api.apply(pod("b", "10.244.1.3"));
      // apply stores each pod and then its status: four events.
      const lines = await Promise.all(readers.map(async (reader) => {
        let text = "";
        while (text.split("\n").length < 5) text += (await reader.read()).value ?? "";
        await reader.cancel();
        return text.split("\n").slice(0, 4).map((l) => JSON.parse(l));
      }));
      assert.deepEqual(lines[0], lines[2]);
      assert.deepEqual(lines[1], lines[3]);
      assert.deepEqual(
        lines[0].map((e) => [e.type, e.object.metadata.name, e.object.status?.podIP ?? null]),
        [
          ["ADDED", "a", null],
          ["MODIFIED", "a", "10.244.1.2"],
          ["ADDED", "b", null],
          ["MODIFIED", "b", "10.244.1.3"],
        ],
      );
      assert.deepEqual(
        lines[1].map((e) => [e.type, e.object.kind, e.object.metadata.name, "spec" in e.object]),
        ["a", "a", "b", "b"].map((name, k) => [
          k % 2 ? "MODIFIED" : "ADDED",
          "PartialObjectMetadata",
          name,
          false,
        ]),
      );
    }),
});
