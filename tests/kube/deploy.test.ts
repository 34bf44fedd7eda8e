/**
 * deploy/ and the Dockerfile against the code: RBAC grants exactly what the
 * agent uses, the DaemonSet runs the agent as the README says (no privileged,
 * probes on the health endpoints, flags the CLI knows), the examples parse with
 * the same schemas as the agent, and the image's files and entrypoint work.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import $ from "dax";
import { relative } from "node:path";
import { buildProgram } from "../../cmd/program.ts";
import { EgressPolicySpec, EgressVIPSpec } from "../../core/kube/api.ts";
import { AGENT_PERMISSIONS, CONTROLLER_PERMISSIONS } from "../../core/kube/resources.ts";
import { FakeKernel } from "../fake_kernel.ts";
import { procSysRoot } from "../../cmd/system.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
// deno-lint-ignore no-explicit-any
type Doc = any;

async function docs(path: string): Promise<Doc[]> {
  return parseAllDocuments(await Deno.readTextFile(ROOT + path)).map((d) => d.toJS()).filter(
    Boolean,
  );
}

/** "group/resource verb" triples. */
function triples(rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[]): string[] {
  return rules.flatMap((r) =>
    r.apiGroups.flatMap((g) =>
      r.resources.flatMap((res) => r.verbs.map((v) => `${g || "core"}/${res} ${v}`))
    )
  ).sort();
}

Deno.test("deploy: RBAC grants the agents and the controller exactly the verbs and resources their clients may use", async () => {
  const rbac = await docs("deploy/rbac.yaml");
  const table = (permissions: typeof AGENT_PERMISSIONS) =>
    permissions.flatMap((p) =>
      p.verbs.map((v) => `${p.resource.group || "core"}/${p.resource.plural} ${v}`)
    ).sort();
  // What each service account is bound to, through its (Cluster)RoleBindings.
  const grantedTo = (account: string) => {
    const roles = rbac.filter((d) =>
      d.kind.endsWith("Binding") &&
      d.subjects.some((s: Doc) => s.kind === "ServiceAccount" && s.name === account)
    ).map((b) => `${b.roleRef.kind}/${b.roleRef.name}`);
    return triples(
      rbac.filter((d) => roles.includes(`${d.kind}/${d.metadata.name}`)).flatMap((d) => d.rules),
    );
  };
  assert.deepEqual(grantedTo("kube-egress"), table(AGENT_PERMISSIONS));
  assert.deepEqual(grantedTo("kube-egress-controller"), table(CONTROLLER_PERMISSIONS));
  // The agents never read Pods, Namespaces or ReplicaSets.
  assert.ok(!grantedTo("kube-egress").some((t) => /\/(pods|namespaces|replicasets) /.test(t)));
  // Leases only in the controller's own namespace.
  const role = rbac.find((d) => d.kind === "Role");
  assert.equal(role.metadata.namespace, "kube-egress");
  assert.deepEqual(triples(role.rules), [
    "coordination.k8s.io/leases create",
    "coordination.k8s.io/leases get",
    "coordination.k8s.io/leases update",
    "coordination.k8s.io/leases watch",
  ]);
});

Deno.test("deploy: the controller Deployment runs `controller` with two replicas, its own account, no capabilities", async () => {
  const [d] = await docs("deploy/controller.yaml");
  assert.equal(d.kind, "Deployment");
  assert.equal(d.spec.replicas, 2);
  const pod = d.spec.template.spec;
  assert.equal(pod.serviceAccountName, "kube-egress-controller");
  assert.equal(pod.hostNetwork, undefined);
  const [c] = pod.containers;
  assert.equal(c.args[0], "controller");
  assert.deepEqual(c.securityContext.capabilities, { drop: ["ALL"] });
  assert.equal(
    c.env.find((e: Doc) => e.name === "POD_NAME").valueFrom.fieldRef.fieldPath,
    "metadata.name",
  );
  const program = buildProgram(new FakeKernel().host(), () => {});
  const command = program.commands.find((cmd) => cmd.name() === "controller")!;
  const known = new Set(command.options.map((o) => o.long));
  for (const arg of c.args.slice(1)) assert.ok(known.has(arg.split("=")[0]), `unknown flag ${arg}`);
});

