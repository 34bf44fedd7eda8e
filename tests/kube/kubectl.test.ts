/**
 * Real kubectl (a client none of us wrote) against the test API server, with
 * our elected agent's controller writing statuses and Events: install with
 * `apply -k`, the examples, `get` through server-side Table printing, `-o yaml`,
 * `describe` with Events, `annotate`, `label`, merge/JSON patches (and the
 * refusal of a strategic one for a custom resource), client- and server-side
 * validation (`--validate=strict`, the CEL rules' messages), `wait
 * --for=condition=Ready`, `get events`, `delete`. Then the oldest kubectl at
 * hand (1.27 reads OpenAPI v2) and the newest do the same install.
 */
import assert from "node:assert/strict";
import $ from "dax";
import { KubeClient } from "../../cmd/kube/client.ts";
import { Controller } from "../../cmd/kube/controller.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { type LocalApi, startLocalApi } from "../../sim/kube_api_local.ts";
import { eventually } from "./fixtures.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const KUBECTL_DIR = "/usr/lib/google-cloud-sdk/bin";
const hasKubectl = await $.commandExists("kubectl");
if (!hasKubectl) console.log("kubectl is not installed: the kubectl tests are skipped");
const opts = { ignore: !hasKubectl, sanitizeOps: false, sanitizeResources: false };

function kubectl(api: LocalApi, binary = "kubectl") {
  return async (...args: string[]) => {
    const r = await $`${binary} ${args}`.env({ KUBECONFIG: api.kubeconfigPath }).cwd(ROOT)
      .stdout("piped").stderr("piped").noThrow();
    return { code: r.code, out: r.stdout, err: r.stderr };
  };
}

