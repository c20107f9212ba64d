// The model kept per Service between syncs, so that a sync rebuilds only the
// Services whose objects changed, as kube-proxy's change trackers let it:
//   rebuild(input)          buildModel, and the cache refilled (a full sync);
//   rebuildStream(input)    the same as a stream (streamModel): a full sync
//                           compiles each Service as it is built;
//   update(keys, objects)   buildServiceModel for each Service named, and the
//                           ServicePorts of each, for compile to redo.
// Frontends are claimed across Services (claimFrontends): a change that
// involves a frontend another Service also claims cannot be settled one
// Service at a time, so update() then returns undefined and the caller
// rebuilds. Anything else gives the same ServicePorts buildModel would.
import {
  buildServiceModel,
  claimFrontends,
  claimKey,
  collectModel,
  streamModel,
  type IndexedModelInput,
  type ModelInput,
  type ModelStream,
  type StreamItem,
} from './build-model.js';
import { compareStrings } from './endpoint-slices.js';
import type { EndpointSlice, Service } from './k8s-types.js';
import type { HealthCheck, Model, ModelError, NodeInfo, ObjectRef, ServicePort, SkippedService } from './types.js';

/** Where update() reads a Service and its slices, by "namespace/name". */
export interface ServiceObjects {
  service(key: string): Service | undefined;
  /** The slices whose kubernetes.io/service-name names the Service (sliceServiceKey), any order. */
  endpointSlices(key: string): readonly EndpointSlice[];
}

/** What the agent reports about the model besides the entries (status, health checks, logs). */
export interface ModelSummary {
  readonly node: NodeInfo;
  /** Services with at least one frontend. */
  readonly services: number;
  readonly skipped: readonly SkippedService[];
  readonly errors: readonly ModelError[];
  readonly healthChecks: readonly HealthCheck[];
}

/** The ServicePorts of each Service update() rebuilt ([] = none: deleted, skipped or all claimed elsewhere), in model order. */
export type ChangedServices = ReadonlyMap<string, { readonly ref: ObjectRef; readonly servicePorts: readonly ServicePort[] }>;

interface CachedService {
  /** Frontends it claims before claims are settled (claimKey, distinct). */
  readonly claims: readonly string[];
  /** Its own errors and its claim losses. */
  readonly errors: readonly ModelError[];
  readonly skipped: SkippedService | undefined;
  readonly healthCheck: HealthCheck | undefined;
  /** Some frontend of it is in the model. */
  readonly programmed: boolean;
}

const refKey = (ref: { readonly namespace: string; readonly name: string }): string => `${ref.namespace}/${ref.name}`;

