/**
 * Builds the node image from the repository's Dockerfile, unchanged, the way
 * CI does on a machine without registry access (local bases as build
 * arguments, `--network host` for apt and npm), and describes what came out:
 * size, labels, and the tools and versions actually in it, checked against
 * the pins the labels record.
 */
import $ from "dax";
import { join } from "node:path";
import type { Docker } from "./docker.ts";
import { NODE_TOOLS } from "../cmd/tools.ts";
import { type DebianRecipe, DEFAULT_MIRRORS, importBases, type LocalBases } from "./bases.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The `ARG NAME=default` lines of a Dockerfile (the first default of each name). */
export function dockerfileArgs(text: string): Record<string, string> {
  const args: Record<string, string> = {};
  for (const match of text.matchAll(/^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*$/gm)) {
    args[match[1]] ??= match[2];
  }
  return args;
}

/** The Debian suite of an image reference such as `debian:bookworm-slim`. */
export function debianSuite(image: string): string {
  const match = /^(?:docker\.io\/)?(?:library\/)?debian:([a-z]+)(?:-slim)?$/.exec(image);
  if (!match) {
    throw new Error(
      `DEBIAN_IMAGE ${image} is not debian:<suite>[-slim]: cannot make it locally (pass --debian-image)`,
    );
  }
  return match[1];
}

/** The tool pins of the Dockerfile: package → version, from its `<PKG>_VERSION` build arguments. */
export function toolPins(args: Record<string, string>): Record<string, string> {
  const pins: Record<string, string> = {};
  for (const [name, value] of Object.entries(args)) {
    const match = /^([A-Z0-9]+)_VERSION$/.exec(name);
    if (match && name !== "DENO_VERSION") pins[match[1].toLowerCase()] = value;
  }
  return pins;
}

/** What the OCI labels say about the checkout: version, revision, source. */
async function gitFacts(): Promise<{ version: string; revision: string; source: string }> {
  const git = async (...args: string[]) =>
    (await $`git -C ${ROOT} ${args}`.noThrow().quiet().stdout("piped")).stdout.trim();
  const revision = await git("rev-parse", "HEAD");
  const dirty = (await git("status", "--porcelain", "--untracked-files=no")) !== "";
  const version = (await git("describe", "--tags", "--always", "--dirty")) || "dev";
  const remote = await git("remote", "get-url", "origin");
  return {
    version,
    revision: revision ? `${revision}${dirty ? "-dirty" : ""}` : "unknown",
    // Only a remote others can reach says where the source is (not a local path).
    source: /^(https?|ssh|git):\/\//.test(remote) ? remote : "",
  };
}

/** The CA bundle this machine trusts, for the build step that fetches npm modules (see Dockerfile). */
function caBundle(): string | undefined {
  for (const path of [Deno.env.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"]) {
    if (!path) continue;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not there.
    }
  }
  return undefined;
}

export interface BuildOptions {
  /** The tag of the result. */
  readonly tag: string;
  /** Prefix of the local bases' tags (a run id keeps them apart). */
  readonly basePrefix: string;
  /** Use these bases instead of making them (image references the daemon has). */
  readonly debianImage?: string;
  readonly denoImage?: string;
  /** Remove the local bases again once built (on a daemon that is not the run's own). */
  readonly removeBases?: boolean;
  readonly log: (line: string) => void;
}

export interface BuiltImage {
  readonly tag: string;
  readonly seconds: number;
  readonly bases: readonly string[];
}

