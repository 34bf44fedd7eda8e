import assert from "node:assert/strict";
import { main } from "../cmd/main.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { stateDirOf, withStateDir } from "./node_state.ts";

/** Runs the CLI against a fake node (with its own state directory), capturing stdout and stderr. */
async function cli(args: string[], kernel = new FakeKernel()) {
  const out: string[] = [];
  const err: string[] = [];
  const saved = { log: console.log, error: console.error };
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  const stdoutWrite = Deno.stdout.writeSync;
  try {
    const code = await withStateDir(stateDirOf(kernel), () => main(args, kernel.host()));
    return { code, out: out.join("\n"), err: err.join("\n"), kernel };
  } finally {
    Object.assign(console, saved);
    Deno.stdout.writeSync = stdoutWrite;
  }
}

async function mappingDirs(pods: Record<string, string>, vips: Record<string, string>) {
  const root = await Deno.makeTempDir({ prefix: "kube-egress-cli-" });
  await Deno.mkdir(`${root}/p`);
  await Deno.mkdir(`${root}/v`);
  for (const [k, v] of Object.entries(pods)) await Deno.writeTextFile(`${root}/p/${k}`, v);
  for (const [k, v] of Object.entries(vips)) await Deno.writeTextFile(`${root}/v/${k}`, v);
  return { root, flags: ["-p", "10.244.0.0/16", "-v", `${root}/p`, "-r", `${root}/v`] };
}

Deno.test("cli: egress.sh flags, short and long, are accepted and applied once", async () => {
  const { root } = await mappingDirs({ "10.244.1.5": "192.0.2.50\n" }, { "192.0.2.50": "5\n" });
  const r = await cli([
    "run",
    "--vip-mode",
    "external",
    "--interface",
    "eth0",
    "--pod-subnet",
    "10.244.0.0/16",
    "--service-subnet",
    "10.96.0.0/12",
    "--podip-vip-mappings",
    `${root}/p`,
    "--vip-routeid-mappings",
    `${root}/v`,
  ]);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual([...r.kernel.sets.get("kube-egress-pods")!.entries.keys()], ["10.244.1.5"]);
  const short = await cli([
    "run",
    "-i",
    "eth0",
    "-p",
    "10.244.0.0/16",
    "-s",
    "10.96.0.0/12",
    "-v",
    `${root}/p`,
    "-r",
    `${root}/v`,
    "-d",
  ], r.kernel);
  assert.equal(short.code, 0, short.err);
  assert.equal(r.kernel.sets.size, 0, "-d removed everything");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: bad flags are a usage error naming each flag and value", async () => {
  const r = await cli([
    "run",
    "-p",
    "10.244.0.1/16",
    "--mark-mask",
    "0x7",
    "-u",
    "soon",
    "--log-format",
    "xml",
  ]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--pod-subnet "10.244.0.1\/16" has host bits set/);
  assert.match(r.err, /--mark-mask "0x7" needs 8 consecutive bits/);
  assert.match(r.err, /--log-format/);
  const u = await cli(["run", "-p", "10.244.0.0/16", "-u", "soon"]);
  assert.equal(u.code, 2);
  assert.match(u.err, /--update-interval "soon" must be a number of seconds/);
});

