/**
 * sim/daemonset.ts and the pure parts of the image tooling: the DaemonSet
 * read into what `docker run` gets, the agent's flags merged over the
 * DaemonSet's, the agent's JSON logs as text, and the Dockerfile's pins.
 */
import assert from "node:assert/strict";
import {
  bytesOf,
  mergeAgentArgs,
  milliCpuOf,
  parseDaemonSet,
  readDaemonSet,
  resolveEnv,
  securityFlags,
} from "../sim/daemonset.ts";
import { agentFlagDefs, jsonLogToText } from "../sim/image_agents.ts";
import {
  debianSuite,
  dockerfileArgs,
  missingPins,
  parseAptPolicy,
  toolPins,
} from "../image/build.ts";
import { formatLine } from "../cmd/log.ts";
import { NODE_TOOLS, packagesOf } from "../cmd/tools.ts";

const DAEMONSET = `
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: ke, namespace: egress }
spec:
  template:
    spec:
      hostNetwork: true
      containers:
        - name: agent
          image: kube-egress:latest
          args: [run, --interface=eth0, --pod-subnet=10.244.0.0/16, --log-format=json]
          env:
            - { name: NODE_NAME, valueFrom: { fieldRef: { fieldPath: spec.nodeName } } }
            - { name: PLAIN, value: "1" }
          resources: { requests: { cpu: 50m }, limits: { memory: 384Mi } }
          securityContext:
            privileged: false
            allowPrivilegeEscalation: false
            runAsUser: 0
            capabilities: { drop: [ALL], add: [NET_ADMIN, NET_RAW] }
          volumeMounts:
            - { name: lock, mountPath: /run/xtables.lock }
            - { name: net, mountPath: /host/proc/sys/net, readOnly: true }
      volumes:
        - { name: lock, hostPath: { path: /run/xtables.lock, type: FileOrCreate } }
        - { name: net, hostPath: { path: /proc/sys/net, type: Directory } }
`;

Deno.test("sim daemonset: the security context, limits, mounts and env become what docker run gets", () => {
  const pod = parseDaemonSet(DAEMONSET);
  assert.deepEqual(securityFlags(pod), [
    "--cap-drop",
    "ALL",
    "--cap-add",
    "NET_ADMIN",
    "--cap-add",
    "NET_RAW",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "0",
    "--memory",
    String(384 * 1024 * 1024),
    "--cpu-shares",
    "51",
  ]);
  assert.deepEqual(pod.mounts.map((m) => [m.hostPath, m.type, m.mountPath, m.readOnly]), [
    ["/run/xtables.lock", "FileOrCreate", "/run/xtables.lock", false],
    ["/proc/sys/net", "Directory", "/host/proc/sys/net", true],
  ]);
  assert.deepEqual(
    resolveEnv(pod.env, { nodeName: "node2", podName: "p", namespace: "egress", nodeIp: "x" }),
    { NODE_NAME: "node2", PLAIN: "1" },
  );
  assert.equal(pod.namespace, "egress");
  assert.equal(pod.args[0], "run");
});

Deno.test("sim daemonset: what the simulator cannot run faithfully is refused, naming the field", () => {
  const privileged = DAEMONSET.replace(
    "privileged: false",
    "privileged: false\n            procMount: Unmasked",
  );
  assert.throws(() => parseDaemonSet(privileged), /procMount/);
  assert.throws(
    () => parseDaemonSet(DAEMONSET.replace("hostNetwork: true", "hostNetwork: false")),
    /hostNetwork/,
  );
  const otherVolume = DAEMONSET.replace(
    "hostPath: { path: /proc/sys/net, type: Directory }",
    "configMap: { name: x }",
  );
  assert.throws(() => parseDaemonSet(otherVolume), /configMap|hostPath/);
  const field = DAEMONSET.replace("spec.nodeName", "spec.serviceAccountName");
  assert.throws(
    () =>
      resolveEnv(parseDaemonSet(field).env, {
        nodeName: "n",
        podName: "p",
        namespace: "n",
        nodeIp: "x",
      }),
    /spec\.serviceAccountName is not simulated/,
  );
});

Deno.test("sim daemonset: the repository's DaemonSet runs unprivileged with NET_ADMIN and NET_RAW only", async () => {
  const pod = await readDaemonSet();
  const flags = securityFlags(pod);
  assert.ok(!flags.includes("--privileged"));
  const added = flags.flatMap((f, i) => (flags[i - 1] === "--cap-add" ? [f] : []));
  assert.deepEqual(added.sort(), ["NET_ADMIN", "NET_RAW"]);
  assert.ok(flags.join(" ").includes("--cap-drop ALL"));
  assert.ok(flags.join(" ").includes("no-new-privileges"));
  assert.ok(pod.mounts.some((m) => m.hostPath === "/proc/sys/net"));
  assert.ok(pod.mounts.some((m) => m.mountPath === "/run/kube-egress"));
});

Deno.test("sim daemonset: Kubernetes quantities", () => {
  assert.equal(bytesOf("384Mi"), 402653184);
  assert.equal(bytesOf("1G"), 1e9);
  assert.equal(bytesOf(1024), 1024);
  assert.equal(milliCpuOf("50m"), 50);
  assert.equal(milliCpuOf("0.5"), 500);
  assert.equal(milliCpuOf(2), 2000);
  assert.throws(() => bytesOf("lots"), /not a memory quantity/);
});

