// diff: what the maps hold (previous) vs what compile wants (next) → a plan of
// ordered steps (DESIGN "Hitless updates"):
//   1. upserts, in WRITE_ORDER: backends → slots → rev-NAT → source ranges →
//      service entries. Everything a service entry points at exists before
//      the entry; a shrinking Service's count drops (services upsert) before
//      the slots past it go (slots delete, step 3).
//   2. quarantine: backends that left every slot table, kept for their flows
//      (below), rewritten with BE_STATE_QUARANTINED.
//   3. deletes, in reverse WRITE_ORDER: nothing left points at what goes.
// Entries are compared by their encoded bytes: an unchanged entry is never
// written.
//
// Backends leaving (the ABI comment above BE_STATE_ACTIVE): a TCP or SCTP
// backend may still carry established connections (ct{4,6} entries hold its
// id), so it is not deleted but QUARANTINED: never selected, still resolved
// for its flows, as conntrack keeps them for kube-proxy. A UDP backend is
// deleted at once, so its flows choose again at their next packet (kube-proxy
// clears UDP conntrack). A quarantined backend stays through later diffs
// (absent from next, already quarantined: no step) until collectQuarantine
// finds no conntrack entry using it and deletes it; an endpoint that comes
// back revives it (same id, upserted ACTIVE).
import { BE_STATE_QUARANTINED, IPPROTO_SCTP, IPPROTO_TCP } from '../bpf/abi.js';
import { release, type ByteTable } from './byte-table.js';
import {
  DELETE_ORDER,
  PackedTable,
  bytesOf,
  decodeKey,
  decodeValue,
  encodeKeyInto,
  fieldOffset,
  keySize,
  tableOfMaps,
  valueSize,
  type KeyOf,
  type ValueOf,
} from './entry-table.js';
import type { BackendRef } from './ids.js';
import { WRITE_ORDER, type DesiredMaps, type Entry, type ManagedMapName } from './types.js';

export interface DiffOptions {
  /** Keep leaving TCP/SCTP backends QUARANTINED for their flows (else delete them at once). */
  readonly quarantineTcpBackends: boolean;
}

export type BackendMapName = 'backends4' | 'backends6';

/** Writes entries (op 'upsert', or 'quarantine' for backends kept for their flows). */
export interface WriteStep<M extends ManagedMapName> {
  readonly op: 'upsert' | 'quarantine';
  readonly map: M;
  readonly entries: readonly Entry<KeyOf<M>, ValueOf<M>>[];
}

export interface DeleteStep<M extends ManagedMapName> {
  readonly op: 'delete';
  readonly map: M;
  readonly keys: readonly KeyOf<M>[];
}

/** One map, one operation, many entries: applied as a batch. */
export type PlanStep = { [M in ManagedMapName]: WriteStep<M> | DeleteStep<M> }[ManagedMapName];

export interface StepCounts {
  readonly upserts: number;
  readonly deletes: number;
  readonly quarantined: number;
}

export interface SyncPlan {
  /** In apply order; never an empty step. */
  readonly steps: readonly PlanStep[];
  /** Per map, for the sync log line. */
  readonly counts: Readonly<Record<ManagedMapName, StepCounts>>;
  readonly total: StepCounts;
  /** What the maps hold once every step is applied: the previous of the next diff. */
  readonly after: DesiredMaps;
}

/**
 * A step's entries encoded: `count` keys back to back, and (upserts and
 * quarantines) their values, for apply to write without encoding them again.
 * Kept beside the step, not in it: a step copied and changed
 * (`{ ...step, entries }`) is applied as it reads.
 */
export interface RawStep {
  readonly count: number;
  readonly keys: Buffer;
  readonly values?: Buffer;
}

const RAW_STEPS = new WeakMap<PlanStep, RawStep>();

/** The encoded entries of a step diff made, if it is unchanged. */
export function rawStepOf(step: PlanStep): RawStep | undefined {
  return RAW_STEPS.get(step);
}

/** What a step builder holds before its first entry (never written: #room replaces it). */
const EMPTY = Buffer.alloc(0);

/** Entries (or keys) being collected for one step, encoded. */
class StepBuilder {
  count = 0;
  #keys: Buffer;
  #values: Buffer | undefined;
  constructor(
    readonly map: ManagedMapName,
    withValues: boolean,
    capacity = 0,
  ) {
    this.#keys = capacity > 0 ? Buffer.alloc(capacity * keySize(map)) : EMPTY;
    this.#values = withValues ? (capacity > 0 ? Buffer.alloc(capacity * valueSize(map)) : EMPTY) : undefined;
  }

