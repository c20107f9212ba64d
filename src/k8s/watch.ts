// The agent's view of the cluster: Services and EndpointSlices in all namespaces and this Node,
// listed and watched over plain HTTPS (lists paginated, watches as streams of JSON lines) and
// written into a ClusterStore.
//
// Rules (DESIGN "Agent"; issue 4 "Watch"):
//  * Only real DELETE events, or a relist that no longer contains an object, remove it from the
//    store. A dropped connection or an unreachable API never does: the dataplane keeps serving
//    what it last knew, and status()/onConnectionChange report the loss.
//  * 410 Gone (an expired resourceVersion, on a watch or as a watch ERROR event) → relist; the
//    new list is compared with what was delivered and yields adds, updates and deletes.
//  * When the API is unreachable or answers with an error, each resource's list/watch loop is
//    restarted with exponential backoff (capped, jittered); it resumes watching from its last
//    resourceVersion, or relists when that has expired.
//  * Watches ask for bookmarks (a quiet resource's resourceVersion stays fresh); a watch that
//    stays silent, or does not connect, for watchIdleTimeoutMs is re-established at once from
//    its resourceVersion.
//
// The list/watch loop follows @kubernetes/client-node's ListWatch and Watch (which this file
// used before) event for event, with two differences that are the reason for it: objects are
// delivered as parsed, never also kept in an informer cache (the store keeps its slim copy; the
// loop keeps each object's key and resourceVersion only), and the client's module graph (≈ 85 MB
// of RSS for its generated API) is not loaded. Kubeconfig and in-cluster credentials:
// kubeconfig.ts.
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { EndpointSlice, Node, Service } from '../model/k8s-types.js';
import { authorization, loadApiConfig, type ApiConfig } from './kubeconfig.js';

// ---- public types -------------------------------------------------------------------------------

/** Where the watch writes what it sees. The agent's object store implements it. */
export interface ClusterStore {
  upsertService(obj: Service): void;
  deleteService(namespace: string, name: string): void;
  upsertEndpointSlice(obj: EndpointSlice): void;
  deleteEndpointSlice(namespace: string, name: string): void;
  /** This node's Node object; undefined when it was deleted (or does not exist). */
  setNode(obj: Node | undefined): void;
}

export type LogFields = Record<string, unknown>;

