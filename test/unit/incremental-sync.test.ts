// The incremental sync equals the full one: random sequences of Service,
// EndpointSlice and Node changes, each synced twice — by the full pipeline
// (buildModel → compile → diff over everything, the reference) and by the
// incremental one as Agent.#sync composes it (ServiceModels.rebuildStream →
// CompiledServices.compileStream from the store for a full sync; ServiceModels.update →
// CompiledServices.compileChanged → diff of the changed Services' entries →
// patchMaps; a full rebuild on the first sync, a Node change, a contested
// frontend, and periodic syncs, which also collect quarantined backends).
// After every step both have the same plan (step by step, entry by entry),
// the same maps and the same model summary. Shared backends, frontend
// conflicts, zones, topology hints, local endpoints, TCP quarantine and UDP
// deletion all come up on purpose: the pools are small.
import { describe, expect, it } from 'vitest';

import { servicesOfChange, ObjectStore } from '../../src/agent/object-store.js';
import { BE_STATE_ACTIVE, BE_STATE_TERMINATING } from '../../src/bpf/abi.js';
import { CompiledServices, compile } from '../../src/compile/compile.js';
import { collectQuarantine, diff, heldBackends, patchMaps, type DiffOptions, type SyncPlan } from '../../src/compile/diff.js';
import { emptyMaps, keyHex, renderMaps, valueHex, MANAGED_CODECS, type MapCodecs } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import type { DesiredMaps } from '../../src/compile/types.js';
import {
  buildModel,
  ServiceModels,
  type EndpointSlice,
  type Model,
  type ModelSummary,
  type Node,
  type Service,
  type SliceEndpoint,
} from '../../src/model/index.js';

const Q: DiffOptions = { quarantineTcpBackends: true };
const NODE_NAME = 'node-a';

