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
import { IPSET_V4, type IpsetFamily, MARK_CHAIN } from "./names.ts";
import type { ScopedClass } from "./intent.ts";

/** Every IPv4 scoped set's name starts with this (IPv6: `IPSET_V6.scopedPrefix`). */
export const SCOPED_PREFIX = IPSET_V4.scopedPrefix;

/** A class's pod set's options, per family. */
export function scopedPodsOptions(f: IpsetFamily = IPSET_V4): string {
  return `hash:ip family ${f.inet} hashsize 64 maxelem 1048576 counters skbinfo`;
}

/** A class's range sets' options (and the fail-closed set's), per family. */
export function scopedNetsOptions(f: IpsetFamily = IPSET_V4): string {
  return `hash:net family ${f.inet} hashsize 64 maxelem 65536`;
}

export const SCOPED_PODS_OPTIONS = scopedPodsOptions(IPSET_V4);
export const SCOPED_NETS_OPTIONS = scopedNetsOptions(IPSET_V4);

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

export function scopedSetNames(id: string, f: IpsetFamily = IPSET_V4) {
  return {
    pods: `${f.scopedPrefix}p-${id}`,
    destinations: `${f.scopedPrefix}d-${id}`,
    excluded: `${f.scopedPrefix}x-${id}`,
  };
}

export { isScoped, type ScopedClass, scopedClasses } from "./intent.ts";

/** The class's mangle rule, in iptables-save form. */
export function scopedRule(cls: ScopedClass, f: IpsetFamily = IPSET_V4): string {
  const names = scopedSetNames(cls.id, f);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls, f)}` +
    ` -m conntrack --ctdir ORIGINAL -j SET --map-set ${names.pods} src --map-mark`;
}

/** The class's INVALID packets to its destinations are marked too, as `markInvalidRule` does for the pods set. */
export function scopedMarkInvalidRule(cls: ScopedClass, f: IpsetFamily = IPSET_V4): string {
  const names = scopedSetNames(cls.id, f);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls, f)}` +
    ` -m conntrack --ctstate INVALID -j SET --map-set ${names.pods} src --map-mark`;
}

/** The class's pods' packets of a connection picked up from the server's side, as `markReplyRule` does for the pods set. */
export function scopedMarkReplyRule(
  cls: ScopedClass,
  mask: number,
  f: IpsetFamily = IPSET_V4,
): string {
  const names = scopedSetNames(cls.id, f);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls, f)}` +
    ` -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/${
      hex(mask)
    } -j SET --map-set ${names.pods} src --map-mark`;
}

/** Destinations a class steers: not never-steered, within its destinations, outside its exclusions. */
function scopeMatch(cls: ScopedClass, f: IpsetFamily): string {
  const names = scopedSetNames(cls.id, f);
  return `-m set ! --match-set ${f.nosteer} dst` +
    (cls.destinations ? ` -m set --match-set ${names.destinations} dst` : "") +
    (cls.excluded ? ` -m set ! --match-set ${names.excluded} dst` : "");
}

/** Every scoped set the classes need, by name. */
export function wantedScopedSets(
  classes: readonly ScopedClass[],
  markMask: number,
  f: IpsetFamily = IPSET_V4,
): Map<string, WantedSet> {
  const sets = new Map<string, WantedSet>();
  const nets = (list: readonly string[]) => new Map(list.map((c) => [c, c]));
  const netsOptions = scopedNetsOptions(f);
  for (const cls of classes) {
    const names = scopedSetNames(cls.id, f);
    sets.set(names.pods, {
      options: scopedPodsOptions(f),
      entries: new Map(
        [...cls.podMarks].map(([ip, mark]) => [ip, `${ip} skbmark ${hex(mark)}/${hex(markMask)}`]),
      ),
    });
    if (cls.destinations) {
      sets.set(names.destinations, {
        options: netsOptions,
        entries: nets(cls.destinations),
      });
    }
    if (cls.excluded) {
      sets.set(names.excluded, { options: netsOptions, entries: nets(cls.excluded) });
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
export function parseScopedSets(
  text: string,
  f: IpsetFamily = IPSET_V4,
): Map<string, LiveScopedSet> {
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
    if (!words[1]?.startsWith(f.scopedPrefix)) continue;
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