export interface WatchLogger {
  debug?(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export type WatchedResource = 'services' | 'endpointslices' | 'node';

export interface BackoffOptions {
  /** First retry delay (default 1000 ms). */
  readonly initialMs?: number;
  /** Cap (default 30 000 ms). */
  readonly maxMs?: number;
  /** Growth per failed attempt (default 2). */
  readonly factor?: number;
  /** Fraction of each delay taken off at random, 0..1 (default 0.5: delay in [d/2, d]). */
  readonly jitter?: number;
}

export interface ConnectionChange {
  readonly connected: boolean;
  /** The resource whose state flipped the overall state. */
  readonly resource: WatchedResource;
  /** Why it is disconnected (the last error), when it is. */
  readonly error?: string;
}

export interface ApiErrorInfo {
  readonly resource: WatchedResource;
  readonly error: string;
  /** HTTP status when the API answered (401, 403, 500, ...); undefined when it was not reached. */
  readonly status?: number;
  /** Milliseconds until the informer is restarted. */
  readonly retryInMs?: number;
}

export interface WatchClusterOptions {
  /** Path of a kubeconfig file, or a loaded ApiConfig (loadKubeConfig); default: in-cluster configuration. */
  readonly kubeconfig?: string | ApiConfig;
  /** This node's name (the Node object watched). */
  readonly nodeName: string;
  readonly store: ClusterStore;
  readonly log?: WatchLogger;
  /** Called once, when Services, EndpointSlices and the Node have each been listed completely. */
  readonly onSynced?: () => void;
  /** Called when the overall state flips (connected = every informer lists/watches successfully). */
  readonly onConnectionChange?: (change: ConnectionChange) => void;
  /** Called for every API error (each is also counted in status().apiErrors). */
  readonly onApiError?: (info: ApiErrorInfo) => void;
  readonly backoff?: BackoffOptions;
  /** Page size of lists (default 500). */
  readonly pageSize?: number;
  /** Timeout of one list page request (default 60 000 ms). */
  readonly listTimeoutMs?: number;
  /** A watch that stays silent this long, or does not connect within it, is re-established
   * (default 30 000 ms). */
  readonly watchIdleTimeoutMs?: number;
}

export interface ResourceStatus {
  /** Listing/watching works right now. */
  readonly connected: boolean;
  /** The initial list has been delivered to the store. */
  readonly synced: boolean;
  /** Objects currently known (delivered and not deleted). */
  readonly objects: number;
  readonly resourceVersion: string;
  /** Lists (initial + relists). */
  readonly lists: number;
  /** Watch requests opened. */
  readonly watches: number;
  /** Add/update/delete events delivered to the store. */
  readonly events: number;
  /** 410 Gone answers (each leads to a relist). */
  readonly gone: number;
  readonly apiErrors: number;
  /** List/watch loop restarts after errors. */
  readonly restarts: number;
  /** Store calls that threw (reported, then ignored). */
  readonly storeErrors: number;
  readonly lastError?: string;
}

export interface ClusterWatchStatus {
  readonly server: string;
  readonly nodeName: string;
  readonly connected: boolean;
  readonly synced: boolean;
  /** Total API errors since the start (list/watch failures, unreachable API, error events). */
  readonly apiErrors: number;
  readonly resources: Readonly<Record<WatchedResource, ResourceStatus>>;
}

export interface ClusterWatch {
  /** Resolves when onSynced fires (never rejects; it may never resolve if the API stays away). */
  readonly synced: Promise<void>;
  status(): ClusterWatchStatus;
  /** Stops every list/watch and pending retry. The store is left as it is. */
  stop(): Promise<void>;
}

// ---- helpers ----------------------------------------------------------------------------------

/** Loads `path`, or the in-cluster configuration (service account token + CA) when none is given. */
export function loadKubeConfig(path?: string): ApiConfig {
  return loadApiConfig(path);
}

/** Delay before retry number `attempt` (0-based): min(max, initial·factor^attempt), minus up to
 * `jitter` of it at random. */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = opts.initialMs ?? 1_000;
  const max = opts.maxMs ?? 30_000;
  const factor = opts.factor ?? 2;
  const jitter = Math.min(Math.max(opts.jitter ?? 0.5, 0), 1);
  const d = Math.min(max, initial * factor ** Math.min(attempt, 64));
  return Math.max(0, Math.round(d * (1 - jitter * random())));
}

interface HttpError extends Error {
  statusCode?: number;
  code?: number | string;
  body?: unknown;
}

function httpError(message: string, statusCode: number, body?: unknown): HttpError {
  const e = new Error(message) as HttpError;
  e.statusCode = statusCode;
  e.body = body;
  return e;
}

function errorStatus(err: unknown): number | undefined {
  const e = err as HttpError | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    const causeMsg = cause instanceof Error ? `: ${(cause as NodeJS.ErrnoException).code ?? cause.message}` : '';
    const status = errorStatus(err);
    return `${status ? `HTTP ${status} ` : ''}${err.message}${causeMsg}`;
  }
  if (err && typeof err === 'object' && 'message' in err) return String((err as { message: unknown }).message);
  return String(err);
}

function isTimeout(err: unknown): boolean {
  return (err as Error | undefined)?.name === 'TimeoutError';
}

function isGone(err: unknown): boolean {
  return errorStatus(err) === 410;
}

const noopLogger: WatchLogger = { info() {}, warn() {}, error() {} };

// ---- the API, over plain HTTP(S) -------------------------------------------------------------------

/** GETs against the API server with the configured TLS material and credentials. */
class ApiClient {
  readonly #agent: HttpAgent | HttpsAgent;
  readonly #https: boolean;
  readonly #url: URL;