/** mulberry32: a seeded generator, so a failure names its seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rnd: () => number) {}
  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

// Small pools: Services collide on cluster IPs and node ports now and then,
// slices of different Services share endpoints (one backend, several users).
const NAMESPACES = ['a', 'a-b', 'b'];
const NAMES = ['web', 'db', 'dns', 'api'];
const CLUSTER_IPS = Array.from({ length: 40 }, (_, i) => `198.19.0.${10 + i}`);
const CLUSTER_IPS6 = Array.from({ length: 6 }, (_, i) => `2001:2:0:20::${(10 + i).toString(16)}`);
const LB_IPS = ['198.19.100.1', '198.19.100.2', '198.19.100.3', '198.19.100.4', '2001:2:0:30::1'];
const POD_IPS = Array.from({ length: 16 }, (_, i) => `198.18.16.${1 + i}`);
const POD_IPS6 = Array.from({ length: 5 }, (_, i) => `2001:2:0:10::${1 + i}`);
const NODES = ['node-a', 'node-b', 'node-c'];
const ZONES = ['zone-a', 'zone-b', 'zone-c'];

function randomService(g: Gen, namespace: string, name: string): Service {
  const type = g.pick(['ClusterIP', 'ClusterIP', 'NodePort', 'LoadBalancer']);
  const dual = g.chance(0.25);
  const clusterIPs = dual ? [g.pick(CLUSTER_IPS), g.pick(CLUSTER_IPS6)] : [g.pick(CLUSTER_IPS)];
  const protocol = g.pick(['TCP', 'TCP', 'UDP']);
  const ports = [{ name: 'p', port: 80 + g.int(2), protocol, targetPort: 'p', ...(type !== 'ClusterIP' ? { nodePort: 30000 + g.int(10) } : {}) }];
  if (g.chance(0.3)) ports.push({ name: 'q', port: 90, protocol: 'TCP', targetPort: 'q', ...(type !== 'ClusterIP' ? { nodePort: 30010 + g.int(3) } : {}) });
  const spec = {
    type,
    clusterIP: clusterIPs[0],
    clusterIPs,
    ipFamilies: dual ? ['IPv4', 'IPv6'] : ['IPv4'],
    ports,
    ...(g.chance(0.2) ? { externalIPs: [g.pick(LB_IPS)] } : {}),
    ...(type !== 'ClusterIP' && g.chance(0.4) ? { externalTrafficPolicy: 'Local' } : {}),
    ...(type === 'LoadBalancer' && g.chance(0.5) ? { healthCheckNodePort: 31000 + g.int(3) } : {}),
    ...(g.chance(0.2) ? { internalTrafficPolicy: 'Local' } : {}),
    ...(g.chance(0.2) ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 + g.int(3) } } } : {}),
    ...(type === 'LoadBalancer' && g.chance(0.3) ? { loadBalancerSourceRanges: ['198.18.200.0/24', '2001:2:0:40::/64'] } : {}),
    ...(g.chance(0.15) ? { trafficDistribution: 'PreferClose' } : {}),
  };
  const status = type === 'LoadBalancer' && g.chance(0.7) ? { loadBalancer: { ingress: [{ ip: g.pick(LB_IPS) }] } } : undefined;
  return { metadata: { namespace, name, ...(g.chance(0.05) ? { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } } : {}) }, spec, ...(status ? { status } : {}) } as Service;
}

function randomEndpoint(g: Gen, v6: boolean): SliceEndpoint {
  const ready = g.chance(0.7);
  const node = g.pick(NODES);
  return {
    addresses: [g.pick(v6 ? POD_IPS6 : POD_IPS)],
    conditions: { ready, serving: ready || g.chance(0.5), terminating: !ready && g.chance(0.5) },
    nodeName: node,
    ...(g.chance(0.8) ? { zone: g.pick(ZONES) } : {}),
    ...(g.chance(0.3) ? { hints: { forZones: [{ name: g.pick(ZONES) }] } } : {}),
  };
}

function randomSlice(g: Gen, namespace: string, service: string, index: number): EndpointSlice {
  const v6 = g.chance(0.2);
  const count = g.int(4);
  return {
    metadata: { namespace, name: `${service}-${index}`, labels: { 'kubernetes.io/service-name': service } },
    addressType: v6 ? 'IPv6' : 'IPv4',
    ports: [
      { name: 'p', port: 8080 + g.int(2), protocol: g.pick(['TCP', 'TCP', 'UDP']) },
      ...(g.chance(0.3) ? [{ name: 'q', port: 9090, protocol: 'TCP' }] : []),
    ],
    endpoints: Array.from({ length: count }, () => randomEndpoint(g, v6)),
  };
}

function randomNode(g: Gen): Node {
  return {
    metadata: { name: NODE_NAME, labels: { 'topology.kubernetes.io/zone': g.pick(ZONES) } },
    status: { addresses: [{ type: 'InternalIP', address: g.pick(['198.18.0.1', '198.18.0.2']) }, { type: 'InternalIP', address: '2001:2::1' }] },
  };
}

/** One random change to the store. */
function mutate(g: Gen, store: ObjectStore): void {
  const namespace = g.pick(NAMESPACES);
  const name = g.pick(NAMES);
  const r = g.rnd();
  if (r < 0.04) {
    store.setNode(randomNode(g));
  } else if (r < 0.3) {
    if (g.chance(0.2)) store.delete('Service', `${namespace}/${name}`);
    else store.upsert('Service', randomService(g, namespace, name));
  } else {
    const index = g.int(2);
    if (g.chance(0.15)) store.delete('EndpointSlice', `${namespace}/${name}-${index}`);
    else if (g.chance(0.05)) {
      // a slice that moves to another Service
      store.upsert('EndpointSlice', { ...randomSlice(g, namespace, name, index), metadata: { namespace, name: `${name}-${index}`, labels: { 'kubernetes.io/service-name': g.pick(NAMES) } } });
    } else store.upsert('EndpointSlice', randomSlice(g, namespace, name, index));
  }
}

/** The reference: everything rebuilt, compiled and diffed on every sync. */
class FullSync {
  ids = new IdRegistry();
  state: DesiredMaps = emptyMaps();
  model: Model | undefined;
  sync(store: ObjectStore, ct: ReadonlySet<number> | undefined): SyncPlan {
    const snapshot = store.snapshot();
    this.model = buildModel({ services: snapshot.services, endpointSlices: snapshot.endpointSlices, node: snapshot.node, nodeName: NODE_NAME });
    const compiled = compile(this.model, this.ids, { quarantine: heldBackends(this.state, Q) });
    const plan = diff(this.state, compiled.maps, Q);
    this.state = plan.after;
    if (ct !== undefined) this.state = collectQuarantine(ct, this.state).after;
    return plan;
  }
}

/** The incremental pipeline, composed as Agent.#sync composes it (periodic: `ct` given). */
class IncrementalSync {
  ids = new IdRegistry();
  state: DesiredMaps = emptyMaps();
  models = new ServiceModels();
  compiled = new CompiledServices();
  dirty = new Set<string>();
  fullPending = true;
  /** Syncs that rebuilt only the changed Services. */
  partial = 0;

