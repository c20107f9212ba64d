// Entry tables: the codecs of every managed map, the canonical key of an
// entry (its encoded key bytes as hex) and the byte comparison of values.
// One place decides what "the same entry" means for compile, diff, apply and
// the restart recovery.
//
// Packed tables: the tables compile, diff, apply and readCurrent make hold
// their entries encoded, in a ByteTable (key bytes → value bytes, in typed
// arrays outside the JS heap) instead of key and value objects: no object per
// entry for the garbage collector, values compared byte by byte, and written
// to the kernel without encoding them again. They are read like any
// EntryTable (get(), values()… decode on the way out); a plain Map of entries
// (tests build them) is still accepted wherever a table is.
import {
  lb4Backend,
  lb4Key,
  lb4Revnat,
  lb6Backend,
  lb6Key,
  lb6Revnat,
  lbService,
  lbSlot,
  lbSlotKey,
  serviceName,
  srange4Key,
  srange6Key,
  srangeEntry,
  u32Codec,
} from '../bpf/abi.js';
import type { Codec } from '../bpf/codec.js';
import { ByteTable } from './byte-table.js';
import { WRITE_ORDER, type DesiredMaps, type Entry, type EntryTable, type ManagedMapName } from './types.js';

/** The key type of a managed map. */
export type KeyOf<M extends ManagedMapName> = DesiredMaps[M] extends EntryTable<infer K, unknown> ? K : never;
/** The value type of a managed map. */
export type ValueOf<M extends ManagedMapName> = DesiredMaps[M] extends EntryTable<unknown, infer V> ? V : never;

export interface MapCodecs<K, V> {
  readonly key: Codec<K>;
  readonly value: Codec<V>;
}

/** Key and value codecs of every managed map (the same as Dataplane's bindings). */
export const MANAGED_CODECS: { readonly [M in ManagedMapName]: MapCodecs<KeyOf<M>, ValueOf<M>> } = {
  backends4: { key: u32Codec, value: lb4Backend },
  backends6: { key: u32Codec, value: lb6Backend },
  serviceSlots: { key: lbSlotKey, value: lbSlot },
  serviceNames: { key: u32Codec, value: serviceName },
  revnat4: { key: u32Codec, value: lb4Revnat },
  revnat6: { key: u32Codec, value: lb6Revnat },
  sourceRanges4: { key: srange4Key, value: srangeEntry },
  sourceRanges6: { key: srange6Key, value: srangeEntry },
  services4: { key: lb4Key, value: lbService },
  services6: { key: lb6Key, value: lbService },
};

/** The managed maps in reverse write order: the order deletions run in. */
export const DELETE_ORDER: readonly ManagedMapName[] = [...WRITE_ORDER].reverse();

/**
 * Room for the largest encoded key or value of a managed map (service_name's
 * is 128 bytes); shared by the functions below, none of which calls another
 * while using it.
 */
const scratch = Buffer.alloc(
  Math.max(...Object.values(MANAGED_CODECS).flatMap((c: MapCodecs<unknown, unknown>) => [c.key.size, c.value.size])),
);

/** The canonical key of an entry of map `map`: the encoded key bytes as hex. */
export function keyHex<M extends ManagedMapName>(map: M, key: KeyOf<M>): string {
  const codec = MANAGED_CODECS[map].key as Codec<KeyOf<M>>;
  codec.encodeInto(key, scratch, 0);
  return scratch.toString('hex', 0, codec.size);
}

/** The encoded value bytes as hex (for comparisons and golden files). */
export function valueHex<M extends ManagedMapName>(map: M, value: ValueOf<M>): string {
  const codec = MANAGED_CODECS[map].value as Codec<ValueOf<M>>;
  codec.encodeInto(value, scratch, 0);
  return scratch.toString('hex', 0, codec.size);
}

/** Fields equal one by one: a fast "unchanged" that needs no encoding. */
function shallowEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if ((a as Record<string, unknown>)[k] !== (b as Record<string, unknown>)[k]) return false;
  }
  return true;
}

/**
 * Two values of map `map` encode to the same bytes. Equal fields settle it
 * at once; otherwise the encodings decide (two spellings of one IPv6 address
 * are the same value).
 */
export function sameValue<M extends ManagedMapName>(map: M, a: ValueOf<M>, b: ValueOf<M>): boolean {
  if (shallowEqual(a, b)) return true;
  return valueHex(map, a) === valueHex(map, b);
}

