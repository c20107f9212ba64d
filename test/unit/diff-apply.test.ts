// The apply stage against in-memory maps: steps run in plan order through the
// batch operations, a failing batch falls back to single writes so one bad
// entry is reported with its map and key and the rest is still written, and
// readCurrent reads back what compile wanted.
// Address plan: see compile-fixtures.ts.
import { describe, expect, it } from 'vitest';

import { BpfMapError, E2BIG } from '../../src/bpf/errors.js';
import { applyPlan, ctBackendIds, readCurrent, type ManagedMap, type ManagedMaps } from '../../src/compile/apply.js';
import { compile } from '../../src/compile/compile.js';
import { collectQuarantine, diff, heldBackends, isEmptyPlan, type DiffOptions } from '../../src/compile/diff.js';
import { MANAGED_CODECS, emptyMaps, renderMaps, type MapCodecs } from '../../src/compile/entry-table.js';
import { IdRegistry } from '../../src/compile/ids.js';
import { WRITE_ORDER, type ManagedMapName } from '../../src/compile/types.js';
import { model, sampleCluster } from './compile-fixtures.js';

const Q: DiffOptions = { quarantineTcpBackends: true };

/** A hash map keyed by encoded bytes, with a capacity, recording every call. */
class FakeMap<K, V> implements ManagedMap<K, V> {
  readonly data = new Map<string, [K, V]>();
  constructor(
    readonly name: string,
    private readonly codecs: MapCodecs<K, V>,
    private readonly log: string[],
    private readonly maxEntries = Infinity,
    /** batchUpdate throws like a kernel without batch support */
    private readonly batchBroken = false,
  ) {}

  private hex(k: K): string {
    return this.codecs.key.encode(k).toString('hex');
  }

  *entries(): Generator<[K, V]> {
    // decode(encode()) like a real map: values come back canonical
    for (const [k, v] of this.data.values()) {
      yield [this.codecs.key.decode(this.codecs.key.encode(k)), this.codecs.value.decode(this.codecs.value.encode(v))];
    }
  }

  update(key: K, value: V): void {
    const h = this.hex(key);
    this.codecs.value.encode(value); // a value the codec refuses fails here
    if (!this.data.has(h) && this.data.size >= this.maxEntries) {
      throw new BpfMapError(this.name, 'update', this.codecs.key.format(key), E2BIG, this.maxEntries);
    }
    this.data.set(h, [key, value]);
  }

  delete(key: K): boolean {
    return this.data.delete(this.hex(key));
  }

  batchUpdate(entries: readonly (readonly [K, V])[]): void {
    this.log.push(`update ${this.name} ${entries.length}`);
    if (this.batchBroken) throw new Error('batch not supported');
    for (const [k, v] of entries) {
      try {
        this.update(k, v);
      } catch (e: unknown) {
        if (e instanceof BpfMapError) {
          throw new BpfMapError(this.name, 'update_batch', e.key, e.errno, this.maxEntries);
        }
        throw e;
      }
    }
  }

  batchDelete(keys: readonly K[]): number {
    this.log.push(`delete ${this.name} ${keys.length}`);
    let n = 0;
    for (const k of keys) if (this.delete(k)) n++;
    return n;
  }
}

function fakeMaps(
  log: string[],
  opts: { capacity?: Partial<Record<ManagedMapName, number>>; broken?: ManagedMapName[] } = {},
): ManagedMaps {
  const out: Record<string, unknown> = {};
  for (const m of WRITE_ORDER) {
    out[m] = new FakeMap(
      m,
      MANAGED_CODECS[m] as MapCodecs<unknown, unknown>,
      log,
      opts.capacity?.[m] ?? Infinity,
      opts.broken?.includes(m) ?? false,
    );
  }
  return out as unknown as ManagedMaps;
}

function sampleMaps() {
  const { services, slices } = sampleCluster();
  return compile(model(services, slices), new IdRegistry()).maps;
}