  constructor(readonly config: ApiConfig) {
    this.#url = new URL(config.server);
    this.#https = this.#url.protocol === 'https:';
    this.#agent = this.#https
      ? new HttpsAgent({
          keepAlive: true,
          ...(config.ca !== undefined ? { ca: config.ca } : {}),
          ...(config.cert !== undefined ? { cert: config.cert } : {}),
          ...(config.key !== undefined ? { key: config.key } : {}),
          ...(config.tlsServerName !== undefined ? { servername: config.tlsServerName } : {}),
          rejectUnauthorized: config.insecureSkipTLSVerify !== true,
        })
      : new HttpAgent({ keepAlive: true });
  }

  /** Resolves with the response once its headers are in; rejects on a network error or abort. */
  get(path: string, signal: AbortSignal, accept = 'application/json'): Promise<IncomingMessage> {
    const auth = authorization(this.config);
    const headers: Record<string, string> = { Accept: accept, 'User-Agent': 'strait-agent' };
    if (auth !== undefined) headers['Authorization'] = auth;
    const base = this.#url.pathname.replace(/\/+$/, '');
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(abortReason(signal));
        return;
      }
      const req = (this.#https ? httpsRequest : httpRequest)(
        { protocol: this.#url.protocol, hostname: this.#url.hostname, port: this.#url.port, path: base + path, method: 'GET', headers, agent: this.#agent },
        resolve,
      );
      const onAbort = (): void => {
        req.destroy(abortReason(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(signal.aborted ? abortReason(signal) : e);
      });
      req.on('response', (res) => {
        res.on('close', () => signal.removeEventListener('abort', onAbort));
      });
      req.end();
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** Why a signal aborted, as an Error (AbortSignal.timeout gives a TimeoutError). */
function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new Error(String(r ?? 'aborted'));
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('response aborted')));
  });
}

/** An HTTP error from a status answer (its message, when the body is a Status object). */
function statusError(what: string, status: number, text: string): HttpError {
  let message = '';
  let body: unknown;
  try {
    body = JSON.parse(text);
    message = (body as { message?: string })?.message ?? '';
  } catch {
    /* not JSON */
  }
  return httpError(`${what}: ${message || `HTTP ${status}`}`, status, body);
}

// ---- resources -----------------------------------------------------------------------------------

/** What the watch reads of an object (every API object has it). */
interface KubernetesObject {
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly resourceVersion?: string };
}

interface ResourceSpec {
  readonly name: WatchedResource;
  readonly path: string;
  readonly fieldSelector?: string;
  readonly upsert: (store: ClusterStore, obj: KubernetesObject) => void;
  readonly remove: (store: ClusterStore, namespace: string, name: string) => void;
}

const ns = (o: KubernetesObject) => o.metadata?.namespace ?? '';
const nm = (o: KubernetesObject) => o.metadata?.name ?? '';

