// The model stage: Services + EndpointSlices + this Node → ServicePorts (one per
// frontend) with the endpoints kube-proxy would use for each. Pure and
// deterministic: the same objects in any order give the same model.
//
// A Service is built in two steps: planService reads its spec alone (the
// frontends it asks for, sorted in model order), finishService adds the
// endpoints of its slices. Frontends are claimed across Services
// (claimFrontends) from the plans, before any endpoint is read, so
// streamModel can hand out one finished Service at a time: a full sync's
// compile consumes each Service as it is built and the model is never whole
// in memory. buildModel collects the same stream into a Model.
import {
  collectEndpoints,
  compareStrings,
  groupEndpointSlices,
  portKey,
  serviceKey,
} from './endpoint-slices.js';
import { ipSortKey } from './ip.js';
import type { EndpointSlice, Service } from './k8s-types.js';
import { buildNodeInfo, type NodeInput } from './node-info.js';
import { checkService, serviceRef, type CheckedService, type ServicePortSpecChecked, type ServiceSpecChecked } from './service-spec.js';
import { categorizeEndpoints, type EndpointCategories, type EndpointPolicy } from './topology.js';
import {
  formatServicePortName,
  type Endpoint,
  type FrontendKind,
  type HealthCheck,
  type IPFamily,
  type Model,
  type ModelError,
  type NodeInfo,
  type ObjectRef,
  type Protocol,
  type ServicePort,
  type ServicePortName,
  type SkippedService,
} from './types.js';

export interface ModelInput extends NodeInput {
  readonly services: Iterable<Service>;
  readonly endpointSlices: Iterable<EndpointSlice>;
}

/**
 * A ModelInput whose slices are looked up per Service: a store that indexes
 * them (by sliceServiceKey, one per namespace/name) needs no grouping pass,
 * and reads each Service's slices only when that Service is built.
 */
export interface IndexedModelInput extends NodeInput {
  /** Every Service's key, "namespace/name" (the namespace "default" when it has none), each once. */
  readonly serviceKeys: Iterable<string>;
  /** The Service of a key (streamModel reads each once, in pass one). */
  readonly service: (key: string) => Service | undefined;
  /** The slices whose kubernetes.io/service-name names Service "namespace/name", any order. */
  readonly endpointSlicesFor: (serviceKey: string) => readonly EndpointSlice[];
}

/** One Service's part of the model. */
export interface ServiceModel {
  readonly ref: ObjectRef;
  /** In model order (see Model.servicePorts). */
  readonly servicePorts: readonly ServicePort[];
  readonly skipped: SkippedService | undefined;
  readonly errors: readonly ModelError[];
  readonly healthCheck: HealthCheck | undefined;
}

export function buildModel(input: ModelInput | IndexedModelInput): Model {
  return collectModel(streamModel(input));
}

// ---- one Service: plan, then finish ----

/** One frontend a Service asks for (an address, port and protocol), before claims and endpoints. */
export interface PlannedFrontend {
  /** The Service port behind it. */
  readonly spec: ServicePortSpecChecked;
  readonly name: ServicePortName;
  /** formatServicePortName(name). */
  readonly portName: string;
  readonly family: IPFamily;
  readonly clusterIP: string;
  readonly kind: FrontendKind;
  readonly address: string;
  readonly port: number;
  readonly protocol: Protocol;
}

/** What a Service's spec alone says: its frontends, in model order (none when skipped). */
export interface ServicePlan {
  readonly ref: ObjectRef;
  readonly checked: CheckedService;
  readonly frontends: readonly PlannedFrontend[];
}