/** Encodes a key of map `map` into `buf` at `off`. */
export function encodeKeyInto<M extends ManagedMapName>(map: M, key: KeyOf<M>, buf: Uint8Array, off: number): void {
  (MANAGED_CODECS[map].key as Codec<KeyOf<M>>).encodeInto(key, buf as Buffer, off);
}

/** Encodes a value of map `map` into `buf` at `off`. */
export function encodeValueInto<M extends ManagedMapName>(map: M, value: ValueOf<M>, buf: Uint8Array, off: number): void {
  (MANAGED_CODECS[map].value as Codec<ValueOf<M>>).encodeInto(value, buf as Buffer, off);
}

export function keySize(map: ManagedMapName): number {
  return (MANAGED_CODECS[map] as MapCodecs<unknown, unknown>).key.size;
}

export function valueSize(map: ManagedMapName): number {
  return (MANAGED_CODECS[map] as MapCodecs<unknown, unknown>).value.size;
}

/** An empty ByteTable for map `map`'s key and value sizes. */
export function byteTableFor(map: ManagedMapName, capacity = 0): ByteTable {
  return new ByteTable(keySize(map), valueSize(map), capacity);
}

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** Decodes key bytes of map `map`. */
export function decodeKey<M extends ManagedMapName>(map: M, bytes: Uint8Array, off = 0): KeyOf<M> {
  return (MANAGED_CODECS[map].key as Codec<KeyOf<M>>).decode(asBuffer(bytes), off);
}

/** Decodes value bytes of map `map`. */
export function decodeValue<M extends ManagedMapName>(map: M, bytes: Uint8Array, off = 0): ValueOf<M> {
  return (MANAGED_CODECS[map].value as Codec<ValueOf<M>>).decode(asBuffer(bytes), off);
}

/** Key bytes of `hex` in a scratch buffer (valid until the next call). */
function hexBytes(map: ManagedMapName, hex: string): Buffer {
  const n = keySize(map);
  if (hex.length !== 2 * n) return Buffer.alloc(0);
  hexScratch.write(hex, 0, n, 'hex');
  return hexScratch;
}
const hexScratch = Buffer.alloc(64);

/**
 * A table of map `map`, its entries encoded in a ByteTable (see the file
 * comment). Reads like a ReadonlyMap of entries by key hex, decoding each
 * entry read; `bytes` is the ByteTable itself, for the stages that work on
 * the encoded entries.
 */
export class PackedTable<M extends ManagedMapName> implements ReadonlyMap<string, Entry<KeyOf<M>, ValueOf<M>>> {
  readonly #bytes: ByteTable;

  constructor(
    readonly map: M,
    bytes: ByteTable = byteTableFor(map),
  ) {
    this.#bytes = bytes;
  }

  /** The encoded entries. */
  get bytes(): ByteTable {
    return this.#bytes;
  }

  get size(): number {
    return this.#bytes.size;
  }

