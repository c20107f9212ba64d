// The ids compile hands out, remembered between syncs and recovered from the
// pinned maps after a restart, so that an unchanged Service compiles to the
// same bytes it compiled to before (nothing rewritten, no flow moved).
//
//  - service id: one per (Service port, family, endpoint set 'cluster' |
//    'local'). Every frontend of the port that sends a scope to the same set
//    shares it, and with it the slot table and the affinity entries.
//  - rev-NAT id: one per frontend (address, port, protocol): replies are
//    rewritten to the frontend the client used.
//  - backend id: one per (address, port, protocol), shared by every Service
//    port that uses the endpoint.
//  - zone id: one per zone name (u16, 0 = none).
// Ids start at 1 (0 is never used: it means "none" in the maps) and a new key
// takes the lowest free id. Ids a sync no longer references are released at
// the end of that sync (endSync), so they are reused at the earliest by the
// next one, after the plan that stopped using them has been applied. Backend
// ids compile is told to hold (quarantined backends: diff.ts heldBackends)
// are not released while the maps keep them, so no new backend inherits the
// connections of a quarantined one.
//
// Slot orders: the registry also remembers each service id's slot table, so
// a changed endpoint set moves as few slots as possible (arrangeSlots).
import { canonicalIP, ipv4Value } from '../model/ip.js';
import { ByteTable, release } from './byte-table.js';
import type { IPFamily } from '../model/types.js';
import type { DesiredMaps } from './types.js';

const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;

/** Which endpoint set of a Service port a service id selects from. */
export type EndpointSet = 'cluster' | 'local';

/** A backend's identity: its address (any spelling), port and IP protocol number. */
export interface BackendRef {
  readonly addr: string;
  readonly port: number;
  readonly proto: number;
}

/**
 * An address as registry keys hold it: IPv4 as given (the model and the codecs
 * both write canonical dotted quads: no parse on the hot path), IPv6 in the
 * model's canonical form (codecs print IPv4-embedded tails differently).
 */
function addrKey(addr: string): string {
  return addr.includes(':') ? (canonicalIP(addr) ?? addr) : addr;
}

/** The registry key of a backend (its text form; the registry itself uses registryKey). */
export function backendKey(b: BackendRef): string {
  return `${addrKey(b.addr)}|${b.port}|${b.proto}`;
}

/** The registry key of a frontend (rev-NAT ids). */
export function frontendKey(addr: string, port: number, proto: number): string {
  return `${addrKey(addr)}|${port}|${proto}`;
}

/** The registry key of a service id. */
export function serviceKey(portName: string, family: IPFamily, set: EndpointSet): string {
  return `${portName}|${family}|${set}`;
}

/** A key of an id space: a number where one fits (cheap to hash, no string kept), else text. */
type IdKey = string | number;