export function planService(service: Service, node: NodeInfo): ServicePlan {
  const checked = checkService(service);
  if (!checked.ok) return { ref: checked.skipped.ref, checked, frontends: [] };
  const svc = checked.service;
  const frontends: PlannedFrontend[] = [];
  for (const p of svc.ports) {
    const name: ServicePortName = { namespace: svc.ref.namespace, name: svc.ref.name, port: p.name, protocol: p.protocol };
    const portName = formatServicePortName(name);
    for (const [family, clusterIP] of svc.clusterIPs) {
      const add = (kind: FrontendKind, address: string, port: number): void => {
        frontends.push({ spec: p, name, portName, family, clusterIP, kind, address, port, protocol: p.protocol });
      };
      add('clusterIP', clusterIP, p.port);
      for (const address of svc.externalIPs.get(family) ?? []) add('externalIP', address, p.port);
      for (const address of svc.loadBalancerIPs.get(family) ?? []) add('loadBalancer', address, p.port);
      if (p.nodePort !== 0) {
        for (const address of node.nodePortAddresses) {
          if (address.includes(':') === (family === 'IPv6')) add('nodePort', address, p.nodePort);
        }
      }
    }
  }
  if (frontends.length > 1) {
    const keys = new Map<PlannedFrontend, string>();
    const addressKey = (f: PlannedFrontend): string => {
      let k = keys.get(f);
      if (k === undefined) keys.set(f, (k = ipSortKey(f.address)));
      return k;
    };
    frontends.sort(
      (a, b) =>
        compareStrings(a.name.port, b.name.port) ||
        compareStrings(a.name.protocol, b.name.protocol) ||
        compareStrings(a.family, b.family) ||
        KIND_ORDER[a.kind] - KIND_ORDER[b.kind] ||
        compareStrings(addressKey(a), addressKey(b)) ||
        a.port - b.port,
    );
  }
  return { ref: svc.ref, checked, frontends };
}

/**
 * The Service of `plan` with its slices (those whose kubernetes.io/service-name
 * names it, any order). `kept`: which of plan.frontends it keeps (claims
 * settled, claimPlans); default all — buildServiceModel, whose frontends
 * colliding with another Service's are left to claimFrontends.
 */
export function finishService(
  plan: ServicePlan,
  slices: readonly EndpointSlice[],
  node: NodeInfo,
  kept?: readonly boolean[],
): ServiceModel {
  const { checked } = plan;
  if (!checked.ok) {
    return { ref: checked.skipped.ref, servicePorts: [], skipped: checked.skipped, errors: checked.errors, healthCheck: undefined };
  }
  const svc = checked.service;
  const errors: ModelError[] = [...checked.errors];
  const sorted = slices.length > 1 ? [...slices].sort((a, b) => compareStrings(a.metadata?.name ?? '', b.metadata?.name ?? '')) : slices;
  const collected = collectEndpoints(sorted, { ref: svc.ref, ports: new Set(svc.ports.map((p) => portKey(p.name, p.protocol))) }, node.name);
  errors.push(...collected.errors);

  // kube-proxy's health-check count: distinct local ready addresses over every port, per family
  // (one health server per family there).
  let localReady: Map<IPFamily, Set<string>> | undefined;
  if (svc.healthCheckNodePort !== 0) {
    localReady = new Map();
    for (const family of svc.clusterIPs.keys()) {
      const addresses = new Set<string>();
      for (const p of svc.ports) {
        for (const ep of collected.byPort.get(portKey(p.name, p.protocol))?.get(family) ?? []) if (ep.isLocal && ep.ready) addresses.add(ep.address);
      }
      localReady.set(family, addresses);
    }
  }

  // per Service port and family: its endpoints and the settings its frontends share
  let shared: Map<ServicePortSpecChecked, Map<IPFamily, SharedPortFields>> | undefined;
  const sharedOf = (f: PlannedFrontend): SharedPortFields => {
    shared ??= new Map();
    let byFamily = shared.get(f.spec);
    if (byFamily === undefined) shared.set(f.spec, (byFamily = new Map()));
    let s = byFamily.get(f.family);
    if (s === undefined) byFamily.set(f.family, (s = sharedFields(svc, f, collected.byPort.get(portKey(f.spec.name, f.spec.protocol))?.get(f.family) ?? [], node)));
    return s;
  };

  const servicePorts: ServicePort[] = [];
  plan.frontends.forEach((f, i) => {
    if (kept !== undefined && kept[i] !== true) return;
    const s = sharedOf(f);
    servicePorts.push({
      ...s.fields,
      kind: f.kind,
      address: f.address,
      port: f.port,
      loadBalancerSourceRanges: f.kind === 'loadBalancer' ? s.ranges : NO_RANGES,
    });
  });

  let healthCheck: HealthCheck | undefined;
  if (localReady !== undefined) {
    const v4 = localReady.get('IPv4')?.size ?? 0;
    const v6 = localReady.get('IPv6')?.size ?? 0;
    healthCheck = {
      ref: svc.ref,
      nodePort: svc.healthCheckNodePort,
      localEndpoints: Math.max(v4, v6),
      ...(localReady.size === 2 ? { localEndpointsByFamily: { IPv4: v4, IPv6: v6 } } : {}),
    };
  }
  return { ref: svc.ref, servicePorts, skipped: undefined, errors, healthCheck };
}