  #slot(hex: string): number {
    const k = hexBytes(this.map, hex);
    return k.length === 0 ? -1 : this.#bytes.slotOf(k, 0);
  }

  has(hex: string): boolean {
    return this.#slot(hex) >= 0;
  }

  get(hex: string): Entry<KeyOf<M>, ValueOf<M>> | undefined {
    const slot = this.#slot(hex);
    return slot < 0 ? undefined : this.#entry(slot);
  }

  #entry(slot: number): Entry<KeyOf<M>, ValueOf<M>> {
    return { key: decodeKey(this.map, this.#bytes.keyAt(slot)), value: decodeValue(this.map, this.#bytes.valueAt(slot)) };
  }

  #hex(slot: number): string {
    return asBuffer(this.#bytes.keyAt(slot)).toString('hex');
  }

  *keys(): MapIterator<string> {
    const t = this.#bytes;
    for (let s = 0; s < t.slotCount; s++) if (t.isFull(s)) yield this.#hex(s);
  }

  *values(): MapIterator<Entry<KeyOf<M>, ValueOf<M>>> {
    const t = this.#bytes;
    for (let s = 0; s < t.slotCount; s++) if (t.isFull(s)) yield this.#entry(s);
  }

  *entries(): MapIterator<[string, Entry<KeyOf<M>, ValueOf<M>>]> {
    const t = this.#bytes;
    for (let s = 0; s < t.slotCount; s++) if (t.isFull(s)) yield [this.#hex(s), this.#entry(s)];
  }

  [Symbol.iterator](): MapIterator<[string, Entry<KeyOf<M>, ValueOf<M>>]> {
    return this.entries();
  }

  forEach(cb: (value: Entry<KeyOf<M>, ValueOf<M>>, key: string, map: ReadonlyMap<string, Entry<KeyOf<M>, ValueOf<M>>>) => void, thisArg?: unknown): void {
    for (const [hex, e] of this.entries()) cb.call(thisArg, e, hex, this);
  }

  /** Adds (or replaces) an entry given as objects. */
  set(hex: string, entry: Entry<KeyOf<M>, ValueOf<M>>): void {
    encodeValueInto(this.map, entry.value, scratch, 0);
    this.#bytes.set(hexBytes(this.map, hex), 0, scratch, 0);
  }

  delete(hex: string): boolean {
    const k = hexBytes(this.map, hex);
    return k.length !== 0 && this.#bytes.delete(k, 0);
  }

  clone(): PackedTable<M> {
    return new PackedTable(this.map, this.#bytes.clone());
  }
}

/** Any table of map `map`: a PackedTable, or a plain Map of entries. */
type AnyTable<M extends ManagedMapName> = EntryTable<KeyOf<M>, ValueOf<M>>;

/**
 * The encoded entries of any table: a PackedTable's own ByteTable (a copy when
 * `copy`), or a plain Map's entries encoded into a new one.
 */
export function bytesOf<M extends ManagedMapName>(table: AnyTable<M>, map: M, copy = false): ByteTable {
  if (table instanceof PackedTable) return copy ? (table as PackedTable<M>).bytes.clone() : (table as PackedTable<M>).bytes;
  const t = byteTableFor(map, table.size);
  const k = Buffer.alloc(keySize(map));
  const v = Buffer.alloc(valueSize(map));
  for (const e of table.values()) {
    encodeKeyInto(map, e.key, k, 0);
    encodeValueInto(map, e.value, v, 0);
    t.set(k, 0, v, 0);
  }
  return t;
}

/** A mutable table being filled; frozen into an EntryTable by returning it. */
export class TableBuilder<M extends ManagedMapName> {
  readonly entries: PackedTable<M>;
  readonly #key: Buffer;
  readonly #value: Buffer;
  constructor(readonly map: M) {
    this.entries = new PackedTable(map);
    this.#key = Buffer.alloc(keySize(map));
    this.#value = Buffer.alloc(valueSize(map));
  }

  /** Adds (or replaces) the entry under key. */
  set(key: KeyOf<M>, value: ValueOf<M>): void {
    encodeKeyInto(this.map, key, this.#key, 0);
    encodeValueInto(this.map, value, this.#value, 0);
    this.entries.bytes.set(this.#key, 0, this.#value, 0);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A DesiredMaps with every table empty. */
export function emptyMaps(): DesiredMaps {
  return {
    backends4: new PackedTable('backends4'),
    backends6: new PackedTable('backends6'),
    serviceSlots: new PackedTable('serviceSlots'),
    serviceNames: new PackedTable('serviceNames'),
    revnat4: new PackedTable('revnat4'),
    revnat6: new PackedTable('revnat6'),
    sourceRanges4: new PackedTable('sourceRanges4'),
    sourceRanges6: new PackedTable('sourceRanges6'),
    services4: new PackedTable('services4'),
    services6: new PackedTable('services6'),
  };
}

/** A table of map `map` from [key, value] pairs (later pairs win). */
export function tableOf<M extends ManagedMapName>(
  map: M,
  pairs: Iterable<readonly [KeyOf<M>, ValueOf<M>]>,
): EntryTable<KeyOf<M>, ValueOf<M>> {
  const b = new TableBuilder(map);
  for (const [k, v] of pairs) b.set(k, v);
  return b.entries;
}

/** Generic access to one table of a DesiredMaps. */
export function tableOfMaps<M extends ManagedMapName>(
  maps: DesiredMaps,
  map: M,
): EntryTable<KeyOf<M>, ValueOf<M>> {
  return maps[map] as unknown as EntryTable<KeyOf<M>, ValueOf<M>>;
}

/** Byte offset of a u8 field of a map's value (a field of every backend: state, proto). */
export function fieldOffset(map: ManagedMapName, field: string): number {
  const f = (MANAGED_CODECS[map] as MapCodecs<unknown, unknown>).value.fields.find((x) => x.name === field);
  if (f === undefined) throw new Error(`${map}: no field ${field}`);
  return f.offset;
}

const naturalOrder = new Intl.Collator('en', { numeric: true });

/** Every entry rendered one per line, sorted: `map key => value` (golden files, debugging). */
export function renderMaps(maps: DesiredMaps): string {
  const lines: string[] = [];
  for (const map of WRITE_ORDER) {
    const codecs = MANAGED_CODECS[map] as MapCodecs<unknown, unknown>;
    const rows = [...tableOfMaps(maps, map).values()].map(
      (e) => [codecs.key.format(e.key), codecs.value.format(e.value)] as const,
    );
    rows.sort(([a], [b]) => naturalOrder.compare(a, b));
    for (const [k, v] of rows) lines.push(`${map} ${k} => ${v}`);
  }
  return lines.join('\n') + '\n';
}

// ---- fast encoders for the entries a full compile writes by the 100,000 ----
//
// A service_slots entry and a backends4 value, written byte by byte instead
// of through the generic codec (field walks, closures, a dotted-quad parse per
// address): the compile of 100,000 backends spends most of its encoding time
// on these two. Each is used only while the codec's layout is the one it
// writes (checked here, at load, field by field); a layout that changes falls
// back to the codec, and test/unit/compile-fast-encode.test.ts compares both.

type FieldSpec = readonly [name: string, kind: string, offset: number];

function layoutIs(codec: Codec<unknown>, size: number, fields: readonly FieldSpec[]): boolean {
  return (
    codec.size === size &&
    codec.fields.length === fields.length &&
    fields.every(([name, kind, offset], i) => {
      const f = codec.fields[i];
      return f !== undefined && f.name === name && f.kind === kind && f.offset === offset;
    })
  );
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** service_slots entries can be written by writeSlotEntry (lb_slot_key {u32 service_id, u32 slot}, lb_slot {u32 backend_id}). */
export const FAST_SLOTS =
  LITTLE_ENDIAN &&
  layoutIs(lbSlotKey as Codec<unknown>, 8, [
    ['serviceId', 'u32', 0],
    ['slot', 'u32', 4],
  ]) &&
  layoutIs(lbSlot as Codec<unknown>, 4, [['backendId', 'u32', 0]]);

/** backends4 values can be written by writeBackend4Value. */
export const FAST_BACKEND4 =
  LITTLE_ENDIAN &&
  layoutIs(lb4Backend as Codec<unknown>, 16, [
    ['addr', 'ipv4', 0],
    ['nodeAddr', 'ipv4', 4],
    ['port', 'be16', 8],
    ['proto', 'u8', 10],
    ['state', 'u8', 11],
    ['flags', 'u8', 12],
    ['pad', 'pad', 13],
    ['zone', 'u16', 14],
  ]);

function u32le(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 255;
  buf[off + 1] = (v >>> 8) & 255;
  buf[off + 2] = (v >>> 16) & 255;
  buf[off + 3] = v >>> 24;
}

function u32be(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 255;
  buf[off + 2] = (v >>> 8) & 255;
  buf[off + 3] = v & 255;
}

const isU32 = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

/**
 * A service_slots key and value into `key` and `value` (FAST_SLOTS only);
 * false when a number is out of range (the caller encodes with the codec,
 * which says why).
 */
export function writeSlotEntry(serviceId: number, slot: number, backendId: number, key: Uint8Array, value: Uint8Array): boolean {
  if (!isU32(serviceId) || !isU32(slot) || !isU32(backendId)) return false;
  u32le(key, 0, serviceId);
  u32le(key, 4, slot);
  u32le(value, 0, backendId);
  return true;
}

/** A backends4 value (FAST_BACKEND4 only), addresses as numbers; false when a field is out of range. */
export function writeBackend4Value(
  addr: number,
  nodeAddr: number,
  port: number,
  proto: number,
  state: number,
  flags: number,
  zone: number,
  value: Uint8Array,
): boolean {
  const byte = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 255;
  const word = (v: number): boolean => Number.isInteger(v) && v >= 0 && v <= 0xffff;
  if (!isU32(addr) || !isU32(nodeAddr) || !word(port) || !byte(proto) || !byte(state) || !byte(flags) || !word(zone)) return false;
  u32be(value, 0, addr);
  u32be(value, 4, nodeAddr);
  value[8] = port >>> 8;
  value[9] = port & 255;
  value[10] = proto;
  value[11] = state;
  value[12] = flags;
  value[13] = 0;
  value[14] = zone & 255;
  value[15] = zone >>> 8;
  return true;
}
