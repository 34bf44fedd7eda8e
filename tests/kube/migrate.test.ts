import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { main } from "../../cmd/main.ts";
import { EgressPolicySpec, EgressVIPSpec } from "../../core/kube/api.ts";
import { migrate } from "../../core/kube/migrate.ts";
import { kubeconfigFor, startTestApiServer } from "../../sim/kube_api.ts";
import { FakeKernel } from "../fake_kernel.ts";
import { pod, podObject } from "./fixtures.ts";

const OLD = [
  {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "vip-routeid-mappings" },
    data: { "192.0.2.50": "5", "192.0.2.51": "6" },
  },
  {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "podip-vip-mappings" },
    data: { "10.244.1.5": "192.0.2.50", "10.244.1.9": "192.0.2.51" },
  },
  {
    apiVersion: "egress.mapper.com/v1alpha1",
    kind: "Vip",
    metadata: { name: "office", namespace: "default" },
    spec: { ip: "192.0.2.50", routeid: 5 },
  },
  {
    apiVersion: "egress.mapper.com/v1alpha1",
    kind: "Egress",
    metadata: { name: "pod1", namespace: "default" },
    spec: { ip: "192.0.2.50", kind: "pod", namespace: "default", name: "pod1" },
  },
];

/** Runs the CLI, capturing stdout and stderr. */
async function cli(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const saved = { error: console.error, write: Deno.stdout.writeSync };
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  Deno.stdout.writeSync = (
    data: Uint8Array,
  ) => (out.push(new TextDecoder().decode(data)), data.length);
  try {
    const code = await main(args, new FakeKernel().host());
    return { code, out: out.join(""), err: err.join("\n") };
  } finally {
    console.error = saved.error;
    Deno.stdout.writeSync = saved.write;
  }
}

Deno.test("migrate: route ids kept, Egress → policy, ConfigMap-only mappings resolved through pods", () => {
  const result = migrate({
    vipRouteIds: { "192.0.2.50": "5", "192.0.2.51": "6", "192.0.2.52": "300" },
    podVips: {
      "10.244.1.5": "192.0.2.50",
      "10.244.1.9": "192.0.2.51",
      "10.244.1.77": "192.0.2.51",
    },
    vips: [{ spec: { ip: "192.0.2.50", routeid: "7" }, metadata: { name: "office" } }],
    egresses: [
      {
        metadata: { name: "pod1", namespace: "default" },
        spec: { ip: "192.0.2.50", kind: "pod", name: "pod1" },
      },
      {
        metadata: { name: "svc", namespace: "default" },
        spec: { ip: "192.0.2.50", kind: "service", name: "x" },
      },
    ],
    pods: [pod("default", "pod1", "10.244.1.5"), pod("team", "worker", "10.244.1.9")],
  });
  const names = result.objects.map((o) =>
    `${o.kind} ${(o.metadata as { namespace?: string }).namespace ?? ""}/${
      (o.metadata as { name: string }).name
    }`
  );
  assert.deepEqual(names, [
    "EgressVIP /vip-192-0-2-50",
    "EgressVIP /vip-192-0-2-51",
    "EgressVIP /vip-192-0-2-52",
    "EgressPolicy default/pod1",
    "EgressPolicy team/pod-worker",
  ]);
  assert.deepEqual(result.objects[0].spec, { ip: "192.0.2.50", routeId: 5 });
  assert.deepEqual(
    result.objects[2].spec,
    { ip: "192.0.2.52" },
    "an invalid route id is dropped (assigned later)",
  );
  assert.deepEqual(result.objects[4].spec, {
    vip: "vip-192-0-2-51",
    targets: [{ kind: "Pod", name: "worker" }],
  });
  for (const o of result.objects) {
    const schema = o.kind === "EgressVIP" ? EgressVIPSpec : EgressPolicySpec;
    assert.equal(schema.safeParse(o.spec).success, true, JSON.stringify(o));
  }
  const text = result.problems.join("\n");
  assert.match(text, /192.0.2.52 is not 1-252/);
  assert.match(text, /192.0.2.50 has route id 7 here and 5 elsewhere; keeping 5/);
  assert.match(text, /kind service is not one of/);
  assert.match(text, /no pod has 10.244.1.77 now/);
});

