// The object store both sources write into and the sync reads.
// Address plan (lab ranges only): cluster IPs 198.19.0.0/24.
import { describe, expect, it } from 'vitest';
import { ObjectStore, type StoreChange } from '../../src/agent/object-store.js';
import type { Service } from '../../src/model/k8s-types.js';

function svc(name: string, ip = '198.19.0.10', namespace?: string, resourceVersion?: string): Service {
  return {
    metadata: { name, ...(namespace !== undefined ? { namespace } : {}), ...(resourceVersion !== undefined ? { resourceVersion } : {}) },
    spec: { clusterIP: ip, ports: [{ port: 80 }] },
  };
}

function recorded(store: ObjectStore): string[] {
  const out: string[] = [];
  store.onChange((c: StoreChange) => out.push(`${c.version} ${c.current === undefined ? 'delete' : c.previous === undefined ? 'add' : 'update'} ${c.kind} ${c.key}`));
  return out;
}

describe('ObjectStore', () => {
  it('keys objects by namespace/name, a missing namespace being "default", and Nodes by name', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsert('Service', svc('a'));
    store.upsert('Service', svc('a', '198.19.0.11', 'shop'));
    store.upsert('Node', { metadata: { name: 'node-a' } });
    expect(store.keys('Service')).toEqual(['default/a', 'shop/a']);
    expect(store.keys('Node')).toEqual(['node-a']);
  });

  it('tells listeners about real changes only, with a version each', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    const log = recorded(store);
    expect(store.upsert('Service', svc('a'))).toEqual({ ok: true, changed: true, key: 'default/a' });
    expect(store.upsert('Service', svc('a'))).toEqual({ ok: true, changed: false, key: 'default/a' });
    store.upsert('Service', svc('a', '198.19.0.12'));
    expect(store.delete('Service', 'default/a')).toBe(true);
    expect(store.delete('Service', 'default/a')).toBe(false);
    expect(log).toEqual(['1 add Service default/a', '2 update Service default/a', '3 delete Service default/a']);
    expect(store.version).toBe(3);
  });

  it('takes an equal resourceVersion as no change', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsert('Service', svc('a', '198.19.0.10', 'x', '7'));
    expect(store.upsert('Service', svc('a', '198.19.0.10', 'x', '7')).ok && store.version).toBe(1);
    store.upsert('Service', svc('a', '198.19.0.10', 'x', '8'));
    expect(store.version).toBe(2);
  });

  it('refuses an object without a name as a value', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    expect(store.upsert('Service', { spec: {} })).toEqual({ ok: false, error: 'Service without metadata.name' });
    expect(store.version).toBe(0);
  });

  it('snapshot: the same object until a change; this node only', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsert('Service', svc('a'));
    store.upsert('EndpointSlice', { metadata: { name: 'a-1' }, addressType: 'IPv4' });
    store.upsert('Node', { metadata: { name: 'node-b' } });
    const s1 = store.snapshot();
    expect(store.snapshot()).toBe(s1);
    expect(s1.services).toHaveLength(1);
    expect(s1.endpointSlices).toHaveLength(1);
    expect(s1.node).toBeUndefined();
    store.upsert('Node', { metadata: { name: 'node-a' } });
    const s2 = store.snapshot();
    expect(s2).not.toBe(s1);
    expect(s2.node?.metadata?.name).toBe('node-a');
    expect(s2.version).toBe(4);
  });

  it('replace() makes a kind exactly the given list (a relist)', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsert('Service', svc('a'));
    store.upsert('Service', svc('b'));
    const log = recorded(store);
    expect(store.replace('Service', [svc('b'), svc('c'), { spec: {} }])).toEqual({ changed: 2, refused: 1 });
    expect(store.keys('Service')).toEqual(['default/b', 'default/c']);
    expect(log).toEqual(['3 add Service default/c', '4 delete Service default/a']);
  });

  it('implements the watch\'s ClusterStore', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    store.upsertService(svc('a', '198.19.0.10', 'shop'));
    store.upsertEndpointSlice({ metadata: { name: 'a-1', namespace: 'shop' }, addressType: 'IPv4' });
    store.setNode({ metadata: { name: 'node-a' } });
    expect(store.snapshot().node).toBeDefined();
    store.deleteService('shop', 'a');
    store.deleteEndpointSlice('shop', 'a-1');
    store.setNode(undefined);
    expect([store.count('Service'), store.count('EndpointSlice'), store.count('Node')]).toEqual([0, 0, 0]);
    expect(() => store.upsertService({})).toThrow(/metadata.name/);
  });

  it('tracks which kinds have had their initial list', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    expect(store.hasSynced()).toBe(false);
    store.markSynced('Service');
    expect(store.hasSynced()).toBe(false);
    store.markSynced('EndpointSlice');
    expect(store.hasSynced()).toBe(true);
    expect(store.hasSynced(['Node'])).toBe(false);
  });

  it('unsubscribes a listener', () => {
    const store = new ObjectStore({ nodeName: 'node-a' });
    let calls = 0;
    const off = store.onChange(() => (calls += 1));
    store.upsert('Service', svc('a'));
    off();
    store.upsert('Service', svc('b'));
    expect(calls).toBe(1);
  });
});
