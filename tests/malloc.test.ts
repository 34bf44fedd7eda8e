import assert from "node:assert/strict";

/**
 * In a process of its own (mallopt changes the whole process): whether a
 * 100,000-byte block that the heap cannot serve (trimmed first) gets a
 * mapping of its own (mallinfo2's hblks) rather than a grown heap (glibc's
 * default threshold is 128 KiB), before and after tuneMallocForAgent, and
 * what it reports.
 */
async function probe(env: Record<string, string>) {
  const script = `
    import { tuneMallocForAgent } from ${
    JSON.stringify(new URL("../cmd/malloc.ts", import.meta.url).href)
  };
    const libc = Deno.dlopen("libc.so.6", {
      malloc: { parameters: ["usize"], result: "pointer" },
      free: { parameters: ["pointer"], result: "void" },
      malloc_trim: { parameters: ["usize"], result: "i32" },
      mallinfo2: { parameters: [], result: { struct: Array(10).fill("usize") } },
    });
    const hblks = () => new BigUint64Array(libc.symbols.mallinfo2().buffer)[3];
    const ownMapping = () => {
      libc.symbols.malloc_trim(0n);
      const before = hblks();
      const block = libc.symbols.malloc(100000n);
      const after = hblks();
      libc.symbols.free(block);
      return after > before;
    };
    const before = ownMapping();
    const tuning = tuneMallocForAgent();
    console.log(JSON.stringify({ before, tuning, after: ownMapping() }));
  `;
  const environment = { ...Deno.env.toObject(), ...env };
  if (!("GLIBC_TUNABLES" in env)) delete environment.GLIBC_TUNABLES;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    env: environment,
    clearEnv: true,
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("malloc: a long-running process gives big blocks mappings of their own (glibc defaults before)", async () => {
  assert.deepEqual(await probe({}), { before: false, tuning: "mallopt", after: true });
});

Deno.test("malloc: an operator's GLIBC_TUNABLES wins, even empty (glibc's defaults)", async () => {
  assert.deepEqual(await probe({ GLIBC_TUNABLES: "" }), {
    before: false,
    tuning: "environment",
    after: false,
  });
});
