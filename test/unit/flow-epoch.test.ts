// Which syncs invalidate the datapath's cached rewrites of established flows
// (src/compile/flow-epoch.ts): only those that change what an existing flow's
// translation reads. Plans come from the real compile and diff stages.
// Address plan: see compile-fixtures.ts.
import { describe, expect, it } from 'vitest';

import { compile } from '../../src/compile/compile.js';
import { diff, heldBackends, type DiffOptions, type SyncPlan } from '../../src/compile/diff.js';
import { emptyMaps } from '../../src/compile/entry-table.js';
import { planInvalidatesFlows } from '../../src/compile/flow-epoch.js';
import { IdRegistry } from '../../src/compile/ids.js';
import type { DesiredMaps } from '../../src/compile/types.js';
import type { EndpointSlice, Service } from '../../src/model/index.js';
import { dns, ep, http, lbStatus, model, slice, svc } from './compile-fixtures.js';

const Q: DiffOptions = { quarantineTcpBackends: true };

interface Cluster {
  services: Service[];
  slices: EndpointSlice[];
}

/** Compiles each cluster state in turn; returns whether each sync's plan invalidates flows. */
function syncs(...states: Cluster[]): boolean[] {
  const ids = new IdRegistry();
  let state: DesiredMaps = emptyMaps();
  const out: boolean[] = [];
  for (const c of states) {
    const next = compile(model(c.services, c.slices), ids, { quarantine: heldBackends(state, Q) }).maps;
    const plan: SyncPlan = diff(state, next, Q);
    out.push(planInvalidatesFlows(plan, state));
    state = plan.after;
  }
  return out;
}

const web = (addrs: string[], extra: Partial<Service['spec']> = {}): Cluster => ({
  services: [svc('web', { clusterIP: '198.19.0.10', ports: [http], ...extra })],
  slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], addrs.map((a) => ep(a)))],
});

const dnsUdp = (addrs: string[]): Cluster => ({
  services: [svc('dns', { clusterIP: '198.19.0.53', ports: [dns] })],
  slices: [slice('dns', 'dns-1', 'IPv4', [['dns', 5353, 'UDP']], addrs.map((a) => ep(a)))],
});

const lb = (ranges: string[]): Cluster => ({
  services: [
    svc('web', { type: 'LoadBalancer', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }], loadBalancerSourceRanges: ranges }, lbStatus('198.19.100.1')),
  ],
  slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.1.1')])],
});

describe('planInvalidatesFlows', () => {
  it('adding endpoints (scale-up, a pod turning ready) leaves cached flows valid', () => {
    expect(syncs(web(['198.18.1.1']), web(['198.18.1.1', '198.18.1.2']), web(['198.18.1.1', '198.18.1.2', '198.18.1.3']))).toEqual([
      false,
      false,
      false,
    ]);
  });

  it('a new Service leaves the others\' cached flows valid', () => {
    const both: Cluster = { services: [...web(['198.18.1.1']).services, ...dnsUdp(['198.18.2.1']).services], slices: [...web(['198.18.1.1']).slices, ...dnsUdp(['198.18.2.1']).slices] };
    expect(syncs(web(['198.18.1.1']), both)).toEqual([false, false]);
  });

  it('a TCP endpoint leaving is quarantined (its flows go on): valid; a UDP endpoint leaving is deleted: invalid', () => {
    expect(syncs(web(['198.18.1.1', '198.18.1.2']), web(['198.18.1.1']))).toEqual([false, false]);
    expect(syncs(dnsUdp(['198.18.2.1', '198.18.2.2']), dnsUdp(['198.18.2.1']))).toEqual([false, true]);
  });

  it('a removed Service invalidates', () => {
    expect(syncs(web(['198.18.1.1']), { services: [], slices: [] })).toEqual([false, true]);
  });

  it('source ranges added, narrowed or removed invalidate', () => {
    expect(syncs(lb([]), lb(['198.18.200.0/24']), lb(['198.18.200.0/25']), lb([]))).toEqual([false, true, true, true]);
  });

  it('a flag an established flow depends on (externalTrafficPolicy) invalidates', () => {
    const local = (policy: 'Cluster' | 'Local'): Cluster => ({
      services: [svc('web', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }], externalTrafficPolicy: policy })],
      slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], [ep('198.18.1.1', { node: 'node-a' })])],
    });
    expect(syncs(local('Cluster'), local('Local'))).toEqual([false, true]);
  });
});
