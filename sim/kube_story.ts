/**
 * `deno task sim --source kubernetes`: the Kubernetes story, told with the
 * test API server and real kubectl. The server runs on 127.0.0.1 in the root
 * namespace, where kubectl reaches it as it is; the agents in the node
 * namespaces reach it at 192.0.2.5:6443 on the simulated LAN, through a TLS
 * relay (socat) in the run's `api` namespace that forwards to the server's Unix
 * socket: no network link to the root namespace, only the API's bytes.
 *
 * kubectl installs deploy/, applies a VIP and two policies, and shows what an
 * operator would see (`kubectl get evip,epol`: holder, route id, pods,
 * Ready); the pods leave as their VIP; a policy in a namespace the VIP does not
 * admit is refused with its condition; deleting the VIP while in use waits for
 * its policies; deleting everything returns every node to its baseline.
 */
import $ from "dax";
import { join } from "node:path";
import type { Cluster, SimPod } from "./cluster.ts";
import { agentCommand, type AgentProcess, modArgv, startAgent, watchAgent } from "./agents.ts";
import { checkPods, checksLegend, type PodCheck, renderChecks } from "./check.ts";
import { kubeconfigYaml, type LocalApi, startLocalApi } from "./kube_api_local.ts";
import { API_IP, API_PORT, nodeObject, podObject } from "./kube_sim.ts";
import { compareWithBaseline } from "./story.ts";

const ROOT = new URL("..", import.meta.url).pathname;
export const STORY_VIP = "192.0.2.50";

export interface KubeStoryResult {
  readonly ok: boolean;
  readonly checks: readonly { title: string; checks: readonly PodCheck[] }[];
  readonly steps: readonly { what: string; ok: boolean }[];
  readonly baseline: readonly { node: string; equal: boolean }[];
}

const mark = (ok: boolean) => (ok ? "✓" : "✗");

/** The API server for the run: root-namespace loopback for kubectl, a LAN relay for the agents. */
export async function startBridgedApi(
  cluster: Cluster,
): Promise<{ api: LocalApi; agentKubeconfig: string }> {
  const dir = join(cluster.workDir, "api");
  const socketPath = join(cluster.workDir, "api.sock");
  const api = await startLocalApi({
    installCrds: false,
    socketPath,
    dir,
    extraSans: [`IP:${API_IP}`],
  });
  const ns = await cluster.addLanHost("api", API_IP);
  // TLS ends at the relay with the API server's own certificate (it names 192.0.2.5 too).
  const pem = join(dir, "relay.pem");
  await Deno.writeTextFile(
    pem,
    (await Deno.readTextFile(join(dir, "tls", "server.crt"))) +
      (await Deno.readTextFile(join(dir, "tls", "server.key"))),
    { mode: 0o600 },
  );
  new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns.name,
      "socat",
      `OPENSSL-LISTEN:${API_PORT},bind=${API_IP},reuseaddr,fork,verify=0,cert=${pem}`,
      `UNIX-CONNECT:${socketPath}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const agentKubeconfig = join(dir, "agent-kubeconfig");
  await Deno.writeTextFile(
    agentKubeconfig,
    kubeconfigYaml(`https://${API_IP}:${API_PORT}`, api.ca, api.token, "kube-egress"),
    { mode: 0o600 },
  );
  return { api, agentKubeconfig };
}

/** The sim's versions of deploy/examples: a VIP on the LAN, a policy it admits and one it does not. */
function storyExamples(): Record<string, string> {
  return {
    "1-vip.yaml": `apiVersion: egress.kube-egress.io/v1alpha1
kind: EgressVIP
metadata:
  name: office
spec:
  ip: ${STORY_VIP}
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: default}
`,
    "2-policy-web.yaml": `apiVersion: egress.kube-egress.io/v1alpha1
kind: EgressPolicy
metadata:
  name: web
  namespace: default
spec:
  vip: office
  podSelector:
    matchLabels: {app: web}
`,
    "3-policy-batch.yaml": `apiVersion: egress.kube-egress.io/v1alpha1
kind: EgressPolicy
metadata:
  name: batch
  namespace: batch
spec:
  vip: office
  podSelector: {}
`,
  };
}

