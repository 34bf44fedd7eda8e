/**
 * glibc's malloc settings for a process that keeps running (an agent with
 * `-u` or the Kubernetes source, the controller): freed memory is given back
 * instead of kept (trim threshold 64 KiB, no top pad), and blocks of 16 KiB
 * and more get mappings of their own, returned when freed (else they
 * fragment the heap: ~25 MiB of an agent's RSS at 10,000 pods; README
 * "Memory"). They used to be GLIBC_TUNABLES in the image and `deno task run`,
 * which every process pays from its first allocation: a one-shot `mod.ts
 * run` (1,000 mappings) took ~50-75 ms longer with them, for memory it gives
 * back at exit anyway. So the process that stays sets them itself, once it
 * knows it stays, with mallopt(3) through Deno's FFI (as cmd/nft_generation.ts
 * reaches netlink). An operator's own GLIBC_TUNABLES (set at all) wins.
 */

/** mallopt(3) parameters (malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_TOP_PAD = -2;
const M_MMAP_THRESHOLD = -3;

/** What a long-running process uses (the former GLIBC_TUNABLES values). */
export const AGENT_MALLOC = { trimThreshold: 65536, topPad: 0, mmapThreshold: 16384 } as const;

/** How the settings came to be: set here, the operator's GLIBC_TUNABLES, or glibc's defaults (no FFI, no glibc). */
export type MallocTuning = "mallopt" | "environment" | "unavailable";

/** Applies AGENT_MALLOC to this process unless GLIBC_TUNABLES is set; never throws. */
export function tuneMallocForAgent(): MallocTuning {
  if (Deno.env.get("GLIBC_TUNABLES") !== undefined) return "environment";
  try {
    if (Deno.build.os !== "linux") return "unavailable";
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return "unavailable";
    const libc = Deno.dlopen("libc.so.6", {
      mallopt: { parameters: ["i32", "i32"], result: "i32" },
    });
    try {
      const { mallopt } = libc.symbols;
      // mallopt returns 1 on success; fixing the mmap threshold also stops glibc raising it.
      const ok = mallopt(M_MMAP_THRESHOLD, AGENT_MALLOC.mmapThreshold) === 1 &&
        mallopt(M_TRIM_THRESHOLD, AGENT_MALLOC.trimThreshold) === 1 &&
        mallopt(M_TOP_PAD, AGENT_MALLOC.topPad) === 1;
      return ok ? "mallopt" : "unavailable";
    } finally {
      libc.close();
    }
  } catch {
    // No glibc (musl), or the library cannot be opened: glibc's defaults stay.
    return "unavailable";
  }
}
