/**
 * Policy routing: our `ip rule` entries and routes, told apart from everyone
 * else's by the route protocol we tag them with. Read from `ip -json`, compared
 * as keys, changed by typed `RouteChange`s (rendered to `ip -batch` in
 * core/render.ts). Additions run before the firewall changes and removals
 * after, so marked traffic always finds its route.
 */
import type { PolicyRule, TableRoute } from "./intent.ts";
import type { RouteChange } from "./operation.ts";

export interface LiveRoutes {
  /** IPv4 addresses on the interface. */
  readonly addresses: readonly string[];
  /** Our rules (tagged with our protocol). */
  readonly rules: readonly PolicyRule[];
  /** Our routes (tagged with our protocol); `dst` other than "default" are stale by definition. */
  readonly routes: readonly (TableRoute & { readonly dst: string })[];
  /**
   * Main-table routes to (parts of) the pod ranges, one entry per next hop:
   * how this node reaches pods, local and remote (the CNI's routes). Used to
   * find the devices replies for steered pods arrive on (see core/sysctl.ts).
   */
  readonly podRoutes: readonly PodRoute[];
}

/** No addresses, rules or routes. */
export const NO_ROUTES: LiveRoutes = { addresses: [], rules: [], routes: [], podRoutes: [] };

/** A main-table route into the pod ranges, one per next hop. */
export interface PodRoute {
  readonly dst: string;
  readonly dev: string;
  /** The next hop; absent for directly connected ranges (the node's own pod bridge). */
  readonly gateway?: string;
}

/**
 * The `ip -batch` input that reads everything at once: addresses, rules, our
 * routes, then the main table's routes inside each pod range.
 */
export function readRoutesBatch(
  iface: string,
  protocol: number,
  podCidrs: readonly string[] = [],
): string {
  return [
    `address show dev ${iface}`,
    "rule show",
    `route show table all proto ${protocol}`,
    ...podCidrs.map((cidr) => `route show table main root ${cidr}`),
  ].join("\n") + "\n";
}

type Json = Record<string, unknown>;

function jsonArrays(text: string): Json[][] {
  return text.split("\n").filter((line) => line.trim().startsWith("[")).map((line) =>
    JSON.parse(line)
  );
}

/** A main-table route's next hops: the route itself, or each of a multipath route's. */
function podRoutesOf(route: Json): PodRoute[] {
  const dst = String(route.dst);
  const hops = Array.isArray(route.nexthops) ? route.nexthops as Json[] : [route];
  return hops.filter((hop) => hop.dev !== undefined).map((hop) => ({
    dst,
    dev: String(hop.dev),
    ...(hop.gateway !== undefined ? { gateway: String(hop.gateway) } : {}),
  }));
}

/**
 * Parses the output of `ip -json -N -batch` run on `readRoutesBatch`: JSON
 * arrays, one per line, in that order (addresses, rules, our routes, then one
 * array of main-table routes per pod range).
 */
export function parseRoutesBatch(
  text: string,
  protocol: number,
  family: "ipv4" | "ipv6" = "ipv4",
): LiveRoutes {
  const inet = family === "ipv4" ? "inet" : "inet6";
  const [addrs = [], rules = [], routes = [], ...podRanges] = jsonArrays(text);
  const addresses = addrs.flatMap((link) =>
    ((link.addr_info ?? []) as Json[]).filter((a) => a.family === inet).map((a) => String(a.local))
  );
  const ours = rules.filter((r) =>
    String(r.protocol) === String(protocol) && r.fwmark !== undefined
  );
  return {
    addresses,
    rules: ours.map((r) => ({
      ...(family === "ipv6" ? { family } : {}),
      priority: Number(r.priority),
      mark: parseInt(String(r.fwmark), 16),
      mask: r.fwmask === undefined ? 0xffffffff : parseInt(String(r.fwmask), 16),
      table: Number(r.table),
    })),
    routes: routes.map((r) => ({
      dst: String(r.dst),
      table: Number(r.table),
      gateway: String(r.gateway ?? ""),
      dev: String(r.dev ?? ""),
    })),
    podRoutes: podRanges.flat().filter((r) => r.type === undefined || r.type === "unicast")
      .flatMap(podRoutesOf),
  };
}

