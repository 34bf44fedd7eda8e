import assert from "node:assert/strict";
import { join } from "node:path";
import fc from "fast-check";
import { joinPath } from "../cmd/path.ts";

Deno.test("joinPath joins as node:path's join does", () => {
  const segment = fc.constantFrom(
    "",
    "/",
    ".",
    "..",
    "a",
    "b.c",
    "//",
    "a/",
    "/a",
    "./a",
    "../a",
    "a/..",
  );
  fc.assert(
    fc.property(
      fc.array(fc.array(segment, { maxLength: 4 }).map((s) => s.join("")), { maxLength: 4 }),
      (parts) => {
        assert.equal(joinPath(...parts), join(...parts), JSON.stringify(parts));
      },
    ),
    { numRuns: 2000 },
  );
  assert.equal(
    joinPath("/etc/kube-egress/podip_vip_mapping/", "10.0.0.1"),
    "/etc/kube-egress/podip_vip_mapping/10.0.0.1",
  );
});
