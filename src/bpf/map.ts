// Typed BPF maps (cilium/ebpf `map.go` style): keys and values go through
// codecs, errno becomes a BpfMapError that names map, operation and key.
//
// Batches: bpf_map_{update,delete,lookup}_batch are used where the map type
// supports them. Measured on kernel 6.18: update and lookup batches work for
// hash, LRU hash, per-CPU hash/array, array and LPM trie maps; delete batches
// for all of them except arrays (whose elements cannot be deleted). A kernel
// that answers ENOTSUPP/EOPNOTSUPP (or EINVAL before doing anything, where the
// element-wise loop then succeeds) marks that (map type, operation) batch-less
// for the rest of the process, and the call falls back to single calls.
import {
  BpfError,
  BpfMapError,
  EINVAL,
  ENOENT,
  ENOSPC,
  EOPNOTSUPP,
  ENOTSUPP,
  type MapOperation,
} from './errors.js';
import type { Codec } from './codec.js';
import { loadNative, type Native, type NativeMapInfo } from './native.js';

/** enum bpf_map_type (the ones strait meets). */
export const MapType = {
  hash: 1,
  array: 2,
  progArray: 3,
  perfEventArray: 4,
  percpuHash: 5,
  percpuArray: 6,
  stackTrace: 7,
  cgroupArray: 8,
  lruHash: 9,
  lruPercpuHash: 10,
  lpmTrie: 11,
  arrayOfMaps: 12,
  hashOfMaps: 13,
  devmap: 14,
  sockmap: 15,
  cpumap: 16,
  xskmap: 17,
  sockhash: 18,
  cgroupStorage: 19,
  reuseportSockarray: 20,
  percpuCgroupStorage: 21,
  queue: 22,
  stack: 23,
  skStorage: 24,
  devmapHash: 25,
  structOps: 26,
  ringbuf: 27,
  inodeStorage: 28,
  taskStorage: 29,
  bloomFilter: 30,
} as const;

const mapTypeNames = new Map<number, string>(Object.entries(MapType).map(([k, v]) => [v, k]));
export function mapTypeName(type: number): string {
  return mapTypeNames.get(type) ?? `type_${type}`;
}

export function isPerCpuType(type: number): boolean {
  return (
    type === MapType.percpuHash ||
    type === MapType.percpuArray ||
    type === MapType.lruPercpuHash ||
    type === MapType.percpuCgroupStorage
  );
}

function isArrayType(type: number): boolean {
  return type === MapType.array || type === MapType.percpuArray;
}

/** BPF_ANY / BPF_NOEXIST / BPF_EXIST */
export type UpdateFlag = 'any' | 'noexist' | 'exist';
const UPDATE_FLAGS: Record<UpdateFlag, number> = { any: 0, noexist: 1, exist: 2 };

const BATCH_TYPES = new Set<number>([
  MapType.hash,
  MapType.array,
  MapType.percpuHash,
  MapType.percpuArray,
  MapType.lruHash,
  MapType.lruPercpuHash,
  MapType.lpmTrie,
]);
type BatchOp = 'update' | 'delete' | 'lookup';
/** `${type}:${op}` found without batch support at run time (decided once per process). */
const noBatch = new Set<string>();

const BATCH_CHUNK = 8192;

/** struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; } */
function batchOpts(elemFlags: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(24n, 0);
  b.writeBigUInt64LE(BigInt(elemFlags), 8);
  return b;
}

function isUnsupported(errno: number): boolean {
  return errno === ENOTSUPP || errno === EOPNOTSUPP;
}

export interface MapSpec<K, V> {
  name: string;
  fd: number;
  /** enum bpf_map_type */
  type: number;
  keyCodec: Codec<K>;
  valueCodec: Codec<V>;
  maxEntries: number;
  /** Close fd in close() (maps opened from a pin); object-owned fds are not. */
  ownsFd?: boolean;
  native?: Native;
}

/**
 * The operations shared by plain and per-CPU maps. V is what lookup returns:
 * a value, or one value per possible CPU.
 */
abstract class TypedMap<K, V> {
  readonly name: string;
  readonly fd: number;
  readonly type: number;
  readonly keyCodec: Codec<K>;
  readonly maxEntries: number;
  /** Bytes of one value as the syscall sees it (all CPUs for per-CPU maps). */
  readonly valueBytes: number;
  protected readonly native: Native;
  private readonly ownsFd: boolean;
  private readonly keyBuf: Buffer;
  private readonly valueBuf: Buffer;
  private closed = false;