const NO_RANGES: readonly string[] = Object.freeze([]);

/** The fields every frontend of one Service port and family has in common. */
interface SharedPortFields {
  readonly fields: Omit<ServicePort, 'kind' | 'address' | 'port' | 'loadBalancerSourceRanges'>;
  readonly ranges: readonly string[];
}

function sharedFields(svc: ServiceSpecChecked, f: PlannedFrontend, endpoints: readonly Endpoint[], node: NodeInfo): SharedPortFields {
  const p = f.spec;
  const policy: EndpointPolicy = {
    internalPolicyLocal: svc.internalPolicyLocal,
    externalPolicyLocal: svc.externalPolicyLocal,
    externallyAccessible:
      p.nodePort !== 0 || (svc.externalIPs.get(f.family)?.length ?? 0) > 0 || (svc.loadBalancerIPs.get(f.family)?.length ?? 0) > 0,
  };
  const categories: EndpointCategories = categorizeEndpoints(endpoints, policy, node.name, node.zone);
  return {
    fields: {
      name: f.name,
      portName: f.portName,
      family: f.family,
      protocol: p.protocol,
      servicePort: p.port,
      nodePort: p.nodePort,
      targetPort: p.targetPort,
      clusterIP: f.clusterIP,
      externalPolicyLocal: svc.externalPolicyLocal,
      internalPolicyLocal: svc.internalPolicyLocal,
      sessionAffinity: svc.sessionAffinity,
      healthCheckNodePort: svc.healthCheckNodePort,
      trafficDistribution: svc.trafficDistribution,
      endpoints,
      clusterEndpoints: categories.clusterEndpoints,
      localEndpoints: categories.localEndpoints,
      externalUsesLocal: svc.externalPolicyLocal && policy.externallyAccessible,
      internalUsesLocal: svc.internalPolicyLocal,
      hasAnyEndpoints: categories.hasAnyEndpoints,
      topologyMode: categories.topologyMode,
      localReadyEndpoints: countLocalReady(endpoints),
    },
    ranges: svc.loadBalancerSourceRanges.get(f.family) ?? NO_RANGES,
  };
}

/**
 * One Service with its slices (those whose kubernetes.io/service-name names it,
 * any order). Lets a caller rebuild only the Services that changed; frontends
 * that collide with another Service's are resolved by buildModel only.
 */
export function buildServiceModel(service: Service, slices: readonly EndpointSlice[], node: NodeInfo): ServiceModel {
  return finishService(planService(service, node), slices, node);
}

// ---- the whole model, one Service at a time ----

/** One Service of a ModelStream, finished, its frontends claimed. */
export interface StreamedService {
  readonly model: ServiceModel;
  /** Its ServicePorts after claims (model.servicePorts, only those it won). */
  readonly servicePorts: readonly ServicePort[];
  /** claimKey of every frontend it asks for, won or lost, distinct. */
  readonly claims: readonly string[];
  /** Its frontends lost to another Service's claim (model.errors does not have them). */
  readonly claimErrors: readonly ModelError[];
}

/** An item of a ModelStream: a Service, or a second object of the same name (left out, reported). */
export type StreamItem = { readonly service: StreamedService } | { readonly duplicate: ModelError };

export interface ModelStream extends Iterable<StreamItem> {
  readonly node: NodeInfo;
  /** The errors that are no Service's own: the node's and duplicate slices' (duplicate Services come as items). */
  readonly generalErrors: readonly ModelError[];
  /** Every claim error, in the order claims were settled (buildModel lists them last). */
  readonly claimErrors: readonly ModelError[];
}

/**
 * The model as a stream: the node, the claims of every Service's frontends
 * settled from the plans (pass one, before any endpoint is read), then each
 * Service finished (its endpoints read) when the iteration reaches it, in
 * model order; each plan is let go once its Service is handed out. Iterate it
 * once.
 */