Deno.test("migrate: from YAML files, printing objects for kubectl apply", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kube-egress-migrate-" });
  try {
    const file = `${dir}/old.yaml`;
    await Deno.writeTextFile(file, OLD.map((o) => JSON.stringify(o)).join("\n---\n"));
    const r = await cli(["migrate", file]);
    assert.equal(r.code, 0, r.err);
    const objects = parseAllDocuments(r.out).map((d) => d.toJS());
    assert.deepEqual(objects.map((o) => o.kind), ["EgressVIP", "EgressVIP", "EgressPolicy"]);
    assert.match(r.err, /10.244.1.9 → 192.0.2.51 names no pod; run migrate against the API/);
    assert.equal((await cli(["migrate"])).code, 1, "no input is an error");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "migrate: --from-api --apply reads ConfigMaps, old CRDs and pods, creates the objects once",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const api = await startTestApiServer({ token: "t" });
    const dir = await Deno.makeTempDir({ prefix: "kube-egress-migrate-" });
    try {
      for (const o of OLD) {
        api.apply({
          ...o,
          metadata: {
            ...o.metadata,
            // egress-mapper kept its ConfigMaps in default (the --configmap-namespace default).
            namespace: o.kind === "ConfigMap"
              ? "default"
              : (o.metadata as { namespace?: string }).namespace,
          },
        });
      }
      api.apply(podObject("default", "pod1", "10.244.1.5"));
      api.apply(podObject("team", "worker", "10.244.1.9"));
      await Deno.writeTextFile(`${dir}/kubeconfig`, kubeconfigFor(api.url, "t"));
      const args = ["migrate", "--from-api", "--apply", "--kubeconfig", `${dir}/kubeconfig`];
      const first = await cli(args);
      assert.equal(first.code, 0, first.err);
      assert.doesNotMatch(first.err, /warning: no /, "the defaults find egress-mapper's objects");
      assert.match(first.err, /created EgressPolicy team\/pod-worker/);
      assert.equal(
        (api.get("EgressVIP", "vip-192-0-2-51")!.spec as { routeId: number }).routeId,
        6,
      );
      assert.deepEqual(api.get("EgressPolicy", "pod1", "default")!.spec, {
        vip: "vip-192-0-2-50",
        targets: [{ kind: "Pod", name: "pod1" }],
      });
      const again = await cli(args);
      assert.equal(again.code, 0);
      assert.match(again.err, /exists, left alone: EgressVIP vip-192-0-2-50/);
      // A wrong namespace or API group is said, not taken for an empty old stack.
      const elsewhere = await cli([
        "migrate",
        "--from-api",
        "--kubeconfig",
        `${dir}/kubeconfig`,
        "--configmap-namespace",
        "kube-egress",
        "--old-api",
        "egress-mapper.io/v1",
      ]);
      assert.equal(elsewhere.code, 0, elsewhere.err);
      assert.match(
        elsewhere.err,
        /warning: no ConfigMap kube-egress\/vip-routeid-mappings \(another --configmap-namespace\?\)/,
      );
      assert.match(
        elsewhere.err,
        /warning: no vips\.egress-mapper\.io\/v1 in the API \(egress-mapper's CRDs not installed, or another --old-api\?\)/,
      );
    } finally {
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("migrate: IPv6 entries (dashed ConfigMap keys, any spelling) become canonical EgressVIPs; an IPv4 and an IPv6 VIP with one route id become one dual-stack EgressVIP", () => {
  const result = migrate({
    vipRouteIds: {
      "192.0.2.50": "5",
      "2001-db8--50": "5", // the files source's dual-stack VIP: one route id, two families
      "2001:DB8::60": "6", // IPv6-only, written non-canonically
      "2001-db8--": "7",
    },
    podVips: {
      "10.244.1.5": "192.0.2.50",
      "fd00-10-244-1--5": "2001-db8--50", // the same pod's IPv6 address
      "fd00:10:244:1::9": "2001:db8:0::60",
    },
    vips: [],
    egresses: [],
    pods: [
      pod("default", "web", "10.244.1.5", { ipv6: "fd00:10:244:1::5" }),
      pod("team", "v6only", undefined, { ipv6: "fd00:10:244:1::9" }),
    ],
  });
  const byName = Object.fromEntries(
    result.objects.map((o) => [(o.metadata as { name: string }).name, o.spec]),
  );
  assert.deepEqual(Object.keys(byName), [
    "vip-192-0-2-50",
    "vip-2001-db8--0",
    "vip-2001-db8--60",
    "pod-web",
    "pod-v6only",
  ]);
  assert.deepEqual(byName["vip-192-0-2-50"], {
    ip: "192.0.2.50",
    ips: ["192.0.2.50", "2001:db8::50"],
    routeId: 5,
  });
  assert.deepEqual(byName["vip-2001-db8--60"], { ip: "2001:db8::60", routeId: 6 });
  assert.deepEqual(byName["vip-2001-db8--0"], { ip: "2001:db8::", routeId: 7 });
  // One policy serves both families of the dual-stack pod.
  assert.deepEqual(byName["pod-web"], {
    vip: "vip-192-0-2-50",
    targets: [{ kind: "Pod", name: "web" }],
  });
  assert.deepEqual(byName["pod-v6only"], {
    vip: "vip-2001-db8--60",
    targets: [{ kind: "Pod", name: "v6only" }],
  });
  assert.deepEqual(result.problems, []);
  for (const o of result.objects) {
    const schema = o.kind === "EgressVIP" ? EgressVIPSpec : EgressPolicySpec;
    assert.equal(schema.safeParse(o.spec).success, true, JSON.stringify(o));
    assert.match((o.metadata as { name: string }).name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  }
});