function dottedQuad(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** IPPROTO_{TCP,UDP,SCTP} → 1..3, for numeric keys; 0 for others. */
function protoIndex(proto: number): number {
  return proto === 6 ? 1 : proto === 17 ? 2 : proto === 132 ? 3 : 0;
}

/**
 * The key an (address, port, protocol) has in the backend and rev-NAT id
 * spaces. IPv4 with TCP/UDP/SCTP (nearly every key) is a number below 2^50:
 * hashing it costs a fraction of a string's, and no string is kept per id;
 * anything else is its text form (frontendKey/backendKey), which never equals
 * a number.
 */
function endpointKey(addr: string, port: number, proto: number): IdKey {
  const text = addrKey(addr); // an IPv4-mapped IPv6 address is its IPv4 address
  const p = protoIndex(proto);
  if (p !== 0 && port >= 0 && port <= 0xffff && Number.isInteger(port)) {
    const a = ipv4Value(text);
    if (a >= 0) return (a * 65536 + port) * 4 + p;
  }
  return `${text}|${port}|${proto}`;
}

/**
 * Free ids as disjoint ranges in a min-heap ordered by their low end: the
 * lowest free id in O(log n), and no memory for a huge id a corrupt map
 * might hold.
 */
class IdPool {
  private readonly heap: [number, number][] = [];

  constructor(max: number, taken: readonly number[] = []) {
    let lo = 1;
    for (const id of [...new Set(taken)].sort((a, b) => a - b)) {
      if (id < lo || id > max) continue;
      if (id > lo) this.heap.push([lo, id - 1]);
      lo = id + 1;
    }
    if (lo <= max) this.heap.push([lo, max]);
    // ascending ranges already form a valid min-heap
  }

  /** The lowest free id, now taken. */
  take(): number | undefined {
    const top = this.heap[0];
    if (top === undefined) return undefined;
    const id = top[0];
    if (top[0] < top[1]) top[0]++;
    else this.pop();
    return id;
  }

  /** Takes a given id if free; false when it was not free. O(n): rare paths only. */
  takeSpecific(id: number): boolean {
    const i = this.heap.findIndex(([lo, hi]) => lo <= id && id <= hi);
    const range = this.heap[i];
    if (range === undefined) return false;
    const [lo, hi] = range;
    this.removeAt(i);
    if (lo < id) this.push([lo, id - 1]);
    if (id < hi) this.push([id + 1, hi]);
    return true;
  }

  release(id: number): void {
    this.push([id, id]);
  }

  private push(r: [number, number]): void {
    const h = this.heap;
    h.push(r);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as [number, number])[0] <= r[0]) break;
      h[i] = h[p] as [number, number];
      i = p;
    }
    h[i] = r;
  }

  private pop(): void {
    this.removeAt(0);
  }

  private removeAt(i: number): void {
    const h = this.heap;
    const last = h.pop();
    if (last === undefined || i >= h.length) return;
    h[i] = last;
    // sift down, then up (removeAt from the middle)
    let j = i;
    for (;;) {
      const l = 2 * j + 1;
      const r = l + 1;
      let m = j;
      if (l < h.length && (h[l] as [number, number])[0] < (h[m] as [number, number])[0]) m = l;
      if (r < h.length && (h[r] as [number, number])[0] < (h[m] as [number, number])[0]) m = r;
      if (m === j) break;
      [h[j], h[m]] = [h[m] as [number, number], h[j] as [number, number]];
      j = m;
    }
    while (j > 0) {
      const p = (j - 1) >> 1;
      if ((h[p] as [number, number])[0] <= (h[j] as [number, number])[0]) break;
      [h[j], h[p]] = [h[p] as [number, number], h[j] as [number, number]];
      j = p;
    }
  }
}

/** Ids below this are kept in typed arrays indexed by id; larger ones (a corrupt map's) in maps. */
const DENSE_IDS = 1 << 22;

/** A growable Float64Array / Uint32Array indexed by id (below DENSE_IDS). */
function grown<T extends Float64Array | Uint32Array>(a: T, index: number, make: (n: number) => T, fill: number): T {
  if (index < a.length) return a;
  let n = Math.max(a.length, 1024);
  while (n <= index) n *= 2;
  const b = make(Math.min(n, DENSE_IDS));
  b.fill(fill);
  b.set(a);
  release(a);
  return b;
}

/**
 * One id space: key ↔ id bindings, ids reserved without a key (recovered
 * from the maps and not claimed yet, or held for quarantined backends), and
 * which of them the current sync used (a sync number per bound id: marking
 * one used costs no set operation).
 *
 * Memory: numeric keys (nearly all: IPv4 backends and frontends) are looked
 * up in a ByteTable and kept per id in a Float64Array, the sync numbers in a
 * Uint32Array: typed arrays outside the JS heap, no object per binding. Text
 * keys use a Map.
 */