export function streamModel(input: ModelInput | IndexedModelInput): ModelStream {
  const { node, errors: nodeErrors } = buildNodeInfo(input);
  const generalErrors: ModelError[] = [...nodeErrors];

  let slicesFor: (key: string) => readonly EndpointSlice[];
  // Services in model order: a key and how to get the object (again)
  let order: { readonly ref: ObjectRef; readonly key: string; s: Service | undefined }[];
  let serviceOf: (entry: { readonly key: string; s: Service | undefined }) => Service | undefined;
  if ('endpointSlicesFor' in input) {
    slicesFor = input.endpointSlicesFor;
    order = [...input.serviceKeys].map((key) => ({ ref: refOfServiceKey(key), key, s: undefined }));
    serviceOf = (e) => input.service(e.key);
  } else {
    const duplicateSlices: ModelError[] = [];
    const groups = groupEndpointSlices(uniqueSlices(input.endpointSlices, duplicateSlices));
    generalErrors.push(...duplicateSlices);
    slicesFor = (key) => groups.get(key) ?? [];
    order = [...input.services].map((s) => {
      const ref = serviceRef(s);
      return { ref, key: serviceKey(ref.namespace, ref.name), s };
    });
    serviceOf = (e) => e.s;
  }
  order.sort((a, b) => compareStrings(a.ref.namespace, b.ref.namespace) || compareStrings(a.ref.name, b.ref.name));

  // pass one: each Service planned, its frontends claimed (nodePorts after every other kind)
  const claims = new ClaimSettler();
  const entries: Entry[] = [];
  let previous: ObjectRef | undefined;
  for (const e of order) {
    const { ref } = e;
    if (previous !== undefined && previous.namespace === ref.namespace && previous.name === ref.name && ref.name !== '') {
      entries.push({ duplicate: { ref, field: 'metadata.name', message: 'duplicate Service; the first one is used' } });
      continue;
    }
    previous = ref;
    const service = serviceOf(e);
    if (service === undefined) continue; // gone from the source meanwhile
    const plan = planService(service, node);
    entries.push({ e, plan, claims: distinctClaims(plan.frontends), index: claims.add(plan.frontends) });
  }
  claims.finish();

  return {
    node,
    generalErrors,
    claimErrors: claims.errors,
    *[Symbol.iterator](): Generator<StreamItem> {
      for (let at = 0; at < entries.length; at++) {
        const entry = entries[at] as Entry;
        entries[at] = RELEASED; // handed out: the stream holds less and less
        if ('duplicate' in entry) {
          yield { duplicate: entry.duplicate };
          continue;
        }
        // pass two: finished, its endpoints read
        const model = finishService(entry.plan, slicesFor(entry.e.key), node, claims.kept(entry.index));
        yield { service: { model, servicePorts: model.servicePorts, claims: entry.claims, claimErrors: claims.errorsOf(entry.index) } };
      }
    },
  };
}