/** "namespace/name" back to a Service ref (namespaces hold no "/"). */
function refOf(key: string): ObjectRef {
  const slash = key.indexOf('/');
  return { kind: 'Service', namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

function distinctClaims(ports: readonly ServicePort[]): string[] {
  return [...new Set(ports.map(claimKey))];
}

export class ServiceModels {
  #node: NodeInfo | undefined;
  #generalErrors: readonly ModelError[] = [];
  readonly #services = new Map<string, CachedService>();
  /** Services with some frontend in the model. */
  #programmed = 0;
  /** Keys of the Services with a skip, errors or a health check (what summary() lists). */
  readonly #detailed = new Set<string>();
  /** claimKey → how many Services claim it. */
  readonly #claims = new Map<string, number>();

  /** buildModel(input), with every Service's part cached for update(). */
  rebuild(input: ModelInput | IndexedModelInput): Model {
    return collectModel(this.rebuildStream(input));
  }

  /**
   * streamModel(input), each Service cached for update() as the iteration
   * reaches it (iterate it to the end: until then the cache is partial).
   */
  rebuildStream(input: ModelInput | IndexedModelInput): ModelStream {
    const stream = streamModel(input);
    const generalErrors: ModelError[] = [...stream.generalErrors];
    this.#node = stream.node;
    this.#generalErrors = generalErrors;
    this.#services.clear();
    this.#claims.clear();
    this.#programmed = 0;
    this.#detailed.clear();
    const claims = this.#claims;
    const put = (key: string, entry: CachedService): void => this.#put(key, entry);
    return {
      node: stream.node,
      generalErrors: stream.generalErrors,
      claimErrors: stream.claimErrors,
      *[Symbol.iterator](): Generator<StreamItem> {
        for (const item of stream) {
          if ('duplicate' in item) {
            generalErrors.push(item.duplicate);
          } else {
            const { model: m, servicePorts, claims: own, claimErrors } = item.service;
            for (const c of own) claims.set(c, (claims.get(c) ?? 0) + 1);
            put(refKey(m.ref), {
              claims: own,
              errors: claimErrors.length === 0 ? m.errors : [...m.errors, ...claimErrors],
              skipped: m.skipped,
              healthCheck: m.healthCheck,
              programmed: servicePorts.length > 0,
            });
          }
          yield item;
        }
      },
    };
  }

  /**
   * Rebuilds the Services `keys` names ("namespace/name") from `objects`: their
   * ServicePorts, or undefined when a full rebuild is needed (no rebuild yet,
   * or a frontend another Service claims too; update() then keeps returning
   * undefined until rebuild()).
   */
  update(keys: Iterable<string>, objects: ServiceObjects): ChangedServices | undefined {
    const node = this.#node;
    if (node === undefined) return undefined;
    const rebuilt = [...new Set(keys)].map((key) => {
      const service = objects.service(key);
      const m = service === undefined ? undefined : buildServiceModel(service, objects.endpointSlices(key), node);
      return { key, ref: m?.ref ?? refOf(key), m, claims: m === undefined ? [] : distinctClaims(m.servicePorts) };
    });

    // Frontend claims: a frontend any of these Services claimed or claims that
    // another Service claims too needs every Service's claims settled at once.
    let contested = false;
    for (const { key } of rebuilt) {
      for (const c of this.#services.get(key)?.claims ?? []) {
        const n = this.#claims.get(c) ?? 0;
        if (n > 1) contested = true;
        if (n <= 1) this.#claims.delete(c);
        else this.#claims.set(c, n - 1);
      }
    }
    for (const { claims } of rebuilt) {
      for (const c of claims) {
        const n = (this.#claims.get(c) ?? 0) + 1;
        if (n > 1) contested = true;
        this.#claims.set(c, n);
      }
    }
    if (contested) {
      this.#node = undefined;
      return undefined;
    }

    rebuilt.sort((a, b) => compareStrings(a.ref.namespace, b.ref.namespace) || compareStrings(a.ref.name, b.ref.name));
    const changed = new Map<string, { ref: ObjectRef; servicePorts: readonly ServicePort[] }>();
    for (const { key, ref, m, claims } of rebuilt) {
      if (m === undefined) {
        this.#drop(key);
        changed.set(key, { ref, servicePorts: [] });
        continue;
      }
      // Uncontested: only the Service's own ports compete (an LB address that is also an external IP…).
      const claimErrors: ModelError[] = [];
      const servicePorts = claimFrontends([m], claimErrors);
      this.#put(key, {
        claims,
        errors: [...m.errors, ...claimErrors],
        skipped: m.skipped,
        healthCheck: m.healthCheck,
        programmed: servicePorts.length > 0,
      });
      changed.set(key, { ref, servicePorts });
    }
    return changed;
  }

  /** The node, counts, skips, errors and health checks of the model as it now is. */
  summary(): ModelSummary {
    const node = this.#node;
    if (node === undefined) throw new Error('ServiceModels: no model yet (rebuild first)');
    const skipped: SkippedService[] = [];
    const errors: ModelError[] = [...this.#generalErrors];
    const healthChecks: HealthCheck[] = [];
    // only the Services that have something to say, in model order (a sync of one Service reads no other)
    const keys = [...this.#detailed].map(refOf).sort((a, b) => compareStrings(a.namespace, b.namespace) || compareStrings(a.name, b.name));
    for (const ref of keys) {
      const s = this.#services.get(refKey(ref)) as CachedService;
      if (s.skipped !== undefined) skipped.push(s.skipped);
      if (s.errors.length > 0) errors.push(...s.errors);
      if (s.healthCheck !== undefined) healthChecks.push(s.healthCheck);
    }
    return { node, services: this.#programmed, skipped, errors, healthChecks };
  }

  /** Caches a Service's part, keeping the counts summary() reads up to date. */
  #put(key: string, entry: CachedService): void {
    if (this.#services.has(key)) this.#drop(key);
    this.#services.set(key, entry);
    if (entry.programmed) this.#programmed++;
    if (entry.skipped !== undefined || entry.errors.length > 0 || entry.healthCheck !== undefined) this.#detailed.add(key);
  }

  #drop(key: string): void {
    const old = this.#services.get(key);
    if (old === undefined) return;
    this.#services.delete(key);
    if (old.programmed) this.#programmed--;
    this.#detailed.delete(key);
  }
}