  protected constructor(spec: MapSpec<K, unknown>, valueBytes: number) {
    this.name = spec.name;
    this.fd = spec.fd;
    this.type = spec.type;
    this.keyCodec = spec.keyCodec;
    this.maxEntries = spec.maxEntries;
    this.native = spec.native ?? loadNative();
    this.ownsFd = spec.ownsFd ?? false;
    this.valueBytes = valueBytes;
    this.keyBuf = Buffer.alloc(spec.keyCodec.size);
    this.valueBuf = Buffer.alloc(valueBytes);
  }

  protected abstract encodeValue(value: V, buf: Buffer, off: number): void;
  protected abstract decodeValue(buf: Buffer, off: number): V;

  private fail(op: MapOperation, key: K | undefined, errno: number): BpfMapError {
    const rendered = key === undefined ? undefined : this.safeFormat(key);
    return new BpfMapError(this.name, op, rendered, errno, this.maxEntries, isArrayType(this.type));
  }

  private safeFormat(key: K): string {
    try {
      return this.keyCodec.format(key);
    } catch {
      return String(key);
    }
  }

  /** The value under key, or undefined when absent. */
  lookup(key: K): V | undefined {
    this.keyCodec.encodeInto(key, this.keyBuf, 0);
    const ret = this.native.bpf_map_lookup_elem(this.fd, this.keyBuf, this.valueBuf);
    if (ret === -ENOENT) return undefined;
    if (ret < 0) throw this.fail('lookup', key, -ret);
    return this.decodeValue(this.valueBuf, 0);
  }

  /** Writes one entry. A full map throws a BpfMapError with full = true. */
  update(key: K, value: V, flags: UpdateFlag = 'any'): void {
    this.keyCodec.encodeInto(key, this.keyBuf, 0);
    this.encodeValue(value, this.valueBuf, 0);
    const ret = this.native.bpf_map_update_elem(
      this.fd,
      this.keyBuf,
      this.valueBuf,
      UPDATE_FLAGS[flags],
    );
    if (ret < 0) throw this.fail('update', key, -ret);
  }

  /** Deletes one entry; false when it was absent. */
  delete(key: K): boolean {
    this.keyCodec.encodeInto(key, this.keyBuf, 0);
    const ret = this.native.bpf_map_delete_elem(this.fd, this.keyBuf);
    if (ret === -ENOENT) return false;
    if (ret < 0) throw this.fail('delete', key, -ret);
    return true;
  }

  private batchable(op: BatchOp): boolean {
    return BATCH_TYPES.has(this.type) && !noBatch.has(`${this.type}:${op}`);
  }

  private markNoBatch(op: BatchOp): void {
    noBatch.add(`${this.type}:${op}`);
  }

  /**
   * Writes many entries, with bpf_map_update_batch where the type supports
   * it. Entries are applied in order; on failure the error names the first
   * entry not written (earlier ones stay written).
   */
  batchUpdate(entries: Iterable<readonly [K, V]>, flags: UpdateFlag = 'any'): void {
    const all = Array.isArray(entries) ? (entries as readonly (readonly [K, V])[]) : [...entries];
    if (all.length === 0) return;
    if (!this.batchable('update')) {
      for (const [k, v] of all) this.update(k, v, flags);
      return;
    }
    const ks = this.keyCodec.size;
    const vs = this.valueBytes;
    const opts = batchOpts(UPDATE_FLAGS[flags]);
    const count = Buffer.alloc(4);
    for (let start = 0; start < all.length; start += BATCH_CHUNK) {
      const chunk = all.slice(start, start + BATCH_CHUNK);
      const keys = Buffer.alloc(chunk.length * ks);
      const values = Buffer.alloc(chunk.length * vs);
      chunk.forEach(([k, v], i) => {
        this.keyCodec.encodeInto(k, keys, i * ks);
        this.encodeValue(v, values, i * vs);
      });
      count.writeUInt32LE(chunk.length, 0);
      const ret = this.native.bpf_map_update_batch(this.fd, keys, values, count, opts);
      if (ret >= 0) continue;
      const done = Math.min(count.readUInt32LE(0), chunk.length);
      const errno = -ret;
      if (isUnsupported(errno) || (errno === EINVAL && done === 0)) {
        // No batch support (or a per-key problem): the loop finds out which.
        for (const [k, v] of all.slice(start)) this.update(k, v, flags);
        this.markNoBatch('update');
        return;
      }
      const failed = chunk[done];
      throw this.fail('update_batch', failed?.[0], errno);
    }
  }

