/**
 * The Dockerfile's two bases, made here from what this machine can reach
 * (Debian's mirror and the npm registry) when the published images cannot be
 * pulled: a Debian root file system like the official `debian:<suite>-slim`
 * (debootstrap minbase, the same dpkg excludes and apt settings), and a
 * `denoland/deno:bin-<version>` equivalent holding only `/deno` (the binary
 * of npm's `@deno/linux-<arch>-glibc`, the package `npx deno` runs). The
 * Debian file system (the slow part, ~35 s) is cached as a tar keyed by its
 * recipe and rebuilt when the recipe changes or after a week (Debian's
 * updates); the Deno binary is cached per version.
 */
import $ from "dax";
import { join } from "node:path";
import type { Docker } from "./docker.ts";

/** Tools the bases need, by Debian package. */
export const BASE_PACKAGES = ["debootstrap"] as const;

/** Where slow results are kept between runs: $KUBE_EGRESS_CACHE_DIR, else /var/cache/kube-egress. */
export function cacheDir(): string {
  return Deno.env.get("KUBE_EGRESS_CACHE_DIR") || "/var/cache/kube-egress";
}

/** A cached Debian base older than this is rebuilt, so that Debian's updates reach the image. */
export const MAX_BASE_AGE_MS = 7 * 24 * 3600 * 1000;

/** What the Debian base is made from; any change makes a new cache key. */
export interface DebianRecipe {
  readonly suite: string;
  readonly mirror: string;
  readonly securityMirror: string;
}

export const DEFAULT_MIRRORS = {
  mirror: "http://deb.debian.org/debian",
  securityMirror: "http://deb.debian.org/debian-security",
} as const;

/** What the official slim images leave out (debuerreotype's "slimify"), as dpkg excludes. */
const SLIM_DPKG_EXCLUDES = [
  "path-exclude /usr/share/doc/*",
  "path-include /usr/share/doc/*/copyright",
  "path-exclude /usr/share/groff/*",
  "path-exclude /usr/share/info/*",
  "path-exclude /usr/share/linda/*",
  "path-exclude /usr/share/lintian/*",
  "path-exclude /usr/share/locale/*",
  "path-exclude /usr/share/man/*",
];

/** The official images' apt settings: no caches kept, no translations. */
const SLIM_APT_CONF: Record<string, string> = {
  "docker-clean": [
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };',
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };',
    'Dir::Cache::pkgcache "";',
    'Dir::Cache::srcpkgcache "";',
  ].join("\n"),
  "docker-no-languages": 'Acquire::Languages "none";',
  "docker-gzip-indexes": 'Acquire::GzipIndexes "true";',
  "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";',
};

/** Bumped whenever the steps below change (part of the cache key). */
const RECIPE_VERSION = 1;

/** The machine's Debian architecture (amd64, arm64). */
export async function debianArch(): Promise<string> {
  return (await $`dpkg --print-architecture`.text()).trim();
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The cache key of a recipe on an architecture: 12 hex digits of a hash of everything it is made from. */
export async function baseKey(recipe: DebianRecipe, arch: string): Promise<string> {
  const inputs = { recipe, arch, RECIPE_VERSION, SLIM_DPKG_EXCLUDES, SLIM_APT_CONF };
  return (await sha256(JSON.stringify(inputs))).slice(0, 12);
}

function sources(recipe: DebianRecipe): string {
  const keyring = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg";
  return [
    `Types: deb\nURIs: ${recipe.mirror}\nSuites: ${recipe.suite} ${recipe.suite}-updates\nComponents: main\n${keyring}\n`,
    `Types: deb\nURIs: ${recipe.securityMirror}\nSuites: ${recipe.suite}-security\nComponents: main\n${keyring}\n`,
  ].join("\n");
}

async function fresh(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.mtime !== null && Date.now() - info.mtime.getTime() < MAX_BASE_AGE_MS;
  } catch {
    return false;
  }
}

/** Deletes everything below `dir` matching the slim excludes (what the official build removes). */
async function slimify(root: string): Promise<void> {
  await Deno.writeTextFile(
    join(root, "etc/dpkg/dpkg.cfg.d/docker"),
    SLIM_DPKG_EXCLUDES.join("\n") + "\n",
  );
  for (const [name, text] of Object.entries(SLIM_APT_CONF)) {
    await Deno.writeTextFile(join(root, "etc/apt/apt.conf.d", name), text + "\n");
  }
  await $`find ${join(root, "usr/share/doc")} -mindepth 1 ! -name copyright ! -type d -delete`;
  await $`find ${join(root, "usr/share/doc")} -mindepth 1 -depth -type d -empty -delete`;
  for (const dir of ["groff", "info", "linda", "lintian", "locale", "man"]) {
    await Deno.remove(join(root, "usr/share", dir), { recursive: true }).catch(() => {});
    await Deno.mkdir(join(root, "usr/share", dir), { recursive: true });
  }
  // Package lists, caches and logs of the bootstrap itself.
  await $`sh -c ${"rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/log/*.log var/log/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old"}`
    .cwd(root);
}

/**
 * The Debian base as a root file system tar: from the cache when fresh, else
 * debootstrapped (and cached). `log` hears what is done and how long it took.
 */