  constructor(readonly store: ObjectStore) {
    store.onChange((c) => {
      if (c.kind === 'Node' && c.key === NODE_NAME) this.fullPending = true;
      for (const key of servicesOfChange(c)) this.dirty.add(key);
    });
  }

  sync(ct: ReadonlySet<number> | undefined): SyncPlan {
    const periodic = ct !== undefined;
    const dirty = this.dirty;
    this.dirty = new Set();
    const changed =
      periodic || this.fullPending
        ? undefined
        : this.models.update(dirty, { service: (k) => this.store.get('Service', k), endpointSlices: (k) => this.store.endpointSlicesFor(k) });
    this.fullPending = false;
    let plan: SyncPlan;
    if (changed === undefined) {
      // as the agent: a stream, each Service read from the store and compiled in turn
      const stream = this.models.rebuildStream({
        serviceKeys: this.store.keys('Service'),
        service: (k) => this.store.get('Service', k),
        endpointSlicesFor: (k) => this.store.endpointSlicesFor(k),
        node: this.store.get('Node', NODE_NAME),
        nodeName: NODE_NAME,
      });
      plan = diff(this.state, this.compiled.compileStream(stream, this.ids, { quarantine: heldBackends(this.state, Q) }).maps, Q);
    } else {
      this.partial++;
      const { previous, next } = this.compiled.compileChanged(changed, this.ids, this.state, Q);
      plan = diff(previous, next, Q);
      plan = { ...plan, after: patchMaps(this.state, previous, plan.after) };
    }
    this.state = plan.after;
    if (periodic) {
      const collected = collectQuarantine(ct, this.state);
      this.state = collected.after;
      for (const step of collected.steps) if (step.op === 'delete') this.compiled.forget(step.keys as readonly number[]);
    }
    return plan;
  }
}

/** A plan as text: each step's op, map and entries (encoded), entries sorted within a step. */
function renderPlan(plan: SyncPlan): string[] {
  return plan.steps.map((step) => {
    const codecs = MANAGED_CODECS[step.map] as MapCodecs<unknown, unknown>;
    const items =
      step.op === 'delete'
        ? (step.keys as readonly unknown[]).map((k) => codecs.key.format(k))
        : (step.entries as readonly { key: unknown; value: unknown }[]).map(
            (e) => `${keyHex(step.map, e.key as never)}=${valueHex(step.map, e.value as never)}`,
          );
    return `${step.op} ${step.map}: ${items.sort().join(' ')}`;
  });
}

const sortedJson = (xs: readonly unknown[]): string[] => xs.map((x) => JSON.stringify(x)).sort();

function summaryOf(m: Model): Omit<ModelSummary, 'node'> {
  return {
    services: new Set(m.servicePorts.map((sp) => `${sp.name.namespace}/${sp.name.name}`)).size,
    skipped: m.skipped,
    errors: m.errors,
    healthChecks: m.healthChecks,
  };
}

function run(seed: number, steps: number): { partial: number } {
  const g = new Gen(random(seed));
  const store = new ObjectStore({ nodeName: NODE_NAME });
  const full = new FullSync();
  const inc = new IncrementalSync(store);
  store.setNode(randomNode(g));
  for (let i = 0; i < 12; i++) mutate(g, store);
  for (let step = 0; step < steps; step++) {
    const changes = g.chance(0.7) ? 1 : 1 + g.int(4);
    for (let i = 0; i < changes; i++) mutate(g, store);
    // every 10th sync is periodic: quarantined backends without (random) flows go
    let ct: Set<number> | undefined;
    if (step % 10 === 9) {
      ct = new Set<number>();
      for (const e of full.state.backends4.values()) if (g.chance(0.5)) ct.add(e.key);
      for (const e of full.state.backends6.values()) if (g.chance(0.5)) ct.add(e.key);
    }
    const where = `seed ${seed}, step ${step}`;
    const want = full.sync(store, ct);
    const got = inc.sync(ct);
    expect(renderPlan(got), where).toEqual(renderPlan(want));
    expect(renderMaps(inc.state), where).toBe(renderMaps(full.state));
    const summary = inc.models.summary();
    const reference = summaryOf(full.model as Model);
    expect(summary.services, where).toBe(reference.services);
    expect(sortedJson(summary.skipped), where).toEqual(sortedJson(reference.skipped));
    expect(sortedJson(summary.errors), where).toEqual(sortedJson(reference.errors));
    expect(sortedJson(summary.healthChecks), where).toEqual(sortedJson(reference.healthChecks));
  }
  return { partial: inc.partial };
}

