// apply: a SyncPlan written into the maps, step by step in plan order, and
// readCurrent, the maps' content as a DesiredMaps (the previous state after a
// restart, or for a full reconcile that repairs what changed behind the
// agent's back).
//
// Each step goes through the map's batch operations in chunks; a chunk whose
// batch fails is redone one entry at a time, so one bad entry (a full map, a
// value the codec refuses) is reported with its map and key while every
// other entry of the step is still written. Per-entry failures are returned,
// never thrown.
//
// The maps are reached through ManagedMaps, the part of BpfMap apply uses:
// a Dataplane (dp.maps) fits as it is, unit tests pass in-memory fakes. A map
// with the raw batch operations (BpfMap) is written from the strings diff
// made (rawStepOf: key hex, value bytes) without encoding anything again, and
// read back into a PackedTable without decoding.
import type { CtEntry } from '../bpf/abi.js';
import { MANAGED_CODECS, PackedTable, byteTableFor, tableOf, type KeyOf, type MapCodecs, type ValueOf } from './entry-table.js';
import { rawStepOf, type PlanStep, type SyncPlan } from './diff.js';
import { WRITE_ORDER, type DesiredMaps, type ManagedMapName } from './types.js';

/** What apply and readCurrent need of a map (BpfMap has it all). */
export interface ManagedMap<K, V> {
  readonly name: string;
  entries(): Iterable<[K, V]>;
  update(key: K, value: V): void;
  /** false when the key was absent. */
  delete(key: K): boolean;
  batchUpdate(entries: readonly (readonly [K, V])[]): void;
  /** Absent keys are skipped; returns how many were deleted. */
  batchDelete(keys: readonly K[]): number;
  /** The raw forms, where the map has them: `count` encoded keys and values back to back. */
  batchUpdateRaw?(keys: Buffer, values: Buffer, count: number): void;
  batchDeleteRaw?(keys: Buffer, count: number): number;
  /** Every entry as chunks of [keys, values, count] encoded back to back. */
  rawEntries?(): Iterable<[Buffer, Buffer, number]>;
}

export type ManagedMaps = { readonly [M in ManagedMapName]: ManagedMap<KeyOf<M>, ValueOf<M>> };

/** Anything with the managed maps under `maps`: a Dataplane, or a test's fake. */
export interface MapTarget {
  readonly maps: ManagedMaps;
}

export interface ApplyFailure {
  readonly map: ManagedMapName;
  readonly op: PlanStep['op'];
  /** The key, rendered by its codec ('{serviceId: 3, slot: 1}'). */
  readonly key: string;
  /** Usually a BpfMapError (errno, full map); a CodecError for a value that cannot be encoded. */
  readonly error: Error;
}

export interface ApplyResult {
  /** Entries written (upserts and quarantines). */
  readonly written: number;
  /** Keys deleted (or already absent). */
  readonly deleted: number;
  readonly failures: readonly ApplyFailure[];
}

/** Entries per batch call: a failed batch costs at most this many single writes. */
export const APPLY_CHUNK = 4096;

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function renderKey(map: ManagedMapName, key: unknown): string {
  try {
    return (MANAGED_CODECS[map] as MapCodecs<unknown, unknown>).key.format(key);
  } catch {
    return String(key);
  }
}

/** The managed maps' content. */
export function readCurrent(target: MapTarget): DesiredMaps {
  const out: Record<string, unknown> = {};
  for (const map of WRITE_ORDER) {
    const m = target.maps[map] as ManagedMap<unknown, unknown>;
    if (m.rawEntries !== undefined) {
      const codecs = MANAGED_CODECS[map] as MapCodecs<unknown, unknown>;
      const ks = codecs.key.size;
      const vs = codecs.value.size;
      const bytes = byteTableFor(map);
      for (const [keys, values, n] of m.rawEntries()) for (let i = 0; i < n; i++) bytes.set(keys, i * ks, values, i * vs);
      out[map] = new PackedTable(map, bytes);
    } else {
      out[map] = tableOf(map, m.entries() as Iterable<[KeyOf<typeof map>, ValueOf<typeof map>]>);
    }
  }
  return out as unknown as DesiredMaps;
}

/** Applies every step in order; see the file comment for failures. */
export function applyPlan(target: MapTarget, plan: SyncPlan): ApplyResult {
  let written = 0;
  let deleted = 0;
  const failures: ApplyFailure[] = [];

  for (const step of plan.steps) {
    const m = target.maps[step.map] as ManagedMap<unknown, unknown>;
    const fail = (key: unknown, e: unknown): void => {
      failures.push({ map: step.map, op: step.op, key: renderKey(step.map, key), error: asError(e) });
    };
    const raw = rawStepOf(step);
    const codecs = MANAGED_CODECS[step.map] as MapCodecs<unknown, unknown>;

    if (step.op === 'delete') {
      const ks = codecs.key.size;
      const n = raw?.count ?? step.keys.length;
      for (let i = 0; i < n; i += APPLY_CHUNK) {
        const end = Math.min(n, i + APPLY_CHUNK);
        try {
          if (raw !== undefined && m.batchDeleteRaw !== undefined) m.batchDeleteRaw(raw.keys.subarray(i * ks, end * ks), end - i);
          else m.batchDelete((step.keys as readonly unknown[]).slice(i, end));
          deleted += end - i;
        } catch {
          for (const k of (step.keys as readonly unknown[]).slice(i, end)) {
            try {
              m.delete(k);
              deleted++;
            } catch (e: unknown) {
              fail(k, e);
            }
          }
        }
      }
      continue;
    }

    const values = raw?.values;
    const n = raw !== undefined && values !== undefined ? raw.count : step.entries.length;
    for (let i = 0; i < n; i += APPLY_CHUNK) {
      const end = Math.min(n, i + APPLY_CHUNK);
      try {
        if (raw !== undefined && values !== undefined && m.batchUpdateRaw !== undefined) {
          const ks = codecs.key.size;
          const vs = codecs.value.size;
          m.batchUpdateRaw(raw.keys.subarray(i * ks, end * ks), values.subarray(i * vs, end * vs), end - i);
        } else {
          const entries = step.entries as readonly { key: unknown; value: unknown }[];
          m.batchUpdate(entries.slice(i, end).map((e) => [e.key, e.value] as const));
        }
        written += end - i;
      } catch {
        // entries before the failing one may be written already: rewriting is harmless
        const entries = step.entries as readonly { key: unknown; value: unknown }[];
        for (const e of entries.slice(i, end)) {
          try {
            m.update(e.key, e.value);
            written++;
          } catch (err: unknown) {
            fail(e.key, err);
          }
        }
      }
    }
  }
  return { written, deleted, failures };
}

/** What ctBackendIds needs: the conntrack maps. */
export interface ConntrackTarget {
  readonly maps: {
    readonly ct4: { entries(): Iterable<[unknown, CtEntry]> };
    readonly ct6: { entries(): Iterable<[unknown, CtEntry]> };
  };
}

/**
 * The backend ids live conntrack entries use (for collectQuarantine). An
 * entry past its expiry is a miss for the datapath and does not count.
 * `nowNs`: CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns (default
 * process.hrtime.bigint(), which reads the same clock on Linux).
 */
export function ctBackendIds(target: ConntrackTarget, nowNs: bigint = process.hrtime.bigint()): Set<number> {
  const ids = new Set<number>();
  for (const ct of [target.maps.ct4, target.maps.ct6]) {
    for (const [, e] of ct.entries()) if (e.expires > nowNs) ids.add(e.backendId);
  }
  return ids;
}