  #room(): void {
    const ks = keySize(this.map);
    if ((this.count + 1) * ks <= this.#keys.length) return;
    const n = Math.max(16, this.count * 2);
    const keys = Buffer.alloc(n * ks);
    this.#keys.copy(keys, 0, 0, this.count * ks);
    if (this.#keys !== EMPTY) release(this.#keys);
    this.#keys = keys;
    if (this.#values !== undefined) {
      const values = Buffer.alloc(n * valueSize(this.map));
      this.#values.copy(values, 0, 0, this.count * valueSize(this.map));
      if (this.#values !== EMPTY) release(this.#values);
      this.#values = values;
    }
  }

  /** Adds the entry in `slot` of `table` (its key only, for a delete step). */
  add(table: ByteTable, slot: number): void {
    this.#room();
    table.copyKey(slot, this.#keys, this.count * keySize(this.map));
    if (this.#values !== undefined) table.copyValue(slot, this.#values, this.count * valueSize(this.map));
    this.count++;
  }

  /** The value of the entry added last (to change it before the step is built). */
  lastValue(): Buffer {
    const vs = valueSize(this.map);
    return (this.#values as Buffer).subarray((this.count - 1) * vs, this.count * vs);
  }

  step(op: PlanStep['op']): PlanStep {
    const map = this.map;
    const ks = keySize(map);
    const vs = valueSize(map);
    const count = this.count;
    const keys = this.#keys.subarray(0, count * ks);
    const values = this.#values?.subarray(0, count * vs);
    let decoded: unknown[] | undefined;
    const step =
      op === 'delete'
        ? {
            op,
            map,
            get keys(): unknown[] {
              return (decoded ??= Array.from({ length: count }, (_, i) => decodeKey(map, keys, i * ks)));
            },
          }
        : {
            op,
            map,
            get entries(): unknown[] {
              return (decoded ??= Array.from({ length: count }, (_, i) => ({
                key: decodeKey(map, keys, i * ks),
                value: decodeValue(map, values as Buffer, i * vs),
              })));
            },
          };
    RAW_STEPS.set(step as PlanStep, { count, keys, ...(values !== undefined ? { values } : {}) });
    return step as PlanStep;
  }
}

/**
 * Frees the encoded entries of a plan's write steps now (applied: the kernel
 * has them) instead of when the garbage collector gets to them — megabytes
 * after a full sync. The write steps cannot be read after; delete steps are
 * left as they are (the agent reads their keys after applying).
 */
export function releasePlan(plan: SyncPlan): void {
  for (const step of plan.steps) {
    if (step.op === 'delete') continue;
    const raw = RAW_STEPS.get(step);
    if (raw === undefined) continue;
    RAW_STEPS.delete(step);
    // the step's buffers are views of a builder's buffers of their own
    release(raw.keys);
    if (raw.values !== undefined) release(raw.values);
  }
}

/** TCP and SCTP: connection-oriented, their flows are worth keeping on a leaving backend. */
export function isStreamProto(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_SCTP;
}

function isBackendMap(map: ManagedMapName): map is BackendMapName {
  return map === 'backends4' || map === 'backends6';
}

/** Where state and proto sit in a backend value's bytes. */
const BACKEND_FIELDS: Readonly<Record<BackendMapName, { readonly state: number; readonly proto: number }>> = {
  backends4: { state: fieldOffset('backends4', 'state'), proto: fieldOffset('backends4', 'proto') },
  backends6: { state: fieldOffset('backends6', 'state'), proto: fieldOffset('backends6', 'proto') },
};

const ZERO: StepCounts = { upserts: 0, deletes: 0, quarantined: 0 };

function zeroCounts(): Record<ManagedMapName, StepCounts> {
  return Object.fromEntries(WRITE_ORDER.map((m) => [m, ZERO])) as Record<ManagedMapName, StepCounts>;
}

function totalOf(counts: Readonly<Record<ManagedMapName, StepCounts>>): StepCounts {
  let upserts = 0;
  let deletes = 0;
  let quarantined = 0;
  for (const c of Object.values(counts)) {
    upserts += c.upserts;
    deletes += c.deletes;
    quarantined += c.quarantined;
  }
  return { upserts, deletes, quarantined };
}

interface MapDiff {
  readonly upserts: StepBuilder;
  readonly quarantine: StepBuilder;
  readonly deletes: StepBuilder;
  readonly after: unknown;
}

/** Entries are compared by their encoded bytes. */
function diffMap<M extends ManagedMapName>(map: M, previous: DesiredMaps, next: DesiredMaps, opts: DiffOptions): MapDiff {
  const nextTable = tableOfMaps(next, map);
  const prev = bytesOf(tableOfMaps(previous, map), map);
  const nxt = bytesOf(nextTable, map);
  // nothing in the maps yet (a cold start): every entry is an upsert, and the step is sized at once
  const upserts = new StepBuilder(map, true, prev.size === 0 ? nxt.size : 0);
  const quarantine = new StepBuilder(map, true);
  const deletes = new StepBuilder(map, false);
  let kept: ByteTable | undefined;

  const prevEmpty = prev.size === 0;
  for (let s = 0, n = nxt.slotCount; s < n; s++) {
    if (!nxt.isFull(s)) continue;
    if (!prevEmpty) {
      const p = prev.slotOfFrom(nxt, s);
      if (p >= 0 && prev.sameValue(p, nxt, s)) continue;
    }
    upserts.add(nxt, s);
  }
  const at = isBackendMap(map) ? BACKEND_FIELDS[map] : undefined;
  for (let s = 0, n = prev.slotCount; s < n; s++) {
    if (!prev.isFull(s) || nxt.slotOfFrom(prev, s) >= 0) continue;
    if (at !== undefined && opts.quarantineTcpBackends && isStreamProto(prev.valueByte(s, at.proto))) {
      // kept for its flows: quarantined (once), and still in the maps after
      kept ??= nxt.clone();
      if (prev.valueByte(s, at.state) !== BE_STATE_QUARANTINED) {
        quarantine.add(prev, s);
        quarantine.lastValue()[at.state] = BE_STATE_QUARANTINED;
        kept.set(prev.keyAt(s), 0, quarantine.lastValue(), 0);
      } else {
        kept.setFrom(prev, s);
      }
      continue;
    }
    deletes.add(prev, s);
  }
  return { upserts, quarantine, deletes, after: kept === undefined ? nextTable : new PackedTable(map, kept) };
}

/** The plan that takes the maps from previous to next (see the file comment). */
export function diff(previous: DesiredMaps, next: DesiredMaps, opts: DiffOptions): SyncPlan {
  const diffs = new Map<ManagedMapName, MapDiff>();
  for (const map of WRITE_ORDER) diffs.set(map, diffMap(map, previous, next, opts));
  const get = (map: ManagedMapName): MapDiff => diffs.get(map) as MapDiff;

  const steps: PlanStep[] = [];
  for (const map of WRITE_ORDER) {
    const d = get(map).upserts;
    if (d.count > 0) steps.push(d.step('upsert'));
  }
  for (const map of WRITE_ORDER) {
    const d = get(map).quarantine;
    if (d.count > 0) steps.push(d.step('quarantine'));
  }
  for (const map of DELETE_ORDER) {
    const d = get(map).deletes;
    if (d.count > 0) steps.push(d.step('delete'));
  }

  const counts = zeroCounts();
  const after: Record<string, unknown> = {};
  for (const map of WRITE_ORDER) {
    const d = get(map);
    counts[map] = { upserts: d.upserts.count, deletes: d.deletes.count, quarantined: d.quarantine.count };
    after[map] = d.after;
  }
  return { steps, counts, total: totalOf(counts), after: after as unknown as DesiredMaps };
}

/** Nothing to write or delete. */
export function isEmptyPlan(plan: SyncPlan): boolean {
  return plan.steps.length === 0;
}

/**
 * The backends compile must keep ids for (its `quarantine` option): those
 * quarantined in `current`, and — with quarantineTcpBackends — every TCP/SCTP
 * backend of `current`, which this sync's diff quarantines if the model drops
 * it. Holding them from the start means no new backend takes the id of one
 * whose connections are still running.
 */
export function heldBackends(current: DesiredMaps, opts: DiffOptions): ReadonlyMap<number, BackendRef> {
  const out = new Map<number, BackendRef>();
  for (const map of ['backends4', 'backends6'] as const) {
    const t = bytesOf(current[map], map);
    const at = BACKEND_FIELDS[map];
    for (let s = 0; s < t.slotCount; s++) {
      if (!t.isFull(s) || !isHeldAt(t, s, at, opts)) continue;
      const value = decodeValue(map, t.valueAt(s));
      out.set(decodeKey(map, t.keyAt(s)), { addr: value.addr, port: value.port, proto: value.proto });
    }
  }
  return out;
}

const ID_KEY = Buffer.alloc(4);

/** One backend of heldBackends: its ref when `current` holds it and keeps it for its flows. */
export function heldBackend(current: DesiredMaps, id: number, opts: DiffOptions): BackendRef | undefined {
  encodeKeyInto('backends4', id, ID_KEY, 0);
  for (const map of ['backends4', 'backends6'] as const) {
    const t = bytesOf(current[map], map);
    const s = t.slotOf(ID_KEY, 0);
    if (s < 0) continue;
    if (!isHeldAt(t, s, BACKEND_FIELDS[map], opts)) return undefined;
    const value = decodeValue(map, t.valueAt(s));
    return { addr: value.addr, port: value.port, proto: value.proto };
  }
  return undefined;
}

function isHeldAt(t: ByteTable, slot: number, at: { readonly state: number; readonly proto: number }, opts: DiffOptions): boolean {
  return t.valueByte(slot, at.state) === BE_STATE_QUARANTINED || (opts.quarantineTcpBackends && isStreamProto(t.valueByte(slot, at.proto)));
}

/**
 * Deletes the quarantined backends of `current` that no conntrack entry uses
 * any more. `ctBackendIds`: the backend ids of the live ct{4,6} entries
 * (apply.ts ctBackendIds). Run it after a sync's plan is applied, with
 * plan.after as `current`; the next compile then releases their ids.
 */
export function collectQuarantine(ctBackendIds: ReadonlySet<number>, current: DesiredMaps): SyncPlan {
  const counts = zeroCounts();
  const steps: PlanStep[] = [];
  const after: Record<string, unknown> = { ...current };
  for (const map of ['backends6', 'backends4'] as const) {
    const t = bytesOf(current[map], map);
    const at = BACKEND_FIELDS[map];
    const gone = new StepBuilder(map, false);
    for (let s = 0; s < t.slotCount; s++) {
      if (!t.isFull(s) || t.valueByte(s, at.state) !== BE_STATE_QUARANTINED) continue;
      if (ctBackendIds.has(decodeKey(map, t.keyAt(s)))) continue;
      gone.add(t, s);
    }
    if (gone.count === 0) continue;
    const step = gone.step('delete');
    const rest = t.clone();
    const raw = rawStepOf(step) as RawStep;
    const ks = keySize(map);
    for (let i = 0; i < raw.count; i++) rest.delete(raw.keys, i * ks);
    steps.push(step);
    counts[map] = { ...ZERO, deletes: gone.count };
    after[map] = new PackedTable(map, rest);
  }
  return { steps, counts, total: totalOf(counts), after: after as unknown as DesiredMaps };
}

/**
 * `state` after a plan that covered only some keys (an incremental sync's:
 * diff(previous, next) over the keys of the Services that changed): each key
 * of `previous` or `after` (the plan's) takes after's entry, or goes. In
 * place: the tables of `state` must be PackedTables (diff's `after`,
 * readCurrent, emptyMaps and collectQuarantine make them) or Maps its owner
 * may change.
 */
export function patchMaps(state: DesiredMaps, previous: DesiredMaps, after: DesiredMaps): DesiredMaps {
  for (const map of WRITE_ORDER) {
    const table = tableOfMaps(state, map);
    const done = bytesOf(tableOfMaps(after, map), map);
    const before = bytesOf(tableOfMaps(previous, map), map);
    if (table instanceof PackedTable) {
      const t = (table as PackedTable<typeof map>).bytes;
      for (let s = 0; s < before.slotCount; s++) if (before.isFull(s) && done.slotOfFrom(before, s) < 0) t.deleteFrom(before, s);
      for (let s = 0; s < done.slotCount; s++) if (done.isFull(s)) t.setFrom(done, s);
      continue;
    }
    // a Map of entries (a caller's own)
    const m = table as Map<string, Entry<KeyOf<typeof map>, ValueOf<typeof map>>>;
    const hex = (t: ByteTable, s: number): string => Buffer.from(t.keyAt(s)).toString('hex');
    for (let s = 0; s < before.slotCount; s++) if (before.isFull(s) && done.slotOfFrom(before, s) < 0) m.delete(hex(before, s));
    for (let s = 0; s < done.slotCount; s++) {
      if (done.isFull(s)) m.set(hex(done, s), { key: decodeKey(map, done.keyAt(s)), value: decodeValue(map, done.valueAt(s)) });
    }
  }
  return state;
}