class IdSpace {
  /** Numeric key (its 8 bytes as a double) → id (u32). */
  private readonly byNumber = new ByteTable(8, 4);
  private readonly byText = new Map<string, number>();
  /** id → numeric key (NaN: none, or a text key) and → the last sync that used it, for ids below DENSE_IDS. */
  private numberOfId = new Float64Array(0);
  private syncOfId = new Uint32Array(0);
  /** id → text key (any id), and the keys and sync numbers of ids from DENSE_IDS on. */
  private readonly textOfId = new Map<number, string>();
  private readonly farKey = new Map<number, IdKey>();
  private readonly farSync = new Map<number, number>();
  private bound = 0;
  /** Highest id ever bound below DENSE_IDS (the dense arrays' used length). */
  private maxDense = 0;
  /** Taken ids without a key → the last sync that held them (0: recovered, not held yet). */
  private readonly reserved = new Map<number, number>();
  private sync = 1;
  private pool: IdPool;
  /** Scratch: a numeric key's bytes, and an id's. */
  private readonly keyNumber = new Float64Array(1);
  private readonly keyBytes = new Uint8Array(this.keyNumber.buffer);
  private readonly idBytes = new Uint8Array(4);

  constructor(
    readonly what: string,
    private readonly max: number,
  ) {
    this.pool = new IdPool(max);
  }

  /** Recovery: builds the pool once every binding and reservation is known. */
  seal(): void {
    this.pool = new IdPool(this.max, [...this.boundIds(), ...this.reserved.keys()]);
  }

  /** Every bound id. */
  private boundIds(): number[] {
    const out: number[] = [];
    for (let id = 1; id <= this.maxDense; id++) if (this.keyOf(id) !== undefined) out.push(id);
    for (const id of this.farKey.keys()) out.push(id);
    return out;
  }

  private keyOf(id: number): IdKey | undefined {
    if (id >= DENSE_IDS) return this.farKey.get(id);
    const n = id < this.numberOfId.length ? (this.numberOfId[id] as number) : NaN;
    return Number.isNaN(n) ? this.textOfId.get(id) : n;
  }

  private isBound(id: number): boolean {
    return this.keyOf(id) !== undefined;
  }

  private markUsed(id: number, sync: number): void {
    if (id < DENSE_IDS) this.syncOfId[id] = sync;
    else this.farSync.set(id, sync);
  }

  private lastUsed(id: number): number {
    return (id < DENSE_IDS ? this.syncOfId[id] : this.farSync.get(id)) ?? 0;
  }

  private lookup(key: IdKey): number | undefined {
    if (typeof key === 'string') return this.byText.get(key);
    this.keyNumber[0] = key;
    const slot = this.byNumber.slotOf(this.keyBytes, 0);
    return slot < 0 ? undefined : this.byNumber.valueU32(slot);
  }

  private bind(key: IdKey, id: number, sync: number): void {
    this.bound++;
    if (typeof key === 'string') this.byText.set(key, id);
    else {
      this.keyNumber[0] = key;
      const b = this.idBytes; // little-endian, as valueU32 reads it
      b[0] = id & 255;
      b[1] = (id >>> 8) & 255;
      b[2] = (id >>> 16) & 255;
      b[3] = id >>> 24;
      this.byNumber.set(this.keyBytes, 0, b, 0);
    }
    if (id >= DENSE_IDS) {
      this.farKey.set(id, key);
      this.farSync.set(id, sync);
      return;
    }
    this.numberOfId = grown(this.numberOfId, id, (n) => new Float64Array(n), NaN);
    this.syncOfId = grown(this.syncOfId, id, (n) => new Uint32Array(n), 0);
    this.maxDense = Math.max(this.maxDense, id);
    if (typeof key === 'string') {
      this.numberOfId[id] = NaN;
      this.textOfId.set(id, key);
    } else this.numberOfId[id] = key;
    this.syncOfId[id] = sync;
  }

