/**
 * Destination-scoped egress: pods whose policy restricts where their traffic
 * is steered (EgressPolicy destinationCIDRs / excludedCIDRs).
 *
 * Design: pods are grouped into *classes*, one per distinct (destinations,
 * excluded) pair; the common unrestricted pods stay in the pods set and its
 * one rule, untouched. Each class has its own sets, named by a stable hash of
 * the class (so every node and every pass names them alike):
 *   kube-egress-sp-<id>  hash:ip skbinfo  pod IP → mark (like the pods set)
 *   kube-egress-sd-<id>  hash:net         its destinations (absent: all)
 *   kube-egress-sx-<id>  hash:net         its excluded ranges (absent: none)
 * and one mangle rule that marks a class pod's connection only when the
 * destination is in sd and not in sx. Per packet that is one rule per class,
 * each a few O(1) set lookups: the cost grows with the number of distinct
 * destination configurations (a handful), never with pods or ranges.
 * (A single hash:net,net set would do it with one rule, but that set type is
 * not available on every kernel, this machine's included.)
 */
import { formatCidr, parseCidr } from "./ip.ts";
import { hex } from "./marks.ts";
import { MARK_CHAIN, NOSTEER_SET } from "./names.ts";
import type { PodMapping } from "./snapshot.ts";

/** Every scoped set's name starts with this. */
export const SCOPED_PREFIX = "kube-egress-s";

export const SCOPED_PODS_OPTIONS =
  "hash:ip family inet hashsize 64 maxelem 1048576 counters skbinfo";
export const SCOPED_NETS_OPTIONS = "hash:net family inet hashsize 64 maxelem 65536";

/** One destination class and its pods. */
export interface ScopedClass {
  readonly id: string;
  readonly destinations?: readonly string[];
  readonly excluded?: readonly string[];
  /** Pod IP → mark of its VIP. */
  readonly podMarks: ReadonlyMap<string, number>;
}

/** A set as we want it: its create options and entries (key → words after the set name). */
export interface WantedSet {
  readonly options: string;
  readonly entries: ReadonlyMap<string, string>;
}

/** A scoped set as read back: its create line and entries (key → words after the set name). */
export interface LiveScopedSet {
  readonly header: string;
  readonly entries: ReadonlyMap<string, string>;
  /** Pod sets: each entry's packet and byte counters (the sets are created with `counters`). */
  readonly counters?: ReadonlyMap<string, { readonly packets: number; readonly bytes: number }>;
}

/** FNV-1a, 32 bits, as 8 hex digits: a short stable id for a class. */
function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

export function scopedSetNames(id: string) {
  return {
    pods: `${SCOPED_PREFIX}p-${id}`,
    destinations: `${SCOPED_PREFIX}d-${id}`,
    excluded: `${SCOPED_PREFIX}x-${id}`,
  };
}

/** True for a mapping restricted by destination or exclusion. */
export function isScoped(pod: PodMapping): boolean {
  return pod.destinations !== undefined || pod.excluded !== undefined;
}

/** Groups restricted pods into classes, sorted by id. */
export function scopedClasses(
  pods: readonly PodMapping[],
  markOfVip: ReadonlyMap<string, number>,
): ScopedClass[] {
  const classes = new Map<string, ScopedClass & { podMarks: Map<string, number> }>();
  for (const pod of pods) {
    if (!isScoped(pod)) continue;
    const mark = markOfVip.get(pod.vip);
    if (mark === undefined) continue;
    const key = `${pod.destinations?.join(",") ?? "*"}|${pod.excluded?.join(",") ?? ""}`;
    const id = shortHash(key);
    let cls = classes.get(id);
    if (!cls) {
      cls = {
        id,
        ...(pod.destinations ? { destinations: pod.destinations } : {}),
        ...(pod.excluded ? { excluded: pod.excluded } : {}),
        podMarks: new Map(),
      };
      classes.set(id, cls);
    }
    cls.podMarks.set(pod.podIp, mark);
  }
  return [...classes.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
}

/** The class's mangle rule, in iptables-save form. */
export function scopedRule(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls)}` +
    ` -m conntrack --ctdir ORIGINAL -j SET --map-set ${names.pods} src --map-mark`;
}

/** The class's INVALID packets to its destinations are marked too, as `markInvalidRule` does for the pods set. */
export function scopedMarkInvalidRule(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls)}` +
    ` -m conntrack --ctstate INVALID -j SET --map-set ${names.pods} src --map-mark`;
}

/** Destinations a class steers: not never-steered, within its destinations, outside its exclusions. */
function scopeMatch(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-m set ! --match-set ${NOSTEER_SET} dst` +
    (cls.destinations ? ` -m set --match-set ${names.destinations} dst` : "") +
    (cls.excluded ? ` -m set ! --match-set ${names.excluded} dst` : "");
}

/** Every scoped set the classes need, by name. */
export function wantedScopedSets(
  classes: readonly ScopedClass[],
  markMask: number,
): Map<string, WantedSet> {
  const sets = new Map<string, WantedSet>();
  const nets = (list: readonly string[]) => new Map(list.map((c) => [c, c]));
  for (const cls of classes) {
    const names = scopedSetNames(cls.id);
    sets.set(names.pods, {
      options: SCOPED_PODS_OPTIONS,
      entries: new Map(
        [...cls.podMarks].map(([ip, mark]) => [ip, `${ip} skbmark ${hex(mark)}/${hex(markMask)}`]),
      ),
    });
    if (cls.destinations) {
      sets.set(names.destinations, {
        options: SCOPED_NETS_OPTIONS,
        entries: nets(cls.destinations),
      });
    }
    if (cls.excluded) {
      sets.set(names.excluded, { options: SCOPED_NETS_OPTIONS, entries: nets(cls.excluded) });
    }
  }
  return sets;
}

/** Normalizes one `add` line's words after the set name, as `wantedScopedSets` writes them. */
function entryOf(words: readonly string[]): [string, string] | undefined {
  const key = words[0];
  const at = words.indexOf("skbmark");
  if (at >= 0) return [key, `${key} skbmark ${words[at + 1]}`];
  const cidr = parseCidr(key);
  if (!cidr) return undefined;
  const text = formatCidr(cidr);
  return [text, text];
}

/** Parses the scoped sets out of `ipset save` text (other sets are ignored). */
export function parseScopedSets(text: string): Map<string, LiveScopedSet> {
  const sets = new Map<
    string,
    {
      header: string;
      entries: Map<string, string>;
      counters?: Map<string, { packets: number; bytes: number }>;
    }
  >();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const words = line.split(/\s+/);
    if (!words[1]?.startsWith(SCOPED_PREFIX)) continue;
    if (words[0] === "create") sets.set(words[1], { header: line, entries: new Map() });
    else if (words[0] === "add") {
      const set = sets.get(words[1]);
      const entry = entryOf(words.slice(2));
      if (!set || !entry) continue;
      set.entries.set(entry[0], entry[1]);
      const packets = words.indexOf("packets");
      const bytes = words.indexOf("bytes");
      if (packets > 0 && bytes > 0) {
        set.counters ??= new Map();
        set.counters.set(entry[0], {
          packets: Number(words[packets + 1]),
          bytes: Number(words[bytes + 1]),
        });
      }
    }
  }
  return sets;
}
