import { benchOneShot, renderOneShot } from "./bench/apply.ts";
console.log(renderOneShot(await benchOneShot(1000, Number(Deno.args[0] ?? 5))));