  /**
   * Deletes many keys (bpf_map_delete_batch where supported); keys already
   * absent are skipped. Returns how many were deleted.
   */
  batchDelete(keys: Iterable<K>): number {
    const all = Array.isArray(keys) ? (keys as readonly K[]) : [...keys];
    if (all.length === 0) return 0;
    if (!this.batchable('delete') || isArrayType(this.type)) {
      let n = 0;
      for (const k of all) if (this.delete(k)) n++;
      return n;
    }
    const ks = this.keyCodec.size;
    const opts = batchOpts(0);
    const count = Buffer.alloc(4);
    let deleted = 0;
    let i = 0;
    while (i < all.length) {
      const chunk = all.slice(i, i + BATCH_CHUNK);
      const buf = Buffer.alloc(chunk.length * ks);
      chunk.forEach((k, j) => this.keyCodec.encodeInto(k, buf, j * ks));
      count.writeUInt32LE(chunk.length, 0);
      const ret = this.native.bpf_map_delete_batch(this.fd, buf, count, opts);
      const done = Math.min(count.readUInt32LE(0), chunk.length);
      if (ret >= 0) {
        deleted += chunk.length;
        i += chunk.length;
        continue;
      }
      const errno = -ret;
      if (errno === ENOENT) {
        // the kernel stops at the first absent key: count what went, skip it
        deleted += done;
        i += done + 1;
        continue;
      }
      if (isUnsupported(errno) || (errno === EINVAL && done === 0)) {
        for (const k of all.slice(i)) if (this.delete(k)) deleted++;
        this.markNoBatch('delete');
        return deleted;
      }
      throw this.fail('delete_batch', chunk[done], errno);
    }
    return deleted;
  }

