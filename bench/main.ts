/**
 * `deno task bench [section...]`: prints figures (never pass/fail).
 * Sections: apply, react (need root).
 */
import { isRoot } from "../cmd/tools.ts";
import { benchApply, renderApply } from "./apply.ts";
import { benchReact, renderReact } from "./react.ts";

const sections: Record<string, () => Promise<string>> = {
  apply: async () => {
    if (!isRoot()) return "skipped: needs root (network namespaces)";
    return renderApply(await benchApply());
  },
  react: async () => {
    if (!isRoot()) return "skipped: needs root (network namespaces)";
    return renderReact([...(await benchReact(1000)), ...(await benchReact(10000))]);
  },
};

const wanted = Deno.args.length > 0 ? Deno.args : Object.keys(sections);
for (const name of wanted) {
  const run = sections[name];
  if (!run) {
    console.error(`unknown section ${name}; known: ${Object.keys(sections).join(", ")}`);
    Deno.exit(2);
  }
  console.log(`\n## ${name}  (deno task bench ${name})\n`);
  console.log(await run());
}