  private unbind(id: number, key: IdKey): void {
    this.bound--;
    if (typeof key === 'string') {
      this.byText.delete(key);
      this.textOfId.delete(id);
    } else {
      this.keyNumber[0] = key;
      this.byNumber.delete(this.keyBytes, 0);
    }
    if (id >= DENSE_IDS) {
      this.farKey.delete(id);
      this.farSync.delete(id);
    } else {
      this.numberOfId[id] = NaN;
      this.syncOfId[id] = 0;
    }
  }

  /** The key bound to id, if any. */
  keyOfId(id: number): IdKey | undefined {
    return this.keyOf(id);
  }

  /** Room for about `n` numeric keys and ids without growing (a first full compile's). */
  reserve(n: number): void {
    this.byNumber.reserve(n);
    if (n > 0 && n < DENSE_IDS) {
      this.numberOfId = grown(this.numberOfId, n, (k) => new Float64Array(k), NaN);
      this.syncOfId = grown(this.syncOfId, n, (k) => new Uint32Array(k), 0);
    }
  }

  /** Recovery: key → id, unless either is taken already. */
  recoverBinding(key: IdKey, id: number): boolean {
    if (id < 1 || id > this.max || this.lookup(key) !== undefined || this.isBound(id)) return false;
    this.reserved.delete(id);
    this.bind(key, id, 0);
    return true;
  }

  /** Recovery: the id is in use in the maps; keep it from new keys until a sync claims or drops it. */
  recoverReserved(id: number): void {
    if (id < 1 || id > this.max || this.isBound(id) || this.reserved.has(id)) return;
    this.reserved.set(id, 0);
  }

  get(key: IdKey): number | undefined {
    return this.lookup(key);
  }

  /** The id of key, used by this sync: its own, else a reserved candidate, else the lowest free. */
  idFor(key: IdKey, candidate?: (isReserved: (id: number) => boolean) => number | undefined): number {
    const bound = this.lookup(key);
    if (bound !== undefined) {
      this.markUsed(bound, this.sync);
      return bound;
    }
    let id: number | undefined;
    const c = candidate?.((n) => this.reserved.has(n));
    if (c !== undefined && this.reserved.delete(c)) {
      id = c;
    } else {
      id = this.pool.take();
      if (id === undefined) throw new RangeError(`no free ${this.what} id (max ${this.max})`);
    }
    this.bind(key, id, this.sync);
    return id;
  }

  /** Marks a bound id used by this sync; false when nothing is bound to it. */
  use(id: number): boolean {
    if (!this.isBound(id)) return false;
    this.markUsed(id, this.sync);
    return true;
  }

  /**
   * Keeps id through this sync (a quarantined backend): bound to key when
   * both are free, else reserved without a key.
   */
  hold(id: number, key: IdKey): void {
    if (id < 1 || id > this.max) return;
    if (this.isBound(id)) {
      this.markUsed(id, this.sync);
      return;
    }
    const reserved = this.reserved.has(id);
    if (!reserved && !this.pool.takeSpecific(id)) return;
    if (this.lookup(key) !== undefined) {
      this.reserved.set(id, this.sync);
    } else {
      this.reserved.delete(id);
      this.bind(key, id, this.sync);
    }
  }

  /**
   * Releases every id this sync did not use — of `only` when given (an
   * incremental sync, which used only some keys: the ids it may have stopped
   * using) — and returns them.
   */
  endSync(only?: Iterable<number>): number[] {
    const released: number[] = [];
    const release = (id: number): void => {
      const key = this.keyOf(id);
      if (key !== undefined) {
        if (this.lastUsed(id) === this.sync) return;
        this.unbind(id, key);
        released.push(id);
        return;
      }
      const sync = this.reserved.get(id);
      if (sync === undefined || sync === this.sync) return;
      this.reserved.delete(id);
      released.push(id);
    };
    if (only !== undefined) for (const id of only) release(id);
    else for (const id of [...this.boundIds(), ...this.reserved.keys()]) release(id);
    for (const id of released) this.pool.release(id);
    this.sync++;
    return released;
  }