describe('applyPlan on in-memory maps', () => {
  it('writes a plan in its order; readCurrent gives back the desired maps', () => {
    const log: string[] = [];
    const maps = fakeMaps(log);
    const desired = sampleMaps();
    const result = applyPlan({ maps }, diff(emptyMaps(), desired, Q));
    expect(result.failures).toEqual([]);
    expect(result.written).toBe(WRITE_ORDER.reduce((n, m) => n + desired[m].size, 0));
    expect(log.map((l) => l.split(' ')[1])).toEqual([...WRITE_ORDER]);
    const current = readCurrent({ maps });
    expect(renderMaps(current)).toBe(renderMaps(desired));
    expect(isEmptyPlan(diff(current, desired, Q))).toBe(true);
  });

  it('deletes and quarantines run after the upserts, deletes in reverse map order', () => {
    const log: string[] = [];
    const maps = fakeMaps(log);
    const desired = sampleMaps();
    applyPlan({ maps }, diff(emptyMaps(), desired, Q));
    log.length = 0;
    const result = applyPlan({ maps }, diff(desired, emptyMaps(), Q));
    expect(result.failures).toEqual([]);
    expect(log).toEqual([
      'update backends4 5',
      'update backends6 2',
      'delete services6 5',
      'delete services4 10',
      'delete sourceRanges6 2',
      'delete sourceRanges4 2',
      'delete revnat6 3',
      'delete revnat4 8',
      'delete serviceNames 8',
      'delete serviceSlots 11',
      'delete backends4 2',
    ]);
    const left = readCurrent({ maps });
    expect(left.backends4.size + left.backends6.size).toBe(7); // quarantined TCP backends
    // nothing in conntrack: collected
    const collect = collectQuarantine(ctBackendIds({ maps: { ct4: { entries: () => [] }, ct6: { entries: () => [] } } }), left);
    expect(applyPlan({ maps }, collect).deleted).toBe(7);
    expect(renderMaps(readCurrent({ maps }))).toBe(renderMaps(emptyMaps()));
  });

  it('a full map: the entries that do not fit are reported with map and key, everything else is written', () => {
    const log: string[] = [];
    const maps = fakeMaps(log, { capacity: { services4: 4 } });
    const desired = sampleMaps();
    const result = applyPlan({ maps }, diff(emptyMaps(), desired, Q));
    expect(result.failures).toHaveLength(desired.services4.size - 4);
    for (const f of result.failures) {
      expect(f.map).toBe('services4');
      expect(f.op).toBe('upsert');
      expect(f.key).toMatch(/^\{addr: 198\.\d+\.\d+\.\d+, port: \d+, proto: \d+, scope: \d\}$/);
      expect(f.error).toBeInstanceOf(BpfMapError);
      expect((f.error as BpfMapError).full).toBe(true);
    }
    const current = readCurrent({ maps });
    expect(current.services4.size).toBe(4);
    for (const m of WRITE_ORDER.filter((x) => x !== 'services4')) expect(current[m].size, m).toBe(desired[m].size);
    expect(result.written).toBe(WRITE_ORDER.reduce((n, m) => n + desired[m].size, 0) - result.failures.length);
  });

  it('a batch that fails as a whole falls back to single writes', () => {
    const log: string[] = [];
    const maps = fakeMaps(log, { broken: ['serviceSlots'] });
    const desired = sampleMaps();
    const result = applyPlan({ maps }, diff(emptyMaps(), desired, Q));
    expect(result.failures).toEqual([]);
    expect(renderMaps(readCurrent({ maps }))).toBe(renderMaps(desired));
  });

  it('a value the codec refuses is one failure, not an exception', () => {
    const maps = fakeMaps([]);
    const desired = sampleMaps();
    const plan = diff(emptyMaps(), desired, Q);
    const bad = { key: 999, value: { addr: 'not-an-address', nodeAddr: '0.0.0.0', port: 1, proto: 6, state: 0, flags: 0, zone: 0 } };
    const steps = plan.steps.map((s) =>
      s.op === 'upsert' && s.map === 'backends4' ? { ...s, entries: [...s.entries, bad] } : s,
    );
    const result = applyPlan({ maps }, { ...plan, steps });
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0]).toMatchObject({ map: 'backends4', op: 'upsert', key: '999' });
    expect(readCurrent({ maps }).services4.size).toBe(desired.services4.size);
  });
});

describe('ctBackendIds', () => {
  it('collects the backend ids of live conntrack entries, skipping expired ones', () => {
    const entry = (backendId: number, expires: bigint) => ({
      expires,
      backendId,
      revNatId: 1,
      flags: 0,
      tcpFlags: 0,
      created: 0,
    });
    const ids = ctBackendIds(
      {
        maps: {
          ct4: { entries: () => [[{}, entry(1, 200n)], [{}, entry(2, 50n)]] },
          ct6: { entries: () => [[{}, entry(3, 101n)]] },
        },
      },
      100n,
    );
    expect(ids).toEqual(new Set([1, 3]));
  });

  it('heldBackends: quarantined ones always, TCP/SCTP ones with quarantine on', () => {
    const desired = sampleMaps();
    expect(heldBackends(desired, { quarantineTcpBackends: false }).size).toBe(0);
    expect(heldBackends(desired, Q).size).toBe(7);
  });
});