Deno.test("sim daemonset: the simulator's flags replace the DaemonSet's, repeatable ones wholly; flags the command lacks go", () => {
  const { all, of } = agentFlagDefs();
  const daemonSet = [
    "--interface=eth0",
    "--pod-subnet=10.244.0.0/16",
    "--pod-subnet=10.245.0.0/16",
    "--update-interval=60",
    "--metrics-addr=0.0.0.0:9479",
    "--log-format=json",
  ];
  const run = of("run");
  assert.deepEqual(
    mergeAgentArgs(
      daemonSet,
      ["-i", "bond0", "-p", "10.1.0.0/16", "-u", "30", "--dry-run"],
      all,
      (f) => run.has(f),
    ),
    [
      "--metrics-addr=0.0.0.0:9479",
      "--log-format=json",
      "--interface=bond0",
      "--pod-subnet=10.1.0.0/16",
      "--update-interval=30",
      "--dry-run",
    ],
  );
  const del = of("delete");
  assert.deepEqual(
    mergeAgentArgs(daemonSet, ["--vip-mode", "external"], all, (f) => del.has(f)),
    [
      "--interface=eth0",
      "--pod-subnet=10.244.0.0/16",
      "--pod-subnet=10.245.0.0/16",
      "--log-format=json",
      "--vip-mode=external",
    ],
  );
  assert.throws(
    () => mergeAgentArgs(["--no-such-flag"], [], all),
    /unknown agent flag --no-such-flag/,
  );
});

Deno.test("sim image agents: JSON log lines read as the text the simulator waits for", () => {
  const time = new Date("2026-01-02T03:04:05.000Z");
  const fields = { vip: "192.0.2.50", from: "none", to: "holder" };
  const json = formatLine("json", "info", "VIP role", fields, time);
  assert.equal(jsonLogToText(json), formatLine("text", "info", "VIP role", fields, time));
  assert.equal(jsonLogToText("kube-egress: plain"), "kube-egress: plain");
  assert.equal(
    jsonLogToText("WARNING: IPv4 forwarding is disabled. Networking will not work."),
    undefined,
  );
});

Deno.test("image build: the Dockerfile's defaults are the published bases and every tool is pinned", async () => {
  const text = await Deno.readTextFile(new URL("../Dockerfile", import.meta.url));
  const args = dockerfileArgs(text);
  assert.equal(args.DENO_IMAGE, "denoland/deno:bin-${DENO_VERSION}");
  assert.match(args.DEBIAN_IMAGE, /^debian:[a-z]+-slim$/);
  assert.match(args.DENO_VERSION, /^\d+\.\d+\.\d+$/);
  const pins = toolPins(args);
  assert.deepEqual(Object.keys(pins).sort(), [
    "arping",
    "conntrack",
    "conntrackd",
    "iproute2",
    "ipset",
    "iptables",
    "ipv6toolkit",
    "keepalived",
    "nftables",
    "tini",
  ]);
  // Every package behind a command the agent may run (na6 of ipv6toolkit too) is pinned.
  assert.deepEqual(packagesOf(NODE_TOOLS).filter((pkg) => !(pkg in pins)), []);
  for (const [pkg, version] of Object.entries(pins)) {
    assert.ok(
      text.includes(`${pkg}=\${${pkg.toUpperCase()}_VERSION}`),
      `${pkg} installed at its pin`,
    );
    assert.ok(
      text.includes(`io.kube-egress.debian.${pkg}="\${${pkg.toUpperCase()}_VERSION}"`),
      `${pkg} labelled`,
    );
    assert.match(version, /^[0-9:.+~a-z-]+$/);
  }
  assert.equal(debianSuite("debian:bookworm-slim"), "bookworm");
  assert.equal(debianSuite("docker.io/library/debian:trixie"), "trixie");
  assert.throws(() => debianSuite("ubuntu:24.04"), /not debian/);
});

Deno.test("image build: a pin the mirror no longer has is found in apt's error and replaced by the mirror's candidate", () => {
  // What apt-get prints here for a version the mirror does not carry.
  const stderr = "#8 2.31 E: Version '0.0-bogus' for 'tini' was not found\n" +
    "#8 2.31 E: Version '1:2.2.6-1' for 'keepalived' was not found\n";
  assert.deepEqual(missingPins(stderr), ["tini", "keepalived"]);
  assert.deepEqual(missingPins("E: Unable to locate package nft"), []);
  const policy = [
    "tini:",
    "  Installed: (none)",
    "  Candidate: 0.19.0-1+b3",
    "  Version table:",
    "     0.19.0-1+b3 500",
    "        500 http://deb.debian.org/debian bookworm/main amd64 Packages",
    "keepalived:",
    "  Installed: (none)",
    "  Candidate: 1:2.2.7-1+b2",
    "gone:",
    "  Installed: (none)",
    "  Candidate: (none)",
  ].join("\n");
  assert.deepEqual(parseAptPolicy(policy), { tini: "0.19.0-1+b3", keepalived: "1:2.2.7-1+b2" });
});
