/**
 * EgressSlices: the controller's selection as small objects the agents watch
 * instead of Pods, as EndpointSlices shard a Service's endpoints. A slice
 * holds at most SLICE_MAX_PODS addresses of one egress class (VIP and
 * destination ranges); its name is `<vip>-<class hash>-<n>`, so two
 * controllers that both create "the next slice" collide on the name (409)
 * instead of publishing twice.
 *
 * `SliceBook` plans the writes, purely: it mirrors the published slices (fed
 * by the watch and by our own writes) and, for the addresses marked dirty,
 * moves each one only when its egress changed. A new address goes to the
 * slice of its class with the lowest index that has room; an address stays in
 * its slice for as long as its egress stays, so one pod change rewrites one
 * slice (about 1 KiB). Two rules keep agents from ever reading a pod as
 * removed while it is still selected:
 * - additions are written before removals (an address that moves is in two
 *   slices for a moment, never in none);
 * - a slice is emptied before it is deleted, so a slice deleted with
 *   addresses in it was deleted by someone else (by hand, or the garbage
 *   collector): agents keep its addresses until the controller has
 *   published them again.
 */
import { z } from "zod";
import { EgressSliceSpec, SLICE_MAX_PODS } from "./api.ts";
import { type Egress, egressClass } from "./selection_index.ts";

/** A published slice as the book keeps it. */
export interface SliceRecord {
  readonly name: string;
  readonly resourceVersion?: string;
  /** Set while being deleted (the agents already treat it as gone). */
  readonly deleting?: boolean;
  readonly egress: Egress;
  readonly pods: readonly string[];
}

const SliceShape = z.object({
  metadata: z.object({
    name: z.string(),
    resourceVersion: z.string().optional(),
    deletionTimestamp: z.string().optional().nullable(),
  }),
  spec: EgressSliceSpec,
});

/** Reduces an EgressSlice object (undefined: not one we can read). */
export function sliceRecord(object: unknown): SliceRecord | undefined {
  const parsed = SliceShape.safeParse(object);
  if (!parsed.success) return undefined;
  const { metadata, spec } = parsed.data;
  return {
    name: metadata.name,
    ...(metadata.resourceVersion ? { resourceVersion: metadata.resourceVersion } : {}),
    ...(metadata.deletionTimestamp ? { deleting: true } : {}),
    egress: {
      vip: spec.vip,
      ...(spec.destinationCIDRs?.length ? { destinations: spec.destinationCIDRs } : {}),
      ...(spec.excludedCIDRs?.length ? { excluded: spec.excludedCIDRs } : {}),
      ...(spec.failClosed ? { failClosed: true as const } : {}),
      ...(spec.guardOnly ? { guardOnly: true as const } : {}),
    },
    pods: spec.pods,
  };
}

/** FNV-1a, 32 bits, as 8 hex digits: a short stable name part for a destination class. */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** The name of slice `index` of an egress class: `<vip>-<hash of the ranges>-<index>`. */
export function sliceName(egress: Egress, index: number): string {
  const suffix = `-${hash(egressClass({ ...egress, vip: "" }))}-${index}`;
  return `${egress.vip.slice(0, 253 - suffix.length).replace(/[.-]+$/, "")}${suffix}`;
}

/** The object the controller writes for a slice. */
export function sliceObject(
  name: string,
  egress: Egress,
  pods: readonly string[],
  owner?: { name: string; uid: string },
  resourceVersion?: string,
): { metadata: { name: string; [key: string]: unknown }; [key: string]: unknown } {
  return {
    apiVersion: "egress.kube-egress.io/v1alpha1",
    kind: "EgressSlice",
    metadata: {
      name,
      ...(resourceVersion ? { resourceVersion } : {}),
      labels: {
        "app.kubernetes.io/managed-by": "kube-egress",
        ...(egress.vip.length <= 63 ? { "egress.kube-egress.io/vip": egress.vip } : {}),
      },
      // Garbage-collected with its VIP (the controller also removes orphans itself).
      ...(owner
        ? {
          ownerReferences: [{
            apiVersion: "egress.kube-egress.io/v1alpha1",
            kind: "EgressVIP",
            name: owner.name,
            uid: owner.uid,
            controller: true,
          }],
        }
        : {}),
    },
    spec: {
      vip: egress.vip,
      ...(egress.destinations?.length ? { destinationCIDRs: [...egress.destinations] } : {}),
      ...(egress.excluded?.length ? { excludedCIDRs: [...egress.excluded] } : {}),
      ...(egress.failClosed ? { failClosed: true } : {}),
      ...(egress.guardOnly ? { guardOnly: true } : {}),
      pods: [...pods],
      size: pods.length,
    },
  };
}

