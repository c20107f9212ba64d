// The compile stage's memory: id allocation (lowest free, released after a
// sync), stable slot tables, held (quarantined) backend ids, and recovery from
// the maps after a restart giving byte-identical entries.
// Address plan: see compile-fixtures.ts.
import { describe, expect, it } from 'vitest';

import { IPPROTO_TCP } from '../../src/bpf/abi.js';
import { compile, type CompileResult } from '../../src/compile/compile.js';
import { renderMaps } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import { isTraceHit, trace } from '../../src/compile/trace.js';
import type { DesiredMaps } from '../../src/compile/types.js';
import type { EndpointSlice, Service } from '../../src/model/index.js';
import { ep, http, model, sampleCluster, slice, svc } from './compile-fixtures.js';

const cip = (i: number): string => `198.19.0.${i}`;
const named = (name: string, i: number): Service => svc(name, { clusterIP: cip(i), ports: [http] });
const pods = (service: string, addrs: string[]): EndpointSlice =>
  slice(service, `${service}-1`, 'IPv4', [['http', 8080]], addrs.map((a) => ep(a)));

function serviceIdOf(c: CompileResult, vip: string): number {
  const r = trace(c.maps, { dst: vip, dport: 80, proto: 'TCP' });
  return isTraceHit(r) ? r.serviceId : (r.service?.serviceId ?? -1);
}

function slotTable(maps: DesiredMaps, vip: string): string[] {
  const r = trace(maps, { dst: vip, dport: 80, proto: 'TCP' });
  return isTraceHit(r) ? r.backends.map((b) => b.addr) : [];
}

describe('ids', () => {
  it('start at 1; a released id is reused (lowest free first) by the next sync, not the one that freed it', () => {
    const ids = new IdRegistry();
    const abc = compile(model([named('a', 1), named('b', 2), named('c', 3)]), ids);
    expect([cip(1), cip(2), cip(3)].map((v) => serviceIdOf(abc, v))).toEqual([1, 2, 3]);

    // b leaves and d arrives in the same sync: d must not take b's id yet
    const acd = compile(model([named('a', 1), named('c', 3), named('d', 4)]), ids);
    expect([cip(1), cip(3), cip(4)].map((v) => serviceIdOf(acd, v))).toEqual([1, 3, 4]);

    // next sync: e takes the lowest free id, 2
    const acde = compile(model([named('a', 1), named('c', 3), named('d', 4), named('e', 5)]), ids);
    expect([cip(1), cip(3), cip(4), cip(5)].map((v) => serviceIdOf(acde, v))).toEqual([1, 3, 4, 2]);
  });

  it('an unchanged Service keeps every id whatever else changes', () => {
    const ids = new IdRegistry();
    const first = compile(model([named('a', 1), named('b', 2)], [pods('a', ['198.18.17.1']), pods('b', ['198.18.17.2'])]), ids);
    const second = compile(
      model([named('aa', 9), named('b', 2)], [pods('aa', ['198.18.17.9']), pods('b', ['198.18.17.2'])]),
      ids,
    );
    const b1 = trace(first.maps, { dst: cip(2), dport: 80, proto: 'TCP' });
    const b2 = trace(second.maps, { dst: cip(2), dport: 80, proto: 'TCP' });
    expect(b2).toEqual(b1);
  });

  it('a backend shared by two Services has one id and one entry', () => {
    const c = compile(
      model([named('a', 1), named('b', 2)], [pods('a', ['198.18.17.1']), pods('b', ['198.18.17.1'])]),
      new IdRegistry(),
    );
    expect(c.maps.backends4.size).toBe(1);
    const a = trace(c.maps, { dst: cip(1), dport: 80, proto: 'TCP' });
    const b = trace(c.maps, { dst: cip(2), dport: 80, proto: 'TCP' });
    expect(isTraceHit(a) && isTraceHit(b) && a.backends[0]?.id === b.backends[0]?.id).toBe(true);
  });

  it('a held (quarantined) backend id is never given to a new endpoint; the endpoint coming back gets it again', () => {
    const ids = new IdRegistry();
    const before = compile(model([named('a', 1)], [pods('a', ['198.18.17.1', '198.18.17.2'])]), ids);
    const gone = [...before.maps.backends4.values()].find((e) => e.value.addr === '198.18.17.2');
    expect(gone).toBeDefined();
    const held = new Map([[gone?.key ?? 0, { addr: '198.18.17.2', port: 8080, proto: IPPROTO_TCP }]]);

    // .2 leaves, .3 arrives; .2 is held: .3 gets a new id
    const during = compile(model([named('a', 1)], [pods('a', ['198.18.17.1', '198.18.17.3'])]), ids, { quarantine: held });
    const three = [...during.maps.backends4.values()].find((e) => e.value.addr === '198.18.17.3');
    expect(three?.key).not.toBe(gone?.key);

    // .2 comes back while still held: same id
    const back = compile(
      model([named('a', 1)], [pods('a', ['198.18.17.1', '198.18.17.2', '198.18.17.3'])]),
      ids,
      { quarantine: held },
    );
    expect([...back.maps.backends4.values()].find((e) => e.value.addr === '198.18.17.2')?.key).toBe(gone?.key);
  });

  it('a fresh registry holding quarantined ids (after a restart without recovery) keeps them from new endpoints', () => {
    const ids = new IdRegistry();
    const held = new Map([
      [1, { addr: '198.18.17.200', port: 8080, proto: IPPROTO_TCP }],
      [2, { addr: '198.18.17.201', port: 8080, proto: IPPROTO_TCP }],
    ]);
    const c = compile(model([named('a', 1)], [pods('a', ['198.18.17.1'])]), ids, { quarantine: held });
    expect([...c.maps.backends4.keys()].length).toBe(1);
    expect([...c.maps.backends4.values()][0]?.key).toBe(3);
  });
});