/** "namespace/name" as a Service ref (namespaces hold no "/"). */
function refOfServiceKey(key: string): ObjectRef {
  const slash = key.indexOf('/');
  return { kind: 'Service', namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

type Entry =
  | { readonly duplicate: ModelError }
  | { readonly e: { readonly key: string; s: Service | undefined }; readonly plan: ServicePlan; readonly claims: readonly string[]; readonly index: number };
/** What a stream leaves where a Service it has handed out was (iterate a stream once). */
const RELEASED: Entry = { duplicate: { ref: { kind: 'Service', namespace: '', name: '' }, field: '', message: 'stream iterated twice' } };

/**
 * settleClaims one Service at a time: add() claims a Service's frontends of
 * every kind but nodePort at once and keeps its nodePort frontends for
 * finish(), which claims them in the same order — the two passes of
 * settleClaims, without every Service's frontends held at once.
 */
class ClaimSettler {
  readonly errors: ModelError[] = [];
  readonly #owners = new Map<string, { readonly portName: string; readonly kind: FrontendKind }>();
  readonly #nodePorts: { readonly service: number; readonly index: number; readonly count: number; readonly f: PlannedFrontend }[] = [];
  /** Per Service that lost a frontend: which it keeps, and its errors. */
  readonly #lost = new Map<number, { kept: boolean[]; errors: ModelError[] }>();
  #count = 0;

  /** Claims a Service's frontends (but its nodePorts); returns its index. */
  add(frontends: readonly PlannedFrontend[]): number {
    const service = this.#count++;
    frontends.forEach((f, index) => {
      if (f.kind === 'nodePort') this.#nodePorts.push({ service, index, count: frontends.length, f });
      else this.#claim(service, index, frontends.length, f);
    });
    return service;
  }

  finish(): void {
    for (const { service, index, count, f } of this.#nodePorts.splice(0)) this.#claim(service, index, count, f);
  }

  /** Which frontends of Service `service` it keeps; undefined = all. */
  kept(service: number): readonly boolean[] | undefined {
    return this.#lost.get(service)?.kept;
  }

  errorsOf(service: number): readonly ModelError[] {
    return this.#lost.get(service)?.errors ?? NO_ERRORS;
  }

  #claim(service: number, index: number, count: number, f: PlannedFrontend): void {
    const key = claimKey(f);
    const owner = this.#owners.get(key);
    if (owner === undefined) {
      this.#owners.set(key, { portName: f.portName, kind: f.kind });
      return;
    }
    let lost = this.#lost.get(service);
    if (lost === undefined) {
      lost = { kept: new Array<boolean>(count).fill(true), errors: [] };
      this.#lost.set(service, lost);
    }
    lost.kept[index] = false;
    if (owner.portName === f.portName) return;
    const e: ModelError = {
      ref: { kind: 'Service', namespace: f.name.namespace, name: f.name.name },
      field: claimField(f),
      message: `${f.kind} frontend ${f.address} port ${f.port}/${f.protocol} is already ${owner.kind} of ${owner.portName}; ignored`,
    };
    lost.errors.push(e);
    this.errors.push(e);
  }
}

const NO_ERRORS: readonly ModelError[] = Object.freeze([]);

function claimField(f: { readonly kind: FrontendKind; readonly name: ServicePortName }): string {
  return f.kind === 'clusterIP'
    ? 'spec.clusterIPs'
    : f.kind === 'externalIP'
      ? 'spec.externalIPs'
      : f.kind === 'loadBalancer'
        ? 'status.loadBalancer.ingress'
        : `spec.ports[name=${JSON.stringify(f.name.port)}].nodePort`;
}

/** A stream collected into a Model (what buildModel returns). */
export function collectModel(stream: ModelStream): Model {
  const errors: ModelError[] = [...stream.generalErrors];
  const servicePorts: ServicePort[] = [];
  const skipped: SkippedService[] = [];
  const healthChecks: HealthCheck[] = [];
  for (const item of stream) {
    if ('duplicate' in item) {
      errors.push(item.duplicate);
      continue;
    }
    const { model } = item.service;
    errors.push(...model.errors);
    if (model.skipped !== undefined) skipped.push(model.skipped);
    if (model.healthCheck !== undefined) healthChecks.push(model.healthCheck);
    servicePorts.push(...item.service.servicePorts);
  }
  errors.push(...stream.claimErrors);
  return { servicePorts, skipped, errors, healthChecks, node: stream.node };
}

function distinctClaims(frontends: readonly PlannedFrontend[]): string[] {
  if (frontends.length === 1) return [claimKey(frontends[0] as PlannedFrontend)];
  return [...new Set(frontends.map(claimKey))];
}

/**
 * Which traffic a frontend's backends are picked for. "internal": traffic that
 * starts on this node (its pods and host processes, the socket-LB path);
 * "external": traffic arriving from elsewhere.
 */
export type TrafficScope = 'internal' | 'external';

/**
 * The endpoints a frontend uses for one scope, as kube-proxy's chains route it:
 * a cluster IP follows internalTrafficPolicy for all traffic; a nodePort,
 * externalIP or loadBalancer frontend follows externalTrafficPolicy for traffic
 * from elsewhere, while traffic from this node short-circuits to the cluster
 * endpoints.
 */
export function endpointsForScope(sp: ServicePort, scope: TrafficScope): readonly Endpoint[] {
  if (sp.kind === 'clusterIP') return sp.internalUsesLocal ? sp.localEndpoints : sp.clusterEndpoints;
  if (scope === 'external' && sp.externalUsesLocal) return sp.localEndpoints;
  return sp.clusterEndpoints;
}

/** The two scopes of a frontend select different endpoints (write two entries). */
export function scopesDiffer(sp: ServicePort): boolean {
  return endpointsForScope(sp, 'internal') !== endpointsForScope(sp, 'external');
}

function countLocalReady(endpoints: readonly Endpoint[]): number {
  let n = 0;
  for (const ep of endpoints) if (ep.isLocal && ep.ready) n++;
  return n;
}

const KIND_ORDER: Readonly<Record<FrontendKind, number>> = {
  clusterIP: 0,
  externalIP: 1,
  loadBalancer: 2,
  nodePort: 3,
};

/** What claimFrontends keys a frontend by: "address|port|protocol". */
export function claimKey(f: { readonly address: string; readonly port: number; readonly protocol: Protocol }): string {
  return `${f.address}|${f.port}|${f.protocol}`;
}

/** What a claim needs of a frontend (a ServicePort or a PlannedFrontend). */
interface Claimable {
  readonly name: ServicePortName;
  readonly portName: string;
  readonly kind: FrontendKind;
  readonly address: string;
  readonly port: number;
  readonly protocol: Protocol;
}

/**
 * Every frontend (address, port, protocol) belongs to one Service port. Specific
 * addresses (cluster, external, load balancer) are claimed before NodePorts, as
 * kube-proxy's NodePort rules come last; within a kind, Services claim in
 * namespace/name order. The same Service port claiming twice (an LB address that
 * is also an external IP) keeps one frontend silently; any other loser is left
 * out and reported. `lists`: each Service's frontends in model order; the
 * answer says, per list, which it keeps.
 */
function settleClaims(lists: readonly (readonly Claimable[])[], onError: (list: number, error: ModelError) => void): boolean[][] {
  const owners = new Map<string, Claimable>();
  const kept = lists.map((l) => new Array<boolean>(l.length).fill(false));
  const fieldOf = (f: Claimable): string =>
    f.kind === 'clusterIP'
      ? 'spec.clusterIPs'
      : f.kind === 'externalIP'
        ? 'spec.externalIPs'
        : f.kind === 'loadBalancer'
          ? 'status.loadBalancer.ingress'
          : `spec.ports[name=${JSON.stringify(f.name.port)}].nodePort`;
  for (const pass of [false, true]) {
    lists.forEach((list, li) => {
      list.forEach((f, fi) => {
        if ((f.kind === 'nodePort') !== pass) return;
        const key = claimKey(f);
        const owner = owners.get(key);
        if (owner === undefined) {
          owners.set(key, f);
          (kept[li] as boolean[])[fi] = true;
          return;
        }
        if (owner.portName === f.portName) return;
        onError(li, {
          ref: { kind: 'Service', namespace: f.name.namespace, name: f.name.name },
          field: fieldOf(f),
          message: `${f.kind} frontend ${f.address} port ${f.port}/${f.protocol} is already ${owner.kind} of ${owner.portName}; ignored`,
        });
      });
    });
  }
  return kept;
}

/** claimFrontends over finished Services (ServiceModels.update settles one Service's own). */
export function claimFrontends(models: readonly ServiceModel[], errors: ModelError[]): ServicePort[] {
  const kept = settleClaims(
    models.map((m) => m.servicePorts),
    (_, e) => errors.push(e),
  );
  const out: ServicePort[] = [];
  models.forEach((m, i) => m.servicePorts.forEach((sp, j) => (kept[i] as boolean[])[j] && out.push(sp)));
  return out;
}

function uniqueSlices(slices: Iterable<EndpointSlice>, errors: ModelError[]): EndpointSlice[] {
  const seen = new Set<string>();
  const out: EndpointSlice[] = [];
  for (const slice of slices) {
    const namespace = slice.metadata?.namespace || 'default';
    const name = slice.metadata?.name;
    if (typeof name === 'string' && name !== '') {
      const key = serviceKey(namespace, name);
      if (seen.has(key)) {
        errors.push({
          ref: { kind: 'EndpointSlice', namespace, name },
          field: 'metadata.name',
          message: 'duplicate EndpointSlice; the first one is used',
        });
        continue;
      }
      seen.add(key);
    }
    out.push(slice);
  }
  return out;
}
