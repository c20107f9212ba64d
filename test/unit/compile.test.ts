// The compile stage, model → map entries, one case per Kubernetes semantic,
// each asserted by tracing VIP:port ⇒ backends through the compiled maps.
// Address plan: see compile-fixtures.ts (cluster IPs 198.19.0.0/24 and
// 2001:2:0:20::/64, LB/external 198.19.100.0/24, pods 198.18.16.0/20 and
// 2001:2:0:10::/64, node-a 198.18.0.1 / 2001:2::1 is this node).
import { describe, expect, it } from 'vitest';

import {
  BE_F_LOCAL,
  BE_STATE_ACTIVE,
  BE_STATE_TERMINATING,
  LB_F_AFFINITY,
  LB_F_LOCAL_EXTERNAL,
  LB_F_LOCAL_INTERNAL,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_SOURCE_RANGES,
  LB_F_TWO_SCOPES,
  LB_KIND_CLUSTER_IP,
  LB_KIND_EXTERNAL_IP,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
  SERVICE_NAME_MAX,
  type LbService,
} from '../../src/bpf/abi.js';
import { compile, type CompileResult } from '../../src/compile/compile.js';
import { renderMaps } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import { isTraceHit, trace, type TraceQuery, type TraceResult } from '../../src/compile/trace.js';
import { buildModel, type EndpointSlice, type Service } from '../../src/model/index.js';
import { dns, ep, http, lbStatus, local, model, sampleCluster, slice, svc } from './compile-fixtures.js';

function compileOf(services: Service[], slices: EndpointSlice[] = []): CompileResult {
  return compile(model(services, slices), new IdRegistry());
}

/** What a trace expects: backends as "addr:port" (slot order), or a verdict. */
interface Expect {
  q: TraceQuery;
  backends?: string[];
  verdict?: 'no-service' | 'reject' | 'drop';
  /** flags the entry must have / must not have */
  flags?: number;
  noFlags?: number;
  kind?: number;
  check?: (r: TraceResult, c: CompileResult) => void;
}

const tcp = (dst: string, dport: number, extra: Partial<TraceQuery> = {}): TraceQuery => ({
  dst,
  dport,
  proto: 'TCP',
  ...extra,
});

function serviceOf(r: TraceResult): LbService | undefined {
  return isTraceHit(r) ? r.service : r.service;
}

interface Case {
  name: string;
  services: Service[];
  slices?: EndpointSlice[];
  expect: Expect[];
}

const twoPods = (service: string, family: 'IPv4' | 'IPv6' = 'IPv4'): EndpointSlice =>
  family === 'IPv4'
    ? slice(service, `${service}-v4`, 'IPv4', [['http', 8080]], [ep('198.18.17.2'), ep('198.18.17.1')])
    : slice(service, `${service}-v6`, 'IPv6', [['http', 8080]], [ep('2001:2:0:10::2'), ep('2001:2:0:10::1')]);

