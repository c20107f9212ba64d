// BpfMap logic without a kernel: a fake native module stands in for libbpf,
// so the paths a modern kernel never takes (no batch support, partial
// batches) are exercised too. Addresses: 198.18.0.0/24.
import { describe, expect, it } from 'vitest';
import { IPPROTO_TCP, lb4Key, lbService, u32Codec, type Lb4Key, type LbService } from '../../src/bpf/abi.js';
import { BpfMapError, describeErrno } from '../../src/bpf/errors.js';
import { BpfMap, MapType, PerCpuMap } from '../../src/bpf/map.js';
import type { Native } from '../../src/bpf/native.js';

const ENOENT = 2;
const E2BIG = 7;
const ENOTSUPP = 524;

interface FakeOptions {
  keySize: number;
  valueSize: number;
  maxEntries: number;
  batch: boolean;
  cpus?: number;
}

/** A hash map in JS behind the libbpf calls BpfMap makes. */
function fakeNative(o: FakeOptions): { native: Native; store: Map<string, Buffer>; calls: string[] } {
  const store = new Map<string, Buffer>();
  const calls: string[] = [];
  const put = (k: Buffer, v: Buffer, flags: number): number => {
    const hex = k.toString('hex');
    const exists = store.has(hex);
    if (flags === 1 && exists) return -17;
    if (flags === 2 && !exists) return -ENOENT;
    if (!exists && store.size >= o.maxEntries) return -E2BIG;
    store.set(hex, Buffer.from(v));
    return 0;
  };
  const native = {
    libbpf_num_possible_cpus: () => o.cpus ?? 1,
    close: () => 0,
    bpf_map_update_elem(_fd: number, k: Buffer, v: Buffer, flags: number) {
      calls.push('update');
      return put(k, v, flags);
    },
    bpf_map_lookup_elem(_fd: number, k: Buffer, v: Buffer) {
      calls.push('lookup');
      const got = store.get(k.toString('hex'));
      if (!got) return -ENOENT;
      got.copy(v);
      return 0;
    },
    bpf_map_delete_elem(_fd: number, k: Buffer) {
      calls.push('delete');
      return store.delete(k.toString('hex')) ? 0 : -ENOENT;
    },
    bpf_map_get_next_key(_fd: number, k: Buffer | null, next: Buffer) {
      calls.push('next_key');
      const keys = [...store.keys()];
      const i = k === null ? 0 : keys.indexOf(k.toString('hex')) + 1;
      const n = keys[i];
      if (n === undefined) return -ENOENT;
      Buffer.from(n, 'hex').copy(next);
      return 0;
    },
    bpf_map_update_batch(_fd: number, keys: Buffer, values: Buffer, count: Buffer, opts: Buffer) {
      calls.push('update_batch');
      if (!o.batch) return -ENOTSUPP;
      const n = count.readUInt32LE(0);
      const flags = Number(opts.readBigUInt64LE(8));
      for (let i = 0; i < n; i++) {
        const r = put(
          keys.subarray(i * o.keySize, (i + 1) * o.keySize),
          values.subarray(i * o.valueSize, (i + 1) * o.valueSize),
          flags,
        );
        if (r < 0) {
          count.writeUInt32LE(i, 0);
          return r;
        }
      }
      return 0;
    },
    bpf_map_delete_batch(_fd: number, keys: Buffer, count: Buffer) {
      calls.push('delete_batch');
      if (!o.batch) return -ENOTSUPP;
      const n = count.readUInt32LE(0);
      for (let i = 0; i < n; i++) {
        if (!store.delete(keys.subarray(i * o.keySize, (i + 1) * o.keySize).toString('hex'))) {
          count.writeUInt32LE(i, 0); // the kernel stops at the first absent key
          return -ENOENT;
        }
      }
      return 0;
    },
    bpf_map_lookup_batch() {
      calls.push('lookup_batch');
      return -22; // EINVAL: falls back to get_next_key
    },
  };
  return { native: native as unknown as Native, store, calls };
}

const key = (i: number): Lb4Key => ({ addr: `198.18.0.${i}`, port: 80, proto: IPPROTO_TCP, scope: 0 });
const svc = (id: number): LbService => lbService.create({ serviceId: id, backendCount: 1 });

