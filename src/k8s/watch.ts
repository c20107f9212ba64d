// The agent's view of the cluster: Services and EndpointSlices in all namespaces and this Node,
// followed with @kubernetes/client-node informers (ListWatch, what makeInformer builds; used
// directly because the Node informer needs a field selector) and written into a ClusterStore.
//
// Rules (DESIGN "Agent"; issue 4 "Watch"):
//  * Only real DELETE events, or a relist that no longer contains an object, remove it from the
//    store. A dropped connection or an unreachable API never does: the dataplane keeps serving
//    what it last knew, and status()/onConnectionChange report the loss.
//  * 410 Gone (an expired resourceVersion, on a watch or as a watch ERROR event) → relist; the
//    informer diffs the new list against its cache and reports adds, updates and deletes.
//  * When the API is unreachable or answers with an error, each informer is restarted with
//    exponential backoff (capped, jittered); it resumes watching from its last resourceVersion,
//    or relists when that has expired.
//  * Lists are paginated and fetched as plain JSON (not through the generated, typed client), so
//    list items and watch events have the same shape and no field the client's models do not know
//    (newer API versions) is dropped.

import { IsomorphicFetchHttpLibrary, KubeConfig, ListWatch, RequestContext, Watch } from '@kubernetes/client-node';
import type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import type { EndpointSlice, Node, Service } from '../model/k8s-types.js';

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
  /** Path of a kubeconfig file, or a loaded KubeConfig; default: in-cluster configuration. */
  readonly kubeconfig?: string | KubeConfig;
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
   * (the client's default, 30 000 ms). */
  readonly watchIdleTimeoutMs?: number;
}

export interface ResourceStatus {
  /** Listing/watching works right now. */
  readonly connected: boolean;
  /** The initial list has been delivered to the store. */
  readonly synced: boolean;
  /** Objects currently known (the informer's cache). */
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
  /** Informer restarts after errors. */
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
  /** Stops all informers and pending retries. The store is left as it is. */
  stop(): Promise<void>;
}

// ---- helpers ----------------------------------------------------------------------------------

/** Loads `path`, or the in-cluster configuration (service account token + CA) when none is given. */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) {
    kc.loadFromFile(path);
  } else {
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      throw new Error('not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): pass --kubeconfig PATH');
    }
    kc.loadFromCluster();
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) throw new Error(`kubeconfig ${path ?? '(in-cluster)'}: no current cluster with a server`);
  return kc;
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

// ---- resources -----------------------------------------------------------------------------------

interface ResourceSpec {
  readonly name: WatchedResource;
  readonly path: string;
  readonly fieldSelector?: string;
  readonly upsert: (store: ClusterStore, obj: KubernetesObject) => void;
  readonly remove: (store: ClusterStore, obj: KubernetesObject) => void;
}

const ns = (o: KubernetesObject) => o.metadata?.namespace ?? '';
const nm = (o: KubernetesObject) => o.metadata?.name ?? '';