const cases: Case[] = [
  {
    name: 'ClusterIP dual-stack: a frontend per family, each with its family backends',
    services: [svc('web', { clusterIPs: ['198.19.0.10', '2001:2:0:20::a'], ports: [http] })],
    slices: [twoPods('web'), twoPods('web', 'IPv6')],
    expect: [
      { q: tcp('198.19.0.10', 80), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], kind: LB_KIND_CLUSTER_IP },
      { q: tcp('2001:2:0:20::a', 80), backends: ['2001:2:0:10::1:8080', '2001:2:0:10::2:8080'], kind: LB_KIND_CLUSTER_IP },
      { q: tcp('198.19.0.10', 81), verdict: 'no-service' },
      { q: { dst: '198.19.0.10', dport: 80, proto: 'UDP' }, verdict: 'no-service' },
    ],
  },
  {
    name: 'NodePort: served on the node addresses with the same backends',
    services: [svc('web', { type: 'NodePort', clusterIPs: ['198.19.0.10', '2001:2:0:20::a'], ports: [{ ...http, nodePort: 30080 }] })],
    slices: [twoPods('web'), twoPods('web', 'IPv6')],
    expect: [
      { q: tcp('198.18.0.1', 30080), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], kind: LB_KIND_NODE_PORT },
      { q: tcp('2001:2::1', 30080), backends: ['2001:2:0:10::1:8080', '2001:2:0:10::2:8080'], kind: LB_KIND_NODE_PORT },
      { q: tcp('198.19.0.10', 80), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], kind: LB_KIND_CLUSTER_IP },
      { q: tcp('198.18.0.1', 80), verdict: 'no-service' },
    ],
  },
  {
    name: 'LoadBalancer: the ingress IPs are frontends',
    services: [svc('web', { type: 'LoadBalancer', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] }, lbStatus('198.19.100.1'))],
    slices: [twoPods('web')],
    expect: [
      { q: tcp('198.19.100.1', 80), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], kind: LB_KIND_LOAD_BALANCER, noFlags: LB_F_SOURCE_RANGES },
    ],
  },
  {
    name: 'externalIPs: each external IP is a frontend',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http], externalIPs: ['198.19.100.7'] })],
    slices: [twoPods('web')],
    expect: [{ q: tcp('198.19.100.7', 80), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], kind: LB_KIND_EXTERNAL_IP }],
  },
  {
    name: 'no endpoints at all: count 0 with the reject flag (ICMP unreachable, never a black hole)',
    services: [svc('web', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] })],
    expect: [
      { q: tcp('198.19.0.10', 80), verdict: 'reject', flags: LB_F_REJECT_NO_ENDPOINTS },
      { q: tcp('198.18.0.1', 30080), verdict: 'reject', flags: LB_F_REJECT_NO_ENDPOINTS },
    ],
  },
  {
    name: 'not-ready endpoints only (not terminating): no usable endpoints, reject',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http] })],
    slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.17.1', { ready: false, serving: false })])],
    expect: [{ q: tcp('198.19.0.10', 80), verdict: 'reject' }],
  },
  {
    name: 'externalTrafficPolicy Local, endpoints only elsewhere: external entry count 0 without reject (drop)',
    services: [svc('web', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }], externalTrafficPolicy: 'Local' })],
    slices: [twoPods('web')],
    expect: [
      {
        q: tcp('198.18.0.1', 30080),
        verdict: 'drop',
        noFlags: LB_F_REJECT_NO_ENDPOINTS,
        flags: LB_F_TWO_SCOPES | LB_F_LOCAL_EXTERNAL,
        check: (r) => expect(serviceOf(r)?.backendCount).toBe(0),
      },
      { q: tcp('198.18.0.1', 30080, { scope: 'internal' }), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], noFlags: LB_F_LOCAL_EXTERNAL },
      { q: tcp('198.19.0.10', 80), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], noFlags: LB_F_TWO_SCOPES },
    ],
  },
  {
    name: 'externalTrafficPolicy Local: external scope → local endpoints, internal scope → cluster endpoints',
    services: [
      svc('web', { type: 'LoadBalancer', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }], externalTrafficPolicy: 'Local' }, lbStatus('198.19.100.1')),
    ],
    slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), local('198.18.16.1')])],
    expect: [
      { q: tcp('198.18.0.1', 30080), backends: ['198.18.16.1:8080'], flags: LB_F_TWO_SCOPES | LB_F_LOCAL_EXTERNAL },
      { q: tcp('198.19.100.1', 80), backends: ['198.18.16.1:8080'], flags: LB_F_TWO_SCOPES | LB_F_LOCAL_EXTERNAL },
      { q: tcp('198.19.100.1', 80, { scope: 'internal' }), backends: ['198.18.16.1:8080', '198.18.17.1:8080'], noFlags: LB_F_TWO_SCOPES },
      // the cluster IP follows internalTrafficPolicy (Cluster) whatever ETP says
      { q: tcp('198.19.0.10', 80), backends: ['198.18.16.1:8080', '198.18.17.1:8080'], noFlags: LB_F_TWO_SCOPES | LB_F_LOCAL_EXTERNAL },
      {
        q: tcp('198.19.0.10', 80),
        check: (r, c) => {
          // frontends sharing an endpoint set share its service id (and slot table)
          const internal = trace(c.maps, tcp('198.18.0.1', 30080, { scope: 'internal' }));
          const external = trace(c.maps, tcp('198.18.0.1', 30080));
          expect(isTraceHit(r) && isTraceHit(internal) && isTraceHit(external)).toBe(true);
          if (isTraceHit(r) && isTraceHit(internal) && isTraceHit(external)) {
            expect(internal.serviceId).toBe(r.serviceId);
            expect(external.serviceId).not.toBe(r.serviceId);
            expect(c.serviceNames.get(external.serviceId)).toBe('default/web:http/TCP local');
            expect(c.serviceNames.get(r.serviceId)).toBe('default/web:http/TCP');
            // one rev-NAT id per frontend, both scopes
            expect(internal.service.revNatId).toBe(external.service.revNatId);
            expect(internal.service.revNatId).not.toBe(r.service.revNatId);
          }
        },
      },
    ],
  },
  {
    name: 'internalTrafficPolicy Local: the cluster IP uses node-local endpoints only',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http], internalTrafficPolicy: 'Local' })],
    slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), local('198.18.16.1')])],
    expect: [
      { q: tcp('198.19.0.10', 80), backends: ['198.18.16.1:8080'], flags: LB_F_LOCAL_INTERNAL, noFlags: LB_F_TWO_SCOPES },
      { q: tcp('198.19.0.10', 80, { scope: 'internal' }), backends: ['198.18.16.1:8080'] },
    ],
  },
  {
    name: 'internalTrafficPolicy Local without local endpoints: drop, not reject (they exist elsewhere)',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http], internalTrafficPolicy: 'Local' })],
    slices: [twoPods('web')],
    expect: [{ q: tcp('198.19.0.10', 80), verdict: 'drop', noFlags: LB_F_REJECT_NO_ENDPOINTS }],
  },
  {
    name: 'sessionAffinity ClientIP: affinity flag and timeout (default 10800 s, or the configured one)',
    services: [
      svc('web', { clusterIP: '198.19.0.10', ports: [http], sessionAffinity: 'ClientIP' }),
      svc('api', { clusterIP: '198.19.0.11', ports: [http], sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } }),
      svc('plain', { clusterIP: '198.19.0.12', ports: [http] }),
    ],
    slices: [twoPods('web'), twoPods('api'), twoPods('plain')],
    expect: [
      { q: tcp('198.19.0.10', 80), flags: LB_F_AFFINITY, check: (r) => expect(serviceOf(r)?.affinityTimeout).toBe(10800) },
      { q: tcp('198.19.0.11', 80), flags: LB_F_AFFINITY, check: (r) => expect(serviceOf(r)?.affinityTimeout).toBe(600) },
      { q: tcp('198.19.0.12', 80), noFlags: LB_F_AFFINITY, check: (r) => expect(serviceOf(r)?.affinityTimeout).toBe(0) },
    ],
  },
  {
    name: 'loadBalancerSourceRanges: flag and LPM entries on LB addresses only',
    services: [
      svc(
        'web',
        {
          type: 'LoadBalancer',
          clusterIP: '198.19.0.10',
          ports: [{ ...http, nodePort: 30080 }],
          loadBalancerSourceRanges: ['198.18.200.0/24', '198.18.201.7/32'],
        },
        lbStatus('198.19.100.1'),
      ),
    ],
    slices: [twoPods('web')],
    expect: [
      {
        q: tcp('198.19.100.1', 80, { src: '198.18.200.9' }),
        backends: ['198.18.17.1:8080', '198.18.17.2:8080'],
        flags: LB_F_SOURCE_RANGES,
        check: (r, c) => {
          const id = isTraceHit(r) ? r.serviceId : -1;
          expect([...c.maps.sourceRanges4.values()].map((e) => e.key)).toEqual([
            { prefixlen: 56, serviceId: id, addr: '198.18.200.0' },
            { prefixlen: 64, serviceId: id, addr: '198.18.201.7' },
          ]);
          expect([...c.maps.sourceRanges4.values()].every((e) => e.value.allow === 1)).toBe(true);
        },
      },
      { q: tcp('198.19.100.1', 80, { src: '198.18.201.7' }), backends: ['198.18.17.1:8080', '198.18.17.2:8080'] },
      { q: tcp('198.19.100.1', 80, { src: '198.18.201.8' }), verdict: 'drop', check: (r) => expect(r).toMatchObject({ reason: 'source-range' }) },
      { q: tcp('198.19.0.10', 80, { src: '198.18.201.8' }), backends: ['198.18.17.1:8080', '198.18.17.2:8080'], noFlags: LB_F_SOURCE_RANGES },
      { q: tcp('198.18.0.1', 30080, { src: '198.18.201.8' }), noFlags: LB_F_SOURCE_RANGES },
    ],
  },
  {
    name: 'terminating fallback: no ready endpoint → serving+terminating ones, state TERMINATING',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http] })],
    slices: [
      slice('web', 'web-1', 'IPv4', [['http', 8080]], [
        ep('198.18.17.1', { ready: false, serving: true, terminating: true }),
        ep('198.18.17.2', { ready: false, serving: false, terminating: true }),
      ]),
    ],
    expect: [
      {
        q: tcp('198.19.0.10', 80),
        backends: ['198.18.17.1:8080'],
        check: (r) => expect(isTraceHit(r) && r.backends.map((b) => b.state)).toEqual([BE_STATE_TERMINATING]),
      },
    ],
  },
  {
    name: 'ready endpoints present: terminating ones are left out, ready ones ACTIVE',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http] })],
    slices: [
      slice('web', 'web-1', 'IPv4', [['http', 8080]], [
        ep('198.18.17.1', { ready: false, serving: true, terminating: true }),
        ep('198.18.17.2'),
      ]),
    ],
    expect: [
      {
        q: tcp('198.19.0.10', 80),
        backends: ['198.18.17.2:8080'],
        check: (r, c) => {
          expect(isTraceHit(r) && r.backends.map((b) => b.state)).toEqual([BE_STATE_ACTIVE]);
          expect(c.maps.backends4.size).toBe(1);
        },
      },
    ],
  },
  {
    name: 'local flag, node address and zone: BE_F_LOCAL for endpoints on this node',
    services: [svc('web', { clusterIP: '198.19.0.10', ports: [http] })],
    slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), local('198.18.16.1')])],
    expect: [
      {
        q: tcp('198.19.0.10', 80),
        backends: ['198.18.16.1:8080', '198.18.17.1:8080'],
        check: (_r, c) => {
          const byAddr = new Map([...c.maps.backends4.values()].map((e) => [e.value.addr, e.value]));
          expect(byAddr.get('198.18.16.1')).toMatchObject({ flags: BE_F_LOCAL, nodeAddr: '198.18.0.1', proto: 6, port: 8080 });
          expect(byAddr.get('198.18.17.1')).toMatchObject({ flags: 0, nodeAddr: '0.0.0.0' });
          const zones = new Set([...byAddr.values()].map((b) => b.zone));
          expect(zones.size).toBe(2);
          expect(zones.has(0)).toBe(false);
          expect(new Set(c.zoneNames.values())).toEqual(new Set(['zone-a', 'zone-b']));
        },
      },
    ],
  },
  {
    name: 'TCP and UDP ports: one backend per (address, port, protocol), one rev-NAT per frontend',
    services: [svc('dns', { clusterIP: '198.19.0.53', ports: [dns, { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 }] })],
    slices: [slice('dns', 'dns-1', 'IPv4', [['dns', 5353, 'UDP'], ['dns-tcp', 5353]], [ep('198.18.17.53')])],
    expect: [
      {
        q: { dst: '198.19.0.53', dport: 53, proto: 'UDP' },
        backends: ['198.18.17.53:5353'],
        check: (r, c) => {
          const t = trace(c.maps, tcp('198.19.0.53', 53));
          expect(isTraceHit(r) && isTraceHit(t)).toBe(true);
          if (isTraceHit(r) && isTraceHit(t)) {
            expect(t.backends[0]?.id).not.toBe(r.backends[0]?.id);
            expect(t.service.revNatId).not.toBe(r.service.revNatId);
          }
          expect(c.maps.revnat4.size).toBe(2);
        },
      },
    ],
  },
];

