// The object store keeps slim projections of the API objects (the fields the
// agent reads), slices with their endpoints packed: the model built from what
// the store gives back equals the model built from the full objects, bad
// values included; what the agent never reads is not kept.
import { describe, expect, it } from 'vitest';

import { ObjectStore } from '../../src/agent/object-store.js';
import { packEndpointSlice, slimEndpointSlice, slimNode, slimService, unpackEndpointSlice } from '../../src/agent/slim-objects.js';
import { buildModel, type EndpointSlice, type Node, type Service } from '../../src/model/index.js';
import { NODE, ep, local, sampleCluster, slice, svc } from './compile-fixtures.js';

/** API noise the agent never reads. */
const noise = {
  uid: 'd3b07384-d9a0-4c9b-8f1e-6c1f0a9b2e11',
  creationTimestamp: '2026-11-23T12:00:00Z',
  annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"a":"very long text"}' },
  managedFields: [{ manager: 'kubectl', operation: 'Apply', fieldsV1: { 'f:spec': {} } }],
};

function noisy<T extends { metadata?: object }>(o: T): T {
  return { ...o, metadata: { ...o.metadata, ...noise, resourceVersion: '42' } } as T;
}

/** Objects the model reports on: bad IPs, ports, conditions, endpoints that are not objects, hints. */
function oddCluster(): { services: Service[]; slices: EndpointSlice[] } {
  const services: Service[] = [
    svc('bad-ip', { clusterIP: '198.19.0.300', ports: [{ name: 'http', port: 80 }] }),
    svc('bad-port', { clusterIP: '198.19.0.31', ports: [{ name: 'http', port: 70000 }, 'nonsense' as never] }),
    svc('lb', { type: 'LoadBalancer', clusterIP: '198.19.0.32', ports: [{ name: 'http', port: 80, nodePort: 30080 }], externalTrafficPolicy: 'Local', healthCheckNodePort: 31000 }, { loadBalancer: { ingress: [{ ip: '198.19.100.9', ipMode: 'Proxy' }, { ip: '198.19.100.10' }, { hostname: 'lb.example' }] } }),
  ];
  const slices: EndpointSlice[] = [
    slice('bad-ip', 'bad-ip-1', 'IPv4', [['http', 8080]], [
      ep('198.18.16.1'),
      { addresses: ['not-an-ip'] },
      { addresses: [] },
      null as never,
      [1, '198.18.16.2'] as never,
      { addresses: ['198.18.16.3'], conditions: { ready: null, serving: false, terminating: true } },
      { addresses: ['198.18.16.4'], conditions: { ready: 'yes' as never } },
      { addresses: ['198.18.16.5', '198.18.16.6'], hints: { forZones: [{ name: 'zone-a' }] }, zone: 'zone-a' },
      local('198.18.16.7'),
      { addresses: ['198.18.16.8'], nodeName: 7 as never },
    ]),
    { ...slice('lb', 'lb-1', 'IPv4', [['http', 8080]], [local('198.18.16.9'), ep('198.18.16.10', { node: 'node-b' })]), endpoints: 'x' as never },
    slice('lb', 'lb-2', 'IPv4', [['http', 8080], ['', 9]], [local('198.18.16.11')]),
  ];
  return { services, slices };
}

function throughStore(services: Service[], slices: EndpointSlice[], node: Node): { services: Service[]; slices: EndpointSlice[]; node: Node } {
  const store = new ObjectStore({ nodeName: node.metadata?.name ?? '' });
  for (const s of services) expect(store.upsert('Service', noisy(s)).ok).toBe(true);
  for (const s of slices) expect(store.upsert('EndpointSlice', noisy(s)).ok).toBe(true);
  store.upsert('Node', noisy(node));
  const snap = store.snapshot();
  return { services: [...snap.services], slices: [...snap.endpointSlices], node: snap.node as Node };
}