  get size(): number {
    return this.bound;
  }

  get reservedCount(): number {
    return this.reserved.size;
  }
}

/** The ids an incremental sync may have stopped using, per id space (IdRegistry.endSync). */
export interface IdCandidates {
  readonly services: Iterable<number>;
  readonly revNats: Iterable<number>;
  readonly backends: Iterable<number>;
  readonly zones: Iterable<number>;
}

/** No id twice (a small list is checked pairwise, a large one with a set). */
function distinct(ids: readonly number[]): boolean {
  if (ids.length > 32) return new Set(ids).size === ids.length;
  for (let i = 1; i < ids.length; i++) for (let j = 0; j < i; j++) if (ids[i] === ids[j]) return false;
  return true;
}

/** A slot position whose backend left (filled by arrangeSlots). */
const HOLE = 0;

export interface IdRegistryStats {
  readonly services: number;
  readonly revNats: number;
  readonly backends: number;
  readonly zones: number;
  /** Ids kept without a key: recovered and not yet claimed, or held for quarantined backends. */
  readonly reserved: number;
}

export class IdRegistry {
  private readonly services = new IdSpace('service', U32_MAX);
  private readonly revNats = new IdSpace('rev-NAT', U32_MAX);
  private readonly backends = new IdSpace('backend', U32_MAX);
  private readonly zones = new IdSpace('zone', U16_MAX);
  /** Service id → its slot table (backend ids, slot i + 1 at index i). */
  private readonly slotTables = new Map<number, number[]>();
  /** Recovered: "frontend|scope" → the service id its entry held. Until the next endSync. */
  private serviceHints = new Map<string, number>();
  /** Recovered: backend id → the zone id its entry held. Until the next endSync. */
  private zoneHints = new Map<number, number>();

  /**
   * A registry for what the pinned maps hold (readCurrent after a restart):
   * backends keep their ids, frontends their rev-NAT ids, slot tables their
   * order; service ids and zone ids (whose keys the maps do not store) are
   * claimed by the first compile through the frontends and backends that
   * used them. Ids nothing claims are released by that compile.
   */
  static recover(current: DesiredMaps): IdRegistry {
    const r = new IdRegistry();

    for (const table of [current.backends4, current.backends6]) {
      for (const { key, value } of table.values()) {
        if (!r.backends.recoverBinding(endpointKey(value.addr, value.port, value.proto), key)) r.backends.recoverReserved(key);
        if (value.zone !== 0) r.zoneHints.set(key, value.zone);
      }
    }
    for (const zone of r.zoneHints.values()) r.zones.recoverReserved(zone);

    // Frontends: "frontend|scope" → service id (claimed by the first compile),
    // frontend → rev-NAT id (both scopes share it; the external entry first).
    const counts = new Map<number, number>();
    const frontends = [...current.services4.values(), ...current.services6.values()];
    frontends.sort((a, b) => a.key.scope - b.key.scope);
    for (const { key, value } of frontends) {
      r.serviceHints.set(`${frontendKey(key.addr, key.port, key.proto)}|${key.scope}`, value.serviceId);
      r.services.recoverReserved(value.serviceId);
      counts.set(value.serviceId, Math.max(counts.get(value.serviceId) ?? 0, value.backendCount));
      if (!r.revNats.recoverBinding(endpointKey(key.addr, key.port, key.proto), value.revNatId)) r.revNats.recoverReserved(value.revNatId);
    }
    // rev-NAT entries no frontend names any more: kept from new frontends until a sync drops them
    for (const { key } of current.revnat4.values()) r.revNats.recoverReserved(key);
    for (const { key } of current.revnat6.values()) r.revNats.recoverReserved(key);

    // Slot tables, slots 1..count of the service entry; a missing slot is a
    // hole arrangeSlots fills, slots past the count are not part of it.
    for (const { key, value } of current.serviceSlots.values()) {
      r.services.recoverReserved(key.serviceId);
      const count = counts.get(key.serviceId) ?? 0;
      if (key.slot < 1 || key.slot > count) continue;
      let table = r.slotTables.get(key.serviceId);
      if (table === undefined) {
        table = new Array<number>(count).fill(HOLE);
        r.slotTables.set(key.serviceId, table);
      }
      table[key.slot - 1] = value.backendId;
    }

    r.services.seal();
    r.revNats.seal();
    r.backends.seal();
    r.zones.seal();
    return r;
  }

