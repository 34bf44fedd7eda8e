/**
 * IPv6 VIP placement with real keepalived, as the agent renders its
 * configuration (core/keepalived.ts), on two namespaces joined by a veth
 * pair (no link to the root namespace): a dual-stack VIP (IPv4 advertised,
 * IPv6 excluded) and an IPv6-only VIP (VRRPv3 over IPv6), over multicast and
 * over unicast. What it proves, each against the kernel and keepalived
 * themselves:
 * - the kernel: a /128 added plainly becomes the node's source address
 *   (RFC 6724), one added deprecated does not; DAD holds a plain address
 *   back (the gap is printed, never asserted: the machine is shared);
 * - keepalived: one holder for both addresses of the dual-stack VIP, before
 *   and after a takeover; its IPv6 addresses `nodad` and deprecated, never
 *   tentative; the node's own traffic still leaves with the node's address;
 *   unsolicited neighbour advertisements for both IPv6 addresses at takeover,
 *   in more than one round.
 * Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type KeepalivedSettings,
  renderKeepalivedConf,
  VRRP_DEFAULTS,
  vrrpInstances,
  vrrpPriority,
} from "../../core/keepalived.ts";
import { eachLine } from "../../sim/children.ts";
import { type Netns, NetnsSet, newRunId } from "../../sim/netns.ts";
import { spawnVrrpKeepalived } from "../../sim/vrrp_keepalived.ts";
import { isRoot } from "../helpers.ts";

const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

const NODES = [
  { name: "node-a", v4: "192.0.2.11", v6: "2001:db8::11" },
  { name: "node-b", v4: "192.0.2.12", v6: "2001:db8::12" },
] as const;
const DUAL = { v4: "192.0.2.50", v6: "2001:db8::50", routeId: 5 };
const V6 = { ip: "2001:db8::60", routeId: 6 };
const OUTSIDE = "2001:db8:ffff::1";

interface Addr {
  readonly local: string;
  readonly prefixlen: number;
  readonly tentative?: boolean;
  readonly deprecated?: boolean;
  readonly nodad?: boolean;
  readonly dadfailed?: boolean;
  readonly preferred_life_time?: number;
}

async function addresses(ns: Netns): Promise<Addr[]> {
  const out = JSON.parse(await ns.run(["ip", "-json", "addr", "show", "dev", "eth0"]));
  return out.flatMap((l: { addr_info?: Addr[] }) => l.addr_info ?? []);
}

async function sourceTo(ns: Netns, dst: string): Promise<string> {
  const out = await ns.run(["ip", "-6", "route", "get", dst]);
  return /\bsrc (\S+)/.exec(out)?.[1] ?? `no source in: ${out}`;
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms: ${what}`);
}

/** Two namespaces on one veth pair, addresses of both families, no DAD for the nodes' own. */
async function twoNodes(fn: (a: Netns, b: Netns) => Promise<void>) {
  const set = new NetnsSet(newRunId());
  try {
    const a = await set.create("a");
    const b = await set.create("b");
    await a.ip([`link add eth0 type veth peer name eth0 netns ${b.name}`]);
    for (const [ns, node] of [[a, NODES[0]], [b, NODES[1]]] as const) {
      await ns.ip([
        "link set eth0 up",
        `addr add ${node.v4}/24 dev eth0`,
        `addr add ${node.v6}/64 dev eth0 nodad`,
        `route add default via ${node === NODES[0] ? NODES[1].v6 : NODES[0].v6} dev eth0`,
      ]);
    }
    // The link-local addresses keepalived's IPv6 adverts come from must have passed DAD.
    for (const ns of [a, b]) {
      await until(
        "link-local address ready",
        10_000,
        async () =>
          (await addresses(ns)).some((x) => x.local.startsWith("fe80:") && !x.tentative)
            ? true
            : undefined,
      );
    }
    await fn(a, b);
  } finally {
    await set.destroy();
  }
}

Deno.test({
  name:
    "vip6 (kernel): a plain /128 becomes the node's source, a deprecated one does not; DAD holds a plain one back",
  ...e2e,
  fn: () =>
    twoNodes(async (a) => {
      const vip = "2001:db8::70";
      assert.equal(await sourceTo(a, OUTSIDE), NODES[0].v6);
      const gaps: Record<string, number> = {};
      for (const [mode, extra] of [["plain", []], ["nodad", ["nodad"]]] as const) {
        const t0 = performance.now();
        await a.run(["ip", "addr", "add", `${vip}/128`, "dev", "eth0", ...extra]);
        await until(`${vip} not tentative (${mode})`, 10_000, async () => {
          const x = (await addresses(a)).find((x) => x.local === vip);
          return x && !x.tentative ? true : undefined;
        });
        gaps[mode] = Math.round(performance.now() - t0);
        assert.equal(await sourceTo(a, OUTSIDE), vip, `a /128 added ${mode} wins`);
        await a.run(["ip", "addr", "del", `${vip}/128`, "dev", "eth0"]);
      }
      await a.run([
        "ip",
        "addr",
        "add",
        `${vip}/128`,
        "dev",
        "eth0",
        "nodad",
        "preferred_lft",
        "0",
      ]);
      assert.equal(await sourceTo(a, OUTSIDE), NODES[0].v6, "a deprecated /128 is never picked");
      console.log(
        `[vip6] DAD: not tentative after ${gaps.plain} ms plainly, ${gaps.nodad} ms with nodad`,
      );
    }),
});

