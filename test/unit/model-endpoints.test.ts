// The model stage, EndpointSlices → endpoints: joining slices to Service ports by
// name, conditions, deduplication, and the endpoint selection kube-proxy does per
// Service port (ready → serving-terminating fallback, traffic policies, topology).
//
// Address plan (lab ranges only):
//   node-a (this node, zone-a)   198.18.0.1, 2001:2::1
//   cluster IPs                  198.19.0.0/24, 2001:2:0:20::/64
//   LB                           198.19.100.0/24
//   pods                         198.18.16.0/20, 2001:2:0:10::/64
import { describe, expect, it } from 'vitest';

import {
  buildModel,
  endpointsForScope,
  scopesDiffer,
  type Endpoint,
  type EndpointSlice,
  type Model,
  type Node,
  type Service,
  type ServicePort,
  type ServiceSpec,
  type SliceEndpoint,
} from '../../src/model/index.js';

const NODE: Node = {
  metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
  status: {
    addresses: [
      { type: 'InternalIP', address: '198.18.0.1' },
      { type: 'InternalIP', address: '2001:2::1' },
    ],
  },
};

const http = { name: 'http', port: 80, protocol: 'TCP', targetPort: 'web' } as const;

/** A Service "web"; a LoadBalancer one has the ingress address 198.19.100.1. */
function svc(spec: Partial<ServiceSpec> = {}, annotations?: Record<string, string>): Service {
  return {
    metadata: { name: 'web', namespace: 'default', ...(annotations ? { annotations } : {}) },
    spec: { clusterIPs: ['198.19.0.10'], ports: [http], ...spec },
    ...(spec.type === 'LoadBalancer' ? { status: { loadBalancer: { ingress: [{ ip: '198.19.100.1' }] } } } : {}),
  };
}

type Ports = [name: string, port: number, protocol?: string][];

function slice(name: string, addressType: string, ports: Ports, endpoints: SliceEndpoint[], service = 'web'): EndpointSlice {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType,
    ports: ports.map(([n, port, protocol]) => ({ name: n, port, protocol: protocol ?? 'TCP' })),
    endpoints,
  };
}

interface EpOptions {
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
  node?: string;
  zone?: string;
  zones?: string[];
  nodes?: string[];
}

function ep(address: string, o: EpOptions = {}): SliceEndpoint {
  const conditions: Record<string, boolean | null> = {};
  if (o.ready !== undefined) conditions.ready = o.ready;
  if (o.serving !== undefined) conditions.serving = o.serving;
  if (o.terminating !== undefined) conditions.terminating = o.terminating;
  const hints: Record<string, { name: string }[]> = {};
  if (o.zones) hints.forZones = o.zones.map((name) => ({ name }));
  if (o.nodes) hints.forNodes = o.nodes.map((name) => ({ name }));
  return {
    addresses: [address],
    conditions,
    ...(o.node ? { nodeName: o.node } : {}),
    ...(o.zone ? { zone: o.zone } : {}),
    ...(o.zones || o.nodes ? { hints } : {}),
  };
}

function build(services: Service[], slices: EndpointSlice[], node: Node = NODE): Model {
  return buildModel({ services, endpointSlices: slices, node, nodeName: 'node-a' });
}

function port(m: Model, kind: ServicePort['kind'] = 'clusterIP', family: ServicePort['family'] = 'IPv4'): ServicePort {
  const sp = m.servicePorts.find((p) => p.kind === kind && p.family === family);
  if (sp === undefined) throw new Error(`no ${family} ${kind} frontend`);
  return sp;
}

const addrs = (eps: readonly Endpoint[]): string[] => eps.map((e) => `${e.address}:${e.port}`);

