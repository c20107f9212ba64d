// The health-check node ports of `externalTrafficPolicy: Local` Services: one
// HTTP listener per spec.healthCheckNodePort, answering 200 while this node has
// local endpoints for the Service and 503 when it has none, so that external
// load balancers send traffic only to nodes that can serve it. kube-proxy's
// ServiceHealthServer (pkg/proxy/healthcheck/service_health.go): same body,
// same semantics, including 503 while the proxy itself is unhealthy.
//
// sync() makes the listeners match the model's health checks: new ports are
// opened, gone or moved ones closed, counts updated in place. A port that
// cannot be opened (in use, no permission) is an error value for that Service;
// the others are unaffected, and the next sync tries again.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HealthCheck, ObjectRef } from '../model/types.js';
import { formatListenAddress, listenHttp, type ListenAddress, type OpenListener } from './http-listener.js';
import { silentLogger, type Logger } from './logger.js';

export interface HealthCheckServersOptions {
  /**
   * The addresses each health-check port listens on; "" = every address (the
   * default, as kube-proxy without --nodeport-addresses). With
   * --nodeport-addresses, the node's matching addresses.
   */
  readonly bindAddresses?: readonly string[];
  /**
   * The network namespace the ports listen in (a path or a name under
   * /run/netns): the one holding the node's addresses, when the agent runs
   * outside it (the lab's agents, with --health-netns). Default: the agent's own.
   */
  readonly netns?: string | undefined;
  /** kube-proxy's serviceProxyHealthy: while false every health check answers 503. Default: always healthy. */
  readonly isProxyHealthy?: () => boolean;
  readonly log?: Logger;
}

/** A health-check port that could not be opened. */
export interface HealthCheckListenError {
  readonly ref: ObjectRef;
  readonly nodePort: number;
  /** The bind address that failed, "host:port". */
  readonly address: string;
  readonly code: string;
  readonly message: string;
}

/** What is being served. */
export interface HealthCheckServing {
  readonly ref: ObjectRef;
  readonly nodePort: number;
  readonly localEndpoints: number;
  readonly addresses: readonly ListenAddress[];
}

interface Instance {
  readonly ref: ObjectRef;
  readonly nodePort: number;
  localEndpoints: number;
  localEndpointsByFamily: HealthCheck['localEndpointsByFamily'];
  readonly listeners: OpenListener[];
}

export class HealthCheckServers {
  readonly #bindAddresses: readonly string[];
  readonly #netns: string | undefined;
  readonly #isProxyHealthy: () => boolean;
  readonly #log: Logger;
  readonly #instances = new Map<string, Instance>();
  /** Last failure per Service, so a port that stays taken is logged once, not every sync. */
  readonly #failing = new Map<string, string>();
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(options: HealthCheckServersOptions = {}) {
    this.#bindAddresses = options.bindAddresses ?? [''];
    this.#netns = options.netns === '' ? undefined : options.netns;
    this.#isProxyHealthy = options.isProxyHealthy ?? (() => true);
    this.#log = (options.log ?? silentLogger).child({ component: 'healthcheck' });
  }

