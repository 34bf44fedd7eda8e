import assert from "node:assert/strict";
import { main } from "../../cmd/main.ts";
import { kubeconfigFor, startTestApiServer } from "../../sim/kube_api.ts";
import { FakeKernel } from "../fake_kernel.ts";
import { podObject, policyObject, vipObject } from "./fixtures.ts";
import { sliceObject } from "../../core/kube/slices.ts";

Deno.test({
  name: "cli: plan, status and doctor read the Kubernetes API once with --source kubernetes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const api = await startTestApiServer({ token: "t" });
    const dir = await Deno.makeTempDir({ prefix: "kube-egress-cli-" });
    const out: string[] = [];
    const saved = { log: console.log, error: console.error };
    try {
      api.apply(vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } }));
      api.apply(policyObject("default", "p", { vip: "office", podSelector: {} }));
      api.apply(podObject("default", "pod1", "10.244.1.11"));
      // What the controller publishes for them (the agents' commands read only this).
      api.apply(sliceObject("office-0", { vip: "office" }, ["10.244.1.11"]));
      await Deno.writeTextFile(`${dir}/kubeconfig`, kubeconfigFor(api.url, "t"));
      console.log = (...a: unknown[]) => out.push(a.join(" "));
      console.error = () => {};
      const flags = [
        "--source",
        "kubernetes",
        "--kubeconfig",
        `${dir}/kubeconfig`,
        "-p",
        "10.244.0.0/16",
        "--vip-mode",
        "external",
      ];
      const kernel = new FakeKernel();
      assert.equal(await main(["plan", ...flags], kernel.host()), 0);
      assert.match(out.join("\n"), /1 VIP\(s\), 1 mapping\(s\) valid/);
      assert.match(out.join("\n"), /add kube-egress-pods 10.244.1.11 skbmark 0x5\/0xff/);
      assert.equal(kernel.applied.length, 0, "plan changes nothing");
      out.length = 0;
      // Without --vip-mode, the Kubernetes source places the VIPs (the files source does not).
      const placing = flags.filter((f) => f !== "--vip-mode" && f !== "external");
      assert.equal(await main(["plan", ...placing, "--node-name", "node1"], kernel.host()), 0);
      assert.match(out.join("\n"), /VIP 192\.0\.2\.50 route 5 .*, VRRP priority \d+ on node1/);
      out.length = 0;
      assert.equal(await main(["status", ...flags, "--json"], kernel.host()), 0);
      assert.ok(JSON.parse(out.join("\n")).pendingLines > 0, "status sees the pending pass");
      out.length = 0;
      // Only the inputs check is asserted; the others read this machine's own
      // state (read-only, and no ARP probe is sent).
      await main(["doctor", ...flags, "--json", "--no-arp"], kernel.host());
      const inputs = JSON.parse(out.join("\n")).checks.find((c: { id: string }) =>
        c.id === "inputs"
      );
      assert.equal(inputs.verdict, "pass", inputs.detail);
      assert.match(inputs.detail, /1 VIP/);
    } finally {
      Object.assign(console, saved);
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