describe('slim objects in the store', () => {
  it.each([
    ['the sample cluster', sampleCluster],
    ['odd and invalid objects', oddCluster],
  ])('%s: the model from the store equals the model from the full objects', (_, make) => {
    const { services, slices } = make();
    const want = buildModel({ services, endpointSlices: slices, node: NODE, nodeName: 'node-a' });
    const back = throughStore(services, slices, NODE);
    const got = buildModel({ services: back.services, endpointSlices: back.slices, node: back.node, nodeName: 'node-a' });
    expect(got).toEqual(want);
  });

  it('keeps what the agent reads and nothing else', () => {
    const s = slimService(noisy(svc('a', { clusterIP: '198.19.0.10', ipFamilies: ['IPv4'], selector: { app: 'a' }, ports: [{ name: 'http', port: 80, appProtocol: 'http' }] } as never)));
    expect(s).toEqual({ metadata: { name: 'a', namespace: 'default', resourceVersion: '42' }, spec: { clusterIP: '198.19.0.10', ports: [{ name: 'http', port: 80 }] } });
    const e = slimEndpointSlice(noisy({ ...slice('a', 'a-1', 'IPv4', [['http', 8080]], [{ addresses: ['198.18.16.1'], hostname: 'a-0', targetRef: { kind: 'Pod' } } as never]) }));
    expect(e.endpoints).toEqual([{ addresses: ['198.18.16.1'] }]);
    expect(e.metadata).toEqual({ name: 'a-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'a' }, resourceVersion: '42' });
    const n = slimNode({ ...noisy(NODE), spec: { taints: [{ key: 'k' }], podCIDR: '198.18.17.0/24' }, status: { ...NODE.status, images: [{ names: ['x'] }] } } as never);
    expect(n).toEqual({ metadata: { ...NODE.metadata, resourceVersion: '42' }, spec: { taints: [{ key: 'k' }] }, status: NODE.status });
  });

  it('packs the usual endpoints and keeps any other as it is', () => {
    const { slices } = oddCluster();
    for (const s of slices) {
      const slim = slimEndpointSlice(s);
      const packed = JSON.parse(JSON.stringify(packEndpointSlice(slim))) as unknown;
      expect(unpackEndpointSlice(packed)).toEqual(JSON.parse(JSON.stringify(slim)));
    }
    const usual = slimEndpointSlice(slice('a', 'a-1', 'IPv4', [['http', 8080]], [ep('198.18.16.1'), local('198.18.16.2')]));
    const packed = packEndpointSlice(usual) as EndpointSlice;
    expect(packed.endpoints).toEqual([[1, '198.18.16.1', 2, 'node-b', 'zone-b'], [1, '198.18.16.2', 2, 'node-a', 'zone-a']]);
    expect(JSON.stringify(packed.endpoints).length).toBeLessThan(JSON.stringify(usual.endpoints).length / 2);
  });
});

describe('the store\'s counts', () => {
  it('endpointCounts follows upserts, replacements, moves between families and deletes', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsert('EndpointSlice', slice('a', 'a-1', 'IPv4', [['http', 8080]], [ep('198.18.16.1'), ep('198.18.16.2')]));
    store.upsert('EndpointSlice', slice('a', 'a-6', 'IPv6', [['http', 8080]], [ep('2001:2:0:10::1')]));
    expect(store.endpointCounts()).toEqual({ IPv4: 2, IPv6: 1 });
    store.upsert('EndpointSlice', slice('a', 'a-1', 'IPv4', [['http', 8080]], [ep('198.18.16.1')]));
    expect(store.endpointCounts()).toEqual({ IPv4: 1, IPv6: 1 });
    store.delete('EndpointSlice', 'default/a-6');
    expect(store.endpointCounts()).toEqual({ IPv4: 1, IPv6: 0 });
    store.replace('EndpointSlice', []);
    expect(store.endpointCounts()).toEqual({ IPv4: 0, IPv6: 0 });
  });
});
