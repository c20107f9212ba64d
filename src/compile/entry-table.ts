// Entry tables: the codecs of every managed map, the canonical key of an
// entry (its encoded key bytes as hex) and the byte comparison of values.
// One place decides what "the same entry" means for compile, diff, apply and
// the restart recovery.
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

/** Room for the largest encoded key or value of a managed map (service_name's is 128 bytes). */
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

/** A mutable table being filled; frozen into an EntryTable by returning it. */
export class TableBuilder<M extends ManagedMapName> {
  readonly entries = new Map<string, Entry<KeyOf<M>, ValueOf<M>>>();
  constructor(readonly map: M) {}

  /** Adds (or replaces) the entry under key. */
  set(key: KeyOf<M>, value: ValueOf<M>): void {
    this.entries.set(keyHex(this.map, key), { key, value });
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A DesiredMaps with every table empty. */
export function emptyMaps(): DesiredMaps {
  return {
    backends4: new Map(),
    backends6: new Map(),
    serviceSlots: new Map(),
    serviceNames: new Map(),
    revnat4: new Map(),
    revnat6: new Map(),
    sourceRanges4: new Map(),
    sourceRanges6: new Map(),
    services4: new Map(),
    services6: new Map(),
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