const ruleKey = (r: PolicyRule) => `${r.priority}|${r.mark}|${r.mask}|${r.table}`;
const routeKey = (r: TableRoute) => `${r.table}|${r.gateway}|${r.dev}`;

export interface RouteChanges {
  /** Run before the firewall changes: routes first, then the rules that use them. */
  readonly add: RouteChange[];
  /** Run after: rules first, then the routes they used. */
  readonly remove: RouteChange[];
}

/** The changes that make our rules and routes equal the desired ones. */
export function diffRoutes(
  live: LiveRoutes,
  desired: { rules: readonly PolicyRule[]; routes: readonly TableRoute[] },
): RouteChanges {
  const add: RouteChange[] = [];
  const remove: RouteChange[] = [];

  const liveDefaults = new Map(
    live.routes.filter((r) => r.dst === "default").map((r) => [r.table, r]),
  );
  const wantRoutes = new Set(desired.routes.map(routeKey));
  for (const route of desired.routes) {
    const have = liveDefaults.get(route.table);
    // Our default in that table with another gateway is replaced in place: no gap.
    if (!have) add.push({ verb: "add", route: tableRoute(route) });
    else if (routeKey(have) !== routeKey(route)) {
      add.push({ verb: "replace", route: tableRoute(route) });
    }
  }
  const replacedTables = new Set(desired.routes.map((r) => r.table));
  const staleRoutes = live.routes.filter((r) =>
    r.dst !== "default" || (!wantRoutes.has(routeKey(r)) && !replacedTables.has(r.table))
  );

  const seen = new Set<string>();
  const wantRules = new Set(desired.rules.map(ruleKey));
  const staleRules: PolicyRule[] = [];
  for (const rule of live.rules) {
    const key = ruleKey(rule);
    if (!wantRules.has(key) || seen.has(key)) staleRules.push(rule);
    seen.add(key);
  }
  for (const rule of desired.rules) {
    if (!seen.has(ruleKey(rule))) add.push({ verb: "add", rule: policyRule(rule) });
  }

  remove.push(...staleRules.map((r): RouteChange => ({ verb: "del", rule: policyRule(r) })));
  remove.push(
    ...staleRoutes.map((r): RouteChange =>
      r.dst === "default"
        ? { verb: "del", route: tableRoute(r) }
        : { verb: "del", stale: { dst: r.dst, table: r.table } }
    ),
  );
  return { add, remove };
}

/** A rule's fields only (the family is the operation's). */
function policyRule(r: PolicyRule): PolicyRule {
  return { priority: r.priority, mark: r.mark, mask: r.mask, table: r.table };
}

/** A route's fields only (a live route also has its `dst`). */
function tableRoute(r: TableRoute): TableRoute {
  return { table: r.table, gateway: r.gateway, dev: r.dev };
}

/** The changes that remove every rule and route of ours. */
export function deleteRoutes(live: LiveRoutes): RouteChange[] {
  return diffRoutes(live, { rules: [], routes: [] }).remove;
}

/**
 * Whether an `ip -force -batch` run that exited non-zero failed only at
 * deletions of objects already gone: `route del` answered "No such process"
 * (ESRCH), `rule del` "No such file or directory" (ENOENT). The kernel drops
 * such objects on its own between our read and our write (an address or the
 * link of the VIP came or went), and what a deletion wants is then done. With
 * `-force` the lines after a failed one still run; each failure is reported
 * as its error, then "Command failed <file>:<line>". Anything else, or an
 * error text we cannot attribute to a line, is a real failure.
 */
export function onlyGoneDeletions(changes: readonly RouteChange[], stderr: string): boolean {
  const gone = (change: RouteChange | undefined) =>
    change?.verb !== "del"
      ? undefined
      : "rule" in change
      ? /^RTNETLINK answers: No such file or directory$/
      : /^RTNETLINK answers: No such process$/;
  let errors: string[] = [];
  let failed = 0;
  for (const text of stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "")) {
    const at = /^Command failed \S*:(\d+)$/.exec(text);
    if (!at) {
      errors.push(text);
      continue;
    }
    // Each change is one line of the batch (core/render.ts).
    const error = gone(changes[Number(at[1]) - 1]);
    if (!error || errors.length !== 1 || !error.test(errors[0])) return false;
    errors = [];
    failed++;
  }
  return failed > 0 && errors.length === 0;
}
