import assert from "node:assert/strict";
import { summarizeJunit, summaryLine } from "./run.ts";

const XML = `<testsuites name="deno test" tests="5" failures="1">
  <testsuite name="./a.test.ts" tests="5">
    <testcase name="a" classname="./a.test.ts">
    </testcase>
    <testcase name="b" classname="./a.test.ts">
      <skipped/>
    </testcase>
    <testcase name="c" classname="./a.test.ts">
    </testcase>
    <testcase name="d" classname="./a.test.ts">
      <failure message="Uncaught Error: x">Error: x</failure>
    </testcase>
    <testcase name="c &gt; s1" classname="./a.test.ts">
    </testcase>
  </testsuite>
</testsuites>`;

Deno.test("test runner: counts top-level tests from Deno's JUnit report, steps excluded", () => {
  assert.deepEqual(summarizeJunit(XML), { passed: 2, failed: 1, skipped: 1 });
});

Deno.test("test runner: the summary line is exactly what CI reads", () => {
  assert.equal(summaryLine({ passed: 42, failed: 0, skipped: 0 }), "42 passed, 0 failed");
  assert.equal(
    summaryLine({ passed: 40, failed: 1, skipped: 3 }),
    "40 passed, 1 failed, 3 skipped",
  );
});