/** Builds the Dockerfile on local bases (made or cached) and tags it `tag`. */
export async function buildImage(docker: Docker, options: BuildOptions): Promise<BuiltImage> {
  const started = performance.now();
  const dockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  const defaults = dockerfileArgs(dockerfile);
  let bases: LocalBases | undefined;
  if (!options.debianImage || !options.denoImage) {
    const recipe: DebianRecipe = { suite: debianSuite(defaults.DEBIAN_IMAGE), ...DEFAULT_MIRRORS };
    bases = await importBases(
      docker,
      options.basePrefix,
      { recipe, denoVersion: defaults.DENO_VERSION },
      options.log,
    );
  }
  const facts = await gitFacts();
  const buildArgs = {
    DEBIAN_IMAGE: options.debianImage ?? bases!.debianImage,
    DENO_IMAGE: options.denoImage ?? bases!.denoImage,
    VERSION: facts.version,
    REVISION: facts.revision,
    SOURCE: facts.source,
  };
  const ca = caBundle();
  const build = (extra: Record<string, string>) => {
    const args = [
      "build",
      "--network",
      "host",
      "--progress",
      "plain",
      "--tag",
      options.tag,
      ...Object.entries({ ...buildArgs, ...extra }).flatMap((
        [k, v],
      ) => ["--build-arg", `${k}=${v}`]),
      ...(ca ? ["--secret", `id=build-ca,src=${ca}`] : []),
      ROOT,
    ];
    options.log(`docker build ${args.slice(1, -1).join(" ")} .`);
    return docker.exec(args, { timeoutMs: 20 * 60_000 });
  };
  let r = await build({});
  // Debian's mirrors keep only a package's newest version: once a point
  // release replaces a pinned one, the Dockerfile's default no longer builds.
  // CI must not break on the mirror's schedule: build on what the mirror has
  // and say which pin to bump (the labels record what was installed).
  const gone = r.code === 0 ? [] : missingPins(r.stderr);
  if (gone.length > 0) {
    const current = await mirrorVersions(docker, buildArgs.DEBIAN_IMAGE, gone);
    const bumps = Object.fromEntries(
      gone.filter((p) => current[p]).map((p) => [`${p.toUpperCase()}_VERSION`, current[p]]),
    );
    for (const [arg, version] of Object.entries(bumps)) {
      options.log(
        `warning: ${arg}=${
          defaults[arg]
        } is no longer on the mirror: built with ${version}; bump it in the Dockerfile`,
      );
    }
    if (Object.keys(bumps).length > 0) r = await build(bumps);
  }
  if (bases && options.removeBases) {
    await docker.exec(["rmi", bases.debianImage, bases.denoImage], { timeoutMs: 60_000 });
  }
  if (r.code !== 0) {
    const tail = r.stderr.trim().split("\n").slice(-25).join("\n");
    throw new Error(`docker build failed (exit ${r.code}):\n${tail}`);
  }
  return {
    tag: options.tag,
    seconds: (performance.now() - started) / 1000,
    bases: bases?.origins ?? [buildArgs.DEBIAN_IMAGE, buildArgs.DENO_IMAGE],
  };
}