// Each case uses its own map type: a type found batch-less is remembered per process.
function services(batch: boolean, type: number, maxEntries = 100) {
  const fake = fakeNative({ keySize: 8, valueSize: 20, maxEntries, batch });
  const map = new BpfMap({ name: 'services4', fd: 3, type, keyCodec: lb4Key, valueCodec: lbService, maxEntries, native: fake.native });
  return { map, ...fake };
}

describe('BpfMap over a fake libbpf', () => {
  it('lookup / update / delete', () => {
    const { map } = services(true, MapType.hash);
    expect(map.lookup(key(1))).toBeUndefined();
    map.update(key(1), svc(7));
    expect(map.lookup(key(1))).toEqual(svc(7));
    expect(map.delete(key(1))).toBe(true);
    expect(map.delete(key(1))).toBe(false);
  });

  it('a full map names the map and the key', () => {
    const { map } = services(true, MapType.hash, 1);
    map.update(key(1), svc(1));
    expect(() => map.update(key(2), svc(2))).toThrow(
      /bpf map services4: update \{addr: 198\.18\.0\.2, port: 80, proto: 6, scope: 0\}: map services4 is full \(max_entries 1\) \(E2BIG\)/,
    );
  });

  it('batchUpdate uses one batch call when supported', () => {
    const { map, calls, store } = services(true, MapType.hash);
    map.batchUpdate([1, 2, 3].map((i) => [key(i), svc(i)] as const));
    expect(calls).toEqual(['update_batch']);
    expect(store.size).toBe(3);
  });

  it('without batch support it falls back to single updates, and remembers the type', () => {
    const { map, calls, store } = services(false, MapType.lruHash);
    map.batchUpdate([1, 2].map((i) => [key(i), svc(i)] as const));
    expect(calls).toEqual(['update_batch', 'update', 'update']);
    expect(store.size).toBe(2);
    calls.length = 0;
    map.batchUpdate([[key(3), svc(3)]]);
    expect(calls).toEqual(['update']);
  });

  it('batchDelete skips absent keys and counts what it deleted', () => {
    const { map, store } = services(true, MapType.lpmTrie);
    map.batchUpdate([1, 2, 3, 4].map((i) => [key(i), svc(i)] as const));
    expect(map.batchDelete([key(1), key(9), key(2), key(8), key(3)])).toBe(3);
    expect([...store.keys()]).toEqual([lb4Key.encode(key(4)).toString('hex')]);
  });

  it('entries() and count() fall back to get_next_key when lookup_batch is refused', () => {
    const { map } = services(true, MapType.hash);
    map.batchUpdate([1, 2, 3].map((i) => [key(i), svc(i)] as const));
    expect([...map.entries()]).toEqual([1, 2, 3].map((i) => [key(i), svc(i)]));
    expect(map.count()).toBe(3);
  });

  it('a per-CPU map reads one value per CPU, rounded to 8 bytes', () => {
    const fake = fakeNative({ keySize: 4, valueSize: 8 * 3, maxEntries: 4, batch: true, cpus: 3 });
    const map = new PerCpuMap({ name: 'ids', fd: 3, type: MapType.percpuArray, keyCodec: u32Codec, valueCodec: u32Codec, maxEntries: 4, native: fake.native });
    expect(map.valueBytes).toBe(24);
    map.update(0, [1, 2, 3]);
    expect(map.lookup(0)).toEqual([1, 2, 3]);
    map.update(1, 9);
    expect(map.lookup(1)).toEqual([9, 9, 9]);
    expect(() => map.update(2, [1, 2])).toThrow(/2 values for 3 CPUs/);
  });
});

describe('errno', () => {
  it.each([
    [2, 'ENOENT'],
    [-7, 'E2BIG'],
    [28, 'ENOSPC'],
    [524, 'ENOTSUPP'],
    [4007, 'LIBBPF_ERRNO__VERIFY'],
    [99999, 'E99999'],
  ])('%i is %s', (n, code) => {
    expect(describeErrno(n).code).toBe(code);
  });

  it('BpfMapError carries map, operation, key and errno', () => {
    const e = new BpfMapError('ct4', 'delete', '{x}', -13);
    expect(e).toMatchObject({ mapName: 'ct4', operation: 'delete', key: '{x}', errno: 13, code: 'EACCES', full: false });
    expect(e.message).toBe('bpf map ct4: delete {x}: permission denied (EACCES)');
  });
});