function resourceSpecs(nodeName: string): ResourceSpec[] {
  return [
    {
      name: 'services',
      path: '/api/v1/services',
      upsert: (s, o) => s.upsertService(o as Service),
      remove: (s, o) => s.deleteService(ns(o), nm(o)),
    },
    {
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      upsert: (s, o) => s.upsertEndpointSlice(o as EndpointSlice),
      remove: (s, o) => s.deleteEndpointSlice(ns(o), nm(o)),
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

type WatchCallback = (phase: string, apiObj: any, watchObj?: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any
type DoneCallback = (err: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One resource's informer with its bookkeeping. */
class ResourceWatch {
  readonly informer: ListWatch<KubernetesObject>;
  connected = false;
  synced = false;
  lists = 0;
  watches = 0;
  events = 0;
  gone = 0;
  apiErrors = 0;
  restarts = 0;
  storeErrors = 0;
  /** Objects in the informer's cache (adds − deletes; cheaper than informer.list().length). */
  objects = 0;
  lastError: string | undefined;
  attempt = 0;
  retryTimer: NodeJS.Timeout | undefined;
  /** A list completed; its items are in the store once the informer opens the next watch. */
  listDelivered = false;
  readonly abort = new AbortController();

  constructor(readonly spec: ResourceSpec, readonly owner: Watcher) {
    const watch = new TrackedWatch(owner.kc, this);
    if (owner.watchIdleTimeoutMs !== undefined) {
      (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = owner.watchIdleTimeoutMs;
    }
    this.informer = new ListWatch<KubernetesObject>(spec.path, watch, () => this.list(), false, undefined, spec.fieldSelector);
    this.informer.on('add', (o) => {
      this.objects++;
      this.deliver('upsert', o);
    });
    this.informer.on('update', (o) => this.deliver('upsert', o));
    this.informer.on('delete', (o) => {
      this.objects--;
      this.deliver('delete', o);
    });
    this.informer.on('error', (err) => this.owner.onInformerError(this, err));
  }

  get name(): WatchedResource {
    return this.spec.name;
  }

  deliver(kind: 'upsert' | 'delete', obj: KubernetesObject): void {
    this.events++;
    try {
      if (kind === 'upsert') this.spec.upsert(this.owner.store, obj);
      else this.spec.remove(this.owner.store, obj);
    } catch (err) {
      this.storeErrors++;
      this.owner.log.error('store rejected a Kubernetes object', {
        resource: this.name, event: kind, namespace: ns(obj) || undefined, name: nm(obj), error: describeError(err),
      });
    }
  }

  /** The informer's list function: every page, as plain JSON. */
  async list(): Promise<KubernetesListObject<KubernetesObject>> {
    this.lists++;
    const o = this.owner;
    const items: KubernetesObject[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    do {
      const url = new URL(o.server + this.spec.path);
      url.searchParams.set('limit', String(o.pageSize));
      if (this.spec.fieldSelector) url.searchParams.set('fieldSelector', this.spec.fieldSelector);
      if (cont) url.searchParams.set('continue', cont);
      const ctx = new RequestContext(url.toString(), 'GET');
      ctx.setHeaderParam('Accept', 'application/json');
      await o.kc.applySecurityAuthentication(ctx);
      ctx.setSignal(AbortSignal.any([this.abort.signal, AbortSignal.timeout(o.listTimeoutMs)]));
      const res = await o.http.send(ctx).toPromise();
      const text = await res.body.text();
      let body: KubernetesListObject<KubernetesObject> & { message?: string };
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        throw httpError(`list ${this.spec.path}: HTTP ${res.httpStatusCode}: unparsable answer`, res.httpStatusCode);
      }
      if (res.httpStatusCode !== 200) {
        throw httpError(`list ${this.spec.path}: ${body.message ?? 'failed'}`, res.httpStatusCode, body);
      }
      for (const item of body.items ?? []) items.push(item);
      resourceVersion = body.metadata?.resourceVersion ?? resourceVersion;
      cont = (body.metadata as { continue?: string } | undefined)?.continue || undefined;
    } while (cont);
    this.listDelivered = true;
    this.owner.markConnected(this);
    return { metadata: { resourceVersion }, items };
  }

  status(): ResourceStatus {
    return {
      connected: this.connected,
      synced: this.synced,
      objects: this.objects,
      resourceVersion: this.informer.latestResourceVersion(),
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

/**
 * The client's Watch, instrumented: asks for bookmarks (so a quiet resource's resourceVersion
 * stays fresh), tells the owner when a watch stream opened (connected) or could not be
 * established, counts 410s and error events, and refuses to open anything after stop().
 */
class TrackedWatch extends Watch {
  constructor(kc: KubeConfig, private readonly rw: ResourceWatch) {
    super(kc);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: DoneCallback,
  ): Promise<AbortController> {
    const rw = this.rw;
    const owner = rw.owner;
    if (owner.stopped) {
      const c = new AbortController();
      c.abort();
      return c;
    }
    if (rw.listDelivered) {
      rw.listDelivered = false;
      owner.markSynced(rw);
    }
    rw.watches++;
    let opened = false;
    let finished = false;
    const ctrl = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      (phase, obj, raw) => {
        if (phase === 'ERROR') owner.onWatchErrorEvent(rw, obj);
        callback(phase, obj, raw);
      },
      (err) => {
        finished = true;
        if (err && !owner.stopped) {
          if (isGone(err)) {
            rw.gone++;
            owner.log.info('watch expired (410 Gone); relisting', { resource: rw.name });
          } else if (isTimeout(err) && !opened) {
            // The client reconnects at once without reporting an error: count it ourselves.
            owner.onUnreported(rw, err);
          }
        }
        done(err);
      },
    );
    if (!finished && !owner.stopped) {
      opened = true;
      owner.markConnected(rw);
    }
    return ctrl;
  }
}

// ---- the watcher ------------------------------------------------------------------------------

class Watcher implements ClusterWatch {
  readonly kc: KubeConfig;
  readonly server: string;
  readonly store: ClusterStore;
  readonly log: WatchLogger;
  readonly http = new IsomorphicFetchHttpLibrary();
  readonly pageSize: number;
  readonly listTimeoutMs: number;
  readonly watchIdleTimeoutMs: number | undefined;
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
    this.kc = opts.kubeconfig instanceof KubeConfig ? opts.kubeconfig : loadKubeConfig(opts.kubeconfig);
    this.server = this.kc.getCurrentCluster()?.server ?? '';
    this.store = opts.store;
    this.log = opts.log ?? noopLogger;
    this.pageSize = opts.pageSize ?? 500;
    this.listTimeoutMs = opts.listTimeoutMs ?? 60_000;
    this.watchIdleTimeoutMs = opts.watchIdleTimeoutMs;
    this.synced = new Promise((r) => (this.#resolveSynced = r));
    this.resources = resourceSpecs(opts.nodeName).map((s) => new ResourceWatch(s, this));
  }

  start(): void {
    this.log.info('watching the Kubernetes API', { server: this.server, node: this.#opts.nodeName });
    for (const rw of this.resources) this.#startInformer(rw);
  }

  #startInformer(rw: ResourceWatch): void {
    rw.informer.start().catch((err: unknown) => this.onInformerError(rw, err));
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
      await rw.informer.stop();
    }
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