/** Packages whose pinned version apt could not find ("Version 'x' for 'pkg' was not found"). */
export function missingPins(stderr: string): string[] {
  return [
    ...new Set([...stderr.matchAll(/Version '[^']+' for '([a-z0-9.+-]+)' was not found/g)]
      .map((m) => m[1])),
  ];
}

/** The candidate version of each package on the base image's mirror (`apt-cache policy`). */
async function mirrorVersions(
  docker: Docker,
  image: string,
  pkgs: readonly string[],
): Promise<Record<string, string>> {
  const r = await docker.exec([
    "run",
    "--rm",
    "--network",
    "host",
    image,
    "sh",
    "-c",
    `apt-get update -qq >/dev/null && apt-cache policy ${pkgs.join(" ")}`,
  ], { timeoutMs: 5 * 60_000 });
  return parseAptPolicy(r.stdout);
}

/** package → Candidate version, from `apt-cache policy` output. */
export function parseAptPolicy(text: string): Record<string, string> {
  const versions: Record<string, string> = {};
  let pkg: string | undefined;
  for (const line of text.split("\n")) {
    const head = /^([a-z0-9.+-]+):$/.exec(line);
    if (head) pkg = head[1];
    const candidate = /^\s+Candidate: (\S+)/.exec(line);
    if (pkg && candidate && candidate[1] !== "(none)") versions[pkg] = candidate[1];
  }
  return versions;
}

/** One tool in the image: its Debian package and version, and what the tool itself says. */
export interface ImageTool {
  readonly pkg: string;
  readonly installed: string;
  readonly pinned?: string;
  readonly says: string;
}

export interface ImageDescription {
  readonly tag: string;
  readonly id: string;
  readonly bytes: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly deno: string;
  readonly tools: readonly ImageTool[];
  /** Sizes (KiB) of the parts that matter: the module cache, the sources, the Deno binary. */
  readonly parts: Readonly<Record<string, number>>;
  /** What must not be in it, found anyway (compilers, package lists, docs). */
  readonly unwanted: readonly string[];
  /** Commands the agent may run (NODE_TOOLS) that are not on the image's PATH. */
  readonly missing: readonly string[];
}

/** What each packaged tool says its version is (first line). */
const TOOL_VERSION_COMMANDS: Record<string, string> = {
  iproute2: "ip -V",
  iptables: "iptables -V",
  ipset: "ipset -v",
  nftables: "nft -v",
  keepalived: "keepalived --version 2>&1",
  conntrack: "conntrack -V",
  conntrackd: "conntrackd -v",
  arping: "arping --help 2>&1",
  ipv6toolkit: "na6 -h 2>&1",
  tini: "tini --version",
};

/**
 * Inspects the image and runs it once (`--network none`, a shell instead of
 * the agent) to read the installed versions and sizes.
 */
export async function describeImage(docker: Docker, tag: string): Promise<ImageDescription> {
  const inspect = JSON.parse(await docker.run(["image", "inspect", tag]))[0] as {
    Id: string;
    Size: number;
    Config: { Labels: Record<string, string> | null };
  };
  const labels = inspect.Config.Labels ?? {};
  const pins = Object.fromEntries(
    Object.entries(labels).filter(([k]) => k.startsWith("io.kube-egress.debian.")).map((
      [k, v],
    ) => [k.slice("io.kube-egress.debian.".length), v]),
  );
  const pkgs = Object.keys(TOOL_VERSION_COMMANDS);
  const script = [
    `dpkg-query -W -f '\${Package}=\${Version}\\n' ${pkgs.join(" ")}`,
    ...pkgs.map((p) => `echo "say ${p}=$(${TOOL_VERSION_COMMANDS[p]} | head -1)"`),
    `echo "say deno=$(deno --version | head -1)"`,
    `echo "size modules=$(du -sk /app/.deno | cut -f1)"`,
    `echo "size sources=$(du -sk --exclude=.deno /app | cut -f1)"`,
    `echo "size deno-binary=$(du -sk /usr/bin/deno | cut -f1)"`,
    // Hygiene: none of these may exist.
    `for c in gcc cc g++ make; do command -v $c >/dev/null && echo "unwanted compiler $c"; done`,
    `for c in ${
      [...new Set(NODE_TOOLS.map((t) => t.command))].join(" ")
    }; do command -v $c >/dev/null || echo "missing $c"; done`,
    `[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v '^lock$' | grep -v '^partial$')" ] && echo "unwanted apt package lists in /var/lib/apt/lists"`,
    `[ -n "$(find /usr/share/doc -type f ! -name copyright 2>/dev/null | head -1)" ] && echo "unwanted documentation in /usr/share/doc"`,
    `[ -n "$(ls -A /usr/share/man 2>/dev/null)" ] && echo "unwanted manuals in /usr/share/man"`,
    `true`,
  ].join("\n");
  const out = await docker.run(
    ["run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c", script],
    { timeoutMs: 60_000 },
  );
  const installed: Record<string, string> = {};
  const says: Record<string, string> = {};
  const parts: Record<string, number> = {};
  const unwanted: string[] = [];
  const missing: string[] = [];
  for (const line of out.split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^say ([a-z0-9]+)=(.*)$/.exec(line))) says[m[1]] = m[2].trim();
    else if ((m = /^size ([a-z-]+)=(\d+)$/.exec(line))) parts[m[1]] = Number(m[2]);
    else if ((m = /^unwanted (.*)$/.exec(line))) unwanted.push(m[1]);
    else if ((m = /^missing (\S+)$/.exec(line))) missing.push(m[1]);
    else if ((m = /^([a-z0-9.+-]+)=(\S+)$/.exec(line))) installed[m[1]] = m[2];
  }
  return {
    tag,
    id: inspect.Id,
    bytes: inspect.Size,
    labels,
    deno: says.deno ?? "",
    tools: pkgs.map((pkg) => ({
      pkg,
      installed: installed[pkg] ?? "(missing)",
      pinned: pins[pkg],
      says: says[pkg] ?? "",
    })),
    parts,
    unwanted,
    missing,
  };
}

/** Differences between the pins the labels record and what is installed (empty when all agree). */
export function pinMismatches(description: ImageDescription): string[] {
  return description.tools.filter((t) => t.pinned !== t.installed).map((t) =>
    `${t.pkg}: label says ${t.pinned ?? "(no label)"}, installed ${t.installed}`
  );
}

/** Megabytes as docker prints them (10^6 bytes). */
export function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The description as the lines `deno task image` prints. */
export function renderDescription(d: ImageDescription): string[] {
  const oci = "org.opencontainers.image.";
  const lines = [
    `image ${d.tag} (${d.id.slice(0, 19)}): ${megabytes(d.bytes)}`,
    `  ${d.deno}; module cache ${(d.parts.modules / 1024).toFixed(1)} MiB, sources ${
      (d.parts.sources / 1024).toFixed(1)
    } MiB, Deno binary ${(d.parts["deno-binary"] / 1024).toFixed(1)} MiB`,
    `  labels: ${
      ["source", "version", "revision"].map((k) => `${k}=${d.labels[oci + k] || "(none)"}`).join(
        " ",
      )
    }`,
    "  tools (Debian package = version, pinned in the Dockerfile and in labels; what the tool says):",
    ...d.tools.map((t) => `    ${t.pkg}=${t.installed}  ${t.says}`),
  ];
  if (d.unwanted.length > 0) lines.push(`  unwanted: ${d.unwanted.join("; ")}`);
  if (d.missing.length > 0) lines.push(`  missing commands the agent runs: ${d.missing.join(" ")}`);
  return lines;
}