/** One write of a plan: create or replace a slice (no resourceVersion = create), or delete it. */
export type SliceWrite =
  | {
    readonly kind: "put";
    readonly name: string;
    readonly resourceVersion?: string;
    readonly egress: Egress;
    readonly pods: readonly string[];
    /** Delete the slice once this (emptying) write is stored. */
    readonly thenDelete?: boolean;
  }
  | { readonly kind: "delete"; readonly name: string };

export class SliceBook {
  readonly #slices = new Map<string, SliceRecord>();
  /** Address → the slices listing it (usually one). */
  readonly #holders = new Map<string, string[]>();
  /** Class → names of its slices. */
  readonly #byClass = new Map<string, Set<string>>();
  readonly #dirty = new Set<string>();
  /** Slices to look at: empty ones (to delete), over-full ones. */
  readonly #dirtySlices = new Set<string>();

  constructor(readonly maxPods: number = SLICE_MAX_PODS) {}

  get slices(): ReadonlyMap<string, SliceRecord> {
    return this.#slices;
  }

  /** True when some address or slice waits for a plan. */
  get pending(): boolean {
    return this.#dirty.size > 0 || this.#dirtySlices.size > 0;
  }

  /** The watch (or one of our writes) says slice `name` is now `slice`; undefined: it is gone. */
  observe(name: string, slice: SliceRecord | undefined) {
    const old = this.#slices.get(name);
    if (old) {
      for (const ip of old.pods) this.#unhold(ip, name);
      const cls = egressClass(old.egress);
      this.#byClass.get(cls)?.delete(name);
      if (this.#byClass.get(cls)?.size === 0) this.#byClass.delete(cls);
      this.#slices.delete(name);
    }
    if (slice && !slice.deleting) {
      this.#slices.set(name, slice);
      for (const ip of slice.pods) this.#hold(ip, name);
      const cls = egressClass(slice.egress);
      const names = this.#byClass.get(cls) ?? new Set();
      names.add(name);
      this.#byClass.set(cls, names);
      if (slice.pods.length === 0 || slice.pods.length > this.maxPods) this.#dirtySlices.add(name);
    }
    // Only the addresses whose membership changed need a look.
    const before = new Set(old?.pods ?? []);
    const after = new Set(slice && !slice.deleting ? slice.pods : []);
    for (const ip of before) if (!after.has(ip)) this.#dirty.add(ip);
    for (const ip of after) if (!before.has(ip)) this.#dirty.add(ip);
  }

  /** Marks addresses whose egress may have changed. */
  touch(ips: Iterable<string>) {
    for (const ip of ips) this.#dirty.add(ip);
  }

  /** Marks everything (after a relist, and on the periodic resync): `wanted` lists what should be published. */
  touchAll(wanted: Iterable<string>) {
    this.touch(wanted);
    this.touch(this.#holders.keys());
    for (const name of this.#slices.keys()) this.#dirtySlices.add(name);
  }

  #hold(ip: string, name: string) {
    const list = this.#holders.get(ip);
    if (!list) this.#holders.set(ip, [name]);
    else if (!list.includes(name)) list.push(name);
  }

  #unhold(ip: string, name: string) {
    const list = this.#holders.get(ip);
    if (!list) return;
    const rest = list.filter((n) => n !== name);
    if (rest.length > 0) this.#holders.set(ip, rest);
    else this.#holders.delete(ip);
  }

  /**
   * The writes that publish `want` for every dirty address (and clean up dirty
   * slices), additions first. Clears the marks: a write that fails must
   * `touch` its addresses again (the publisher does).
   */
  plan(want: (ip: string) => Egress | undefined): SliceWrite[] {
    const next = new Map<string, string[]>();
    const newSlices = new Map<string, Egress>();
    const pods = (name: string) => {
      let list = next.get(name);
      if (!list) {
        list = [...(this.#slices.get(name)?.pods ?? [])];
        next.set(name, list);
      }
      return list;
    };
    const added = new Set<string>();
    const classOf = (name: string) => {
      const egress = this.#slices.get(name)?.egress ?? newSlices.get(name)!;
      return egressClass(egress);
    };
    // Over-full slices (edited by hand) give their surplus back.
    for (const name of this.#dirtySlices) {
      const slice = this.#slices.get(name);
      if (slice && slice.pods.length > this.maxPods) {
        for (const ip of slice.pods.slice(this.maxPods)) this.#dirty.add(ip);
      }
    }
    const dirty = [...this.#dirty].sort();
    this.#dirty.clear();
    for (const ip of dirty) {
      const egress = want(ip);
      const cls = egress && egressClass(egress);
      const holders = [...(this.#holders.get(ip) ?? [])].sort();
      const keep = cls === undefined
        ? undefined
        : holders.find((h) =>
          classOf(h) === cls && (this.#slices.get(h)?.pods.indexOf(ip) ?? 0) < this.maxPods
        );
      for (const h of holders) {
        if (h === keep) continue;
        const list = pods(h);
        const at = list.indexOf(ip);
        if (at >= 0) list.splice(at, 1);
      }
      if (egress === undefined || keep !== undefined) continue;
      const target = this.#roomIn(cls!, egress, pods, newSlices);
      pods(target).push(ip);
      added.add(target);
    }
    const writes: SliceWrite[] = [];
    const removals: SliceWrite[] = [];
    const deletes: SliceWrite[] = [];
    for (const [name, list] of [...next].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const slice = this.#slices.get(name);
      const egress = slice?.egress ?? newSlices.get(name)!;
      if (slice && sameList(slice.pods, list)) continue;
      if (!slice && list.length === 0) continue;
      const write: SliceWrite = {
        kind: "put",
        name,
        ...(slice?.resourceVersion ? { resourceVersion: slice.resourceVersion } : {}),
        egress,
        pods: list,
        ...(slice && list.length === 0 ? { thenDelete: true } : {}),
      };
      (added.has(name) ? writes : removals).push(write);
    }
    for (const name of this.#dirtySlices) {
      const slice = this.#slices.get(name);
      if (slice && slice.pods.length === 0 && !next.has(name)) {
        deletes.push({ kind: "delete", name });
      }
    }
    this.#dirtySlices.clear();
    return [...writes, ...removals, ...deletes];
  }

  /** The slice of class `cls` with the lowest index and room, or a new one. */
  #roomIn(
    cls: string,
    egress: Egress,
    pods: (name: string) => string[],
    newSlices: Map<string, Egress>,
  ): string {
    const names = [
      ...(this.#byClass.get(cls) ?? []),
      ...[...newSlices.keys()].filter((n) => egressClass(newSlices.get(n)!) === cls),
    ];
    const indexed = names.map((name) => ({ name, index: indexOf(name) }))
      .sort((a, b) => a.index - b.index || (a.name < b.name ? -1 : 1));
    for (const { name } of indexed) if (pods(name).length < this.maxPods) return name;
    const taken = new Set(indexed.map((s) => s.name));
    for (let i = 0;; i++) {
      const name = sliceName(egress, i);
      if (taken.has(name) || this.#slices.has(name)) continue;
      newSlices.set(name, egress);
      return name;
    }
  }
}

function indexOf(name: string): number {
  const n = Number(name.slice(name.lastIndexOf("-") + 1));
  return Number.isInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