  /**
   * The service id of a Service port's endpoint set, used by this sync.
   * `frontends` are the "frontend|scope" keys (frontendKey and the LB_SCOPE
   * number) of the entries that will carry it, or a function giving them
   * (called only when a recovered id may be claimed): after a recovery the
   * first of them whose recovered id is still unclaimed gives the id back.
   */
  serviceId(
    portName: string,
    family: IPFamily,
    set: EndpointSet,
    frontends: readonly string[] | (() => readonly string[]),
  ): number {
    return this.services.idFor(serviceKey(portName, family, set), (isReserved) => {
      if (this.serviceHints.size === 0) return undefined;
      for (const f of typeof frontends === 'function' ? frontends() : frontends) {
        const id = this.serviceHints.get(f);
        if (id !== undefined && isReserved(id)) return id;
      }
      return undefined;
    });
  }

  /** The rev-NAT id of a frontend, used by this sync. */
  revNatId(addr: string, port: number, proto: number): number {
    return this.revNats.idFor(endpointKey(addr, port, proto));
  }

  /** The backend id of (address, port, protocol), used by this sync. */
  backendId(b: BackendRef): number {
    return this.backends.idFor(endpointKey(b.addr, b.port, b.proto));
  }

  /** backendId without a BackendRef. */
  backendIdOf(addr: string, port: number, proto: number): number {
    return this.backends.idFor(endpointKey(addr, port, proto));
  }

  /** The (address, port, protocol) backend `id` is bound to, if it is. */
  backendRef(id: number): BackendRef | undefined {
    const key = this.backends.keyOfId(id);
    if (key === undefined) return undefined;
    if (typeof key === 'number') {
      const rest = Math.floor(key / 4);
      return { addr: dottedQuad(Math.floor(rest / 65536)), port: rest % 65536, proto: [0, 6, 17, 132][key % 4] as number };
    }
    // text keys: "address|port|proto" (addresses hold no '|')
    const [addr, port, proto] = key.split('|');
    return { addr: addr ?? '', port: Number(port), proto: Number(proto) };
  }

  /** The IPv4 address backend `id` is bound to as a number, or -1 (unbound, or not IPv4 with TCP/UDP/SCTP). */
  backendAddressNumber(id: number): number {
    const key = this.backends.keyOfId(id);
    return typeof key === 'number' ? Math.floor(key / 4 / 65536) : -1;
  }

  /** The address backend `id` is bound to (backendRef's, without the object). */
  backendAddress(id: number): string | undefined {
    const key = this.backends.keyOfId(id);
    if (key === undefined) return undefined;
    if (typeof key === 'number') return dottedQuad(Math.floor(key / 4 / 65536));
    return key.slice(0, key.indexOf('|'));
  }

  /** Room for about this many backends, rev-NATs and service ids without growing (a first full compile). */
  reserve(sizes: { readonly backends?: number; readonly revNats?: number; readonly services?: number }): void {
    this.backends.reserve(sizes.backends ?? 0);
    this.revNats.reserve(sizes.revNats ?? 0);
    this.services.reserve(sizes.services ?? 0);
  }

  /** Marks backend `id` used by this sync (a backend other Services still use); false if unbound. */
  useBackend(id: number): boolean {
    return this.backends.use(id);
  }

