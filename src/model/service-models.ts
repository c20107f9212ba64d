// The model kept per Service between syncs, so that a sync rebuilds only the
// Services whose objects changed, as kube-proxy's change trackers let it:
//   rebuild(input)          buildModel, and the cache refilled (a full sync);
//   update(keys, objects)   buildServiceModel for each Service named, and the
//                           ServicePorts of each, for compile to redo.
// Frontends are claimed across Services (claimFrontends): a change that
// involves a frontend another Service also claims cannot be settled one
// Service at a time, so update() then returns undefined and the caller
// rebuilds. Anything else gives the same ServicePorts buildModel would.
import { buildModelParts, buildServiceModel, claimFrontends, claimKey, type ModelInput } from './build-model.js';
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
  /** claimKey → how many Services claim it. */
  readonly #claims = new Map<string, number>();

  /** buildModel(input), with every Service's part cached for update(). */
  rebuild(input: ModelInput): Model {
    const parts = buildModelParts(input);
    const { model } = parts;
    this.#node = model.node;
    this.#generalErrors = parts.generalErrors;
    this.#services.clear();
    this.#claims.clear();

    const claimErrors = new Map<string, ModelError[]>();
    for (const e of parts.claimErrors) {
      const k = refKey(e.ref);
      claimErrors.set(k, [...(claimErrors.get(k) ?? []), e]);
    }
    const programmed = new Set(model.servicePorts.map((sp) => refKey(sp.name)));
    for (const m of parts.services) {
      const key = refKey(m.ref);
      const claims = distinctClaims(m.servicePorts);
      for (const c of claims) this.#claims.set(c, (this.#claims.get(c) ?? 0) + 1);
      this.#services.set(key, {
        claims,
        errors: [...m.errors, ...(claimErrors.get(key) ?? [])],
        skipped: m.skipped,
        healthCheck: m.healthCheck,
        programmed: programmed.has(key),
      });
    }
    return model;
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
        this.#services.delete(key);
        changed.set(key, { ref, servicePorts: [] });
        continue;
      }
      // Uncontested: only the Service's own ports compete (an LB address that is also an external IP…).
      const claimErrors: ModelError[] = [];
      const servicePorts = claimFrontends([m], claimErrors);
      this.#services.set(key, {
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
    let services = 0;
    const skipped: SkippedService[] = [];
    const errors: ModelError[] = [...this.#generalErrors];
    const healthChecks: HealthCheck[] = [];
    for (const s of this.#services.values()) {
      if (s.programmed) services++;
      if (s.skipped !== undefined) skipped.push(s.skipped);
      if (s.errors.length > 0) errors.push(...s.errors);
      if (s.healthCheck !== undefined) healthChecks.push(s.healthCheck);
    }
    return { node, services, skipped, errors, healthChecks };
  }
}