Deno.test("deploy: the DaemonSet runs unprivileged on the host network with probes, limits and known flags", async () => {
  const [ds] = await docs("deploy/daemonset.yaml");
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.serviceAccountName, "kube-egress");
  const [c] = pod.containers;
  assert.equal(c.securityContext.privileged, false);
  assert.deepEqual(c.securityContext.capabilities, {
    drop: ["ALL"],
    add: ["NET_ADMIN", "NET_RAW"],
  });
  const mounts = Object.fromEntries(c.volumeMounts.map((m: Doc) => [m.name, m.mountPath]));
  assert.equal(mounts["xtables-lock"], "/run/xtables.lock");
  const volumes = Object.fromEntries(pod.volumes.map((v: Doc) => [v.name, v]));
  assert.equal(volumes["xtables-lock"].hostPath.path, "/run/xtables.lock");
  assert.equal(c.livenessProbe.httpGet.path, "/healthz");
  assert.equal(c.readinessProbe.httpGet.path, "/readyz");
  const metricsArg = c.args.find((a: string) => a.startsWith("--metrics-addr="));
  const port = Number(metricsArg.split(":").at(-1));
  assert.deepEqual(c.ports, [{ name: "metrics", containerPort: port, protocol: "TCP" }]);
  assert.equal(c.livenessProbe.httpGet.port, "metrics");
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
  const procSys = c.env.find((e: Doc) => e.name === "KUBE_EGRESS_PROC_SYS").value;
  assert.equal(mounts["proc-sys-net"], `${procSys}/net`);
  assert.equal(
    c.env.find((e: Doc) => e.name === "NODE_NAME").valueFrom.fieldRef.fieldPath,
    "spec.nodeName",
  );
  // Every flag is one `run` knows; the settings validate.
  const program = buildProgram(new FakeKernel().host(), () => {});
  const run = program.commands.find((cmd) => cmd.name() === "run")!;
  const known = new Set(run.options.map((o) => o.long));
  assert.equal(c.args[0], "run");
  for (const arg of c.args.slice(1)) assert.ok(known.has(arg.split("=")[0]), `unknown flag ${arg}`);
  assert.ok(c.args.includes("--source=kubernetes"));
});

Deno.test("deploy: kustomization lists files that exist; kubectl kustomize builds it when kubectl is there", async () => {
  const [k] = await docs("deploy/kustomization.yaml");
  for (const r of k.resources) await Deno.stat(ROOT + "deploy/" + r);
  if (await $.commandExists("kubectl")) {
    const out = await $`kubectl kustomize ${ROOT + "deploy"}`.text();
    const kinds = parseAllDocuments(out).map((d) => d.toJS().kind).sort();
    assert.deepEqual(kinds, [
      "ClusterRole",
      "ClusterRole",
      "ClusterRoleBinding",
      "ClusterRoleBinding",
      "CustomResourceDefinition",
      "CustomResourceDefinition",
      "CustomResourceDefinition",
      "DaemonSet",
      "Deployment",
      "Namespace",
      "ResourceQuota",
      "Role",
      "RoleBinding",
      "ServiceAccount",
      "ServiceAccount",
    ]);
  }
});

Deno.test("deploy: the examples follow the old README flow and parse with the agent's schemas", async () => {
  const [vip] = await docs("deploy/examples/vip.yaml");
  const [policy] = await docs("deploy/examples/policy-pod1.yaml");
  const [pod] = await docs("deploy/examples/pod1.yaml");
  assert.equal(EgressVIPSpec.safeParse(vip.spec).success, true);
  assert.equal(EgressPolicySpec.safeParse(policy.spec).success, true);
  assert.equal(policy.spec.vip, vip.metadata.name);
  assert.deepEqual(policy.spec.targets, [{ kind: "Pod", name: pod.metadata.name }]);
  assert.equal(policy.metadata.namespace, pod.metadata.namespace);
});