function resourceSpecs(nodeName: string): ResourceSpec[] {
  return [
    {
      name: 'services',
      path: '/api/v1/services',
      upsert: (s, o) => s.upsertService(o as Service),
      remove: (s, namespace, name) => s.deleteService(namespace, name),
    },
    {
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      upsert: (s, o) => s.upsertEndpointSlice(o as EndpointSlice),
      remove: (s, namespace, name) => s.deleteEndpointSlice(namespace, name),
    },
    {
      name: 'node',
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${nodeName}`,
      upsert: (s, o) => s.setNode(o as Node),
      remove: (s) => s.setNode(undefined),
    },
  ];
}

/** Reconnects after a watch that ended cleanly: at once, then 1 s doubling to 30 s while no event comes (ListWatch's). */
const BASE_RECONNECT_DELAY_MS = 1_000;
const MAX_RECONNECT_DELAY_MS = 30_000;

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/** The key of an object in one resource: "namespace/name". */
const keyOf = (o: KubernetesObject): string => `${ns(o)}/${nm(o)}`;

/** One resource's list/watch loop with its bookkeeping. */
class ResourceWatch {
  connected = false;
  synced = false;
  lists = 0;
  watches = 0;
  events = 0;
  gone = 0;
  apiErrors = 0;
  restarts = 0;
  storeErrors = 0;
  /** Objects delivered and not deleted. */
  objects = 0;
  lastError: string | undefined;
  attempt = 0;
  retryTimer: NodeJS.Timeout | undefined;
  /** A list completed; its items are in the store, which counts once the watch after it opens. */
  listDelivered = false;
  resourceVersion = '';
  /** Each delivered object's resourceVersion, by key: what a relist is compared with (no objects kept). */
  readonly known = new Map<string, string>();
  readonly abort = new AbortController();
  #reconnectDelayMs = 0;
  #hasConnected = false;

  constructor(readonly spec: ResourceSpec, readonly owner: Watcher) {}

  get name(): WatchedResource {
    return this.spec.name;
  }

  /** (Re)starts the loop; an error it cannot handle ends it and goes to the owner (backoff, restart). */
  start(): void {
    this.#reconnectDelayMs = 0;
    this.#hasConnected = false;
    this.#run().catch((err: unknown) => this.owner.onInformerError(this, err));
  }

  async #run(): Promise<void> {
    for (;;) {
      if (this.owner.stopped) return;
      if (this.resourceVersion === '') await this.#list();
      if (this.owner.stopped) return;
      if (this.#reconnectDelayMs > 0 && this.#hasConnected) await sleep(this.#reconnectDelayMs, this.abort.signal);
      if (this.#hasConnected) {
        this.#reconnectDelayMs = Math.min(this.#reconnectDelayMs > 0 ? this.#reconnectDelayMs * 2 : BASE_RECONNECT_DELAY_MS, MAX_RECONNECT_DELAY_MS);
      }
      this.#hasConnected = true;
      const err = await this.#watch();
      if (err === null || this.owner.stopped) continue;
      if (isGone(err)) {
        this.resourceVersion = '';
        continue;
      }
      if (isTimeout(err)) {
        // The timeout itself throttled us (watchIdleTimeoutMs): reconnect at once from the same
        // resourceVersion, so a quiet resource is never left unwatched for long.
        this.#reconnectDelayMs = 0;
        continue;
      }
      throw err;
    }
  }

  deliver(kind: 'upsert' | 'delete', obj: KubernetesObject): void {
    this.events++;
    try {
      if (kind === 'upsert') this.spec.upsert(this.owner.store, obj);
      else this.spec.remove(this.owner.store, ns(obj), nm(obj));
    } catch (err) {
      this.storeErrors++;
      this.owner.log.error('store rejected a Kubernetes object', {
        resource: this.name, event: kind, namespace: ns(obj) || undefined, name: nm(obj), error: describeError(err),
      });
    }
  }

  #addOrUpdate(obj: KubernetesObject): void {
    const key = keyOf(obj);
    const rv = obj.metadata?.resourceVersion;
    const before = this.known.get(key);
    if (before === undefined) {
      this.known.set(key, rv ?? '');
      this.objects++;
      this.deliver('upsert', obj);
    } else if (rv === undefined || rv === '' || rv !== before) {
      this.known.set(key, rv ?? '');
      this.deliver('upsert', obj);
    }
  }

  /** A delete of an object delivered before (ListWatch ignores others too). */
  #delete(obj: KubernetesObject): void {
    if (!this.known.delete(keyOf(obj))) return;
    this.objects--;
    this.deliver('delete', obj);
  }

  /** Every page of the list, as plain JSON; then what the last list had and this one lacks is deleted. */
  async #list(): Promise<void> {
    this.lists++;
    const o = this.owner;
    const items: KubernetesObject[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    do {
      const q = new URLSearchParams({ limit: String(o.pageSize) });
      if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
      if (cont) q.set('continue', cont);
      const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(o.listTimeoutMs)]);
      const res = await o.api.get(`${this.spec.path}?${q.toString()}`, signal);
      const text = await readBody(res);
      if (res.statusCode !== 200) throw statusError(`list ${this.spec.path}`, res.statusCode ?? 0, text);
      let body: { items?: KubernetesObject[]; metadata?: { resourceVersion?: string; continue?: string } };
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        throw httpError(`list ${this.spec.path}: HTTP ${res.statusCode}: unparsable answer`, res.statusCode ?? 0);
      }
      for (const item of body.items ?? []) items.push(item);
      resourceVersion = body.metadata?.resourceVersion ?? resourceVersion;
      cont = body.metadata?.continue || undefined;
    } while (cont);
    // deletes first, then adds and updates (ListWatch's order)
    const listed = new Set(items.map(keyOf));
    for (const key of [...this.known.keys()]) {
      if (listed.has(key)) continue;
      const slash = key.indexOf('/');
      this.#delete({ metadata: { namespace: key.slice(0, slash), name: key.slice(slash + 1) } });
    }
    for (const item of items) this.#addOrUpdate(item);
    this.resourceVersion = resourceVersion;
    this.listDelivered = true;
    this.owner.markConnected(this);
  }

  /**
   * One watch request from resourceVersion, until it ends: null when the server closed it, or
   * the error (a 410 Gone answer, a timeout, a network error).
   */
  async #watch(): Promise<unknown> {
    const owner = this.owner;
    if (this.listDelivered) {
      this.listDelivered = false;
      owner.markSynced(this);
    }
    this.watches++;
    const q = new URLSearchParams({ watch: 'true', allowWatchBookmarks: 'true', resourceVersion: this.resourceVersion });
    if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
    const ctrl = new AbortController();
    const signal = AbortSignal.any([ctrl.signal, this.abort.signal]);
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const resetTimer = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        ctrl.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
      }, owner.watchIdleTimeoutMs);
      timer.unref();
    };
    const ended = (err: unknown): unknown => {
      clearTimeout(timer);
      ctrl.abort();
      const e = err === null ? null : timedOut ? new DOMException('The operation was aborted due to timeout', 'TimeoutError') : err;
      if (e !== null && !owner.stopped) {
        if (isGone(e)) {
          this.gone++;
          owner.log.info('watch expired (410 Gone); relisting', { resource: this.name });
        }
      }
      return e;
    };

    resetTimer();
    let res: IncomingMessage;
    try {
      res = await owner.api.get(`${this.spec.path}?${q.toString()}`, signal);
      if (res.statusCode !== 200) {
        const text = await readBody(res);
        throw statusError(`watch ${this.spec.path}`, res.statusCode ?? 0, text);
      }
    } catch (err) {
      const e = ended(err);
      // A watch that could not connect in time is retried at once without an error report: count it.
      if (e !== null && isTimeout(e) && !owner.stopped) owner.onUnreported(this, e);
      return e;
    }
    if (owner.stopped) return ended(null);
    // The connect timeout is over; from here on it is an inactivity timeout.
    resetTimer();
    owner.markConnected(this);
    return new Promise((resolve) => {
      let rest = '';
      let done = false;
      const finish = (err: unknown): void => {
        if (done) return;
        done = true;
        resolve(ended(err));
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        resetTimer();
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf('\n')) >= 0) {
          const line = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          if (line.trim() !== '') this.#event(line);
        }
      });
      const lost = (e: Error): Error => Object.assign(new Error(`watch ${this.spec.path}: connection lost (${e.message})`), { cause: e });
      res.on('end', () => finish(null));
      res.on('error', (e) => finish(signal.aborted ? abortReason(signal) : lost(e)));
      res.on('close', () => finish(signal.aborted ? abortReason(signal) : null));
    });
  }

  /** One watch event (a JSON line). */
  #event(line: string): void {
    let data: { type?: string; object?: KubernetesObject & { code?: number; message?: string } };
    try {
      data = JSON.parse(line) as typeof data;
    } catch {
      return; // as the client: a line that is not JSON is ignored
    }
    const obj = data.object ?? {};
    switch (data.type) {
      case 'ERROR':
        this.owner.onWatchErrorEvent(this, obj);
        // an expired resourceVersion: the server ends the watch, and the loop relists
        if (obj.code === 410) this.resourceVersion = '';
        return;
      case 'ADDED':
      case 'MODIFIED':
        this.#addOrUpdate(obj);
        break;
      case 'DELETED':
        this.#delete(obj);
        break;
      case 'BOOKMARK':
        break;
      default:
        return;
    }
    this.#reconnectDelayMs = 0;
    this.resourceVersion = obj.metadata?.resourceVersion ?? '';
  }

  status(): ResourceStatus {
    return {
      connected: this.connected,
      synced: this.synced,
      objects: this.objects,
      resourceVersion: this.resourceVersion,
      lists: this.lists,
      watches: this.watches,
      events: this.events,
      gone: this.gone,
      apiErrors: this.apiErrors,
      restarts: this.restarts,
      storeErrors: this.storeErrors,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }
}

// ---- the watcher ------------------------------------------------------------------------------

class Watcher implements ClusterWatch {
  readonly api: ApiClient;
  readonly server: string;
  readonly store: ClusterStore;
  readonly log: WatchLogger;
  readonly pageSize: number;
  readonly listTimeoutMs: number;
  readonly watchIdleTimeoutMs: number;
  readonly resources: ResourceWatch[];
  readonly synced: Promise<void>;
  stopped = false;
  connected = false;
  isSynced = false;
  apiErrors = 0;
  readonly #opts: WatchClusterOptions;
  readonly #started = performance.now();
  #resolveSynced!: () => void;

  constructor(opts: WatchClusterOptions) {
    if (!opts.nodeName) throw new Error('watchCluster: nodeName is required');
    this.#opts = opts;
    const config = typeof opts.kubeconfig === 'object' ? opts.kubeconfig : loadKubeConfig(opts.kubeconfig);
    this.api = new ApiClient(config);
    this.server = config.server;
    this.store = opts.store;
    this.log = opts.log ?? noopLogger;
    this.pageSize = opts.pageSize ?? 500;
    this.listTimeoutMs = opts.listTimeoutMs ?? 60_000;
    this.watchIdleTimeoutMs = opts.watchIdleTimeoutMs ?? 30_000;
    this.synced = new Promise((r) => (this.#resolveSynced = r));
    this.resources = resourceSpecs(opts.nodeName).map((s) => new ResourceWatch(s, this));
  }

  start(): void {
    this.log.info('watching the Kubernetes API', { server: this.server, node: this.#opts.nodeName });
    for (const rw of this.resources) this.#startInformer(rw);
  }

  #startInformer(rw: ResourceWatch): void {
    rw.start();
  }

  markConnected(rw: ResourceWatch): void {
    if (this.stopped || rw.connected) return;
    rw.connected = true;
    rw.attempt = 0;
    // The API answers again: informers still waiting out a backoff delay retry now, so the
    // agent catches up with the first reconnect instead of the last (up to maxMs later).
    for (const other of this.resources) {
      if (other === rw || other.retryTimer === undefined) continue;
      clearTimeout(other.retryTimer);
      other.retryTimer = undefined;
      other.attempt = 0;
      other.restarts++;
      this.#startInformer(other);
    }
    this.#updateConnected(rw);
  }

  markSynced(rw: ResourceWatch): void {
    if (rw.synced) return;
    rw.synced = true;
    if (this.isSynced || !this.resources.every((r) => r.synced)) return;
    this.isSynced = true;
    const counts = Object.fromEntries(this.resources.map((r) => [r.name, r.objects]));
    this.log.info('initial sync from the Kubernetes API complete', {
      ...counts, durationMs: Math.round(performance.now() - this.#started),
    });
    this.#resolveSynced();
    this.#callback('onSynced', () => this.#opts.onSynced?.());
  }

  #updateConnected(rw: ResourceWatch): void {
    const all = this.resources.every((r) => r.connected);
    if (all === this.connected) return;
    // Only report "connected" once every informer works, and "disconnected" on the first failure.
    this.connected = all;
    if (all) this.log.info('connected to the Kubernetes API', { server: this.server });
    else this.log.warn('lost the Kubernetes API; keeping the last known state', { server: this.server, resource: rw.name, error: rw.lastError });
    const change: ConnectionChange = { connected: all, resource: rw.name, ...(all || rw.lastError === undefined ? {} : { error: rw.lastError }) };
    this.#callback('onConnectionChange', () => this.#opts.onConnectionChange?.(change));
  }

  #recordError(rw: ResourceWatch, err: unknown, retryInMs?: number): void {
    this.apiErrors++;
    rw.apiErrors++;
    rw.lastError = describeError(err);
    const status = errorStatus(err);
    rw.connected = false;
    this.#updateConnected(rw);
    const info: ApiErrorInfo = {
      resource: rw.name, error: rw.lastError,
      ...(status !== undefined ? { status } : {}),
      ...(retryInMs !== undefined ? { retryInMs } : {}),
    };
    this.#callback('onApiError', () => this.#opts.onApiError?.(info));
  }

  /** The informer stopped on an error: record it and restart it after a backoff delay. */
  onInformerError(rw: ResourceWatch, err: unknown): void {
    if (this.stopped) return; // aborting our own requests on stop() ends up here
    if (rw.retryTimer) return; // already scheduled
    const delay = backoffDelay(rw.attempt++, this.#opts.backoff);
    this.#recordError(rw, err, delay);
    const fields = { resource: rw.name, error: rw.lastError, attempt: rw.attempt, retryInMs: delay };
    if (rw.attempt <= 1 || errorStatus(err) === 401 || errorStatus(err) === 403) this.log.warn('Kubernetes API error; retrying', fields);
    else this.log.debug?.('Kubernetes API error; retrying', fields);
    rw.retryTimer = setTimeout(() => {
      rw.retryTimer = undefined;
      if (this.stopped) return;
      rw.restarts++;
      this.#startInformer(rw);
    }, delay);
  }

  /** A failure the client handles by itself (a watch that could not connect in time). */
  onUnreported(rw: ResourceWatch, err: unknown): void {
    this.#recordError(rw, err);
    this.log.warn('Kubernetes API not answering; reconnecting', { resource: rw.name, error: rw.lastError });
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onWatchErrorEvent(rw: ResourceWatch, status: any): void {
    const code = typeof status?.code === 'number' ? status.code : undefined;
    if (code === 410) {
      rw.gone++;
      this.log.info('watch expired (410 Gone); relisting', { resource: rw.name, message: status?.message });
      return;
    }
    this.apiErrors++;
    rw.apiErrors++;
    rw.lastError = `watch error event${code ? ` ${code}` : ''}: ${status?.message ?? JSON.stringify(status)}`;
    this.log.warn('Kubernetes watch error event', { resource: rw.name, error: rw.lastError });
    const info: ApiErrorInfo = { resource: rw.name, error: rw.lastError, ...(code !== undefined ? { status: code } : {}) };
    this.#callback('onApiError', () => this.#opts.onApiError?.(info));
  }

  #callback(name: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error(`${name} callback threw`, { error: describeError(err) });
    }
  }

  status(): ClusterWatchStatus {
    return {
      server: this.server,
      nodeName: this.#opts.nodeName,
      connected: this.connected,
      synced: this.isSynced,
      apiErrors: this.apiErrors,
      resources: Object.fromEntries(this.resources.map((r) => [r.name, r.status()])) as Record<WatchedResource, ResourceStatus>,
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const rw of this.resources) {
      if (rw.retryTimer) clearTimeout(rw.retryTimer);
      rw.retryTimer = undefined;
      rw.abort.abort();
    }
    this.api.close();
    this.log.info('stopped watching the Kubernetes API', { server: this.server });
  }
}

/**
 * Starts watching Services and EndpointSlices (all namespaces) and the Node `nodeName`, writing
 * every change into `store`. Returns at once; throws only for configuration errors (no kubeconfig,
 * not in a cluster). See the rules at the top of this file.
 */
export function watchCluster(opts: WatchClusterOptions): ClusterWatch {
  const w = new Watcher(opts);
  w.start();
  return w;
}
