// The model stage: Services + EndpointSlices + this Node → ServicePorts (one per
// frontend) with the endpoints kube-proxy would use for each. Pure and
// deterministic: the same objects in any order give the same model.
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
import { checkService, serviceRef, type ServiceSpecChecked } from './service-spec.js';
import { categorizeEndpoints, type EndpointPolicy } from './topology.js';
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
  type ServicePort,
  type ServicePortName,
  type SkippedService,
} from './types.js';

export interface ModelInput extends NodeInput {
  readonly services: Iterable<Service>;
  readonly endpointSlices: Iterable<EndpointSlice>;
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

export function buildModel(input: ModelInput): Model {
  return buildModelParts(input).model;
}

/** What buildModel builds, with each Service's own part beside it (ServiceModels caches them). */
export interface ModelParts {
  readonly model: Model;
  /** Each Service's model, in model order (duplicates left out), before frontends are claimed. */
  readonly services: readonly ServiceModel[];
  /** The errors that are no Service's own: the node's and duplicate objects' (model.errors has them too). */
  readonly generalErrors: readonly ModelError[];
  /** Frontends lost to another Service's claim (model.errors has them too). */
  readonly claimErrors: readonly ModelError[];
}

export function buildModelParts(input: ModelInput): ModelParts {
  const { node, errors: nodeErrors } = buildNodeInfo(input);
  const errors: ModelError[] = [...nodeErrors];
  const generalErrors: ModelError[] = [...nodeErrors];
  const skipped: SkippedService[] = [];
  const healthChecks: HealthCheck[] = [];

  const duplicateSlices: ModelError[] = [];
  const slices = groupEndpointSlices(uniqueSlices(input.endpointSlices, duplicateSlices));
  errors.push(...duplicateSlices);
  generalErrors.push(...duplicateSlices);
  const services = [...input.services].map((s) => ({ s, ref: serviceRef(s) }));
  services.sort((a, b) => compareStrings(a.ref.namespace, b.ref.namespace) || compareStrings(a.ref.name, b.ref.name));

  const models: ServiceModel[] = [];
  let previous: ObjectRef | undefined;
  for (const { s, ref } of services) {
    if (previous !== undefined && previous.namespace === ref.namespace && previous.name === ref.name && ref.name !== '') {
      const duplicate: ModelError = { ref, field: 'metadata.name', message: 'duplicate Service; the first one is used' };
      errors.push(duplicate);
      generalErrors.push(duplicate);
      continue;
    }
    previous = ref;
    const m = buildServiceModel(s, slices.get(serviceKey(ref.namespace, ref.name)) ?? [], node);
    models.push(m);
    errors.push(...m.errors);
    if (m.skipped !== undefined) skipped.push(m.skipped);
    if (m.healthCheck !== undefined) healthChecks.push(m.healthCheck);
  }

  const claimErrors: ModelError[] = [];
  const servicePorts = claimFrontends(models, claimErrors);
  errors.push(...claimErrors);
  return { model: { servicePorts, skipped, errors, healthChecks, node }, services: models, generalErrors, claimErrors };
}

/**
 * One Service with its slices (those whose kubernetes.io/service-name names it,
 * any order). Lets a caller rebuild only the Services that changed; frontends
 * that collide with another Service's are resolved by buildModel only.
 */
export function buildServiceModel(
  service: Service,
  slices: readonly EndpointSlice[],
  node: NodeInfo,
): ServiceModel {
  const checked = checkService(service);
  if (!checked.ok) {
    return {
      ref: checked.skipped.ref,
      servicePorts: [],
      skipped: checked.skipped,
      errors: checked.errors,
      healthCheck: undefined,
    };
  }
  const svc = checked.service;
  const errors: ModelError[] = [...checked.errors];
  const sorted = [...slices].sort((a, b) => compareStrings(a.metadata?.name ?? '', b.metadata?.name ?? ''));
  const collected = collectEndpoints(
    sorted,
    { ref: svc.ref, ports: new Set(svc.ports.map((p) => portKey(p.name, p.protocol))) },
    node.name,
  );
  errors.push(...collected.errors);

  const servicePorts: ServicePort[] = [];
  const localReadyAddresses = new Set<string>();
  for (const p of svc.ports) {
    const name: ServicePortName = {
      namespace: svc.ref.namespace,
      name: svc.ref.name,
      port: p.name,
      protocol: p.protocol,
    };
    const formatted = formatServicePortName(name);
    const byFamily = collected.byPort.get(portKey(p.name, p.protocol));
    for (const [family, clusterIP] of svc.clusterIPs) {
      const endpoints = byFamily?.get(family) ?? [];
      for (const ep of endpoints) if (ep.isLocal && ep.ready) localReadyAddresses.add(ep.address);

      const frontends = frontendsOf(svc, p.port, p.nodePort, family, clusterIP, node);
      const policy: EndpointPolicy = {
        internalPolicyLocal: svc.internalPolicyLocal,
        externalPolicyLocal: svc.externalPolicyLocal,
        externallyAccessible:
          p.nodePort !== 0 ||
          (svc.externalIPs.get(family)?.length ?? 0) > 0 ||
          (svc.loadBalancerIPs.get(family)?.length ?? 0) > 0,
      };
      const categories = categorizeEndpoints(endpoints, policy, node.name, node.zone);
      const shared = {
        name,
        portName: formatted,
        family,
        protocol: p.protocol,
        servicePort: p.port,
        nodePort: p.nodePort,
        targetPort: p.targetPort,
        clusterIP,
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
      } as const;
      const ranges = svc.loadBalancerSourceRanges.get(family) ?? [];
      for (const f of frontends) {
        servicePorts.push({
          ...shared,
          kind: f.kind,
          address: f.address,
          port: f.port,
          loadBalancerSourceRanges: f.kind === 'loadBalancer' ? ranges : [],
        });
      }
    }
  }
  servicePorts.sort(compareServicePorts);

  const healthCheck: HealthCheck | undefined =
    svc.healthCheckNodePort === 0
      ? undefined
      : { ref: svc.ref, nodePort: svc.healthCheckNodePort, localEndpoints: localReadyAddresses.size };
  return { ref: svc.ref, servicePorts, skipped: undefined, errors, healthCheck };
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

interface Frontend {
  readonly kind: FrontendKind;
  readonly address: string;
  readonly port: number;
}

function frontendsOf(
  svc: ServiceSpecChecked,
  port: number,
  nodePort: number,
  family: IPFamily,
  clusterIP: string,
  node: NodeInfo,
): Frontend[] {
  const out: Frontend[] = [{ kind: 'clusterIP', address: clusterIP, port }];
  for (const address of svc.externalIPs.get(family) ?? []) out.push({ kind: 'externalIP', address, port });
  for (const address of svc.loadBalancerIPs.get(family) ?? []) out.push({ kind: 'loadBalancer', address, port });
  if (nodePort !== 0) {
    for (const address of node.nodePortAddresses) {
      if (address.includes(':') === (family === 'IPv6')) out.push({ kind: 'nodePort', address, port: nodePort });
    }
  }
  return out;
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

const sortKeyCache = new WeakMap<ServicePort, string>();

function compareServicePorts(a: ServicePort, b: ServicePort): number {
  return (
    compareStrings(a.name.namespace, b.name.namespace) ||
    compareStrings(a.name.name, b.name.name) ||
    compareStrings(a.name.port, b.name.port) ||
    compareStrings(a.name.protocol, b.name.protocol) ||
    compareStrings(a.family, b.family) ||
    KIND_ORDER[a.kind] - KIND_ORDER[b.kind] ||
    compareStrings(addressKey(a), addressKey(b)) ||
    a.port - b.port
  );
}

function addressKey(sp: ServicePort): string {
  let k = sortKeyCache.get(sp);
  if (k === undefined) sortKeyCache.set(sp, (k = ipSortKey(sp.address)));
  return k;
}

/** What claimFrontends keys a frontend by: "address|port|protocol". */
export function claimKey(sp: ServicePort): string {
  return `${sp.address}|${sp.port}|${sp.protocol}`;
}

/**
 * Every frontend (address, port, protocol) belongs to one Service port. Specific
 * addresses (cluster, external, load balancer) are claimed before NodePorts, as
 * kube-proxy's NodePort rules come last; within a kind, Services claim in
 * namespace/name order. The same Service port claiming twice (an LB address that
 * is also an external IP) keeps one frontend silently; any other loser is left
 * out and reported.
 */
export function claimFrontends(models: readonly ServiceModel[], errors: ModelError[]): ServicePort[] {
  const owners = new Map<string, ServicePort>();
  const kept = new Set<ServicePort>();
  const fieldOf = (sp: ServicePort): string =>
    sp.kind === 'clusterIP'
      ? 'spec.clusterIPs'
      : sp.kind === 'externalIP'
        ? 'spec.externalIPs'
        : sp.kind === 'loadBalancer'
          ? 'status.loadBalancer.ingress'
          : `spec.ports[name=${JSON.stringify(sp.name.port)}].nodePort`;
  for (const pass of [false, true]) {
    for (const m of models) {
      for (const sp of m.servicePorts) {
        if ((sp.kind === 'nodePort') !== pass) continue;
        const key = claimKey(sp);
        const owner = owners.get(key);
        if (owner === undefined) {
          owners.set(key, sp);
          kept.add(sp);
          continue;
        }
        if (owner.portName === sp.portName) continue;
        errors.push({
          ref: { kind: 'Service', namespace: sp.name.namespace, name: sp.name.name },
          field: fieldOf(sp),
          message: `${sp.kind} frontend ${sp.address} port ${sp.port}/${sp.protocol} is already ${owner.kind} of ${owner.portName}; ignored`,
        });
      }
    }
  }
  const out: ServicePort[] = [];
  for (const m of models) for (const sp of m.servicePorts) if (kept.has(sp)) out.push(sp);
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