describe('endpoints from slices', () => {
  it('multiple slices per Service are merged, sorted by address', () => {
    const m = build(
      [svc()],
      [
        slice('web-b', 'IPv4', [['http', 8080]], [ep('198.18.16.10'), ep('198.18.16.2')]),
        slice('web-a', 'IPv4', [['http', 8080]], [ep('198.18.16.9')]),
      ],
    );
    expect(addrs(port(m).endpoints)).toEqual(['198.18.16.2:8080', '198.18.16.9:8080', '198.18.16.10:8080']);
  });

  it('slices per family feed the frontends of that family', () => {
    const m = build(
      [svc({ clusterIPs: ['198.19.0.10', '2001:2:0:20::a'] })],
      [
        slice('web-v4', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]),
        slice('web-v6-a', 'IPv6', [['http', 8080]], [ep('2001:2:0:10::1')]),
        slice('web-v6-b', 'IPv6', [['http', 8080]], [ep('2001:2:0:10:0:0:0:2')]),
      ],
    );
    expect(addrs(port(m, 'clusterIP', 'IPv4').endpoints)).toEqual(['198.18.16.1:8080']);
    expect(addrs(port(m, 'clusterIP', 'IPv6').endpoints)).toEqual(['2001:2:0:10::1:8080', '2001:2:0:10::2:8080']);
    expect(port(m, 'clusterIP', 'IPv6').endpoints.every((e) => e.family === 'IPv6')).toBe(true);
  });

  it('named targetPort differing per slice: each slice gives its own endpoints their port', () => {
    const m = build(
      [svc()],
      [
        slice('web-old', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]),
        slice('web-new', 'IPv4', [['http', 9090]], [ep('198.18.16.2')]),
      ],
    );
    expect(addrs(port(m).endpoints)).toEqual(['198.18.16.1:8080', '198.18.16.2:9090']);
  });

  it('slice ports map to Service ports by name and protocol, not by number', () => {
    const m = build(
      [svc({ ports: [http, { name: 'dns', port: 53, protocol: 'UDP' }] })],
      [slice('web-1', 'IPv4', [['dns', 5353, 'UDP'], ['http', 8080]], [ep('198.18.16.1')])],
    );
    const byName = Object.fromEntries(m.servicePorts.filter((p) => p.kind === 'clusterIP').map((p) => [p.name.port, addrs(p.endpoints)]));
    expect(byName).toEqual({ dns: ['198.18.16.1:5353'], http: ['198.18.16.1:8080'] });
  });

  it('an unnamed single port matches the unnamed slice port', () => {
    const m = build([svc({ ports: [{ port: 80 }] })], [slice('web-1', 'IPv4', [['', 8080]], [ep('198.18.16.1')])]);
    expect(port(m).name.port).toBe('');
    expect(addrs(port(m).endpoints)).toEqual(['198.18.16.1:8080']);
  });

  it.each<{ name: string; o: EpOptions; want: Pick<Endpoint, 'ready' | 'serving' | 'terminating'> }>([
    { name: 'all conditions nil: ready, serving, not terminating', o: {}, want: { ready: true, serving: true, terminating: false } },
    { name: 'conditions null as nil', o: { ready: null, serving: null, terminating: null }, want: { ready: true, serving: true, terminating: false } },
    { name: 'ready false, serving nil: serving true (as kube-proxy)', o: { ready: false }, want: { ready: false, serving: true, terminating: false } },
    {
      name: 'terminating and serving',
      o: { ready: false, serving: true, terminating: true },
      want: { ready: false, serving: true, terminating: true },
    },
  ])('conditions: $name', ({ o, want }) => {
    const m = build([svc()], [slice('web-1', 'IPv4', [['http', 8080]], [ep('198.18.16.1', o)])]);
    expect(port(m).endpoints[0]).toMatchObject(want);
  });

  it('endpoint fields: node, zone, hints, locality', () => {
    const m = build(
      [svc()],
      [
        slice('web-1', 'IPv4', [['http', 8080]], [
          ep('198.18.16.1', { node: 'node-a', zone: 'zone-a', zones: ['zone-b', 'zone-a'] }),
          ep('198.18.16.2', { node: 'node-b', zone: 'zone-b' }),
        ]),
      ],
    );
    expect(port(m).endpoints).toEqual([
      {
        address: '198.18.16.1', family: 'IPv4', port: 8080, ready: true, serving: true, terminating: false,
        nodeName: 'node-a', zone: 'zone-a', zoneHints: ['zone-a', 'zone-b'], nodeHints: [], isLocal: true,
      },
      {
        address: '198.18.16.2', family: 'IPv4', port: 8080, ready: true, serving: true, terminating: false,
        nodeName: 'node-b', zone: 'zone-b', zoneHints: [], nodeHints: [], isLocal: false,
      },
    ]);
  });

  it('an address in several slices is kept once, the local copy preferred', () => {
    const m = build(
      [svc()],
      [
        slice('web-a', 'IPv4', [['http', 8080]], [ep('198.18.16.1', { node: 'node-b' }), ep('198.18.16.2', { ready: false })]),
        slice('web-b', 'IPv4', [['http', 8080]], [ep('198.18.16.1', { node: 'node-a' }), ep('198.18.16.2', { ready: true })]),
      ],
    );
    expect(port(m).endpoints.map((e) => [e.address, e.nodeName, e.ready])).toEqual([
      ['198.18.16.1', 'node-a', true],
      ['198.18.16.2', undefined, false],
    ]);
  });

  it.each<{ name: string; s: EndpointSlice }>([
    { name: 'FQDN slices', s: { ...slice('web-f', 'FQDN', [['http', 8080]], [{ addresses: ['db.example.test'] }]) } },
    { name: 'slices without the service-name label', s: { ...slice('web-x', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]), metadata: { name: 'web-x', namespace: 'default' } } },
    {
      name: 'slices labelled for another proxy',
      s: {
        ...slice('web-p', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]),
        metadata: { name: 'web-p', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web', 'service.kubernetes.io/service-proxy-name': 'other' } },
      },
    },
    {
      name: 'slices labelled as a headless Service\'s',
      s: {
        ...slice('web-h', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]),
        metadata: { name: 'web-h', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web', 'service.kubernetes.io/headless': '' } },
      },
    },
    { name: 'slices of another namespace', s: { ...slice('web-n', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]), metadata: { name: 'web-n', namespace: 'other', labels: { 'kubernetes.io/service-name': 'web' } } } },
  ])('ignored: $name', ({ s }) => {
    const m = build([svc()], [s]);
    expect(port(m).endpoints).toEqual([]);
    expect(m.errors).toEqual([]);
  });

  it('any managed-by: slices written by hand or another controller count', () => {
    const s = slice('custom', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]);
    const labelled: EndpointSlice = {
      ...s,
      metadata: { ...s.metadata, labels: { ...s.metadata!.labels, 'endpointslice.kubernetes.io/managed-by': 'someone-else' } },
    };
    expect(addrs(port(build([svc()], [labelled])).endpoints)).toEqual(['198.18.16.1:8080']);
  });

  it('a slice of 1,000 endpoints', () => {
    const eps = Array.from({ length: 1000 }, (_, i) =>
      ep(`198.18.${16 + (i >> 8)}.${i & 0xff}`, { ready: i % 10 !== 0, node: i % 100 === 0 ? 'node-a' : 'node-b' }),
    ).reverse();
    const m = build([svc()], [slice('web-big', 'IPv4', [['http', 8080]], eps)]);
    const sp = port(m);
    expect(sp.endpoints).toHaveLength(1000);
    expect(sp.endpoints[0]!.address).toBe('198.18.16.0');
    expect(sp.endpoints[999]!.address).toBe('198.18.19.231');
    expect(sp.clusterEndpoints).toHaveLength(900);
    expect(m.errors).toEqual([]);
  });
});