describe('compile: Kubernetes semantics, traced VIP:port ⇒ backends', () => {
  it.each(cases)('$name', ({ services, slices, expect: expectations }) => {
    const c = compileOf(services, slices ?? []);
    for (const e of expectations) {
      const r = trace(c.maps, e.q);
      const where = `${e.q.dst}:${e.q.dport} ${e.q.scope ?? 'external'}`;
      if (e.backends !== undefined) {
        expect(isTraceHit(r), `${where}: ${JSON.stringify(r)}`).toBe(true);
        if (isTraceHit(r)) expect(r.backends.map((b) => `${b.addr}:${b.port}`), where).toEqual(e.backends);
      }
      if (e.verdict !== undefined) expect(isTraceHit(r) ? 'hit' : r.verdict, where).toBe(e.verdict);
      const s = serviceOf(r);
      if (e.flags !== undefined) expect((s?.flags ?? 0) & e.flags, `${where} flags`).toBe(e.flags);
      if (e.noFlags !== undefined) expect((s?.flags ?? 0) & e.noFlags, `${where} no flags`).toBe(0);
      if (e.kind !== undefined) expect(s?.kind, `${where} kind`).toBe(e.kind);
      e.check?.(r, c);
    }
  });
});

describe('compile: structure', () => {
  it('service ids, rev-NAT ids and backend ids start at 1 and are dense for a fresh registry', () => {
    const { services, slices } = sampleCluster();
    const c = compileOf(services, slices);
    const serviceIds = new Set([...c.maps.services4.values(), ...c.maps.services6.values()].map((e) => e.value.serviceId));
    const revNatIds = [...c.maps.revnat4.values(), ...c.maps.revnat6.values()].map((e) => e.key);
    const backendIds = [...c.maps.backends4.values(), ...c.maps.backends6.values()].map((e) => e.key);
    const dense = (ids: Iterable<number>): void => {
      const sorted = [...ids].sort((a, b) => a - b);
      expect(sorted).toEqual(sorted.map((_, i) => i + 1));
    };
    dense(serviceIds);
    dense(revNatIds);
    dense(backendIds);
    expect(new Set(c.serviceNames.keys())).toEqual(serviceIds);
  });

  it('every slot of every service entry resolves to a backend of the same family', () => {
    const { services, slices } = sampleCluster();
    const c = compileOf(services, slices);
    for (const [family, table] of [['4', c.maps.services4], ['6', c.maps.services6]] as const) {
      for (const { key, value } of table.values()) {
        for (let slot = 1; slot <= value.backendCount; slot++) {
          const s = [...c.maps.serviceSlots.values()].find((e) => e.key.serviceId === value.serviceId && e.key.slot === slot);
          expect(s, `${key.addr} slot ${slot}`).toBeDefined();
          const backends = family === '4' ? c.maps.backends4 : c.maps.backends6;
          expect([...backends.values()].some((b) => b.key === s?.value.backendId)).toBe(true);
        }
      }
    }
    // no slot beyond a count
    const counts = new Map<number, number>();
    for (const { value } of [...c.maps.services4.values(), ...c.maps.services6.values()]) counts.set(value.serviceId, value.backendCount);
    for (const { key } of c.maps.serviceSlots.values()) expect(key.slot).toBeLessThanOrEqual(counts.get(key.serviceId) ?? 0);
  });

  it('service_names: one entry per service id with its name, cut to fit the C string', () => {
    const { services, slices } = sampleCluster();
    const c = compileOf(services, slices);
    expect(new Map([...c.maps.serviceNames.values()].map((e) => [e.key, e.value.name]))).toEqual(c.serviceNames);

    const ns = 'n'.repeat(63);
    const long = compile(
      buildModel({
        services: [{ metadata: { name: 's'.repeat(63), namespace: ns }, spec: { clusterIP: '198.19.0.10', ports: [{ ...http, name: 'p'.repeat(15) }] } }],
        endpointSlices: [],
        nodeName: 'node-a',
      }),
      new IdRegistry(),
    );
    const [entry] = [...long.maps.serviceNames.values()];
    expect(entry?.value.name).toHaveLength(SERVICE_NAME_MAX - 1);
    expect(long.serviceNames.get(entry?.key ?? 0)?.startsWith(entry?.value.name ?? '-')).toBe(true);
  });

  it('deterministic: shuffled Services, slices and endpoints give identical maps', () => {
    const { services, slices } = sampleCluster();
    const a = compileOf(services, slices);
    const shuffledSlices = [...slices]
      .reverse()
      .map((s) => ({ ...s, endpoints: [...(s.endpoints ?? [])].reverse(), ports: [...(s.ports ?? [])].reverse() }));
    const b = compileOf([...services].reverse(), shuffledSlices);
    expect(renderMaps(b.maps)).toBe(renderMaps(a.maps));
    expect(b.maps).toEqual(a.maps);
    expect(b.serviceNames).toEqual(a.serviceNames);
  });

  it('golden: a representative multi-Service model', async () => {
    const { services, slices } = sampleCluster();
    const c = compileOf(services, slices);
    const names = [...c.serviceNames].map(([id, n]) => `service ${id} = ${n}`).join('\n');
    await expect(`${names}\n${renderMaps(c.maps)}`).toMatchFileSnapshot('../golden/compile-sample.txt');
  });
});
