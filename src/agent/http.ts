// The agent's HTTP endpoints, laid out as kube-proxy's:
// - the metrics address (127.0.0.1:10249 by default; kube-proxy's
//   --metrics-bind-address): /metrics, and /healthz, /livez, /readyz;
// - the health address (0.0.0.0:10256 by default; kube-proxy's
//   --healthz-bind-address), which load balancers probe for node health:
//   /healthz, /livez, /readyz. No metrics there: it listens on every address.
// When both addresses are the same, one listener serves everything.
// Node health may listen in another network namespace (healthzNetns: where the
// node's addresses are, when the agent runs outside it, as in the lab); the
// metrics address stays in the agent's own.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AgentHealth, ProxyHealthReport } from './health.js';
import {
  formatListenAddress,
  listenHttp,
  parseListenAddress,
  type ListenAddress,
  type ListenError,
  type OpenListener,
} from './http-listener.js';
import { silentLogger, type Logger } from './logger.js';
import { PROMETHEUS_CONTENT_TYPE, type Registry } from './metrics.js';

export const DEFAULT_METRICS_ADDR = '127.0.0.1:10249';
export const DEFAULT_HEALTHZ_ADDR = '0.0.0.0:10256';

export interface HttpOptions {
  /** host:port for /metrics (and the health paths); "" = off. Default DEFAULT_METRICS_ADDR. */
  readonly metricsAddr?: string;
  /** host:port for node health; "" = off. Default DEFAULT_HEALTHZ_ADDR. */
  readonly healthzAddr?: string;
  /** The network namespace node health listens in (path or /run/netns name); default the agent's own. */
  readonly healthzNetns?: string | undefined;
  readonly health: AgentHealth;
  readonly registry: Registry;
  readonly log?: Logger;
}

export interface HttpServers {
  /** Where each server listens (real ports); undefined when off. */
  readonly metrics: ListenAddress | undefined;
  readonly healthz: ListenAddress | undefined;
  close(): Promise<void>;
}

export type HttpStartError =
  | ({ readonly kind: 'listen'; readonly server: 'metrics' | 'healthz' } & ListenError)
  | { readonly kind: 'address'; readonly server: 'metrics' | 'healthz'; readonly message: string };

type Route = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * Starts the servers. A bad address or a port in use is returned as an error
 * value naming the server (and nothing is left listening).
 */
export async function startHttp(options: HttpOptions): Promise<{ ok: true; value: HttpServers } | { ok: false; error: HttpStartError }> {
  const log = (options.log ?? silentLogger).child({ component: 'http' });
  const metricsText = options.metricsAddr ?? DEFAULT_METRICS_ADDR;
  const healthzText = options.healthzAddr ?? DEFAULT_HEALTHZ_ADDR;

  const health = healthRoutes(options.health);
  const metricsRoutes: Record<string, Route> = { ...health, '/metrics': metricsRoute(options.registry, log) };

  const healthzNetns = options.healthzNetns === '' ? undefined : options.healthzNetns;
  // The same fixed address for both: one listener (port 0 asks for two different ports; another
  // namespace is another address).
  const shared = metricsText !== '' && metricsText === healthzText && !metricsText.endsWith(':0') && healthzNetns === undefined;
  const wanted: { server: 'metrics' | 'healthz'; text: string; routes: Record<string, Route> }[] = [];
  if (metricsText !== '') wanted.push({ server: 'metrics', text: metricsText, routes: metricsRoutes });
  if (healthzText !== '' && !shared) wanted.push({ server: 'healthz', text: healthzText, routes: health });

  const open: OpenListener[] = [];
  const bound: Partial<Record<'metrics' | 'healthz', ListenAddress>> = {};
  const fail = async (error: HttpStartError): Promise<{ ok: false; error: HttpStartError }> => {
    await Promise.all(open.map((l) => l.close()));
    return { ok: false, error };
  };
  for (const w of wanted) {
    const parsed = parseListenAddress(w.text);
    if (!parsed.ok) return fail({ kind: 'address', server: w.server, message: parsed.error });
    const netns = w.server === 'healthz' ? healthzNetns : undefined;
    const listener = await listenHttp(parsed.value, router(w.routes, log), (e) => log.error('HTTP server error', { server: w.server, error: e }), { netns });
    if (!listener.ok) return fail({ kind: 'listen', server: w.server, ...listener.error });
    open.push(listener.value);
    bound[w.server] = listener.value.address;
    log.info('listening', {
      server: w.server,
      address: formatListenAddress(listener.value.address),
      ...(netns !== undefined ? { netns } : {}),
      paths: Object.keys(w.routes).sort(),
    });
  }
  if (shared) bound.healthz = bound.metrics;

  let closing: Promise<void> | undefined;
  return {
    ok: true,
    value: {
      metrics: bound.metrics,
      healthz: bound.healthz,
      close: () => (closing ??= Promise.all(open.map((l) => l.close())).then(() => undefined)),
    },
  };
}

function router(routes: Readonly<Record<string, Route>>, log: Logger): Route {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route === undefined) {
      send(res, 404, 'text/plain; charset=utf-8', `404 page not found\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    try {
      route(req, res);
    } catch (e: unknown) {
      log.error('HTTP handler failed', { path, error: e });
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `internal error: ${e instanceof Error ? e.message : String(e)}\n`);
      else res.destroy();
    }
  };
}

function healthRoutes(health: AgentHealth): Record<string, Route> {
  return {
    // kube-proxy's format: {"lastUpdated": …, "currentTime": …, "nodeEligible": …}; lastUpdated is
    // "now" when healthy (kube-proxy keeps that for compatibility). lastSynced is the real time.
    '/healthz': (_req, res) => {
      const report = health.healthz();
      sendJson(res, report.healthy ? 200 : 503, { ...healthBody(report), nodeEligible: report.nodeEligible });
    },
    '/livez': (_req, res) => {
      const report = health.livez();
      sendJson(res, report.healthy ? 200 : 503, healthBody(report));
    },
    '/readyz': (_req, res) => {
      const report = health.readyz();
      sendJson(res, report.ready ? 200 : 503, report.ready ? { ready: true } : { ready: false, reasons: report.reasons });
    },
  };
}

function healthBody(report: ProxyHealthReport): Record<string, unknown> {
  const lastUpdated = report.healthy ? report.currentTime : report.lastUpdated;
  return {
    lastUpdated: lastUpdated === undefined ? '' : new Date(lastUpdated).toISOString(),
    currentTime: new Date(report.currentTime).toISOString(),
    lastSynced: report.lastUpdated === undefined ? null : new Date(report.lastUpdated).toISOString(),
    ...(report.oldestPending !== undefined ? { oldestPending: new Date(report.oldestPending).toISOString() } : {}),
  };
}

function metricsRoute(registry: Registry, log: Logger): Route {
  return (_req, res) => {
    let text: string;
    try {
      text = registry.render();
    } catch (e: unknown) {
      log.error('metrics collection failed', { error: e });
      send(res, 500, 'text/plain; charset=utf-8', `metrics collection failed: ${e instanceof Error ? e.message : String(e)}\n`);
      return;
    }
    send(res, 200, PROMETHEUS_CONTENT_TYPE, text);
  };
}

export function sendJson(res: ServerResponse, status: number, body: unknown, indent?: string): void {
  send(res, status, 'application/json', JSON.stringify(body, null, indent));
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