describe('slot tables', () => {
  const five = ['198.18.17.1', '198.18.17.2', '198.18.17.3', '198.18.17.4', '198.18.17.5'];
  const run = (ids: IdRegistry, addrs: string[]): string[] =>
    slotTable(compile(model([named('a', 1)], [pods('a', addrs)]), ids).maps, cip(1));

  it.each<{ name: string; next: string[]; want: string[] }>([
    {
      name: 'one endpoint removed: the last slot moves into its hole, nothing else moves',
      next: five.filter((a) => a !== '198.18.17.2'),
      want: ['198.18.17.1', '198.18.17.5', '198.18.17.3', '198.18.17.4'],
    },
    {
      name: 'the last endpoint removed: the table just shrinks',
      next: five.slice(0, 4),
      want: five.slice(0, 4),
    },
    {
      name: 'one endpoint added (sorting in the middle): appended, nothing moves',
      next: [...five, '198.18.17.0'],
      want: [...five, '198.18.17.0'],
    },
    {
      name: 'one endpoint replaced: the new one takes the old one\'s slot',
      next: five.map((a) => (a === '198.18.17.3' ? '198.18.17.9' : a)),
      want: ['198.18.17.1', '198.18.17.2', '198.18.17.9', '198.18.17.4', '198.18.17.5'],
    },
    {
      name: 'two removed: holes filled from the end in slot order',
      next: ['198.18.17.2', '198.18.17.4', '198.18.17.5'],
      want: ['198.18.17.5', '198.18.17.2', '198.18.17.4'],
    },
    {
      name: 'all replaced: the new set in sorted order',
      next: ['198.18.17.12', '198.18.17.11'],
      want: ['198.18.17.11', '198.18.17.12'],
    },
  ])('$name', ({ next, want }) => {
    const ids = new IdRegistry();
    expect(run(ids, five)).toEqual(five);
    expect(run(ids, next)).toEqual(want);
    // and the same input again moves nothing
    expect(run(ids, next)).toEqual(want);
  });

  it('a fresh registry gives the sorted endpoints (deterministic whatever the history elsewhere)', () => {
    expect(run(new IdRegistry(), [...five].reverse())).toEqual(five);
  });
});

describe('recovery from the maps', () => {
  it('recover → compile of the same model gives byte-identical entries (fresh history)', () => {
    const { services, slices } = sampleCluster();
    const first = compile(model(services, slices), new IdRegistry());
    const again = compile(model(services, slices), IdRegistry.recover(first.maps));
    expect(renderMaps(again.maps)).toBe(renderMaps(first.maps));
    expect(again.serviceNames).toEqual(first.serviceNames);
    expect(again.zoneNames).toEqual(first.zoneNames);
  });

  it('recover → compile keeps a churned history: sparse ids, moved slots, zone ids', () => {
    const ids = new IdRegistry();
    const { services, slices } = sampleCluster();
    // churn: extra Services and endpoints come and go, so ids are sparse and slots moved
    compile(model([named('x', 100), named('y', 101), ...services], [pods('x', ['198.18.18.1']), ...slices]), ids);
    const webSlices: EndpointSlice[] = slices.map((s) =>
      s.metadata?.name === 'web-v4'
        ? slice('web', 'web-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), ep('198.18.17.3'), ep('198.18.17.4')])
        : s,
    );
    compile(model(services, webSlices), ids);
    const shrunk = webSlices.map((s) =>
      s.metadata?.name === 'web-v4' ? slice('web', 'web-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), ep('198.18.17.4')]) : s,
    );
    const last = compile(model(services, shrunk), ids);
    // [16.1, 17.1] → [17.3, 17.1, 17.4] → 17.3 leaves, the last slot fills its hole
    expect(slotTable(last.maps, '198.19.0.10')).toEqual(['198.18.17.4', '198.18.17.1']);

    const recovered = IdRegistry.recover(last.maps);
    const again = compile(model(services, shrunk), recovered);
    expect(renderMaps(again.maps)).toBe(renderMaps(last.maps));
    // and both registries go on alike
    const more = shrunk.map((s) =>
      s.metadata?.name === 'web-v4'
        ? slice('web', 'web-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), ep('198.18.17.4'), ep('198.18.17.5')])
        : s,
    );
    expect(renderMaps(compile(model(services, more), recovered).maps)).toBe(
      renderMaps(compile(model(services, more), ids).maps),
    );
  });

  it('ids only the maps knew (a Service deleted while the agent was down) are released after the first sync', () => {
    const before = compile(model([named('a', 1), named('b', 2)]), new IdRegistry());
    const ids = IdRegistry.recover(before.maps);
    const after = compile(model([named('b', 2)]), ids);
    expect(serviceIdOf(after, cip(2))).toBe(2);
    expect(ids.stats()).toMatchObject({ services: 1, revNats: 1, reserved: 0 });
    const next = compile(model([named('b', 2), named('c', 3)]), ids);
    expect(serviceIdOf(next, cip(3))).toBe(1);
  });

  it('recovering an empty state gives a fresh registry', () => {
    const { services, slices } = sampleCluster();
    const empty = compile(model([]), new IdRegistry()).maps;
    expect(renderMaps(compile(model(services, slices), IdRegistry.recover(empty)).maps)).toBe(
      renderMaps(compile(model(services, slices), new IdRegistry()).maps),
    );
  });
});
