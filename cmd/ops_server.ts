/**
 * The agent's HTTP endpoint for operators (`run --metrics-addr`):
 *   /metrics  Prometheus text exposition
 *   /healthz  liveness: the loop is not wedged (200 / 503)
 *   /readyz   readiness: last pass succeeded and the inputs are fresh (200 / 503)
 * Health bodies list each check ("[+]name detail" / "[-]name detail").
 */
import { HealthTracker, renderVerdict, type Verdict } from "../core/health.ts";
import type { DatapathConfig } from "../core/schema.ts";
import type { AgentObserver } from "./agent.ts";
import type { Logger } from "./log.ts";
import { AgentMetrics } from "./metrics.ts";
import type { ListenAddress } from "./options.ts";
import type { Host } from "./system.ts";
import { errorMessage } from "../core/errors.ts";

/** What the HTTP handler serves. */
export interface OpsEndpoints {
  metrics(): Promise<{ body: string; contentType: string }>;
  liveness(): Verdict;
  readiness(): Verdict;
}

const TEXT = "text/plain; charset=utf-8";

/** The request handler (separate from the listener so it is tested without a socket). */
export function opsHandler(endpoints: OpsEndpoints): (request: Request) => Promise<Response> {
  const verdict = (name: string, v: Verdict) =>
    new Response(renderVerdict(name, v), {
      status: v.ok ? 200 : 503,
      headers: { "content-type": TEXT, "cache-control": "no-store" },
    });
  return async (request) => {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    switch (new URL(request.url).pathname) {
      case "/metrics": {
        const { body, contentType } = await endpoints.metrics();
        return new Response(body, { headers: { "content-type": contentType } });
      }
      case "/healthz":
      case "/livez":
        return verdict("healthz", endpoints.liveness());
      case "/readyz":
        return verdict("readyz", endpoints.readiness());
      case "/":
        return new Response("kube-egress agent: /metrics /healthz /readyz\n", {
          headers: { "content-type": TEXT },
        });
      default:
        return new Response("not found\n", { status: 404, headers: { "content-type": TEXT } });
    }
  };
}

/** Metrics, health and the server, wired for one `run`. */
export interface OpsServer {
  /** The host the agent must use (its address events time takeovers). */
  readonly host: Host;
  /** Observers to hand to the agent. */
  readonly observers: readonly AgentObserver[];
  readonly metrics: AgentMetrics;
  readonly health: HealthTracker;
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the endpoint; throws a clear error when the address cannot be bound. */
export function startOpsServer(options: {
  readonly address: ListenAddress;
  readonly config: DatapathConfig;
  readonly host: Host;
  readonly intervalSeconds: number;
  readonly log: Logger;
}): OpsServer {
  const metrics = new AgentMetrics({ config: options.config, host: options.host });
  const health = new HealthTracker({ intervalSeconds: options.intervalSeconds }, Date.now());
  const observer: AgentObserver = {
    passStarted: (trigger) => health.passStarted(trigger, Date.now()),
    pass: (result) => health.passEnded(result, Date.now()),
  };
  const handler = opsHandler({
    metrics: () => metrics.render(),
    liveness: () => health.liveness(Date.now()),
    readiness: () => health.readiness(Date.now()),
  });
  const { hostname, port } = options.address;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, handler);
  } catch (error) {
    const reason = errorMessage(error);
    throw new Error(`cannot listen on ${options.address.text} (--metrics-addr): ${reason}`);
  }
  options.log.info("metrics and health endpoints listening", {
    address: options.address.text,
    paths: "/metrics /healthz /readyz",
  });
  return {
    host: metrics.observe(options.host),
    observers: [metrics, observer],
    metrics,
    health,
    port: server.addr.port,
    close: () => server.shutdown(),
  };
}