  /**
   * The zone id of a zone name ('' or undefined: 0), used by this sync. After
   * a recovery a backend's recovered zone id is its zone's id when unclaimed.
   */
  zoneId(zone: string | undefined, backendId?: number): number {
    if (zone === undefined || zone === '') return 0;
    return this.zones.idFor(zone, (isReserved) => {
      const hint = backendId === undefined ? undefined : this.zoneHints.get(backendId);
      return hint !== undefined && isReserved(hint) ? hint : undefined;
    });
  }

  /** Keeps a quarantined backend's id (and its key) through this sync. */
  holdBackend(id: number, b: BackendRef): void {
    this.backends.hold(id, endpointKey(b.addr, b.port, b.proto));
  }

  /**
   * The slot table of service id for the backend ids `wanted` (in endpoint
   * order), moving as few slots as possible from its previous table:
   *  - a backend that stays keeps its slot;
   *  - a slot whose backend left takes a new backend (in `wanted` order);
   *  - new backends left over go to the end;
   *  - holes left over take the backend of the last slot (the table shrinks
   *    from the end).
   * So one endpoint added writes one slot; one removed rewrites at most one
   * slot (the last one moves into the hole) and deletes the last; a
   * replacement rewrites one slot. Without a previous table (a new service
   * id) the table is `wanted` as given: deterministic for a given registry
   * history, and equal to the sorted endpoints for a fresh one.
   */
  arrangeSlots(serviceId: number, wanted: readonly number[]): readonly number[] {
    const before = this.slotTables.get(serviceId);
    // the usual cases, without sets: the same table again, or a new one without duplicates
    if (before !== undefined && before.length === wanted.length && before.every((id, i) => id === wanted[i])) return before;
    if (before === undefined && distinct(wanted)) {
      const table = [...wanted];
      this.slotTables.set(serviceId, table);
      return table;
    }
    const want = new Set(wanted);
    const previous = before ?? [];
    const seen = new Set<number>();
    const table = previous.map((id) => {
      if (id === HOLE || !want.has(id) || seen.has(id)) return HOLE;
      seen.add(id);
      return id;
    });
    const fresh = [...want].filter((id) => !seen.has(id));
    let next = 0;
    for (let i = 0; i < table.length && next < fresh.length; i++) {
      if (table[i] === HOLE) table[i] = fresh[next++] as number;
    }
    while (next < fresh.length) table.push(fresh[next++] as number);
    for (let i = 0; i < table.length; i++) {
      if (table[i] !== HOLE) continue;
      while (table.length > i && table[table.length - 1] === HOLE) table.pop();
      if (i < table.length) table[i] = table.pop() as number;
    }
    this.slotTables.set(serviceId, table);
    return table;
  }

  /** The zone id of a zone name, if it has one (not marked used). */
  peekZoneId(zone: string): number | undefined {
    return this.zones.get(zone);
  }

  /**
   * Ends a sync: every id it did not use (nor hold) is released and may be
   * reused by the next sync; recovered hints are dropped. An incremental sync,
   * which asked for the ids of some Services only, names the ids those may have
   * stopped using (`only`); no other id is released.
   */
  endSync(only?: IdCandidates): void {
    for (const id of this.services.endSync(only?.services)) this.slotTables.delete(id);
    this.revNats.endSync(only?.revNats);
    this.backends.endSync(only?.backends);
    this.zones.endSync(only?.zones);
    this.serviceHints = new Map();
    this.zoneHints = new Map();
  }

  stats(): IdRegistryStats {
    return {
      services: this.services.size,
      revNats: this.revNats.size,
      backends: this.backends.size,
      zones: this.zones.size,
      reserved:
        this.services.reservedCount +
        this.revNats.reservedCount +
        this.backends.reservedCount +
        this.zones.reservedCount,
    };
  }
}