export async function debianRootfs(
  recipe: DebianRecipe,
  log: (line: string) => void,
): Promise<{ path: string; cached: boolean }> {
  const arch = await debianArch();
  const key = await baseKey(recipe, arch);
  const dir = join(cacheDir(), "bases");
  const path = join(dir, `debian-${recipe.suite}-slim-${arch}-${key}.tar`);
  if (await fresh(path)) return { path, cached: true };
  if (!(await $.commandExists("debootstrap"))) {
    throw new Error(
      `debootstrap not found (it makes the Debian base); install it with: apt-get install -y ${
        BASE_PACKAGES.join(" ")
      }`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir, prefix: `build-${key}-` });
  const started = performance.now();
  try {
    const root = join(work, "rootfs");
    log(`debootstrap --variant=minbase ${recipe.suite} from ${recipe.mirror} (cached afterwards)`);
    const r =
      await $`debootstrap --variant=minbase --arch=${arch} ${recipe.suite} ${root} ${recipe.mirror}`
        .stdout("piped").stderr("piped").noThrow().timeout(15 * 60_000);
    if (r.code !== 0) {
      const tail = (r.stdout + r.stderr).trim().split("\n").slice(-10).join("\n");
      throw new Error(`debootstrap ${recipe.suite} failed (exit ${r.code}):\n${tail}`);
    }
    await Deno.remove(join(root, "etc/apt/sources.list")).catch(() => {});
    await Deno.writeTextFile(join(root, "etc/apt/sources.list.d/debian.sources"), sources(recipe));
    await slimify(root);
    await $`tar --numeric-owner -C ${root} -cf ${path}.partial .`;
    await Deno.rename(`${path}.partial`, path);
    // Older bases of the same suite are stale now.
    for await (const entry of Deno.readDir(dir)) {
      const other = join(dir, entry.name);
      if (entry.name.startsWith(`debian-${recipe.suite}-slim-`) && other !== path) {
        await Deno.remove(other, { recursive: true }).catch(() => {});
      }
    }
    log(`Debian base made in ${((performance.now() - started) / 1000).toFixed(1)} s: ${path}`);
    return { path, cached: false };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** npm's name for this architecture in @deno/linux-<arch>-glibc. */
function npmArch(arch: string): string {
  const names: Record<string, string> = { amd64: "x64", arm64: "arm64" };
  const name = names[arch];
  if (!name) throw new Error(`no Deno binary on npm for the Debian architecture ${arch}`);
  return name;
}

/**
 * The Deno binary of `version`: this very Deno when it is that version, else
 * from the cache, else from npm (`npm pack @deno/linux-<arch>-glibc@<version>`).
 */
export async function denoBinary(
  version: string,
  log: (line: string) => void,
): Promise<{ path: string; from: string }> {
  if (Deno.version.deno === version) return { path: Deno.execPath(), from: "this Deno" };
  const arch = npmArch(await debianArch());
  const pkg = `@deno/linux-${arch}-glibc@${version}`;
  const dir = join(cacheDir(), `deno-${version}-${arch}`);
  const path = join(dir, "deno");
  const works = async () =>
    (await $`${path} --version`.noThrow().quiet().text().catch(() => "")).includes(
      `deno ${version}`,
    );
  if (await works()) return { path, from: `${pkg} (cached)` };
  if (!(await $.commandExists("npm"))) {
    throw new Error(
      `npm not found: it fetches Deno ${version} (${pkg}); install npm or Deno ${version}`,
    );
  }
  log(`fetching Deno ${version} from npm (${pkg})`);
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir: cacheDir(), prefix: "deno-pack-" });
  try {
    const tgz = (await $`npm pack ${pkg} --silent`.cwd(work).text()).trim().split("\n").at(-1)!;
    await $`tar -xzf ${join(work, tgz)} -C ${work} package/deno`;
    await Deno.rename(join(work, "package/deno"), path);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  if (!(await works())) throw new Error(`${pkg} did not give a working Deno ${version}`);
  return { path, from: pkg };
}

/** Local stand-ins for the Dockerfile's DEBIAN_IMAGE and DENO_IMAGE, imported into `docker`. */
export interface LocalBases {
  readonly debianImage: string;
  readonly denoImage: string;
  /** One line each: what the base is and where it came from. */
  readonly origins: readonly string[];
}

/** Makes (or takes from the cache) both bases and imports them under `prefix/…` tags. */
export async function importBases(
  docker: Docker,
  prefix: string,
  wanted: { recipe: DebianRecipe; denoVersion: string },
  log: (line: string) => void,
): Promise<LocalBases> {
  const debianImage = `${prefix}/debian:${wanted.recipe.suite}-slim`;
  const denoImage = `${prefix}/deno:bin-${wanted.denoVersion}`;
  const rootfs = await debianRootfs(wanted.recipe, log);
  await docker.run(["import", rootfs.path, debianImage], { timeoutMs: 5 * 60_000 });
  const deno = await denoBinary(wanted.denoVersion, log);
  // A FROM-scratch image holding only /deno, as denoland/deno:bin is.
  const [dir, name] = [deno.path.replace(/\/[^/]+$/, ""), deno.path.replace(/^.*\//, "")];
  const rename = "--transform=s|.*|deno|";
  const tar =
    await $`tar -c -h --numeric-owner --owner=0 --group=0 --mode=0755 ${rename} -C ${dir} ${name}`
      .bytes();
  await docker.run(["import", "-", denoImage], { stdin: tar, timeoutMs: 5 * 60_000 });
  return {
    debianImage,
    denoImage,
    origins: [
      `${debianImage}: debootstrap --variant=minbase ${wanted.recipe.suite}, slim like debian:${wanted.recipe.suite}-slim` +
      (rootfs.cached ? ` (cached: ${rootfs.path})` : ""),
      `${denoImage}: /deno from ${deno.from}`,
    ],
  };
}
