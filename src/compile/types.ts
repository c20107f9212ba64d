// The compile stage's contract: what the agent wants in the maps, as typed
// entries keyed by their canonical key string so two states diff by key.
// compile(model) → DesiredMaps → diff(previous, next) → SyncPlan → apply.
import type {
  Lb4Backend,
  Lb4Key,
  Lb4Revnat,
  Lb6Backend,
  Lb6Key,
  Lb6Revnat,
  LbService,
  LbSlot,
  LbSlotKey,
  ServiceName,
  Srange4Key,
  Srange6Key,
  SrangeEntry,
} from '../bpf/abi.js';

export interface Entry<K, V> {
  readonly key: K;
  readonly value: V;
}

/**
 * Entries by canonical key (the codec's encoded key as hex): stable,
 * comparable. The stages make PackedTables (entry-table.ts: the entries kept
 * encoded, decoded when read); any ReadonlyMap of entries is accepted.
 */
export type EntryTable<K, V> = ReadonlyMap<string, Entry<K, V>>;

/** Every map the agent owns. Conntrack, NAT, affinity and metrics belong to the datapath. */
export interface DesiredMaps {
  readonly backends4: EntryTable<number, Lb4Backend>;
  readonly backends6: EntryTable<number, Lb6Backend>;
  readonly serviceSlots: EntryTable<LbSlotKey, LbSlot>;
  /** Service id → its name, for `strait lb list` and bpftool with the agent stopped (never read by the datapath). */
  readonly serviceNames: EntryTable<number, ServiceName>;
  readonly revnat4: EntryTable<number, Lb4Revnat>;
  readonly revnat6: EntryTable<number, Lb6Revnat>;
  readonly sourceRanges4: EntryTable<Srange4Key, SrangeEntry>;
  readonly sourceRanges6: EntryTable<Srange6Key, SrangeEntry>;
  readonly services4: EntryTable<Lb4Key, LbService>;
  readonly services6: EntryTable<Lb6Key, LbService>;
}

export type ManagedMapName = keyof DesiredMaps;

/**
 * Hitless write order (DESIGN "Hitless updates"): everything a service entry
 * points at exists before the entry; deletions run in reverse afterwards.
 */
export const WRITE_ORDER: readonly ManagedMapName[] = [
  'backends4',
  'backends6',
  'serviceSlots',
  'serviceNames',
  'revnat4',
  'revnat6',
  'sourceRanges4',
  'sourceRanges6',
  'services4',
  'services6',
];
