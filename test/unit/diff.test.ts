// The diff stage: previous entries vs next → ordered, hitless steps; the
// quarantine of leaving TCP backends and its collection; restart stability.
// Address plan: see compile-fixtures.ts.
import { describe, expect, it } from 'vitest';

import { BE_STATE_ACTIVE, BE_STATE_QUARANTINED, type Lb6Backend } from '../../src/bpf/abi.js';
import { compile } from '../../src/compile/compile.js';
import { collectQuarantine, diff, heldBackends, isEmptyPlan, type DiffOptions, type SyncPlan } from '../../src/compile/diff.js';
import { emptyMaps, keyHex, renderMaps } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import { isTraceHit, trace } from '../../src/compile/trace.js';
import { WRITE_ORDER, type DesiredMaps } from '../../src/compile/types.js';
import type { EndpointSlice, Service } from '../../src/model/index.js';
import { dns, ep, http, model, sampleCluster, slice, svc } from './compile-fixtures.js';

const Q: DiffOptions = { quarantineTcpBackends: true };

/** "op map" per step, the shape ordering assertions read best in. */
const shape = (plan: SyncPlan): string[] => plan.steps.map((s) => `${s.op} ${s.map}`);

const web = (addrs: string[]): { services: Service[]; slices: EndpointSlice[] } => ({
  services: [svc('web', { clusterIP: '198.19.0.10', ports: [http] })],
  slices: [slice('web', 'web-1', 'IPv4', [['http', 8080]], addrs.map((a) => ep(a)))],
});

const dnsUdp = (addrs: string[]): { services: Service[]; slices: EndpointSlice[] } => ({
  services: [svc('dns', { clusterIP: '198.19.0.53', ports: [dns] })],
  slices: [slice('dns', 'dns-1', 'IPv4', [['dns', 5353, 'UDP']], addrs.map((a) => ep(a)))],
});

/** A writer's loop in miniature: compile with held backends, diff against the last state. */
class Writer {
  ids = new IdRegistry();
  state: DesiredMaps = emptyMaps();
  constructor(readonly opts: DiffOptions = Q) {}
  sync(input: { services: Service[]; slices: EndpointSlice[] }): SyncPlan {
    const next = compile(model(input.services, input.slices), this.ids, {
      quarantine: heldBackends(this.state, this.opts),
    });
    const plan = diff(this.state, next.maps, this.opts);
    this.state = plan.after;
    return plan;
  }
}

function backendByAddr(maps: DesiredMaps, addr: string): { key: number; state: number } | undefined {
  const e = [...maps.backends4.values()].find((b) => b.value.addr === addr);
  return e === undefined ? undefined : { key: e.key, state: e.value.state };
}