  /**
   * batchUpdate of entries encoded already: `count` keys and values back to
   * back (keyCodec.size and valueBytes each). The agent's apply writes what
   * its diff encoded once, without objects in between.
   */
  batchUpdateRaw(keys: Buffer, values: Buffer, count: number, flags: UpdateFlag = 'any'): void {
    if (count === 0) return;
    const ks = this.keyCodec.size;
    const vs = this.valueBytes;
    if (keys.length < count * ks || values.length < count * vs) {
      throw new RangeError(`map ${this.name}: ${count} raw entries need ${count * ks}/${count * vs} bytes of keys/values`);
    }
    const one = (i: number): void => {
      const ret = this.native.bpf_map_update_elem(this.fd, keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs), UPDATE_FLAGS[flags]);
      if (ret < 0) throw this.fail('update', this.keyCodec.decode(keys, i * ks), -ret);
    };
    if (!this.batchable('update')) {
      for (let i = 0; i < count; i++) one(i);
      return;
    }
    const opts = batchOpts(UPDATE_FLAGS[flags]);
    const n = Buffer.alloc(4);
    for (let start = 0; start < count; start += BATCH_CHUNK) {
      const len = Math.min(BATCH_CHUNK, count - start);
      n.writeUInt32LE(len, 0);
      const ret = this.native.bpf_map_update_batch(
        this.fd,
        keys.subarray(start * ks, (start + len) * ks),
        values.subarray(start * vs, (start + len) * vs),
        n,
        opts,
      );
      if (ret >= 0) continue;
      const done = Math.min(n.readUInt32LE(0), len);
      const errno = -ret;
      if (isUnsupported(errno) || (errno === EINVAL && done === 0)) {
        for (let i = start; i < count; i++) one(i);
        this.markNoBatch('update');
        return;
      }
      throw this.fail('update_batch', this.keyCodec.decode(keys, (start + done) * ks), errno);
    }
  }

  /** batchDelete of `count` keys encoded already, back to back; absent keys are skipped. */
  batchDeleteRaw(keys: Buffer, count: number): number {
    const ks = this.keyCodec.size;
    const all: K[] = [];
    for (let i = 0; i < count; i++) all.push(this.keyCodec.decode(keys, i * ks));
    return this.batchDelete(all);
  }

  /**
   * Every entry, nothing decoded: chunks of [keys, values, count], `count`
   * keys (keyCodec.size each) and values (valueBytes each) back to back.
   */
  *rawEntries(): Generator<[Buffer, Buffer, number]> {
    yield* this.rawChunks(true);
  }

  /** Every entry. Uses bpf_map_lookup_batch where supported, get_next_key otherwise. */
  *entries(): Generator<[K, V]> {
    for (const [kb, vb, n] of this.rawChunks(true)) {
      for (let i = 0; i < n; i++) {
        yield [
          this.keyCodec.decode(kb, i * this.keyCodec.size),
          this.decodeValue(vb, i * this.valueBytes),
        ];
      }
    }
  }

  *keys(): Generator<K> {
    for (const [kb, , n] of this.rawChunks(false)) {
      for (let i = 0; i < n; i++) yield this.keyCodec.decode(kb, i * this.keyCodec.size);
    }
  }

  /** Number of entries (for arrays: max_entries, every index exists). */
  count(): number {
    if (isArrayType(this.type)) return this.maxEntries;
    let n = 0;
    for (const [, , c] of this.rawChunks(false)) n += c;
    return n;
  }

  /** Deletes every entry (not for arrays). Returns how many. */
  clear(): number {
    return this.batchDelete([...this.keys()]);
  }

  /** Yields [keys, values, count] buffers. withValues false may skip value reads. */
  private *rawChunks(withValues: boolean): Generator<[Buffer, Buffer, number]> {
    if (this.batchable('lookup')) {
      const it = this.batchChunks();
      const first = it.next();
      if (first.done !== true) {
        yield first.value;
        yield* it;
        return;
      }
      if (first.value === 'done') return;
      // 'unsupported': fall through to get_next_key
    }
    yield* this.nextKeyChunks(withValues);
  }

  private *batchChunks(): Generator<[Buffer, Buffer, number], 'done' | 'unsupported'> {
    const ks = this.keyCodec.size;
    const vs = this.valueBytes;
    const tokenSize = Math.max(ks, 8);
    let inBatch: Buffer | null = null;
    let outBatch: Buffer = Buffer.alloc(tokenSize);
    let chunk = 256;
    const count = Buffer.alloc(4);
    for (;;) {
      const keys = Buffer.alloc(chunk * ks);
      const values = Buffer.alloc(chunk * vs);
      count.writeUInt32LE(chunk, 0);
      const ret = this.native.bpf_map_lookup_batch(
        this.fd,
        inBatch,
        outBatch,
        keys,
        values,
        count,
        null,
      );
      const n = count.readUInt32LE(0);
      if (ret < 0) {
        const errno = -ret;
        if (errno === ENOENT) {
          if (n > 0) yield [keys, values, n];
          return 'done';
        }
        if (errno === ENOSPC && n === 0 && chunk < 1 << 20) {
          chunk *= 4; // one hash bucket holds more than a chunk
          continue;
        }
        if (inBatch === null && (isUnsupported(errno) || errno === EINVAL)) {
          this.markNoBatch('lookup');
          return 'unsupported';
        }
        throw this.fail('lookup_batch', undefined, errno);
      }
      if (n > 0) yield [keys, values, n];
      const next: Buffer = inBatch ?? Buffer.alloc(tokenSize);
      inBatch = outBatch;
      outBatch = next;
    }
  }

  private *nextKeyChunks(withValues: boolean): Generator<[Buffer, Buffer, number]> {
    const ks = this.keyCodec.size;
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(ks);
      const ret = this.native.bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -ENOENT) return;
      if (ret < 0) throw this.fail('next_key', undefined, -ret);
      prev = next;
      const value = Buffer.alloc(this.valueBytes);
      if (withValues) {
        const r = this.native.bpf_map_lookup_elem(this.fd, next, value);
        if (r === -ENOENT) continue; // deleted meanwhile
        if (r < 0) throw this.fail('lookup', this.keyCodec.decode(next), -r);
      }
      yield [next, value, 1];
    }
  }

  /** Closes the fd if this map owns it (opened from a pin). */
  close(): void {
    if (this.ownsFd && !this.closed) {
      this.native.close(this.fd);
      this.closed = true;
    }
  }
}

/** A map with one value per key. */
export class BpfMap<K, V> extends TypedMap<K, V> {
  readonly valueCodec: Codec<V>;

