// compile → diff → apply against the real kernel maps of a loaded Dataplane:
// what readCurrent reads back is what compile wanted; a closed and reopened
// dataplane (pins adopted, as after an agent restart) recovers its ids from
// the maps and needs no write at all; a full map reports the entries that did
// not fit, with map and key, while everything else is written.
//
// Address plan (compile-fixtures.ts): cluster IPs 198.19.0.0/24 and
// 2001:2:0:20::/64, LB/external 198.19.100.0/24 and 2001:2:0:30::/64, pods
// 198.18.16.0/20 and 2001:2:0:10::/64, node 198.18.0.1 / 2001:2::1. No packet
// is sent: only map writes under this file's own bpf roots.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BE_STATE_QUARANTINED } from '../../src/bpf/abi.js';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { BpfMapError } from '../../src/bpf/errors.js';
import { applyPlan, ctBackendIds, readCurrent } from '../../src/compile/apply.js';
import { compile } from '../../src/compile/compile.js';
import { collectQuarantine, diff, heldBackends, isEmptyPlan, type DiffOptions } from '../../src/compile/diff.js';
import { emptyMaps, renderMaps } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import { isTraceHit, trace } from '../../src/compile/trace.js';
import { WRITE_ORDER } from '../../src/compile/types.js';
import { ep, model, sampleCluster, slice } from '../unit/compile-fixtures.js';

const PREFIX = 'strait-test-apply-';
const ROOT = `/sys/fs/bpf/${PREFIX}${process.pid}`;
const ROOT_FULL = `${ROOT}-full`;
const Q: DiffOptions = { quarantineTcpBackends: true };

const SIZES: Record<string, number> = {
  ct4: 4096,
  ct6: 4096,
  services4: 1024,
  services6: 1024,
  service_slots: 4096,
  backends4: 4096,
  backends6: 4096,
  revnat4: 1024,
  revnat6: 1024,
  maglev: 64,
  frag4: 256,
  snat4: 1024,
  snat6: 1024,
  affinity4: 256,
  affinity6: 256,
  source_ranges4: 256,
  source_ranges6: 256,
};

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Leftovers of crashed runs (their pid is gone) are removed, not tripped over. */
function cleanStale(): void {
  for (const name of readdirSync('/sys/fs/bpf')) {
    const m = new RegExp(`^${PREFIX}(\\d+)`).exec(name);
    if (m && !alive(Number(m[1]))) Dataplane.destroy(join('/sys/fs/bpf', name));
  }
}

beforeAll(() => {
  if (process.getuid?.() !== 0) {
    throw new Error('test/bpf/apply.test.ts needs root (BPF maps under /sys/fs/bpf); run it as root');
  }
  cleanStale();
  Dataplane.destroy(ROOT);
  Dataplane.destroy(ROOT_FULL);
});

afterAll(() => {
  Dataplane.destroy(ROOT);
  Dataplane.destroy(ROOT_FULL);
});

describe('apply on kernel maps', () => {
  it('compile → apply → readCurrent equals desired; reopen (pins adopted) → recover → compile → no writes', () => {
    const { services, slices } = sampleCluster();
    let dp = Dataplane.open({ bpfRoot: ROOT, mapSizes: SIZES });
    try {
      const ids = new IdRegistry();
      const before = readCurrent(dp);
      expect(renderMaps(before)).toBe(renderMaps(emptyMaps()));

      const next = compile(model(services, slices), ids, { quarantine: heldBackends(before, Q) });
      const plan = diff(before, next.maps, Q);
      const result = applyPlan(dp, plan);
      expect(result.failures).toEqual([]);
      expect(result.written).toBe(plan.total.upserts);
      const current = readCurrent(dp);
      expect(renderMaps(current)).toBe(renderMaps(next.maps));
      expect(isEmptyPlan(diff(current, next.maps, Q))).toBe(true);

      // the kernel's maps answer the trace like the compiled ones
      const r = trace(current, { dst: '198.19.0.10', dport: 80, proto: 'TCP' });
      expect(isTraceHit(r) && r.backends.map((b) => b.addr)).toEqual(['198.18.16.1', '198.18.17.1']);
    } finally {
      dp.close();
    }

    // "restart": a new Dataplane adopts the pins, a new registry recovers from them
    dp = Dataplane.open({ bpfRoot: ROOT, mapSizes: SIZES });
    try {
      expect(dp.load.adopted).toEqual(expect.arrayContaining(['services4', 'service_slots', 'backends4']));
      const current = readCurrent(dp);
      const ids = IdRegistry.recover(current);
      const next = compile(model(services, slices), ids, { quarantine: heldBackends(current, Q) });
      const plan = diff(current, next.maps, Q);
      expect(plan.steps).toEqual([]);
      expect(applyPlan(dp, plan)).toEqual({ written: 0, deleted: 0, failures: [] });

      // a change after the restart: one TCP endpoint leaves (quarantined), then is collected
      const fewer = slices.map((s) =>
        s.metadata?.name === 'web-v4' ? slice('web', 'web-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.1')]) : s,
      );
      const next2 = compile(model(services, fewer), ids, { quarantine: heldBackends(current, Q) });
      const plan2 = diff(current, next2.maps, Q);
      expect(plan2.total.quarantined).toBe(1);
      expect(applyPlan(dp, plan2).failures).toEqual([]);
      const after2 = readCurrent(dp);
      expect(renderMaps(after2)).toBe(renderMaps(plan2.after));
      expect([...after2.backends4.values()].filter((b) => b.value.state === BE_STATE_QUARANTINED)).toHaveLength(1);

      const collect = collectQuarantine(ctBackendIds(dp), after2);
      expect(collect.total.deletes).toBe(1);
      expect(applyPlan(dp, collect).failures).toEqual([]);
      expect(renderMaps(readCurrent(dp))).toBe(renderMaps(collect.after));
    } finally {
      dp.close();
    }
  });

  it('a full map: the frontends that do not fit are reported with map and key, all else is written', () => {
    const { services, slices } = sampleCluster();
    const dp = Dataplane.open({ bpfRoot: ROOT_FULL, mapSizes: { ...SIZES, services4: 4 } });
    try {
      const next = compile(model(services, slices), new IdRegistry());
      expect(next.maps.services4.size).toBeGreaterThan(4);
      const result = applyPlan(dp, diff(emptyMaps(), next.maps, Q));

      expect(result.failures).toHaveLength(next.maps.services4.size - 4);
      for (const f of result.failures) {
        expect(f.map).toBe('services4');
        expect(f.op).toBe('upsert');
        expect(f.key).toMatch(/^\{addr: 198\.\d+\.\d+\.\d+, port: \d+, proto: \d+, scope: \d\}$/);
        expect(f.error).toBeInstanceOf(BpfMapError);
        expect((f.error as BpfMapError).full).toBe(true);
      }
      const current = readCurrent(dp);
      expect(current.services4.size).toBe(4);
      for (const m of WRITE_ORDER.filter((x) => x !== 'services4')) {
        expect(renderMaps({ ...emptyMaps(), [m]: current[m] }), m).toBe(renderMaps({ ...emptyMaps(), [m]: next.maps[m] }));
      }
      // the next sync retries exactly the missing entries
      const retry = diff(current, next.maps, Q);
      expect(retry.total).toEqual({ upserts: next.maps.services4.size - 4, deletes: 0, quarantined: 0 });
    } finally {
      dp.close();
    }
  });
});