  /**
   * Makes the listeners match `healthChecks` (the model's, for every
   * externalTrafficPolicy: Local Service with a health-check node port).
   * Calls are serialised. Returns the ports that could not be opened.
   */
  sync(healthChecks: readonly HealthCheck[]): Promise<readonly HealthCheckListenError[]> {
    const run = this.#queue.then(() => this.#sync(healthChecks));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  serving(): HealthCheckServing[] {
    return [...this.#instances.values()].map((i) => ({
      ref: i.ref,
      nodePort: i.nodePort,
      localEndpoints: i.localEndpoints,
      addresses: i.listeners.map((l) => l.address),
    }));
  }

  /** Closes every listener; later syncs do nothing. */
  close(): Promise<void> {
    this.#closed = true;
    const run = this.#queue.then(async () => {
      const all = [...this.#instances.values()];
      this.#instances.clear();
      await Promise.all(all.flatMap((i) => i.listeners.map((l) => l.close())));
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #sync(healthChecks: readonly HealthCheck[]): Promise<readonly HealthCheckListenError[]> {
    if (this.#closed) return [];
    const wanted = new Map<string, HealthCheck>();
    for (const hc of healthChecks) {
      const key = refText(hc.ref);
      if (!wanted.has(key)) wanted.set(key, hc);
    }

    // Close what is gone or moved first, so that a port handed from one Service to another can be reopened.
    const closing: Promise<void>[] = [];
    for (const [key, instance] of this.#instances) {
      const next = wanted.get(key);
      if (next !== undefined && next.nodePort === instance.nodePort) continue;
      this.#instances.delete(key);
      this.#log.info('closing health check', { service: refText(instance.ref), nodePort: instance.nodePort });
      closing.push(...instance.listeners.map((l) => l.close()));
    }
    await Promise.all(closing);
    for (const key of [...this.#failing.keys()]) if (!wanted.has(key)) this.#failing.delete(key);

    const errors: HealthCheckListenError[] = [];
    for (const [key, hc] of wanted) {
      const existing = this.#instances.get(key);
      if (existing !== undefined) {
        existing.localEndpoints = hc.localEndpoints;
        existing.localEndpointsByFamily = hc.localEndpointsByFamily;
        continue;
      }
      const opened = await this.#open(hc);
      if ('error' in opened) {
        errors.push(opened.error);
        const text = `${opened.error.address} ${opened.error.code}`;
        if (this.#failing.get(key) !== text) {
          this.#log.error('cannot open health check port', {
            service: refText(hc.ref),
            nodePort: hc.nodePort,
            address: opened.error.address,
            code: opened.error.code,
            error: opened.error.message,
          });
        }
        this.#failing.set(key, text);
        continue;
      }
      this.#failing.delete(key);
      this.#instances.set(key, opened.instance);
      this.#log.info('opened health check', {
        service: refText(hc.ref),
        nodePort: hc.nodePort,
        addresses: opened.instance.listeners.map((l) => formatListenAddress(l.address)),
        ...(this.#netns !== undefined ? { netns: this.#netns } : {}),
        localEndpoints: hc.localEndpoints,
      });
    }
    return errors;
  }

  async #open(hc: HealthCheck): Promise<{ instance: Instance } | { error: HealthCheckListenError }> {
    const instance: Instance = { ref: hc.ref, nodePort: hc.nodePort, localEndpoints: hc.localEndpoints, localEndpointsByFamily: hc.localEndpointsByFamily, listeners: [] };
    for (const host of this.#bindAddresses) {
      const result = await listenHttp(
        { host, port: hc.nodePort },
        (req, res) => this.#answer(instance, req, res),
        (e) => this.#log.error('health check server error', { service: refText(hc.ref), nodePort: hc.nodePort, error: e }),
        { netns: this.#netns },
      );
      if (!result.ok) {
        // Close what this Service already opened, so that a later sync can retry cleanly.
        await Promise.all(instance.listeners.map((l) => l.close()));
        return { error: { ref: hc.ref, nodePort: hc.nodePort, ...result.error } };
      }
      instance.listeners.push(result.value);
    }
    return { instance };
  }

  #answer(instance: Instance, req: IncomingMessage, res: ServerResponse): void {
    const proxyHealthy = this.#isProxyHealthy();
    const count = instance.localEndpointsByFamily === undefined
      ? instance.localEndpoints
      : instance.localEndpointsByFamily[arrivedOverIPv6(req) ? 'IPv6' : 'IPv4'];
    // kube-proxy's body, byte for byte (tab-indented JSON).
    const body = JSON.stringify(
      {
        service: { namespace: instance.ref.namespace, name: instance.ref.name },
        localEndpoints: count,
        serviceProxyHealthy: proxyHealthy,
      },
      null,
      '\t',
    );
    res.statusCode = count > 0 && proxyHealthy ? 200 : 503;
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }
}

/** True when the probe came in over IPv6 (an IPv4-mapped address on a dual-stack socket is IPv4). */
function arrivedOverIPv6(req: IncomingMessage): boolean {
  const local = req.socket.localAddress ?? '';
  return local.includes(':') && !local.toLowerCase().startsWith('::ffff:');
}

function refText(ref: ObjectRef): string {
  return `${ref.namespace}/${ref.name}`;
}