  constructor(spec: MapSpec<K, V>) {
    super(spec, spec.valueCodec.size);
    this.valueCodec = spec.valueCodec;
    if (isPerCpuType(spec.type)) {
      throw new TypeError(`map ${spec.name} is per-CPU: use PerCpuMap`);
    }
  }

  protected encodeValue(value: V, buf: Buffer, off: number): void {
    this.valueCodec.encodeInto(value, buf, off);
  }

  protected decodeValue(buf: Buffer, off: number): V {
    return this.valueCodec.decode(buf, off);
  }
}

/**
 * A per-CPU map (percpu array / hash): lookup returns one value per possible
 * CPU (libbpf_num_possible_cpus), each slot rounded up to 8 bytes. update
 * takes one value per CPU, or a single value written to every CPU.
 */
export class PerCpuMap<K, V> extends TypedMap<K, V[]> {
  readonly valueCodec: Codec<V>;
  readonly cpus: number;
  private readonly stride: number;

  constructor(spec: MapSpec<K, V>) {
    const native = spec.native ?? loadNative();
    const cpus = native.libbpf_num_possible_cpus();
    if (cpus <= 0) throw new BpfError('libbpf_num_possible_cpus', -cpus);
    const stride = Math.ceil(spec.valueCodec.size / 8) * 8;
    super({ ...spec, native }, stride * cpus);
    this.valueCodec = spec.valueCodec;
    this.cpus = cpus;
    this.stride = stride;
  }

  protected encodeValue(value: V[], buf: Buffer, off: number): void {
    if (value.length !== this.cpus) {
      throw new RangeError(`map ${this.name}: ${value.length} values for ${this.cpus} CPUs`);
    }
    buf.fill(0, off, off + this.valueBytes);
    value.forEach((v, cpu) => this.valueCodec.encodeInto(v, buf, off + cpu * this.stride));
  }

  protected decodeValue(buf: Buffer, off: number): V[] {
    return Array.from({ length: this.cpus }, (_, cpu) =>
      this.valueCodec.decode(buf, off + cpu * this.stride),
    );
  }

  /** Writes values per CPU, or one value on every CPU. */
  override update(key: K, value: V | V[], flags: UpdateFlag = 'any'): void {
    super.update(key, Array.isArray(value) ? value : this.replicate(value), flags);
  }

  private replicate(value: V): V[] {
    return Array.from({ length: this.cpus }, () => value);
  }
}

/** What bpf_obj_get_info_by_fd says about a map. */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export function mapInfo(fd: number, native: Native = loadNative()): MapInfo {
  const out: Partial<NativeMapInfo> = {};
  const ret = native.strait_map_info(fd, out);
  if (ret < 0) throw new BpfError(`map info of fd ${fd}`, -ret);
  return {
    type: out.type ?? 0,
    id: out.id ?? 0,
    keySize: out.key_size ?? 0,
    valueSize: out.value_size ?? 0,
    maxEntries: out.max_entries ?? 0,
    flags: out.map_flags ?? 0,
    name: out.name ?? '',
  };
}

/**
 * Opens a pinned map (e.g. for `strait lb list` with the agent stopped); the
 * returned map owns its fd (close() it). Checks key and value sizes.
 */
export function openPinnedMap<K, V>(
  path: string,
  keyCodec: Codec<K>,
  valueCodec: Codec<V>,
  native: Native = loadNative(),
): BpfMap<K, V> | PerCpuMap<K, V> {
  const fd = native.bpf_obj_get(path);
  if (fd < 0) throw new BpfError(`bpf_obj_get ${path}`, -fd);
  try {
    const info = mapInfo(fd, native);
    if (info.keySize !== keyCodec.size || info.valueSize !== valueCodec.size) {
      throw new BpfError(
        `open ${path}`,
        EINVAL,
        `key/value sizes ${info.keySize}/${info.valueSize} differ from ${keyCodec.name}/${valueCodec.name} ${keyCodec.size}/${valueCodec.size}`,
      );
    }
    const spec: MapSpec<K, V> = {
      name: info.name,
      fd,
      type: info.type,
      keyCodec,
      valueCodec,
      maxEntries: info.maxEntries,
      ownsFd: true,
      native,
    };
    return isPerCpuType(info.type) ? new PerCpuMap(spec) : new BpfMap(spec);
  } catch (e: unknown) {
    native.close(fd);
    throw e;
  }
}