export async function runKubeStory(
  cluster: Cluster,
  options: { say?: (line: string) => void } = {},
): Promise<KubeStoryResult> {
  const say = options.say ?? (() => {});
  const steps: { what: string; ok: boolean }[] = [];
  const checks: { title: string; checks: readonly PodCheck[] }[] = [];
  const step = (what: string, ok: boolean) => {
    steps.push({ what, ok });
    say(`${mark(ok)} ${what}`);
  };
  const { api, agentKubeconfig } = await startBridgedApi(cluster);
  const kubectl = async (...args: string[]) => {
    say(`$ kubectl ${args.join(" ")}`);
    const r = await $`kubectl ${args}`.env({ KUBECONFIG: api.kubeconfigPath }).cwd(ROOT)
      .stdout("piped").stderr("piped").noThrow().timeout(60_000);
    const out = (r.stdout + r.stderr).trimEnd();
    if (out) say(out.split("\n").map((l) => `  ${l}`).join("\n"));
    return { code: r.code, out: r.stdout.trim(), err: r.stderr.trim() };
  };
  const jsonpath = async (what: string[], path: string) =>
    (await $`kubectl get ${what} -o ${`jsonpath=${path}`}`.env({ KUBECONFIG: api.kubeconfigPath })
      .stdout("piped").stderr("piped").noThrow().timeout(30_000)).stdout.trim();
  const until = async (read: () => Promise<string>, ok: (v: string) => boolean, ms = 60_000) => {
    const deadline = Date.now() + ms;
    let value = await read();
    while (!ok(value) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      value = await read();
    }
    return value;
  };
  const check = async (title: string, expected: Map<SimPod, string>) => {
    const result = await checkPods(cluster, expected);
    checks.push({ title, checks: result });
    say(`\n${title}`);
    say(checksLegend(cluster));
    say(renderChecks(result));
  };
  const agents: AgentProcess[] = [];
  const flags = [
    "--source",
    "kubernetes",
    "--kubeconfig",
    agentKubeconfig,
    "--lease-namespace",
    "kube-egress",
    "--vip-mode",
    "keepalived",
  ];
  const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  // Pod k=1 of every node: app=web in "default"; the others run in "batch".
  const web = cluster.nodes.map((n) => cluster.pod(n.index, 1));
  const batch = cluster.pods.filter((p) => !web.includes(p));
  try {
    say("\ninstalling kube-egress as on a real cluster:");
    step("kubectl apply -k deploy/", (await kubectl("apply", "-k", "deploy/")).code === 0);
    // What the kubelets and the namespace controller would write.
    for (const node of cluster.nodes) api.server.apply(nodeObject(node));
    for (const name of ["default", "batch"]) {
      api.server.apply({
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name, labels: { "kubernetes.io/metadata.name": name } },
      });
    }
    for (const pod of web) {
      api.server.apply(podObject(pod, `web-${pod.node.index}`, { labels: { app: "web" } }));
    }
    for (const pod of batch) {
      api.server.apply(
        podObject(pod, `batch-${pod.name}`, { namespace: "batch", labels: { app: "batch" } }),
      );
    }
    say("\nstarting the controller (mod.ts controller, as deploy/controller.yaml runs it)");
    const child = new Deno.Command(modArgv("controller", [])[0], {
      args: modArgv("controller", [
        "--kubeconfig",
        api.kubeconfigPath,
        "--lease-namespace",
        "kube-egress",
        "--identity",
        "kube-egress-controller-0",
      ]).slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    agents.push(watchAgent(cluster.node(1), child, (signal) => child.kill(signal)));
    await agents[0].waitFor(/elected/, 60_000);
    say(`\nstarting the agent (mod.ts run ${flags.join(" ")}) in every node namespace`);
    for (const node of cluster.nodes) agents.push(startAgent(cluster, node, flags, 300));
    await Promise.all(agents.slice(1).map((a) => a.waitFor(/agent running/, 60_000)));

    const examples = join(cluster.workDir, "examples");
    await Deno.mkdir(examples, { recursive: true });
    for (const [file, text] of Object.entries(storyExamples())) {
      await Deno.writeTextFile(join(examples, file), text);
    }
    step(
      "kubectl apply -f examples/ (a VIP, a policy for app=web, a policy in namespace batch)",
      (await kubectl("apply", "-f", examples)).code === 0,
    );
    const holder = await until(
      () =>
        jsonpath(
          ["evip", "office"],
          '{.status.holder} {.status.conditions[?(@.type=="Ready")].status} {.status.pods}',
        ),
      (v) => new RegExp(`^node\\d+ True ${web.length}$`).test(v),
    );
    step(
      `the VIP is held, Ready and used by ${web.length} pods: ${holder}`,
      /^node\d+ True/.test(holder),
    );
    await kubectl("get", "evip,epol", "-A");
    await check(
      "every pod, as seen from outside (web pods as the VIP, batch pods as their node):",
      new Map([
        ...web.map((p) => [p, STORY_VIP] as const),
        ...batch.map((p) => [p, p.node.ip] as const),
      ]),
    );
    const refused = await until(
      () =>
        jsonpath(
          ["epol", "batch", "-n", "batch"],
          '{.status.conditions[?(@.type=="Ready")].reason}',
        ),
      (v) => v === "NotAllowed",
    );
    await kubectl(
      "get",
      "epol",
      "batch",
      "-n",
      "batch",
      "-o",
      'jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\\n"}{end}',
    );
    step(
      "the policy in namespace batch is refused: the VIP does not admit it (NotAllowed)",
      refused === "NotAllowed",
    );

    say("\ndeleting the VIP while a policy uses it:");
    await kubectl("delete", "evip", "office", "--wait=false");
    const blocked = await until(
      () => jsonpath(["evip", "office"], '{.status.conditions[?(@.type=="InUse")].reason}'),
      (v) => v === "DeletionBlocked",
    );
    step(
      "its deletion waits for the policy (InUse: DeletionBlocked), the pods still leave as the VIP",
      blocked === "DeletionBlocked",
    );
    await check(
      "while the VIP's deletion waits:",
      new Map(web.slice(0, 1).map((p) => [p, STORY_VIP] as const)),
    );
    await kubectl("describe", "evip", "office");
    say("\ndeleting the policies: the VIP goes, the pods leave as their nodes");
    await kubectl("delete", "epol", "--all", "-A");
    step(
      "the VIP is gone once unused",
      (await kubectl("wait", "--for=delete", "evip/office", "--timeout=30s")).code === 0,
    );
    await check(
      "every pod leaves as its node:",
      new Map(cluster.pods.map((p) => [p, p.node.ip] as const)),
    );
    await kubectl("get", "events", "-A");
  } finally {
    say(
      "\nstopping the controller and the agents (SIGTERM: rules stay) and running delete on every node",
    );
    for (const agent of agents) await agent.stop("SIGTERM");
  }
  const deleted = await Promise.all(
    cluster.nodes.map((n) => agentCommand(cluster, n, "delete", flags)),
  );
  step("mod.ts delete on every node", deleted.every((r) => r.code === 0));
  const uninstall =
    await $`${Deno.execPath()} run -A --cached-only ${ROOT}mod.ts uninstall --kubeconfig ${api.kubeconfigPath}`
      .stdout("piped").stderr("piped").noThrow();
  say(
    `$ mod.ts uninstall\n${
      (uninstall.stdout + uninstall.stderr).trimEnd().split("\n").map((l) => `  ${l}`).join("\n")
    }`,
  );
  step(
    "kube-egress uninstall, then kubectl delete -k deploy/ completes",
    uninstall.code === 0 && (await kubectl("delete", "-k", "deploy/", "--timeout=30s")).code === 0,
  );
  const { result: baselineResult, diff: baselineDiff } = await compareWithBaseline(
    cluster,
    baseline,
  );
  say(
    "rulesets (iptables-save, ip rule, every routing table, ipsets, rp_filter) equal the baseline: " +
      baselineResult.map((b) => `${b.node} ${mark(b.equal)}`).join("  "),
  );
  for (const line of baselineDiff) say(`  ${line}`);
  await api.stop();
  const ok = steps.every((s) => s.ok) && checks.every((c) => c.checks.every((x) => x.ok)) &&
    baselineResult.every((b) => b.equal);
  return { ok, checks, steps, baseline: baselineResult };
}