describe('diff: order', () => {
  it('from nothing: backends → slots → rev-NAT → source ranges → services (WRITE_ORDER)', () => {
    const { services, slices } = sampleCluster();
    const next = compile(model(services, slices), new IdRegistry()).maps;
    const plan = diff(emptyMaps(), next, Q);
    expect(shape(plan)).toEqual(WRITE_ORDER.map((m) => `upsert ${m}`));
    expect(plan.total).toEqual({
      upserts: WRITE_ORDER.reduce((n, m) => n + next[m].size, 0),
      deletes: 0,
      quarantined: 0,
    });
  });

  it('to nothing: deletes in reverse order, TCP backends quarantined first, UDP backends deleted', () => {
    const { services, slices } = sampleCluster();
    const previous = compile(model(services, slices), new IdRegistry()).maps;
    const plan = diff(previous, emptyMaps(), Q);
    expect(shape(plan)).toEqual([
      'quarantine backends4',
      'quarantine backends6',
      'delete services6',
      'delete services4',
      'delete sourceRanges6',
      'delete sourceRanges4',
      'delete revnat6',
      'delete revnat4',
      'delete serviceNames',
      'delete serviceSlots',
      'delete backends4', // the UDP dns backends
    ]);
    expect(plan.counts.backends4).toEqual({ upserts: 0, deletes: 2, quarantined: 5 });
  });

  it('without quarantine every leaving backend is deleted, after everything else', () => {
    const { services, slices } = sampleCluster();
    const previous = compile(model(services, slices), new IdRegistry()).maps;
    const plan = diff(previous, emptyMaps(), { quarantineTcpBackends: false });
    expect(shape(plan).slice(-2)).toEqual(['delete backends6', 'delete backends4']);
    expect(plan.total.quarantined).toBe(0);
    expect(plan.after).toEqual(emptyMaps());
  });

  it('unchanged: an empty plan', () => {
    const w = new Writer();
    w.sync(sampleCluster());
    const plan = w.sync(sampleCluster());
    expect(isEmptyPlan(plan)).toBe(true);
    expect(plan.total).toEqual({ upserts: 0, deletes: 0, quarantined: 0 });
  });

  it('slots shrink: the count update (services upsert) comes before the slot deletes', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2', '198.18.17.3']));
    const plan = w.sync(web(['198.18.17.1', '198.18.17.2']));
    expect(shape(plan)).toEqual(['upsert services4', 'quarantine backends4', 'delete serviceSlots']);
    const del = plan.steps.find((s) => s.op === 'delete');
    expect(del?.op === 'delete' && del.keys).toEqual([{ serviceId: 1, slot: 3 }]);
  });

  it('a backend removed from the middle: one slot rewritten (before the count), the last deleted (after)', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2', '198.18.17.3']));
    const plan = w.sync(web(['198.18.17.1', '198.18.17.3']));
    expect(shape(plan)).toEqual(['upsert serviceSlots', 'upsert services4', 'quarantine backends4', 'delete serviceSlots']);
    expect(plan.counts.serviceSlots).toEqual({ upserts: 1, deletes: 1, quarantined: 0 });
  });

  it('a backend added: backend, then its slot, then the count', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1']));
    const plan = w.sync(web(['198.18.17.1', '198.18.17.2']));
    expect(shape(plan)).toEqual(['upsert backends4', 'upsert serviceSlots', 'upsert services4']);
  });

  it('equal values spelled differently (IPv6 text) are not rewritten: compared by bytes', () => {
    const { services, slices } = sampleCluster();
    const previous = compile(model(services, slices), new IdRegistry()).maps;
    const respelled = new Map(
      [...previous.backends6].map(([k, e]) => [k, { key: e.key, value: { ...e.value, addr: e.value.addr.replace('2001:2:0:10::', '2001:0002:0000:0010:0:0:0:') } as Lb6Backend }]),
    );
    expect([...respelled.values()].some((e) => e.value.addr.startsWith('2001:0002'))).toBe(true);
    expect(isEmptyPlan(diff(previous, { ...previous, backends6: respelled }, Q))).toBe(true);
  });
});

