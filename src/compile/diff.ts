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
import {
  DELETE_ORDER,
  keyHex,
  sameValue,
  tableOfMaps,
  type KeyOf,
  type ValueOf,
} from './entry-table.js';
import type { BackendRef } from './ids.js';
import { WRITE_ORDER, type DesiredMaps, type Entry, type EntryTable, type ManagedMapName } from './types.js';

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

/** TCP and SCTP: connection-oriented, their flows are worth keeping on a leaving backend. */
export function isStreamProto(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_SCTP;
}

function isBackendMap(map: ManagedMapName): map is BackendMapName {
  return map === 'backends4' || map === 'backends6';
}

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

interface MapDiff<M extends ManagedMapName> {
  upserts: Entry<KeyOf<M>, ValueOf<M>>[];
  quarantine: Entry<KeyOf<M>, ValueOf<M>>[];
  deletes: KeyOf<M>[];
  after: EntryTable<KeyOf<M>, ValueOf<M>>;
}

function diffMap<M extends ManagedMapName>(
  map: M,
  previous: DesiredMaps,
  next: DesiredMaps,
  opts: DiffOptions,
): MapDiff<M> {
  const prev = tableOfMaps(previous, map);
  const nxt = tableOfMaps(next, map);
  const upserts: Entry<KeyOf<M>, ValueOf<M>>[] = [];
  const quarantine: Entry<KeyOf<M>, ValueOf<M>>[] = [];
  const deletes: KeyOf<M>[] = [];
  let kept: Map<string, Entry<KeyOf<M>, ValueOf<M>>> | undefined;

  for (const [k, e] of nxt) {
    const p = prev.get(k);
    if (p === undefined || (p !== e && !sameValue(map, p.value, e.value))) upserts.push(e);
  }
  for (const [k, e] of prev) {
    if (nxt.has(k)) continue;
    if (isBackendMap(map) && opts.quarantineTcpBackends) {
      const be = e.value as ValueOf<BackendMapName>;
      if (isStreamProto(be.proto)) {
        let stays = e;
        if (be.state !== BE_STATE_QUARANTINED) {
          stays = { key: e.key, value: { ...be, state: BE_STATE_QUARANTINED } as ValueOf<M> };
          quarantine.push(stays);
        }
        (kept ??= new Map(nxt)).set(k, stays);
        continue;
      }
    }
    deletes.push(e.key);
  }
  return { upserts, quarantine, deletes, after: kept ?? nxt };
}

/** The plan that takes the maps from previous to next (see the file comment). */
export function diff(previous: DesiredMaps, next: DesiredMaps, opts: DiffOptions): SyncPlan {
  const diffs = new Map<ManagedMapName, MapDiff<ManagedMapName>>();
  for (const map of WRITE_ORDER) diffs.set(map, diffMap(map, previous, next, opts));
  const get = (map: ManagedMapName): MapDiff<ManagedMapName> => diffs.get(map) as MapDiff<ManagedMapName>;

  const steps: PlanStep[] = [];
  for (const map of WRITE_ORDER) {
    const d = get(map);
    if (d.upserts.length > 0) steps.push({ op: 'upsert', map, entries: d.upserts } as PlanStep);
  }
  for (const map of WRITE_ORDER) {
    const d = get(map);
    if (d.quarantine.length > 0) steps.push({ op: 'quarantine', map, entries: d.quarantine } as PlanStep);
  }
  for (const map of DELETE_ORDER) {
    const d = get(map);
    if (d.deletes.length > 0) steps.push({ op: 'delete', map, keys: d.deletes } as PlanStep);
  }

  const counts = zeroCounts();
  const after: Record<string, unknown> = {};
  for (const map of WRITE_ORDER) {
    const d = get(map);
    counts[map] = { upserts: d.upserts.length, deletes: d.deletes.length, quarantined: d.quarantine.length };
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
  for (const table of [current.backends4, current.backends6] as const) {
    for (const { key, value } of table.values()) {
      if (isHeld(value, opts)) out.set(key, { addr: value.addr, port: value.port, proto: value.proto });
    }
  }
  return out;
}

/** One backend of heldBackends: its ref when `current` holds it and keeps it for its flows. */
export function heldBackend(current: DesiredMaps, id: number, opts: DiffOptions): BackendRef | undefined {
  const hex = keyHex('backends4', id);
  const e = current.backends4.get(hex) ?? current.backends6.get(hex);
  if (e === undefined || !isHeld(e.value, opts)) return undefined;
  return { addr: e.value.addr, port: e.value.port, proto: e.value.proto };
}

function isHeld(value: ValueOf<BackendMapName>, opts: DiffOptions): boolean {
  return value.state === BE_STATE_QUARANTINED || (opts.quarantineTcpBackends && isStreamProto(value.proto));
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
    const table = current[map] as EntryTable<number, ValueOf<BackendMapName>>;
    const keys: number[] = [];
    let rest: Map<string, Entry<number, ValueOf<BackendMapName>>> | undefined;
    for (const [k, e] of table) {
      if (e.value.state !== BE_STATE_QUARANTINED || ctBackendIds.has(e.key)) continue;
      keys.push(e.key);
      (rest ??= new Map(table)).delete(k);
    }
    if (keys.length === 0) continue;
    steps.push({ op: 'delete', map, keys });
    counts[map] = { ...ZERO, deletes: keys.length };
    after[map] = rest;
  }
  return { steps, counts, total: totalOf(counts), after: after as unknown as DesiredMaps };
}

/**
 * `state` after a plan that covered only some keys (an incremental sync's:
 * diff(previous, next) over the keys of the Services that changed): each key
 * of `previous` or `after` (the plan's) takes after's entry, or goes. In
 * place: the tables of `state` must be Maps its owner may change, as those of
 * diff's `after`, readCurrent and collectQuarantine are.
 */
export function patchMaps(state: DesiredMaps, previous: DesiredMaps, after: DesiredMaps): DesiredMaps {
  for (const map of WRITE_ORDER) {
    const table = tableOfMaps(state, map) as Map<string, Entry<KeyOf<typeof map>, ValueOf<typeof map>>>;
    const done = tableOfMaps(after, map);
    for (const k of tableOfMaps(previous, map).keys()) if (!done.has(k)) table.delete(k);
    for (const [k, e] of done) table.set(k, e);
  }
  return state;
}
