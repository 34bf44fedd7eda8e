/**
 * The client's credentials and TLS, kept fresh while the agent runs, as
 * client-go keeps them: a token file is re-read every minute (projected
 * service account tokens rotate) and at once after a 401; an exec plugin
 * (client.authentication.k8s.io ExecCredential, what EKS, GKE and AKS
 * kubeconfigs use) is run again before its credential expires and after a 401;
 * the CA file is re-read every minute, and a changed CA (or exec client
 * certificate) builds a new HTTP client for new requests. `tls-server-name`
 * is honoured by connecting to the server's address while TLS verifies the
 * given name.
 */
import { systemExec } from "../exec.ts";
import type { Connection } from "../../core/kube/kubeconfig.ts";
import { parseExecCredential } from "../../core/kube/kubeconfig.ts";
import { errorMessage } from "../../core/errors.ts";
import { serverNameTunnel, type Tunnel } from "./server_name_tunnel.ts";

const RELOAD_MS = 60_000;
/** Refresh an expiring credential this long before it expires. */
const EXPIRY_MARGIN_MS = 10_000;
const EXEC_TIMEOUT_MS = 30_000;

export interface TransportOptions {
  /** Use HTTP/1.1 only (see README "HTTP/2"). Default true. */
  readonly http1Only?: boolean;
  /** How often token and CA files are read again (default a minute, as client-go). */
  readonly reloadMs?: number;
}

async function readRef(ref?: { data?: string; file?: string }): Promise<string | undefined> {
  if (!ref) return undefined;
  return ref.data ?? await Deno.readTextFile(ref.file!);
}

/** The URL requests go to, and the HTTP client that carries them. */
export interface Transport {
  readonly base: string;
  readonly client?: Deno.HttpClient;
}

export class Credentials {
  #token?: { value: string; readAt: number };
  #exec?: { token?: string; cert?: string; key?: string; expiresAt?: number };
  #tls?: { key: string; transport: Transport };
  #tlsCheckedAt = 0;
  #tunnel?: Tunnel;
  readonly #retired: Deno.HttpClient[] = [];

  constructor(readonly connection: Connection, readonly options: TransportOptions = {}) {}