Deno.test("Dockerfile: every COPY source exists, the image holds the whole module graph, the entrypoint runs", async () => {
  const text = await Deno.readTextFile(ROOT + "Dockerfile");
  // Sources from the build context (a `COPY --from=<stage>` takes its file from a base image).
  const copies = [...text.matchAll(/^COPY\s+(?!--from=)(.+)$/gm)].map((m) =>
    m[1].split(/\s+/).slice(0, -1)
  ).flat();
  assert.ok(copies.length > 0);
  for (const source of copies) await Deno.stat(ROOT + source);
  // Every local module the program loads is inside a copied path.
  const info = JSON.parse(await $`deno info --json ${ROOT + "mod.ts"}`.cwd(ROOT).text());
  const local = info.modules.map((m: { specifier: string }) => m.specifier)
    .filter((s: string) => s.startsWith("file://")).map((s: string) =>
      s.slice(`file://${ROOT}`.length)
    );
  for (const file of local) {
    assert.ok(
      copies.some((c) => (c.endsWith("/") ? file.startsWith(c) : file === c)),
      `${file} is not copied`,
    );
  }
  const entrypoint = JSON.parse(/^ENTRYPOINT\s+(\[.*\])$/m.exec(text)![1]) as string[];
  // tini as PID 1 runs the agent: `tini -- deno ...`.
  assert.deepEqual(entrypoint.slice(0, 2), ["tini", "--"]);
  const [cmd, ...args] = entrypoint.slice(2);
  assert.equal(cmd, "deno");
  // The image's WORKDIR is this checkout here.
  const workdir = /^WORKDIR\s+(\S+)$/m.exec(text)![1].replace(/\/?$/, "/");
  const hostArgs = args.map((a) => (a.startsWith(workdir) ? ROOT + a.slice(workdir.length) : a));
  const help = await new Deno.Command(Deno.execPath(), { args: [...hostArgs, "--help"], cwd: ROOT })
    .output();
  assert.equal(help.code, 0, new TextDecoder().decode(help.stderr));
  assert.match(new TextDecoder().decode(help.stdout), /Usage: kube-egress/);
  const cmdArgs = JSON.parse(/^CMD\s+(\[.*\])$/m.exec(text)![1]) as string[];
  assert.deepEqual(cmdArgs, ["run", "--source=kubernetes"]);
});

Deno.test("deploy: sysctls are found under KUBE_EGRESS_PROC_SYS (the DaemonSet's host /proc/sys/net mount)", () => {
  assert.equal(procSysRoot(() => undefined), "/proc/sys");
  assert.equal(procSysRoot(() => "/host/proc/sys/"), "/host/proc/sys");
});

Deno.test("deploy: the image works side-loaded and from a registry (fixed tag, IfNotPresent), as kustomize names it", async () => {
  const [ds] = await docs("deploy/daemonset.yaml");
  const [k] = await docs("deploy/kustomization.yaml");
  const [c] = ds.spec.template.spec.containers;
  const [name, tag] = c.image.split(":");
  assert.ok(tag && tag !== "latest", `a fixed tag, not ${c.image}`);
  // No policy with a fixed tag is IfNotPresent too, but say it: a side-loaded image is never pulled.
  assert.equal(c.imagePullPolicy, "IfNotPresent");
  const image = k.images.find((i: Doc) => i.name === name);
  assert.equal(image.newTag, tag, "kustomization and DaemonSet name the same tag");
  if (await $.commandExists("kubectl")) {
    const dir = await Deno.makeTempDir();
    try {
      // The README's override: a registry of one's own.
      await Deno.writeTextFile(
        `${dir}/kustomization.yaml`,
        `resources: [${
          relative(dir, `${ROOT}deploy`)
        }]\nimages:\n  - name: kube-egress\n    newName: registry.example.com/kube-egress\n    newTag: 0.2.0\n`,
      );
      const out = await $`kubectl kustomize ${dir}`.text();
      const built = parseAllDocuments(out).map((d) => d.toJS()).find((d) => d.kind === "DaemonSet");
      assert.equal(
        built.spec.template.spec.containers[0].image,
        "registry.example.com/kube-egress:0.2.0",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("deploy: on SELinux-enforcing nodes the agent may write its hostPath mounts (spc_t)", async () => {
  const [ds] = await docs("deploy/daemonset.yaml");
  const [c] = ds.spec.template.spec.containers;
  assert.deepEqual(c.securityContext.seLinuxOptions, { type: "spc_t" });
  assert.equal(c.securityContext.privileged, false);
});

Deno.test("deploy: system-node-critical outside kube-system comes with the ResourceQuota GKE requires", async () => {
  const [ds] = await docs("deploy/daemonset.yaml");
  const [k] = await docs("deploy/kustomization.yaml");
  const pod = ds.spec.template.spec;
  assert.equal(pod.priorityClassName, "system-node-critical");
  const quota = (await Promise.all(k.resources.map((r: string) => docs(`deploy/${r}`)))).flat()
    .find((d: Doc) => d.kind === "ResourceQuota");
  assert.ok(quota, "a ResourceQuota in the kustomization");
  assert.equal(quota.metadata.namespace, ds.metadata.namespace);
  assert.deepEqual(quota.spec.scopeSelector.matchExpressions, [{
    scopeName: "PriorityClass",
    operator: "In",
    values: [pod.priorityClassName],
  }]);
  assert.ok(quota.spec.hard.pods);
});