describe('endpoint selection per Service port', () => {
  interface Case {
    name: string;
    spec?: Partial<ServiceSpec>;
    annotations?: Record<string, string>;
    endpoints: SliceEndpoint[];
    node?: Node;
    cluster: string[];
    local: string[];
    internalUsesLocal?: boolean;
    externalUsesLocal?: boolean;
    hasAnyEndpoints?: boolean;
    topologyMode?: string;
  }
  const nodePortLB: Partial<ServiceSpec> = { type: 'LoadBalancer', ports: [{ ...http, nodePort: 30080 }], healthCheckNodePort: 32000 };
  const zoneless: Node = { metadata: { name: 'node-a' }, status: NODE.status! };

  it.each<Case>([
    {
      name: 'cluster endpoints are the ready ones',
      endpoints: [ep('198.18.16.1'), ep('198.18.16.2', { ready: false, serving: false }), ep('198.18.16.3', { ready: false, serving: true, terminating: true })],
      cluster: ['198.18.16.1'],
      local: [],
      hasAnyEndpoints: true,
    },
    {
      name: 'no ready endpoints: serving+terminating ones (KEP-1669)',
      endpoints: [ep('198.18.16.2', { ready: false, serving: false }), ep('198.18.16.3', { ready: false, serving: true, terminating: true })],
      cluster: ['198.18.16.3'],
      local: [],
      hasAnyEndpoints: true,
    },
    {
      name: 'terminating but not serving: never used',
      endpoints: [ep('198.18.16.3', { ready: false, serving: false, terminating: true })],
      cluster: [],
      local: [],
      hasAnyEndpoints: false,
    },
    {
      name: 'not ready, not terminating: not used even when nothing else is',
      endpoints: [ep('198.18.16.3', { ready: false, serving: true })],
      cluster: [],
      local: [],
      hasAnyEndpoints: false,
    },
    { name: 'no endpoints', endpoints: [], cluster: [], local: [], hasAnyEndpoints: false },
    {
      name: 'externalTrafficPolicy Local: external uses the local ready ones, cluster set kept for short-circuit',
      spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
      endpoints: [ep('198.18.16.1', { node: 'node-a' }), ep('198.18.16.2', { node: 'node-b' }), ep('198.18.16.4', { node: 'node-a', ready: false, serving: true, terminating: true })],
      cluster: ['198.18.16.1', '198.18.16.2'],
      local: ['198.18.16.1'],
      externalUsesLocal: true,
      internalUsesLocal: false,
      hasAnyEndpoints: true,
    },
    {
      name: 'externalTrafficPolicy Local, only a terminating local endpoint: local falls back to it',
      spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
      endpoints: [ep('198.18.16.2', { node: 'node-b' }), ep('198.18.16.4', { node: 'node-a', ready: false, serving: true, terminating: true })],
      cluster: ['198.18.16.2'],
      local: ['198.18.16.4'],
      externalUsesLocal: true,
      hasAnyEndpoints: true,
    },
    {
      name: 'externalTrafficPolicy Local, no local endpoints: empty local set, endpoints exist elsewhere (drop, not reject)',
      spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
      endpoints: [ep('198.18.16.2', { node: 'node-b' })],
      cluster: ['198.18.16.2'],
      local: [],
      externalUsesLocal: true,
      hasAnyEndpoints: true,
    },
    {
      name: 'internalTrafficPolicy Local on a ClusterIP Service: local set only',
      spec: { internalTrafficPolicy: 'Local' },
      endpoints: [ep('198.18.16.1', { node: 'node-a' }), ep('198.18.16.2', { node: 'node-b' })],
      cluster: [],
      local: ['198.18.16.1'],
      internalUsesLocal: true,
      externalUsesLocal: false,
      hasAnyEndpoints: true,
    },
    {
      name: 'internalTrafficPolicy Local, no local endpoints: endpoints exist elsewhere',
      spec: { internalTrafficPolicy: 'Local' },
      endpoints: [ep('198.18.16.2', { node: 'node-b' })],
      cluster: [],
      local: [],
      internalUsesLocal: true,
      hasAnyEndpoints: true,
    },
    {
      name: 'PreferClose with complete hints: the endpoints hinted for this zone',
      spec: { trafficDistribution: 'PreferClose' },
      endpoints: [
        ep('198.18.16.1', { zone: 'zone-a', zones: ['zone-a'] }),
        ep('198.18.16.2', { zone: 'zone-b', zones: ['zone-b'] }),
        ep('198.18.16.3', { zone: 'zone-c', zones: ['zone-c', 'zone-a'] }),
      ],
      cluster: ['198.18.16.1', '198.18.16.3'],
      local: [],
      topologyMode: 'PreferSameZone',
    },
    {
      name: 'topology-mode Auto annotation with complete hints: same as PreferClose',
      annotations: { 'service.kubernetes.io/topology-mode': 'Auto' },
      endpoints: [ep('198.18.16.1', { zones: ['zone-a'] }), ep('198.18.16.2', { zones: ['zone-b'] })],
      cluster: ['198.18.16.1'],
      local: [],
      topologyMode: 'PreferSameZone',
    },
    {
      name: 'PreferClose with a ready endpoint lacking hints: all endpoints',
      spec: { trafficDistribution: 'PreferClose' },
      endpoints: [ep('198.18.16.1', { zones: ['zone-a'] }), ep('198.18.16.2')],
      cluster: ['198.18.16.1', '198.18.16.2'],
      local: [],
      topologyMode: 'None',
    },
    {
      name: 'PreferClose, only a not-ready endpoint lacks hints: hints still used',
      spec: { trafficDistribution: 'PreferClose' },
      endpoints: [ep('198.18.16.1', { zones: ['zone-a'] }), ep('198.18.16.2', { zones: ['zone-b'] }), ep('198.18.16.3', { ready: false })],
      cluster: ['198.18.16.1'],
      local: [],
      topologyMode: 'PreferSameZone',
    },
    {
      name: 'PreferClose with no endpoint hinted for this zone: all endpoints',
      spec: { trafficDistribution: 'PreferClose' },
      endpoints: [ep('198.18.16.1', { zones: ['zone-b'] }), ep('198.18.16.2', { zones: ['zone-c'] })],
      cluster: ['198.18.16.1', '198.18.16.2'],
      local: [],
      topologyMode: 'None',
    },
    {
      name: 'PreferClose on a node without a zone label: all endpoints',
      spec: { trafficDistribution: 'PreferClose' },
      node: zoneless,
      endpoints: [ep('198.18.16.1', { zones: ['zone-a'] }), ep('198.18.16.2', { zones: ['zone-b'] })],
      cluster: ['198.18.16.1', '198.18.16.2'],
      local: [],
      topologyMode: 'None',
    },
    {
      name: 'PreferClose, nothing ready: serving+terminating fallback ignores hints',
      spec: { trafficDistribution: 'PreferClose' },
      endpoints: [
        ep('198.18.16.1', { ready: false, serving: true, terminating: true, zones: ['zone-a'] }),
        ep('198.18.16.2', { ready: false, serving: true, terminating: true, zones: ['zone-b'] }),
      ],
      cluster: ['198.18.16.1', '198.18.16.2'],
      local: [],
      topologyMode: 'None',
    },
    {
      name: 'PreferSameNode with node hints: the endpoints hinted for this node',
      spec: { trafficDistribution: 'PreferSameNode' },
      endpoints: [
        ep('198.18.16.1', { node: 'node-a', nodes: ['node-a'], zones: ['zone-a'] }),
        ep('198.18.16.2', { node: 'node-b', nodes: ['node-b'], zones: ['zone-a'] }),
      ],
      cluster: ['198.18.16.1'],
      local: [],
      topologyMode: 'PreferSameNode',
    },
    {
      name: 'topology narrows only the cluster set, never the local one',
      spec: { ...nodePortLB, externalTrafficPolicy: 'Local', trafficDistribution: 'PreferClose' },
      endpoints: [ep('198.18.16.1', { node: 'node-a', zones: ['zone-b'] }), ep('198.18.16.2', { node: 'node-b', zones: ['zone-a'] })],
      cluster: ['198.18.16.2'],
      local: ['198.18.16.1'],
      externalUsesLocal: true,
      topologyMode: 'PreferSameZone',
    },
  ])('$name', (c) => {
    const service = svc(c.spec, c.annotations);
    const m = build([service], [slice('web-1', 'IPv4', [['http', 8080]], c.endpoints)], c.node);
    const sp = port(m);
    expect(sp.clusterEndpoints.map((e) => e.address)).toEqual(c.cluster);
    expect(sp.localEndpoints.map((e) => e.address)).toEqual(c.local);
    if (c.internalUsesLocal !== undefined) expect(sp.internalUsesLocal).toBe(c.internalUsesLocal);
    if (c.externalUsesLocal !== undefined) expect(sp.externalUsesLocal).toBe(c.externalUsesLocal);
    if (c.hasAnyEndpoints !== undefined) expect(sp.hasAnyEndpoints).toBe(c.hasAnyEndpoints);
    if (c.topologyMode !== undefined) expect(sp.topologyMode).toBe(c.topologyMode);
    // Every frontend of the port shares the same selection.
    for (const other of m.servicePorts) {
      expect(other.clusterEndpoints).toBe(sp.clusterEndpoints);
      expect(other.localEndpoints).toBe(sp.localEndpoints);
    }
  });

  describe('endpoints per frontend and scope', () => {
    const eps = [ep('198.18.16.1', { node: 'node-a' }), ep('198.18.16.2', { node: 'node-b' })];
    const both = ['198.18.16.1', '198.18.16.2'];
    const local = ['198.18.16.1'];
    it.each<{ name: string; spec: Partial<ServiceSpec>; kind: ServicePort['kind']; internal: string[]; external: string[] }>([
      { name: 'Cluster policies: every scope gets all endpoints', spec: nodePortLB, kind: 'nodePort', internal: both, external: both },
      {
        name: 'ETP Local, nodePort: from outside local only, from this node all (short-circuit)',
        spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
        kind: 'nodePort',
        internal: both,
        external: local,
      },
      {
        name: 'ETP Local, loadBalancer: from outside local only',
        spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
        kind: 'loadBalancer',
        internal: both,
        external: local,
      },
      {
        name: 'ETP Local, clusterIP: all endpoints from anywhere',
        spec: { ...nodePortLB, externalTrafficPolicy: 'Local' },
        kind: 'clusterIP',
        internal: both,
        external: both,
      },
      {
        name: 'ITP Local, clusterIP: local endpoints from anywhere',
        spec: { ...nodePortLB, internalTrafficPolicy: 'Local' },
        kind: 'clusterIP',
        internal: local,
        external: local,
      },
      {
        name: 'ITP Local, nodePort: external frontends keep Cluster policy',
        spec: { ...nodePortLB, internalTrafficPolicy: 'Local' },
        kind: 'nodePort',
        internal: both,
        external: both,
      },
    ])('$name', ({ spec, kind, internal, external }) => {
      const m = build([svc(spec)], [slice('web-1', 'IPv4', [['http', 8080]], eps)]);
      const sp = port(m, kind);
      expect(endpointsForScope(sp, 'internal').map((e) => e.address)).toEqual(internal);
      expect(endpointsForScope(sp, 'external').map((e) => e.address)).toEqual(external);
      expect(scopesDiffer(sp)).toBe(kind !== 'clusterIP' && sp.externalUsesLocal);
    });
  });

  it('health check count: distinct local ready addresses over all ports, per family (kube-proxy runs one health server per family)', () => {
    const m = build(
      [
        svc({
          ...nodePortLB,
          externalTrafficPolicy: 'Local',
          clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
          ports: [{ ...http, nodePort: 30080 }, { name: 'metrics', port: 9090, nodePort: 30090 }],
        }),
      ],
      [
        slice('web-v4', 'IPv4', [['http', 8080], ['metrics', 9090]], [
          ep('198.18.16.1', { node: 'node-a' }),
          ep('198.18.16.2', { node: 'node-a', ready: false, serving: true, terminating: true }),
          ep('198.18.16.3', { node: 'node-b' }),
        ]),
        slice('web-v6', 'IPv6', [['http', 8080]], [ep('2001:2:0:10::1', { node: 'node-a' })]),
      ],
    );
    expect(m.healthChecks).toEqual([{
      ref: { kind: 'Service', namespace: 'default', name: 'web' },
      nodePort: 32000,
      localEndpoints: 1,
      localEndpointsByFamily: { IPv4: 1, IPv6: 1 },
    }]);
    expect(port(m, 'nodePort').localReadyEndpoints).toBe(1);
  });
});
