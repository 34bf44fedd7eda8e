import assert from "node:assert/strict";
import fc from "fast-check";
import { EgressSliceSpec } from "../../core/kube/api.ts";
import { type Egress, egressClass } from "../../core/kube/selection_index.ts";
import {
  SliceBook,
  sliceName,
  sliceObject,
  sliceRecord,
  type SliceWrite,
} from "../../core/kube/slices.ts";

/** Applies writes as an API server would store them; returns how many objects were written. */
function store(book: SliceBook, writes: readonly SliceWrite[], rv = { n: 1 }): number {
  for (const w of writes) {
    if (w.kind === "delete") book.observe(w.name, undefined);
    else if (w.thenDelete) book.observe(w.name, undefined);
    else {
      book.observe(
        w.name,
        sliceRecord({
          ...sliceObject(w.name, w.egress, w.pods),
          metadata: { name: w.name, resourceVersion: String(rv.n++) },
        }),
      );
    }
  }
  return writes.length;
}

/** Address → class, as the published slices say; throws if an address is in two. */
function published(book: SliceBook): Map<string, string> {
  const out = new Map<string, string>();
  for (const slice of book.slices.values()) {
    assert.ok(slice.pods.length > 0, `${slice.name} is empty`);
    assert.ok(slice.pods.length <= book.maxPods, `${slice.name} is over-full`);
    for (const ip of slice.pods) {
      assert.ok(!out.has(ip), `${ip} in two slices`);
      out.set(ip, egressClass(slice.egress));
    }
  }
  return out;
}

const office: Egress = { vip: "office" };
const web: Egress = { vip: "office", destinations: ["203.0.113.0/24"] };
const ip = (n: number) => `10.244.${n >> 8}.${n & 255}`;

Deno.test("slices: addresses fill slice 0 to the limit, then slice 1; one change rewrites one slice", () => {
  const book = new SliceBook(4);
  const want = new Map<string, Egress>();
  for (let n = 1; n <= 6; n++) want.set(ip(n), office);
  book.touch(want.keys());
  const writes = book.plan((a) => want.get(a));
  assert.deepEqual(writes.map((w) => [w.kind, w.name, w.kind === "put" ? w.pods.length : 0]), [
    ["put", sliceName(office, 0), 4],
    ["put", sliceName(office, 1), 2],
  ]);
  store(book, writes);
  want.delete(ip(2));
  want.set(ip(7), office);
  book.touch([ip(2), ip(7)]);
  const next = book.plan((a) => want.get(a));
  // ip(7) goes to the hole ip(2) left in slice 0: one object rewritten.
  assert.equal(next.length, 1);
  assert.equal(next[0].name, sliceName(office, 0));
  store(book, next);
  assert.deepEqual(published(book), new Map([...want].map(([a, e]) => [a, egressClass(e)])));
});

Deno.test("slices: a pod that changes class is added to its new slice before it leaves the old one", () => {
  const book = new SliceBook(4);
  const want = new Map<string, Egress>([[ip(1), office], [ip(2), office]]);
  book.touch(want.keys());
  store(book, book.plan((a) => want.get(a)));
  want.set(ip(1), web);
  book.touch([ip(1)]);
  const writes = book.plan((a) => want.get(a));
  assert.deepEqual(writes.map((w) => w.name), [sliceName(web, 0), sliceName(office, 0)]);
  assert.notEqual(sliceName(web, 0), sliceName(office, 0));
});

Deno.test("slices: the last pod leaving empties the slice, then deletes it", () => {
  const book = new SliceBook(4);
  const want = new Map<string, Egress>([[ip(1), office]]);
  book.touch(want.keys());
  store(book, book.plan((a) => want.get(a)));
  want.clear();
  book.touch([ip(1)]);
  const writes = book.plan((a) => want.get(a));
  assert.deepEqual(writes, [{
    kind: "put",
    name: sliceName(office, 0),
    resourceVersion: "1",
    egress: office,
    pods: [],
    thenDelete: true,
  }]);
});

Deno.test("slices: a slice deleted by hand is published again; a duplicate from a second controller is dropped", () => {
  const book = new SliceBook(4);
  const want = new Map<string, Egress>([[ip(1), office], [ip(2), office]]);
  book.touch(want.keys());
  store(book, book.plan((a) => want.get(a)));
  book.observe(sliceName(office, 0), undefined); // kubectl delete
  const again = book.plan((a) => want.get(a));
  assert.equal(again.length, 1);
  assert.deepEqual(again[0].kind === "put" && [...again[0].pods].sort(), [ip(1), ip(2)]);
  store(book, again);
  // Another controller (for a moment) wrote ip(2) into a second slice too.
  book.observe(
    "other",
    sliceRecord({ ...sliceObject("other", office, [ip(2)]), metadata: { name: "other" } }),
  );
  store(book, book.plan((a) => want.get(a)));
  assert.deepEqual(published(book), new Map([[ip(1), "office||"], [ip(2), "office||"]]));
});

Deno.test("slices: after any sequence of changes the slices hold exactly the selection, and a re-plan writes nothing", () => {
  const change = fc.tuple(
    fc.integer({ min: 1, max: 40 }),
    fc.constantFrom<Egress | undefined>(office, web, { vip: "lab" }, undefined),
  );
  fc.assert(
    fc.property(fc.array(fc.array(change, { maxLength: 15 }), { maxLength: 12 }), (rounds) => {
      const book = new SliceBook(5);
      const want = new Map<string, Egress>();
      for (const round of rounds) {
        for (const [n, egress] of round) {
          if (egress) want.set(ip(n), egress);
          else want.delete(ip(n));
          book.touch([ip(n)]);
        }
        store(book, book.plan((a) => want.get(a)));
        assert.deepEqual(
          published(book),
          new Map([...want].map(([a, e]) => [a, egressClass(e)])),
        );
        book.touchAll(want.keys());
        assert.deepEqual(book.plan((a) => want.get(a)), []);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("slices: the object written passes the CRD's schema, and a slice name is a valid object name", () => {
  const object = sliceObject(sliceName(web, 3), web, [ip(1), ip(2)], { name: "office", uid: "u" });
  assert.equal(EgressSliceSpec.safeParse(object.spec).success, true);
  assert.match(object.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
  const long = sliceName({ vip: "a".repeat(253) }, 12);
  assert.ok(long.length <= 253);
  assert.equal(EgressSliceSpec.safeParse({ vip: "x", pods: [ip(1)], size: 2 }).success, false);
});