for (const mode of ["multicast", "unicast"] as const) {
  Deno.test({
    name:
      `vip6 (keepalived, ${mode}): a dual-stack VIP stays on one holder, IPv6 VIPs nodad and deprecated, announced by NA at takeover`,
    ...e2e,
    fn: () =>
      twoNodes(async (a, b) => {
        const dir = await Deno.makeTempDir({ prefix: "kube-egress-vip6-" });
        const logs: string[][] = [[], []];
        const children: Deno.ChildProcess[] = [];
        try {
          const nss = [a, b];
          for (const [i, node] of NODES.entries()) {
            const unicast = mode === "unicast";
            const vips = [
              {
                ip: DUAL.v4,
                routeId: DUAL.routeId,
                ...(unicast ? { peers: NODES.map((n) => n.v4) } : {}),
              },
              {
                ip: DUAL.v6,
                routeId: DUAL.routeId,
                ...(unicast ? { peers: NODES.map((n) => n.v4) } : {}),
              },
              {
                ip: V6.ip,
                routeId: V6.routeId,
                ...(unicast ? { peers: NODES.map((n) => n.v6) } : {}),
              },
            ];
            const settings: KeepalivedSettings = {
              ...VRRP_DEFAULTS,
              preemptDelay: 0,
              interface: "eth0",
              nodeName: node.name,
              localAddresses: [node.v4, node.v6],
            };
            const conf = join(dir, `${node.name}.conf`);
            const text = renderKeepalivedConf(vrrpInstances(vips, node.name), settings);
            await Deno.writeTextFile(conf, text);
            await Deno.mkdir(join(dir, node.name));
            children.push(spawnVrrpKeepalived(nss[i], join(dir, node.name), conf, logs[i]));
          }
          // Where VRRP must put each VIP: the higher priority (priorities differ per VIP and node).
          const first = (vip: string) =>
            vrrpPriority(vip, NODES[0].name) >= vrrpPriority(vip, NODES[1].name) ? 0 : 1;
          const expected = { [DUAL.v4]: first(DUAL.v4), [V6.ip]: first(V6.ip) };
          const held = async () => {
            const [la, lb] = await Promise.all(nss.map(addresses));
            return [la, lb].map((l) => new Map(l.map((x) => [x.local, x])));
          };
          const settled = (want: Record<string, number>) =>
            until(`VIPs held as ${JSON.stringify(want)}`, 15_000, async () => {
              const h = await held();
              for (
                const [ip, holder] of [
                  [DUAL.v4, want[DUAL.v4]],
                  [DUAL.v6, want[DUAL.v4]],
                  [V6.ip, want[V6.ip]],
                ] as const
              ) {
                if (!h[holder].has(ip) || h[1 - holder].has(ip)) return undefined;
              }
              return h;
            });
          const h = await settled(expected);
          for (const ip of [DUAL.v6, V6.ip]) {
            const x = h[ip === DUAL.v6 ? expected[DUAL.v4] : expected[V6.ip]].get(ip)!;
            assert.equal(x.prefixlen, 128, ip);
            assert.ok(x.nodad && x.deprecated && !x.tentative && !x.dadfailed, JSON.stringify(x));
          }
          for (const [i, ns] of nss.entries()) {
            assert.equal(await sourceTo(ns, OUTSIDE), NODES[i].v6, "the node's own source");
          }
          // Takeover: the holder of the dual-stack VIP stops (keepalived releases its VIPs).
          const leaving = expected[DUAL.v4];
          const staying = 1 - leaving;
          const capture = nss[leaving].spawn(
            ["tcpdump", "-l", "-n", "-Q", "in", "-i", "eth0", "icmp6 and ip6[40] == 136"],
            { stdout: "piped", stderr: "null" },
          );
          const seen: { at: number; target: string }[] = [];
          const read = eachLine(capture.stdout!, (line) => {
            const target = /neighbor advertisement, tgt is (\S+?),?\s/.exec(line + " ")?.[1];
            if (target) seen.push({ at: performance.now(), target });
          }).catch(() => {});
          await new Promise((r) => setTimeout(r, 1000)); // tcpdump attached
          const stoppedAt = performance.now();
          children[leaving].kill("SIGTERM");
          await children[leaving].status;
          const after = await settled({ [DUAL.v4]: staying, [V6.ip]: staying });
          for (const ip of [DUAL.v6, V6.ip]) {
            const x = after[staying].get(ip)!;
            assert.ok(x.nodad && x.deprecated && !x.tentative, JSON.stringify(x));
          }
          assert.equal(await sourceTo(nss[staying], OUTSIDE), NODES[staying].v6);
          // keepalived's NA rounds: at takeover and vrrp_garp_master_delay (1 s) later.
          await until("two rounds of NA for both IPv6 VIPs", 5_000, () => {
            const rounds = (ip: string) => {
              const times = seen.filter((s) => s.target === ip).map((s) => s.at);
              return times.length > 0 && Math.max(...times) - Math.min(...times) > 500;
            };
            return Promise.resolve(rounds(DUAL.v6) && rounds(V6.ip) ? true : undefined);
          });
          const firstNa = Math.min(...seen.map((s) => s.at));
          console.log(
            `[vip6 ${mode}] ${seen.length} NA seen after the holder stopped; first ${
              Math.round(firstNa - stoppedAt)
            } ms after SIGTERM (loaded machine: indicative)`,
          );
          capture.kill("SIGTERM");
          await capture.status;
          await read;
        } finally {
          for (const child of children) {
            try {
              child.kill("SIGTERM");
            } catch {
              // Already stopped.
            }
            await child.status;
          }
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        }
      }),
  });
}