Deno.test({
  name:
    "kubectl: install, examples, get/describe/yaml, annotate/label/patch, validation, wait, events, delete",
  ...opts,
  fn: async () => {
    const api = await startLocalApi({ installCrds: false, bookmarkMs: 200 });
    const k = kubectl(api);
    const client = await KubeClient.fromEnvironment({ kubeconfig: api.kubeconfigPath });
    const log = createLogger("text", () => {});
    let source: KubeSource | undefined;
    try {
      const install = await k("apply", "-k", "deploy/");
      assert.equal(install.code, 0, install.err);
      for (
        const kind of [
          "namespace",
          "customresourcedefinition",
          "clusterrole",
          "daemonset",
          "resourcequota",
        ]
      ) {
        assert.match(install.out, new RegExp(`^${kind}[./].* created$`, "m"), install.out);
      }
      assert.equal((await k("apply", "-k", "deploy/")).code, 0, "a second apply patches");
      const examples = await k("apply", "-f", "deploy/examples/");
      assert.equal(examples.code, 0, examples.err);
      // Our elected agent's writes (in process): route ids, statuses, finalizers, Events.
      source = new KubeSource(client, log, { syncTimeoutMs: 5000 }).start();
      await source.waitForSync();
      const controller = new Controller(client, source, log, "node1");
      controller.setActive(true);
      const wait = await k("wait", "--for=condition=Ready", "evip/office-nat", "--timeout=20s");
      assert.equal(wait.code, 0, wait.err);
      const get = await k("get", "evip,epol", "-A");
      assert.equal(get.code, 0, get.err);
      assert.match(get.out, /NAME\s+IP\s+OTHER-IP\s+ROUTE\s+HOLDER\s+PODS\s+READY\s+AGE/);
      assert.match(
        get.out,
        /egressvip\.egress\.kube-egress\.io\/office-nat\s+192\.168\.1\.100\s+1\s+0\s+True\s+\d+s/,
      );
      assert.match(get.out, /NAMESPACE\s+NAME\s+VIP\s+IP\s+PODS\s+READY\s+AGE/);
      const yaml = await k("get", "evip", "office-nat", "-o", "yaml");
      assert.match(yaml.out, /finalizers:\n\s+- egress\.kube-egress\.io\/in-use/);
      assert.match(yaml.out, /kubectl\.kubernetes\.io\/last-applied-configuration/);
      await eventually(
        async () => /RouteIdAssigned/.test((await k("describe", "evip", "office-nat")).out),
        "Events in describe",
      );
      const events = await k("get", "events", "-A");
      assert.match(
        events.out,
        /Normal\s+RouteIdAssigned\s+egressvip\/office-nat\s+route id 1 assigned/,
      );
      // annotate, label and patches keep the agent's finalizer (and each other).
      assert.equal((await k("annotate", "evip", "office-nat", "owner=network-team")).code, 0);
      assert.equal((await k("label", "epol", "pod1", "-n", "default", "tier=web")).code, 0);
      assert.equal(
        (await k("patch", "evip", "office-nat", "--type=merge", "-p", '{"spec":{"routeId":7}}'))
          .code,
        0,
      );
      const json = await k(
        "patch",
        "evip",
        "office-nat",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/routeId","value":8}]',
      );
      assert.equal(json.code, 0, json.err);
      const smp = await k("patch", "evip", "office-nat", "-p", '{"spec":{"routeId":9}}');
      assert.notEqual(smp.code, 0);
      assert.match(smp.err, /strategic-merge-patch\+json is not supported/);
      const patched = await k(
        "get",
        "evip",
        "office-nat",
        "-o",
        "jsonpath={.spec.routeId} {.metadata.annotations.owner} {.metadata.finalizers}",
      );
      assert.equal(patched.out, '8 network-team ["egress.kube-egress.io/in-use"]');
      // Validation: strict refuses unknown fields; the CEL rules speak as the agents do.
      const bad = `${api.dir}/bad.yaml`;
      await Deno.writeTextFile(
        bad,
        "apiVersion: egress.kube-egress.io/v1alpha1\nkind: EgressPolicy\nmetadata: {name: bad, namespace: default}\n" +
          "spec: {vip: office-nat, colour: blue, destinationCIDRs: [10.0.0.1/8]}\n",
      );
      const strict = await k("apply", "--validate=strict", "-f", bad);
      assert.notEqual(strict.code, 0);
      assert.match(strict.err, /unknown field "spec.colour"/);
      const cel = await k("apply", "--validate=false", "-f", bad);
      assert.notEqual(cel.code, 0);
      assert.match(cel.err, /needs a podSelector or at least one target/);
      assert.match(
        cel.err,
        /spec\.destinationCIDRs\[0\]: Invalid value: "10\.0\.0\.1\/8": has host bits set/,
      );
      // Delete: a VIP in use waits for its policy.
      const del = await k("delete", "evip", "office-nat", "--wait=false");
      assert.equal(del.code, 0, del.err);
      await eventually(
        async () =>
          /DeletionBlocked/.test((await k("get", "evip", "office-nat", "-o", "yaml")).out),
        "DeletionBlocked",
      );
      const rest = await k(
        "delete",
        "-f",
        "deploy/examples/",
        "--ignore-not-found",
        "--timeout=20s",
      );
      assert.equal(rest.code, 0, rest.err);
      const none = await k("get", "evip,epol", "-A");
      assert.match(none.err + none.out, /No resources found/);
      await controller.stop();
    } finally {
      await source?.stop();
      client.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "kubectl: the oldest (OpenAPI v2) and the newest kubectl at hand install deploy/, validate strictly and list our kinds",
  ...opts,
  fn: async () => {
    const versions = [...Deno.readDirSync(KUBECTL_DIR)].map((e) => e.name)
      .filter((n) => /^kubectl\.1\.\d+$/.test(n))
      .sort((a, b) => Number(a.split(".")[2]) - Number(b.split(".")[2]));
    if (versions.length === 0) return;
    for (const binary of new Set([versions[0], versions.at(-1)!])) {
      const api = await startLocalApi({ installCrds: false });
      try {
        const k = kubectl(api, `${KUBECTL_DIR}/${binary}`);
        const install = await k("apply", "-k", "deploy/");
        assert.equal(install.code, 0, `${binary}: ${install.err}`);
        const examples = await k("apply", "-f", "deploy/examples/");
        assert.equal(examples.code, 0, `${binary}: ${examples.err}`);
        // Every version asks the server to validate strictly (OpenAPI v2 or v3 says it can).
        const bad = `${api.dir}/bad.yaml`;
        await Deno.writeTextFile(
          bad,
          "apiVersion: egress.kube-egress.io/v1alpha1\nkind: EgressPolicy\nmetadata: {name: bad, namespace: default}\n" +
            "spec: {vip: office-nat, podSelector: {}, colour: blue}\n",
        );
        const strict = await k("apply", "-f", bad);
        assert.match(strict.err, /unknown field "spec.colour"/, `${binary}: ${strict.err}`);
        const get = await k("get", "evip,epol", "-A");
        assert.match(get.out, /office-nat\s+192\.168\.1\.100/, `${binary}: ${get.out}${get.err}`);
      } finally {
        await api.stop();
      }
    }
  },
});

Deno.test({
  name:
    "kubectl: an IPv6 and a dual-stack EgressVIP apply and list with both families; wrong ones are refused in the agents' words",
  ...opts,
  fn: async () => {
    const api = await startLocalApi({ installCrds: false });
    try {
      const k = kubectl(api);
      assert.equal((await k("apply", "-f", "deploy/crds.yaml")).code, 0);
      const file = `${api.dir}/vips.yaml`;
      const vip = (name: string, spec: string) =>
        `---\napiVersion: egress.kube-egress.io/v1alpha1\nkind: EgressVIP\nmetadata: {name: ${name}}\nspec: ${spec}\n`;
      await Deno.writeTextFile(
        file,
        vip("v4", "{ip: 192.0.2.10, routeId: 1}") +
          vip("v6", "{ip: '2001:db8::10', routeId: 2}") +
          vip("dual", "{ip: 192.0.2.20, ips: [192.0.2.20, '2001:db8::20'], routeId: 3}"),
      );
      const applied = await k("apply", "--validate=strict", "-f", file);
      assert.equal(applied.code, 0, applied.err);
      const get = await k("get", "evip");
      assert.match(get.out, /^NAME\s+IP\s+OTHER-IP\s+ROUTE\s+HOLDER\s+PODS\s+READY\s+AGE$/m);
      // The server prints a column it has no value for empty (route ids: no controller here).
      assert.match(get.out, /^dual\s+192\.0\.2\.20\s+2001:db8::20\s+\d+s$/m, get.out);
      assert.match(get.out, /^v4\s+192\.0\.2\.10\s+\d+s$/m, get.out);
      assert.match(get.out, /^v6\s+2001:db8::10\s+\d+s$/m, get.out);
      const cases: [string, RegExp][] = [
        [
          "{ip: '2001:DB8::30'}",
          /spec\.ip: Invalid value: "2001:DB8::30": must be written canonically/,
        ],
        ["{ip: '2001:db8:0::30'}", /must be written canonically/],
        [
          "{ip: '192.0.2.300'}",
          /spec\.ip: Invalid value: "192\.0\.2\.300": must be an IPv4 or IPv6/,
        ],
        [
          "{ip: 192.0.2.30, ips: [192.0.2.30, 192.0.2.31]}",
          /spec\.ips: Invalid value: .*must hold at most one address of each family/,
        ],
        [
          "{ip: 192.0.2.30, ips: ['2001:db8::30', 192.0.2.30]}",
          /spec\.ips: Invalid value: .*must start with spec\.ip/,
        ],
        ["{ip: 192.0.2.30, ips: [192.0.2.30, '2001:db8::1', '2001:db8::2']}", /spec\.ips/],
      ];
      for (const [spec, message] of cases) {
        const bad = `${api.dir}/bad.yaml`;
        await Deno.writeTextFile(bad, vip("bad", spec));
        const r = await k("apply", "-f", bad);
        assert.notEqual(r.code, 0, spec);
        assert.match(r.err, message, `${spec}: ${r.err}`);
      }
    } finally {
      await api.stop();
    }
  },
});