Deno.test("cli: list flags repeat and comma-separate; defaults are replaced, not extended", async () => {
  const { root, flags } = await mappingDirs({ "10.1.0.5": "192.0.2.50" }, { "192.0.2.50": "5" });
  const r = await cli([
    "plan",
    ...flags,
    "-p",
    "10.1.0.0/16,10.2.0.0/16",
    "--exclude-cidr",
    "192.168.0.0/16",
    "--exclude-cidr",
    "172.16.0.0/12",
  ]);
  assert.equal(r.code, 0, r.err);
  for (
    const cidr of [
      "10.1.0.0/16",
      "10.2.0.0/16",
      "10.244.0.0/16",
      "192.168.0.0/16",
      "172.16.0.0/12",
      "10.96.0.0/12",
    ]
  ) {
    assert.match(r.out, new RegExp(`add kube-egress-nosteer ${cidr.replace(/\./g, "\\.")}`));
  }
  assert.doesNotMatch(
    r.out,
    /10\.32\.0\.0\/12/,
    "the default pod range is replaced by the given ones",
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: plan prints roles, rejected inputs and the exact payload, and changes nothing", async () => {
  const { root, flags } = await mappingDirs({
    "10.244.1.5": "192.0.2.50",
    "10.244.1.6": "192.0.2.77",
  }, { "192.0.2.50": "5" });
  const r = await cli(["plan", ...flags]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /# {3}VIP 192.0.2.50 route 5 mark 0x5: forwarder/);
  assert.match(
    r.out,
    /# rejected: .*10.244.1.6: pod 10.244.1.6 is mapped to VIP 192.0.2.77, which has no route id/,
  );
  assert.match(r.out, /rule add pref 1000 fwmark 0x5\/0xff lookup 5 proto 233/);
  assert.equal(r.kernel.applied.length, 0);
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: status shows roles, counters and pending changes, as a table and as JSON", async () => {
  const { root, flags } = await mappingDirs({
    "10.244.1.5": "192.0.2.50",
    "10.244.2.5": "192.0.2.51",
  }, { "192.0.2.50": "5", "192.0.2.51": "6" });
  const kernel = new FakeKernel();
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  assert.equal((await cli(["run", "--vip-mode", "external", ...flags], kernel)).code, 0);
  // Its own state directory: the machine's /run/kube-egress (an agent's) is not this test's.
  const own = ["--state-dir", `${root}/state`];
  const table = await cli(["status", ...flags, ...own], kernel);
  assert.match(table.out, /sync: in sync with the inputs/);
  assert.match(table.out, /192\.0\.2\.50\s+5\s+0x5\s+holder\s+yes\s+1/);
  assert.match(table.out, /192\.0\.2\.51\s+6\s+0x6\s+forwarder\s+no\s+1/);
  const json = JSON.parse((await cli(["status", ...flags, ...own, "--json"], kernel)).out);
  assert.equal(json.pendingLines, 0);
  assert.deepEqual(json.vips.map((v: { vip: string; role: string }) => [v.vip, v.role]), [[
    "192.0.2.50",
    "holder",
  ], ["192.0.2.51", "forwarder"]]);
  await Deno.writeTextFile(`${root}/p/10.244.3.3`, "192.0.2.51");
  assert.match(
    (await cli(["status", ...flags, ...own], kernel)).out,
    /sync: 1 change\(s\) pending/,
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: a missing interface is fatal before any change; missing directories fail the pass", async () => {
  const { root, flags } = await mappingDirs({}, {});
  const r = await cli(["run", "--vip-mode", "external", ...flags, "-i", "bond7"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /interface bond7 does not exist on this node/);
  assert.equal(r.kernel.applied.length, 0);
  const d = await cli([
    "run",
    "--vip-mode",
    "external",
    "-p",
    "10.244.0.0/16",
    "-v",
    `${root}/nope`,
    "-r",
    `${root}/v`,
  ]);
  assert.equal(d.code, 1);
  assert.match(d.err, /mapping directory .*nope does not exist/);
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: help lists the commands and the old flags", async () => {
  const r = await cli(["run", "--help"]);
  assert.equal(r.code, 0);
});

Deno.test("cli: --metrics-addr is validated and needs --update-interval", async () => {
  const bad = await cli(["run", "--metrics-addr", "localhost"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--metrics-addr "localhost" must be host:port/);
  const high = await cli(["run", "--metrics-addr", ":70000"]);
  assert.equal(high.code, 2);
  const once = await cli(["run", "--metrics-addr", ":9479"]);
  assert.equal(once.code, 2);
  assert.match(once.err, /--metrics-addr needs --update-interval/);
});

Deno.test("cli: listen addresses: host:port, :port (every address), [ipv6]:port", async () => {
  const { listenAddress } = await import("../cmd/options.ts");
  assert.deepEqual(listenAddress.parse(":9479"), {
    hostname: "0.0.0.0",
    port: 9479,
    text: ":9479",
  });
  assert.equal(listenAddress.parse("127.0.0.1:0").hostname, "127.0.0.1");
  assert.equal(listenAddress.parse("[::1]:9479").hostname, "::1");
  for (const bad of ["9479", "host:", "a b:1", "[::1]9479"]) {
    assert.equal(listenAddress.safeParse(bad).success, false, bad);
  }
});

Deno.test("cli: keepalived mode (one flag away) needs a running agent; bad placement flags are named", async () => {
  const { root, flags } = await mappingDirs({ "10.244.1.5": "192.0.2.50" }, { "192.0.2.50": "5" });
  const once = await cli(["run", ...flags, "--vip-mode", "keepalived"]);
  assert.equal(once.code, 2);
  assert.match(
    once.err,
    /--vip-mode keepalived places VIPs for as long as the agent runs: give -u/,
  );
  assert.equal(once.kernel.applied.length, 0);
  const bad = await cli([
    "run",
    ...flags,
    "--vip-mode",
    "lease",
    "--vrrp-advert-interval",
    "0.001",
    "--vrrp-preempt-delay",
    "-1",
    "--node-name",
    "no spaces",
    "--vrrp-unicast-peers",
    "192.0.2.11,192.0.2.300",
    "--vrrp-vrid-offset",
    "255",
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--vip-mode "lease" must be "keepalived" or "external"/);
  assert.match(bad.err, /--vrrp-advert-interval .*at least 0.01 s/);
  assert.match(bad.err, /--vrrp-preempt-delay "-1" must be a number of seconds/);
  assert.match(bad.err, /--node-name "no spaces" must be a node name/);
  assert.match(bad.err, /--vrrp-unicast-peers "192.0.2.300" must be an IPv4 address/);
  assert.match(bad.err, /--vrrp-vrid-offset 255 must be between 0 and 254/);
  const auto = await cli(["run", ...flags, "--vrrp-unicast-peers", "auto"]);
  assert.equal(auto.code, 2);
  assert.match(auto.err, /--vrrp-unicast-peers "auto" needs --source kubernetes/);
  // -d needs no placement: it only removes the datapath.
  assert.equal((await cli(["run", ...flags, "-d"])).code, 0);
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: a dry run prints the keepalived configuration; plan shows this node's priorities", async () => {
  const { root, flags } = await mappingDirs({ "10.244.1.5": "192.0.2.50" }, {
    "192.0.2.50": "5",
    "192.0.2.51": "6",
  });
  const dry = await cli([
    "run",
    ...flags,
    "--vip-mode",
    "keepalived",
    "--dry-run",
    "--node-name",
    "node1",
  ]);
  assert.equal(dry.code, 0, dry.err);
  assert.match(dry.out, /vrrp_instance kube_egress_5 \{[^}]*virtual_router_id 5\n {2}priority \d+/);
  assert.match(dry.out, /advert_int 0.1\n {2}preempt_delay 5\n/);
  assert.equal(dry.kernel.applied.length, 0);
  const plan = await cli(["plan", ...flags, "--vip-mode", "keepalived", "--node-name", "node1"]);
  assert.match(plan.out, /VIP 192.0.2.50 route 5 mark 0x5: forwarder, VRRP priority \d+ on node1/);
  const external = await cli(["plan", ...flags]);
  assert.doesNotMatch(external.out, /VRRP priority/, "the files source places nothing by default");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: status shows each VIP's VRRP priority and state from the agent's state directory", async () => {
  const { root, flags } = await mappingDirs({ "10.244.1.5": "192.0.2.50" }, {
    "192.0.2.50": "5",
    "192.0.2.51": "6",
  });
  const kernel = new FakeKernel();
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  assert.equal((await cli(["run", "--vip-mode", "external", ...flags], kernel)).code, 0);
  await Deno.mkdir(`${root}/state`);
  await Deno.writeTextFile(
    `${root}/state/vips.json`,
    JSON.stringify({
      mode: "keepalived",
      node: "node1",
      running: true,
      advertInterval: 0.1,
      preemptDelay: 5,
      vips: [{
        vip: "192.0.2.50",
        routeId: 5,
        vrid: 15,
        priority: 201,
        state: "MASTER",
        peers: ["192.0.2.11", "192.0.2.12"],
      }],
      ineligible: ["192.0.2.51"],
    }),
  );
  const keepalived = ["--vip-mode", "keepalived", "--state-dir", `${root}/state`];
  const status = await cli(["status", ...flags, ...keepalived], kernel);
  // No keepalived process behind the file: its state is not believed.
  assert.match(status.out, /placement: keepalived as node node1, not running/);
  assert.match(status.out, /192\.0\.2\.50\s+5\s+0x5\s+holder\s+yes\s+201\s+stopped/);
  assert.match(status.out, /192\.0\.2\.51\s+6\s+0x6\s+forwarder\s+no\s+-\s+ineligible/);
  assert.match(
    status.out,
    /VRRP adverts by unicast to:\n {2}192\.0\.2\.50: 192\.0\.2\.11, 192\.0\.2\.12\n/,
  );
  const json = JSON.parse(
    (await cli(["status", ...flags, ...keepalived, "--json"], kernel)).out,
  );
  assert.equal(json.vips[0].priority, 201);
  assert.equal(json.vips[0].vrid, 15);
  assert.deepEqual(json.vips[0].peers, ["192.0.2.11", "192.0.2.12"]);
  assert.equal(json.vips[1].peers, undefined, "an ineligible VIP has no instance");
  assert.equal(json.placement.node, "node1");
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: with --log-format json every stderr line is JSON, usage errors included", async () => {
  for (
    const args of [
      ["run", "--log-format", "json", "-u", "soon"],
      ["status", "--log-format=json", "--bogus"],
      ["plan", "--log-format", "json", "-v", "/nonexistent/kube-egress-test"],
    ]
  ) {
    const r = await cli(args);
    assert.notEqual(r.code, 0, args.join(" "));
    const lines = r.err.split("\n").filter(Boolean);
    assert.ok(lines.length > 0, args.join(" "));
    for (const line of lines) {
      const entry = JSON.parse(line);
      assert.equal(entry.level, "error", line);
      assert.ok(entry.msg.length > 0);
    }
  }
  const text = await cli(["run", "-u", "soon"]);
  assert.match(text.err, /^kube-egress: invalid flags: --update-interval "soon"/m);
});

Deno.test("cli: egress.sh's command lines: no command, getopt's forms, empty values; nothing places VIPs", async () => {
  const { root } = await mappingDirs({ "10.244.1.5": "192.0.2.50" }, { "192.0.2.50": "5" });
  const kernel = new FakeKernel();
  // The old DaemonSet's args, as the image's entrypoint (mod.ts) gets them: no `run`.
  const daemonSet = await cli([
    "--pod-subnet=10.244.0.0/16",
    "--service-subnet=10.96.0.0/12",
    "--interface=eth0",
    "--update-interval=",
    `--vip-routeid-mappings=${root}/v`,
    `--podip-vip-mappings=${root}/p`,
  ], kernel);
  assert.equal(daemonSet.code, 0, daemonSet.err);
  assert.deepEqual([...kernel.sets.get("kube-egress-pods")!.entries.keys()], ["10.244.1.5"]);
  assert.doesNotMatch(daemonSet.err, /keepalived/);
  assert.deepEqual([...Deno.readDirSync(stateDirOf(kernel))], [], "no keepalived.conf, no lock");
  // Abbreviated long options, attached short values, a cluster, empty values = defaults.
  const getopt = await cli(
    ["--inter", "", "--pod-=10.244.0.0/16", "--podip", `${root}/p`, `-r${root}/v`, "-di", "eth0"],
    kernel,
  );
  assert.equal(getopt.code, 0, getopt.err);
  assert.equal(kernel.sets.size, 0, "-d in a cluster removed everything");
  const ambiguous = await cli(["--pod=10.244.0.0/16"], kernel);
  assert.equal(ambiguous.code, 2);
  assert.match(ambiguous.err, /option '--pod' is ambiguous/);
  await Deno.remove(root, { recursive: true });
});

Deno.test("cli: -h (egress.sh's --help) prints run's flags and the defaults in words", async () => {
  const { default: process } = await import("node:process");
  for (const flag of ["-h", "--help", "run"]) {
    const chunks: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => (chunks.push(String(chunk)), true)) as never;
    let code: number;
    try {
      code = (await cli(flag === "run" ? ["run", "-u", "5", "-h"] : [flag])).code;
    } finally {
      process.stdout.write = write;
    }
    const help = chunks.join("");
    assert.equal(code, 0, flag);
    for (
      const text of [
        "-u, --update-interval <seconds>",
        "-d, --delete",
        "-v, --podip-vip-mappings <dir>",
        "external (default with\n",
        "Defaults, as egress.sh:",
        "--vip-mode keepalived -u <seconds>",
        "With --source kubernetes the agent always runs and places the VIPs",
      ]
    ) assert.ok(help.replace(/\s+/g, " ").includes(text.replace(/\s+/g, " ")), `${flag}: ${text}`);
  }
});

Deno.test("cli: the NAT state sync flags are validated, and plan shows the VIP guards with sync on", async () => {
  const bad = await cli(["run", "--conntrack-sync", "yes", "--conntrack-sync-peers", "node2"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--conntrack-sync "yes" must be "off" or "on"/);
  assert.match(bad.err, /--conntrack-sync-peers/);
  const { root, flags } = await mappingDirs({ "10.244.1.11": "192.0.2.50" }, {
    "192.0.2.50": "5",
  });
  try {
    const on = await cli(["plan", ...flags, "--backend", "iptables", "--conntrack-sync", "on"]);
    assert.equal(on.code, 0, on.err);
    assert.match(
      on.out,
      /-d 192\.0\.2\.50\/32 .* --comment "kube-egress 192\.0\.2\.50 guard" -j DROP/,
    );
    const off = await cli(["plan", ...flags, "--backend", "iptables"]);
    assert.equal(off.code, 0, off.err);
    assert.doesNotMatch(off.out, /guard" -j DROP/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
