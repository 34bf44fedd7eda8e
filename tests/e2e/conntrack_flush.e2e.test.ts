/**
 * The kernel-side flush (cmd/conntrack_flush.ts) against the real tool: two
 * namespaces hold the same conntrack entries; one runs `conntrack -D` by
 * family and mark, the other our netlink flush, and both keep the same
 * entries, other family, other mark and other mask bits included.
 */
import assert from "node:assert/strict";
import { NetnsSet, newRunId } from "../../sim/netns.ts";
import { e2e } from "./cluster.ts";

const ENTRIES: [string, string, number][] = [
  ["10.244.1.5", "198.51.100.1", 5],
  ["10.244.1.6", "198.51.100.1", 6],
  ["10.244.1.7", "198.51.100.1", 0x105], // our bits 0x05 under the mask, another component's above
  ["10.244.1.8", "198.51.100.1", 0],
  ["fd00:10:244:1::5", "2001:db8:1::1", 5],
  ["fd00:10:244:1::6", "2001:db8:1::1", 6],
  ["fd00:10:244:1::7", "2001:db8:1::1", 0x106],
];

const FLUSH = new URL("../../cmd/conntrack_flush.ts", import.meta.url).href;

Deno.test({
  name: "e2e conntrack flush: the kernel's flush by family and mark deletes what conntrack -D does",
  ...e2e,
  fn: async () => {
    const set = new NetnsSet(newRunId());
    try {
      const [tool, ours] = [await set.create("tool"), await set.create("ours")];
      for (const ns of [tool, ours]) {
        for (const [src, dst, mark] of ENTRIES) {
          await ns.run([
            "conntrack",
            "-I",
            "-p",
            "udp",
            "-s",
            src,
            "-d",
            dst,
            "--sport",
            "1000",
            "--dport",
            "53",
            "-t",
            "120",
            "--mark",
            String(mark),
          ]);
        }
      }
      const table = async (ns: typeof tool) =>
        (await ns.run(["conntrack", "-L"])).split("\n").filter(Boolean)
          .map((l) => l.replace(/^(\S+\s+\d+)\s+\d+/, "$1")).sort();
      assert.equal((await table(ours)).length, ENTRIES.length);
      for (const [family, mark] of [["ipv4", 5], ["ipv6", 6]] as const) {
        const flushed = await inNamespace(ours).flush(family, mark);
        assert.equal(flushed, "true", `our ${family} flush ran in the kernel`);
        await tool.run(["conntrack", "-D", "-f", family, "--mark", `0x${mark.toString(16)}/0xff`]);
        assert.deepEqual(await table(ours), await table(tool), `after the ${family} flush`);
      }
      const left = (await table(ours)).join("\n");
      assert.doesNotMatch(left, /src=10\.244\.1\.[57] /, "ipv4 mark 5 under 0xff gone");
      assert.doesNotMatch(left, /src=fd00:10:244:1::[67] /, "ipv6 mark 6 under 0xff gone");
      assert.match(left, /src=fd00:10:244:1::5 /, "the ipv4 flush left ipv6 alone");
      assert.match(left, /src=10\.244\.1\.6 /);
    } finally {
      await set.destroy();
    }
  },
});

/** Runs our flush inside the namespace (the process's network namespace is the kernel's table). */
function inNamespace(target: { name: string }) {
  return {
    async flush(family: string, mark: number): Promise<string> {
      const code = `import { kernelConntrackFlush } from "${FLUSH}";
console.log(kernelConntrackFlush({ why: "role", family: "${family}", mark: ${mark}, mask: 0xff }));`;
      const out = await new Deno.Command("ip", {
        args: ["netns", "exec", target.name, Deno.execPath(), "eval", "--quiet", code],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout).trim();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return text;
    },
  };
}