  get #reloadMs(): number {
    return this.options.reloadMs ?? RELOAD_MS;
  }

  /** The Authorization header value, if any. */
  async authorization(): Promise<string | undefined> {
    const ref = this.connection.token;
    if (ref?.data) return `Bearer ${ref.data}`;
    if (ref?.file) {
      if (!this.#token || Date.now() - this.#token.readAt > this.#reloadMs) {
        this.#token = { value: (await Deno.readTextFile(ref.file)).trim(), readAt: Date.now() };
      }
      return `Bearer ${this.#token.value}`;
    }
    if (this.connection.exec) {
      const credential = await this.#execCredential();
      if (credential.token) return `Bearer ${credential.token}`;
    }
    return undefined;
  }

  /** A 401: re-read the token file / run the plugin again before the next request. */
  invalidate(): boolean {
    if (this.connection.token?.file) {
      this.#token = undefined;
      return true;
    }
    if (this.connection.exec) {
      this.#exec = undefined;
      return true;
    }
    return false;
  }

  async #execCredential() {
    const now = Date.now();
    if (
      this.#exec &&
      (this.#exec.expiresAt === undefined || this.#exec.expiresAt - EXPIRY_MARGIN_MS > now)
    ) {
      return this.#exec;
    }
    const exec = this.connection.exec!;
    const info = {
      apiVersion: exec.apiVersion,
      kind: "ExecCredential",
      spec: {
        interactive: false,
        ...(exec.provideClusterInfo
          ? {
            cluster: {
              server: this.connection.server,
              ...(this.connection.tlsServerName
                ? { "tls-server-name": this.connection.tlsServerName }
                : {}),
              ...(this.connection.ca
                ? { "certificate-authority-data": btoa((await readRef(this.connection.ca)) ?? "") }
                : {}),
            },
          }
          : {}),
      },
    };
    const env = Object.fromEntries(exec.env.map((e) => [e.name, e.value]));
    let result;
    try {
      result = await systemExec([exec.command, ...exec.args], {
        env: { ...env, KUBERNETES_EXEC_INFO: JSON.stringify(info) },
        timeoutMs: EXEC_TIMEOUT_MS,
      });
    } catch (error) {
      throw new Error(
        `kubeconfig exec plugin ${exec.command} could not be run: ${errorMessage(error)}` +
          (exec.installHint ? ` (${exec.installHint.trim()})` : ""),
      );
    }
    if (result.code !== 0) {
      throw new Error(
        `kubeconfig exec plugin ${exec.command} exited with ${result.code}: ${
          result.stderr.trim().slice(0, 300)
        }`,
      );
    }
    const credential = parseExecCredential(result.stdout, exec.apiVersion);
    this.#exec = {
      token: credential.token,
      cert: credential.clientCertificateData,
      key: credential.clientKeyData,
      expiresAt: credential.expiresAt,
    };
    return this.#exec;
  }

  /**
   * The transport for the next request: rebuilt when the CA file or an exec
   * client certificate changed (requests under way keep theirs).
   */
  async transport(): Promise<Transport> {
    // Files are looked at again once per reload interval; an exec client certificate as it changes.
    const execCert = this.#exec?.cert;
    if (
      this.#tls && Date.now() - this.#tlsCheckedAt < this.#reloadMs &&
      (execCert === undefined || this.#tls.key.includes(JSON.stringify(execCert)))
    ) {
      return this.#tls.transport;
    }
    this.#tlsCheckedAt = Date.now();
    const c = this.connection;
    const [ca, fileCert, fileKey] = await Promise.all([
      readRef(c.ca),
      readRef(c.clientCert),
      readRef(c.clientKey),
    ]);
    const exec = c.exec && !c.token ? await this.#execCredential() : undefined;
    const cert = exec?.cert ?? fileCert;
    const key = exec?.key ?? fileKey;
    const material = JSON.stringify([ca, cert, key]);
    if (this.#tls?.key === material) return this.#tls.transport;
    const url = new URL(c.server);
    const https = url.protocol === "https:";
    let base = c.server;
    let proxy: Deno.Proxy | undefined;
    if (https && c.tlsServerName) {
      // TLS (SNI and verification) for the given name, the TCP connection to the server's address.
      this.#tunnel ??= serverNameTunnel(
        url.hostname.replace(/^\[|\]$/g, ""),
        Number(url.port || 443),
      );
      proxy = { url: this.#tunnel.url };
      base = `https://${c.tlsServerName}:${url.port || 443}${url.pathname.replace(/\/$/, "")}`;
    }
    const client = https || proxy
      ? Deno.createHttpClient({
        ...(ca ? { caCerts: [ca] } : {}),
        ...(cert && key ? { cert, key } : {}),
        ...(proxy ? { proxy } : {}),
        ...(this.options.http1Only ?? true ? { http2: false } : {}),
      })
      : undefined;
    if (this.#tls?.transport.client) this.#retire(this.#tls.transport.client);
    this.#tls = { key: material, transport: { base, client } };
    return this.#tls.transport;
  }

  /** An old client still carries watches opened with it: closed a while later, or on close(). */
  #retire(client: Deno.HttpClient) {
    this.#retired.push(client);
    const timer = setTimeout(() => {
      const i = this.#retired.indexOf(client);
      if (i >= 0) this.#retired.splice(i, 1);
      client.close();
    }, 10 * RELOAD_MS);
    Deno.unrefTimer(timer);
  }

  close() {
    this.#tunnel?.close();
    this.#tls?.transport.client?.close();
    for (const client of this.#retired.splice(0)) client.close();
  }
}