describe('diff: leaving backends', () => {
  it('TCP backend removed: quarantined (kept for its connections), not deleted; later diffs leave it be', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2']));
    const gone = backendByAddr(w.state, '198.18.17.2');
    const plan = w.sync(web(['198.18.17.1']));
    const q = plan.steps.find((s) => s.op === 'quarantine');
    expect(q?.op === 'quarantine' && q.entries.map((e) => [e.key, (e.value as { state: number }).state])).toEqual([
      [gone?.key, BE_STATE_QUARANTINED],
    ]);
    expect(plan.steps.some((s) => s.op === 'delete' && s.map === 'backends4')).toBe(false);
    expect(backendByAddr(plan.after, '198.18.17.2')).toEqual({ key: gone?.key, state: BE_STATE_QUARANTINED });
    // never selected
    const r = trace(plan.after, { dst: '198.19.0.10', dport: 80, proto: 'TCP' });
    expect(isTraceHit(r) && r.backends.map((b) => b.addr)).toEqual(['198.18.17.1']);
    // the next syncs: nothing to do
    expect(isEmptyPlan(w.sync(web(['198.18.17.1'])))).toBe(true);
  });

  it('UDP backend removed: deleted at once (its flows move on)', () => {
    const w = new Writer();
    w.sync(dnsUdp(['198.18.17.1', '198.18.17.2']));
    const plan = w.sync(dnsUdp(['198.18.17.1']));
    expect(shape(plan)).toEqual(['upsert services4', 'delete serviceSlots', 'delete backends4']);
    expect(plan.total.quarantined).toBe(0);
    expect(backendByAddr(plan.after, '198.18.17.2')).toBeUndefined();
  });

  it('collectQuarantine: kept while conntrack uses it, deleted once nothing does; its id is then reused', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2']));
    const gone = backendByAddr(w.state, '198.18.17.2');
    w.sync(web(['198.18.17.1']));

    // a new endpoint while .2 is quarantined never gets its id
    w.sync(web(['198.18.17.1', '198.18.17.3']));
    expect(backendByAddr(w.state, '198.18.17.3')?.key).not.toBe(gone?.key);

    const inUse = collectQuarantine(new Set([gone?.key ?? 0]), w.state);
    expect(isEmptyPlan(inUse)).toBe(true);

    const collect = collectQuarantine(new Set(), w.state);
    expect(shape(collect)).toEqual(['delete backends4']);
    expect(collect.counts.backends4).toEqual({ upserts: 0, deletes: 1, quarantined: 0 });
    expect(backendByAddr(collect.after, '198.18.17.2')).toBeUndefined();
    w.state = collect.after;

    // the id is free again: the next new endpoint takes it (lowest free)
    w.sync(web(['198.18.17.1', '198.18.17.3']));
    const plan = w.sync(web(['198.18.17.1', '198.18.17.3', '198.18.17.4']));
    expect(backendByAddr(plan.after, '198.18.17.4')?.key).toBe(gone?.key);
  });

  it('a quarantined backend whose endpoint returns is revived: same id, ACTIVE, back in the slots', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2']));
    const gone = backendByAddr(w.state, '198.18.17.2');
    w.sync(web(['198.18.17.1']));
    const plan = w.sync(web(['198.18.17.1', '198.18.17.2']));
    expect(shape(plan)).toEqual(['upsert backends4', 'upsert serviceSlots', 'upsert services4']);
    expect(backendByAddr(plan.after, '198.18.17.2')).toEqual({ key: gone?.key, state: BE_STATE_ACTIVE });
  });

  it('quarantined backends left over when quarantine is turned off are deleted', () => {
    const w = new Writer();
    w.sync(web(['198.18.17.1', '198.18.17.2']));
    w.sync(web(['198.18.17.1']));
    const off = new Writer({ quarantineTcpBackends: false });
    off.ids = w.ids;
    off.state = w.state;
    const plan = off.sync(web(['198.18.17.1']));
    expect(shape(plan)).toEqual(['delete backends4']);
  });
});

describe('diff: restart stability', () => {
  it('recover → compile → diff against what the maps hold is an empty plan (quarantined backends included)', () => {
    const w = new Writer();
    const { services, slices } = sampleCluster();
    w.sync({ services, slices });
    // churn, leaving a quarantined backend and moved slots behind
    const churned = slices.map((s) =>
      s.metadata?.name === 'web-v4' ? slice('web', 'web-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.1'), ep('198.18.17.9')]) : s,
    );
    w.sync({ services, slices: churned });
    expect([...w.state.backends4.values()].some((b) => b.value.state === BE_STATE_QUARANTINED)).toBe(true);

    // "restart": only the maps survive
    const current = w.state;
    const ids = IdRegistry.recover(current);
    const next = compile(model(services, churned), ids, { quarantine: heldBackends(current, Q) });
    const plan = diff(current, next.maps, Q);
    expect(shape(plan)).toEqual([]);
    expect(renderMaps(plan.after)).toBe(renderMaps(current));
  });

  it('after recovery, a change writes only what changed', () => {
    const { services, slices } = sampleCluster();
    const w = new Writer();
    w.sync({ services, slices });
    const ids = IdRegistry.recover(w.state);
    const more = [...slices, slice('empty', 'empty-1', 'IPv4', [['http', 8080]], [ep('198.18.17.20')])];
    const next = compile(model(services, more), ids, { quarantine: heldBackends(w.state, Q) });
    const plan = diff(w.state, next.maps, Q);
    // the empty Service gains a backend: one backend, one slot, its two frontends' counts
    expect(plan.counts.backends4.upserts).toBe(1);
    expect(plan.counts.serviceSlots.upserts).toBe(1);
    expect(plan.counts.services4.upserts).toBe(2);
    expect(plan.total.upserts).toBe(4);
    expect(plan.total.deletes + plan.total.quarantined).toBe(0);
    const key = keyHex('services4', { addr: '198.19.100.20', port: 80, proto: 6, scope: 0 });
    expect(next.maps.services4.get(key)?.value.backendCount).toBe(1);
  });
});