describe('incremental sync equals the full sync', () => {
  it.each(Array.from({ length: 40 }, (_, i) => i + 1))('random change sequence, seed %i', (seed) => {
    const { partial } = run(seed, 120);
    // most syncs took the incremental path (else this proves little)
    expect(partial).toBeGreaterThan(50);
  });

  it('a frontend two Services claim: the loser gets it when the winner lets go (a full rebuild settles the claims)', () => {
    const store = new ObjectStore({ nodeName: NODE_NAME });
    const full = new FullSync();
    const inc = new IncrementalSync(store);
    const service = (name: string, clusterIP: string): Service => ({
      metadata: { namespace: 'a', name },
      spec: { clusterIP, ports: [{ name: 'p', port: 80, targetPort: 'p' }] },
    });
    const sync = (): void => {
      const want = full.sync(store, undefined);
      expect(renderPlan(inc.sync(undefined))).toEqual(renderPlan(want));
      expect(renderMaps(inc.state)).toBe(renderMaps(full.state));
      expect(sortedJson(inc.models.summary().errors)).toEqual(sortedJson((full.model as Model).errors));
    };
    store.upsert('Service', service('one', '198.19.0.10'));
    store.upsert('Service', service('two', '198.19.0.10'));
    sync();
    expect(inc.models.summary().errors).toHaveLength(1); // two lost 198.19.0.10:80
    store.upsert('Service', service('one', '198.19.0.11'));
    sync(); // contested: rebuilt in full, two now has its frontend
    expect(inc.models.summary().errors).toHaveLength(0);
    store.upsert('Service', service('three', '198.19.0.12'));
    sync();
    expect(inc.partial).toBe(1);
  });

  it('a backend two Services share: its entry follows the first Service in model order, ready if any use is', () => {
    const store = new ObjectStore({ nodeName: NODE_NAME });
    const full = new FullSync();
    const inc = new IncrementalSync(store);
    const service = (namespace: string): Service => ({
      metadata: { namespace, name: 'web' },
      spec: { clusterIP: namespace === 'a' ? '198.19.0.10' : '198.19.0.11', ports: [{ name: 'p', port: 80, targetPort: 'p' }] },
    });
    const sliceOf = (namespace: string, ready: boolean, zone: string): EndpointSlice => ({
      metadata: { namespace, name: 'web-1', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ name: 'p', port: 8080 }],
      endpoints: [{ addresses: ['198.18.16.1'], conditions: { ready, serving: true, terminating: !ready }, nodeName: 'node-b', zone }],
    });
    const sync = (): void => {
      const want = full.sync(store, undefined);
      expect(renderPlan(inc.sync(undefined))).toEqual(renderPlan(want));
      expect(renderMaps(inc.state)).toBe(renderMaps(full.state));
    };
    store.upsert('Service', service('a'));
    store.upsert('Service', service('b'));
    store.upsert('EndpointSlice', sliceOf('a', true, 'zone-a'));
    store.upsert('EndpointSlice', sliceOf('b', true, 'zone-b'));
    sync();
    expect(full.state.backends4.size).toBe(1);
    const backend = (): { state: number; zone: number } => {
      const [e] = [...inc.state.backends4.values()];
      return { state: e?.value.state ?? -1, zone: e?.value.zone ?? -1 };
    };
    const zoneB = backend().zone;
    store.upsert('EndpointSlice', sliceOf('a', false, 'zone-c')); // the first user now terminating, in another zone
    sync();
    expect(backend().state).toBe(BE_STATE_ACTIVE); // b's use is ready
    expect(backend().zone).not.toBe(zoneB); // a's endpoint (zone-c) gives the entry
    store.upsert('EndpointSlice', sliceOf('b', false, 'zone-b')); // no use ready
    sync();
    expect(backend().state).toBe(BE_STATE_TERMINATING);
    store.delete('EndpointSlice', 'a/web-1'); // the second user alone gives the entry
    sync();
    store.delete('Service', 'b/web'); // no user: quarantined (TCP)
    sync();
    expect(inc.partial).toBe(4);
  });
});
