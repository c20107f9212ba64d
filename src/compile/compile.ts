// compile: model → the entries every managed map should hold. Pure apart from
// the IdRegistry (which remembers ids and slot tables between syncs) and
// deterministic: the same model and registry history give the same entries.
// Each Service compiles on its own (compileService) but for its backends, which
// Services share; CompiledServices keeps what each Service compiled to (the
// keys of its entries and its backend uses, compactly) so that a sync can
// compile only the Services that changed (compileChanged) and get what the
// full compile (compileAll, compileStream, compile) would. A full sync
// compiles a model stream (compileStream): each Service as the model stage
// builds it. Entries are encoded once, here, into PackedTables (ByteTables:
// typed arrays, no object per entry); diff compares and apply writes those
// bytes.
//
// Per Service port and family (all its frontends share the endpoint arrays):
//  - one service id per endpoint set a scope uses ('cluster' / 'local'), its
//    slot table in service_slots (IdRegistry.arrangeSlots: stable slots) and
//    its name in service_names;
//  - one backend per endpoint of those sets (shared by Service ports);
// per frontend (address, port, protocol):
//  - a rev-NAT entry (rev-NAT id → frontend address and port);
//  - an LB_SCOPE_EXTERNAL service entry for the set external traffic uses,
//    and, when internal traffic uses another set (model scopesDiffer), an
//    LB_SCOPE_INTERNAL entry with its own service id and LB_F_TWO_SCOPES on
//    the external one;
//  - loadBalancerSourceRanges as LPM entries under each entry's service id.
import {
  BE_F_LOCAL,
  BE_STATE_ACTIVE,
  BE_STATE_TERMINATING,
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_ALG_RANDOM,
  LB_F_AFFINITY,
  LB_F_DSR,
  LB_F_LOCAL_EXTERNAL,
  LB_F_LOCAL_INTERNAL,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_SOURCE_RANGES,
  LB_F_TWO_SCOPES,
  LB_KIND_CLUSTER_IP,
  LB_KIND_EXTERNAL_IP,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
  LB_SCOPE_EXTERNAL,
  LB_SCOPE_INTERNAL,
  SERVICE_NAME_MAX,
  type LbService,
} from '../bpf/abi.js';
import { endpointsForScope, scopesDiffer, type TrafficScope } from '../model/build-model.js';
import { ipv4Value, parseCIDR } from '../model/ip.js';
import type { ModelStream } from '../model/build-model.js';
import type { ChangedServices } from '../model/service-models.js';
import type { Endpoint, FrontendKind, IPFamily, Model, NodeInfo, ObjectRef, Protocol, ServicePort } from '../model/types.js';
import { heldBackend, type DiffOptions } from './diff.js';
import { ByteTable } from './byte-table.js';
import {
  FAST_BACKEND4,
  FAST_SLOTS,
  PackedTable,
  bytesOf,
  encodeKeyInto,
  encodeValueInto,
  keySize,
  valueSize,
  writeBackend4Value,
  writeSlotEntry,
  type KeyOf,
  type ValueOf,
} from './entry-table.js';
import { frontendKey, type BackendRef, type EndpointSet, type IdRegistry } from './ids.js';
import { WRITE_ORDER, type DesiredMaps, type ManagedMapName } from './types.js';

export interface CompileOptions {
  /**
   * Backends the maps keep whatever the model says, by id:
   * heldBackends(current, diffOptions) — those quarantined and those the diff
   * would quarantine. Their ids stay taken (a new backend never inherits the
   * flows of a quarantined one) and a returning endpoint gets its id back.
   */
  readonly quarantine?: ReadonlyMap<number, BackendRef>;
  /**
   * Node name → its addresses, for backends' nodeAddr (the next hop for SNAT
   * / DSR). This node's come from model.node; other nodes default to unknown
   * ('0.0.0.0' / '::').
   */
  readonly nodeAddresses?: ReadonlyMap<string, readonly string[]>;
  /**
   * Roughly how many entries each map will get (the caller's counts of
   * Services and endpoints), so a first full compile sizes its tables once
   * instead of growing them; later ones use the last one's sizes.
   */
  readonly sizeHint?: Partial<Record<ManagedMapName, number>>;
}

export interface CompileResult {
  readonly maps: DesiredMaps;
  /** Service id → "namespace/name:port/PROTOCOL", with " local" for a local endpoint set (for the CLI). */
  readonly serviceNames: ReadonlyMap<number, string>;
  /** Zone id → zone name. */
  readonly zoneNames: ReadonlyMap<number, string>;
}

export const PROTO_NUMBER: Readonly<Record<Protocol, number>> = {
  TCP: IPPROTO_TCP,
  UDP: IPPROTO_UDP,
  SCTP: IPPROTO_SCTP,
};

export const KIND_NUMBER: Readonly<Record<FrontendKind, number>> = {
  clusterIP: LB_KIND_CLUSTER_IP,
  nodePort: LB_KIND_NODE_PORT,
  externalIP: LB_KIND_EXTERNAL_IP,
  loadBalancer: LB_KIND_LOAD_BALANCER,
};

const SCOPE_NUMBER: Readonly<Record<TrafficScope, number>> = {
  external: LB_SCOPE_EXTERNAL,
  internal: LB_SCOPE_INTERNAL,
};

/**
 * The backends one Service uses, as its cache keeps them: one string of
 * 16-bit char codes, USE_STRIDE per backend, sorted by backend id, the first
 * use of each (in the order compileService meets them) with USE_READY set
 * when any use is ready:
 *   [id low, id high, flags (USE_READY | USE_LOCAL | USE_V6 | proto <<
 *    USE_PROTO_SHIFT), port, zone (low, high), node name (low, high)]
 * zone and node are indexes into the names CompiledServices interns (0 =
 * none); the address is the backend id's (IdRegistry.backendRef). One small
 * string per Service: nothing per backend for the garbage collector, and the
 * model's Endpoint objects are not kept alive between syncs.
 */
type Uses = string;
const USE_STRIDE = 8;
const USE_READY = 1;
const USE_LOCAL = 2;
const USE_V6 = 4;
const USE_PROTO_SHIFT = 3;

/** An entry of one map: its key and value bytes (in scratch buffers: copy them to keep them). */
type Emit = (map: ManagedMapName, key: Uint8Array, value: Uint8Array) => void;

/** What one Service compiled to, as kept between syncs. Its entries themselves live in the tables. */
interface CachedService {
  /**
   * The keys of its entries in every map but the backends (which Services
   * share), as one string of bytes (char codes 0-255): per entry its map's
   * index in WRITE_ORDER, then its encoded key (readKeyLog).
   */
  readonly keyLog: string;
  readonly uses: Uses;
}

const MAP_INDEX: Readonly<Record<ManagedMapName, number>> = Object.fromEntries(WRITE_ORDER.map((m, i) => [m, i])) as Record<
  ManagedMapName,
  number
>;

/** Scratch buffers for one entry's key and value (the largest: service_name's 128-byte value). */
const KEY = Buffer.alloc(Math.max(...WRITE_ORDER.map(keySize)));
const VALUE = Buffer.alloc(Math.max(...WRITE_ORDER.map(valueSize)));

/** The slot key and value put() encodes for every slot (it keeps neither). */
const SLOT_KEY_SIZE = keySize('serviceSlots');
const SLOT_KEY = { serviceId: 0, slot: 0 };
const SLOT = { backendId: 0 };

/** A growing byte buffer for one Service's key log. */
class KeyLog {
  #buf = Buffer.alloc(1024);
  #len = 0;
  reset(): void {
    this.#len = 0;
  }
  append(mapIndex: number, key: Uint8Array, size: number): void {
    if (this.#len + 1 + size > this.#buf.length) {
      const bigger = Buffer.alloc(this.#buf.length * 2 + size);
      this.#buf.copy(bigger, 0, 0, this.#len);
      this.#buf = bigger;
    }
    const buf = this.#buf;
    buf[this.#len++] = mapIndex;
    for (let i = 0; i < size; i++) buf[this.#len + i] = key[i] as number;
    this.#len += size;
  }
  text(): string {
    return this.#buf.toString('latin1', 0, this.#len);
  }
}
const keyLog = new KeyLog();

/** Each entry of a key log: its map and its key bytes (in a scratch buffer). */
function readKeyLog(log: string, each: (map: ManagedMapName, key: Buffer) => void): void {
  for (let at = 0; at < log.length; ) {
    const map = WRITE_ORDER[log.charCodeAt(at)] as ManagedMapName;
    const size = keySize(map);
    for (let i = 0; i < size; i++) KEY[i] = log.charCodeAt(at + 1 + i);
    each(map, KEY);
    at += 1 + size;
  }
}

/** Tables being filled, any map. */
type Tables = Record<ManagedMapName, PackedTable<ManagedMapName>>;

function emptyTables(): Tables {
  return Object.fromEntries(WRITE_ORDER.map((m) => [m, new PackedTable(m)])) as Tables;
}

/** The empty table of each map, shared by the DesiredMaps lazyTables leaves untouched (never written). */
const NO_ENTRIES = Object.fromEntries(WRITE_ORDER.map((m) => [m, new PackedTable(m, frozenByteTable(m))])) as Tables;

function frozenByteTable(map: ManagedMapName): ByteTable {
  const t = new ByteTable(keySize(map), valueSize(map));
  t.freeze();
  return t;
}

/** Tables made on first use; done() gives them as DesiredMaps, the unused ones empty. */
function lazyTables(): { get(map: ManagedMapName): PackedTable<ManagedMapName>; done(): DesiredMaps } {
  const made: Partial<Tables> = {};
  return {
    get: (map) => (made[map] ??= new PackedTable(map)),
    done: () => ({ ...NO_ENTRIES, ...made }) as unknown as DesiredMaps,
  };
}

/** The u32 key of an entry of an id-keyed map (serviceNames, revnat4/6), from its bytes. */
function idOfKey(key: Uint8Array): number {
  return Buffer.from(key.buffer, key.byteOffset, 4).readUInt32LE(0);
}

/** Which endpoint set one scope of a frontend uses. */
function endpointSet(sp: ServicePort, scope: TrafficScope): EndpointSet {
  const eps = endpointsForScope(sp, scope);
  return eps === sp.localEndpoints && eps !== sp.clusterEndpoints ? 'local' : 'cluster';
}

function firstOfFamily(addresses: readonly string[] | undefined, family: IPFamily): string | undefined {
  return addresses?.find((a) => a.includes(':') === (family === 'IPv6'));
}

/**
 * A name cut to what service_name.name holds (SERVICE_NAME_MAX - 1 bytes and
 * a NUL), at a character boundary so it reads back as written (Kubernetes
 * names are ASCII; this only matters for the longest ones).
 */
function fitServiceName(name: string): string {
  if (name.length < SERVICE_NAME_MAX / 4 || Buffer.byteLength(name, 'utf8') < SERVICE_NAME_MAX) return name;
  let out = name;
  while (Buffer.byteLength(out, 'utf8') >= SERVICE_NAME_MAX) out = out.slice(0, -1);
  return out;
}

function compareRefs(a: ObjectRef, b: ObjectRef): number {
  return a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The backend id at position `at` of `uses`. */
function useId(uses: Uses, at: number): number {
  return (uses.charCodeAt(at) | (uses.charCodeAt(at + 1) << 16)) >>> 0;
}

/** A name index at position `at` of `uses` (two char codes). */
function useName(uses: Uses, at: number): number {
  return (uses.charCodeAt(at) | (uses.charCodeAt(at + 1) << 16)) >>> 0;
}

/** The position of backend `id` in `uses` (a multiple of USE_STRIDE), or -1. */
function findUse(uses: Uses, id: number): number {
  let lo = 0;
  let hi = uses.length / USE_STRIDE - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const at = useId(uses, mid * USE_STRIDE);
    if (at === id) return mid * USE_STRIDE;
    if (at < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** The uses collected (as numbers, insertion order) into their string, sorted by id. */
function usesText(codes: number[]): Uses {
  const n = codes.length / USE_STRIDE;
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) sorted = (codes[(i - 1) * USE_STRIDE] as number) < (codes[i * USE_STRIDE] as number);
  let out = codes;
  if (!sorted) {
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => (codes[a * USE_STRIDE] as number) - (codes[b * USE_STRIDE] as number));
    out = [];
    for (const from of order) for (let j = 0; j < USE_STRIDE; j++) out.push(codes[from * USE_STRIDE + j] as number);
  }
  // the id in two char codes (compileService leaves the second slot for its high half)
  for (let i = 0; i < out.length; i += USE_STRIDE) {
    const id = out[i] as number;
    out[i] = id & 0xffff;
    out[i + 1] = id >>> 16;
  }
  if (out.length <= 8192) return String.fromCharCode.apply(null, out);
  const u16 = Uint16Array.from(out);
  return Buffer.from(u16.buffer, u16.byteOffset, u16.byteLength).toString('utf16le');
}

/** "namespace/name" back to a Service ref (namespaces hold no "/"). */
function refOfKey(key: string): ObjectRef {
  const slash = key.indexOf('/');
  return { kind: 'Service', namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** Model order of two Service keys: by namespace, then name. */
function compareKeys(a: string, b: string): number {
  return compareRefs(refOfKey(a), refOfKey(b));
}

/**
 * Direct server return (bpf/lib/dsr.h) for a frontend's external entry: only
 * north-south frontends whose remote backends take traffic from other nodes
 * (not externalTrafficPolicy: Local, whose backends are all here), and only
 * when every endpoint listens on the frontend's own port — IPIP cannot tell
 * the backend's node another port, so a targetPort ≠ port (a NodePort's, as a
 * rule) stays SNAT, which `strait lb list` reports.
 */
export function wantsDsr(sp: ServicePort, set: EndpointSet, endpoints: readonly Endpoint[]): boolean {
  if (sp.kind === 'clusterIP' || set === 'local') return false;
  return endpoints.every((ep) => ep.port === sp.port);
}

/**
 * One Service's ServicePorts (model order) → its entries, each passed to
 * `emit`; `names` gets service id → name. Returns what the cache keeps.
 */
function compileService(
  ports: readonly ServicePort[],
  ids: IdRegistry,
  names: Map<number, string> | undefined,
  emit: Emit,
  dsr: boolean,
  intern: (name: string | undefined) => number,
): CachedService {
  keyLog.reset();
  const put = <M extends ManagedMapName>(map: M, key: KeyOf<M>, value: ValueOf<M>): void => {
    encodeKeyInto(map, key, KEY, 0);
    encodeValueInto(map, value, VALUE, 0);
    keyLog.append(MAP_INDEX[map], KEY, keySize(map));
    emit(map, KEY, VALUE);
  };
  // backend id → its position in `uses` (insertion order; sorted at the end)
  const useAt = new Map<number, number>();
  const uses: number[] = [];

  // Service ports, each with its frontends, in model order (sorted).
  const groups = new Map<string, ServicePort[]>();
  for (const sp of ports) {
    const k = `${sp.portName}|${sp.family}`;
    const g = groups.get(k);
    if (g === undefined) groups.set(k, [sp]);
    else g.push(sp);
  }

  for (const group of groups.values()) {
    const first = group[0] as ServicePort;
    const proto = PROTO_NUMBER[first.protocol];
    const v6 = first.family === 'IPv6';

    // which sets the scopes use, and the frontends (address, port, scope) of each
    const setUses = new Map<EndpointSet, { endpoints: readonly Endpoint[]; frontends: [ServicePort, TrafficScope][] }>();
    for (const sp of group) {
      const scopes: TrafficScope[] = scopesDiffer(sp) ? ['external', 'internal'] : ['external'];
      for (const scope of scopes) {
        const set = endpointSet(sp, scope);
        let use = setUses.get(set);
        if (use === undefined) {
          use = { endpoints: endpointsForScope(sp, scope), frontends: [] };
          setUses.set(set, use);
        }
        use.frontends.push([sp, scope]);
      }
    }

    // service ids and slot tables
    const services = new Map<EndpointSet, { id: number; count: number }>();
    for (const set of ['cluster', 'local'] as const) {
      const use = setUses.get(set);
      if (use === undefined) continue;
      // the "frontend|scope" keys recovery hints use, built only when a hint may apply
      const frontends = (): string[] =>
        use.frontends.map(([sp, scope]) => `${frontendKey(sp.address, sp.port, proto)}|${SCOPE_NUMBER[scope]}`);
      const id = ids.serviceId(first.portName, first.family, set, frontends);
      const wanted: number[] = [];
      for (const ep of use.endpoints) {
        const backendId = ids.backendIdOf(ep.address, ep.port, proto);
        wanted.push(backendId);
        const at = useAt.get(backendId);
        if (at === undefined) {
          useAt.set(backendId, uses.length);
          const flags = (ep.ready ? USE_READY : 0) | (ep.isLocal ? USE_LOCAL : 0) | (v6 ? USE_V6 : 0) | (proto << USE_PROTO_SHIFT);
          const zone = intern(ep.zone);
          const node = intern(ep.nodeName);
          uses.push(backendId, 0, flags, ep.port, zone & 0xffff, zone >>> 16, node & 0xffff, node >>> 16);
        } else if (ep.ready) {
          uses[at + 2] = (uses[at + 2] as number) | USE_READY;
        }
      }
      const table = ids.arrangeSlots(id, wanted);
      for (let i = 0; i < table.length; i++) {
        if (FAST_SLOTS && writeSlotEntry(id, i + 1, table[i] as number, KEY, VALUE)) {
          keyLog.append(MAP_INDEX.serviceSlots, KEY, SLOT_KEY_SIZE);
          emit('serviceSlots', KEY, VALUE);
          continue;
        }
        // one key and value object for every slot (put encodes them at once)
        SLOT_KEY.serviceId = id;
        SLOT_KEY.slot = i + 1;
        SLOT.backendId = table[i] as number;
        put('serviceSlots', SLOT_KEY, SLOT);
      }
      services.set(set, { id, count: table.length });
      const name = set === 'local' ? `${first.portName} local` : first.portName;
      names?.set(id, name);
      put('serviceNames', id, { name: fitServiceName(name) });
    }

    // frontends
    for (const sp of group) {
      const revNatId = ids.revNatId(sp.address, sp.port, proto);
      if (v6) put('revnat6', revNatId, { addr: sp.address, port: sp.port });
      else put('revnat4', revNatId, { addr: sp.address, port: sp.port });

      const twoScopes = scopesDiffer(sp);
      const scopes: TrafficScope[] = twoScopes ? ['external', 'internal'] : ['external'];
      for (const scope of scopes) {
        const set = endpointSet(sp, scope);
        const svc = services.get(set) as { id: number; count: number };
        let flags = 0;
        if (sp.sessionAffinity !== undefined) flags |= LB_F_AFFINITY;
        if (set === 'local') flags |= sp.kind === 'clusterIP' ? LB_F_LOCAL_INTERNAL : LB_F_LOCAL_EXTERNAL;
        if (sp.loadBalancerSourceRanges.length > 0) flags |= LB_F_SOURCE_RANGES;
        if (twoScopes && scope === 'external') flags |= LB_F_TWO_SCOPES;
        if (svc.count === 0 && !sp.hasAnyEndpoints) flags |= LB_F_REJECT_NO_ENDPOINTS;
        if (dsr && scope === 'external' && wantsDsr(sp, set, (setUses.get(set) as { endpoints: readonly Endpoint[] }).endpoints)) flags |= LB_F_DSR;
        const value: LbService = {
          serviceId: svc.id,
          backendCount: svc.count,
          revNatId,
          affinityTimeout: sp.sessionAffinity?.timeoutSeconds ?? 0,
          flags,
          kind: KIND_NUMBER[sp.kind],
          algorithm: LB_ALG_RANDOM,
        };
        const key = { addr: sp.address, port: sp.port, proto, scope: SCOPE_NUMBER[scope] };
        if (v6) put('services6', key, value);
        else put('services4', key, value);

        for (const range of sp.loadBalancerSourceRanges) {
          const cidr = parseCIDR(range);
          if (cidr === undefined) continue; // the model keeps valid ranges only
          const rangeKey = { prefixlen: 32 + cidr.prefixLength, serviceId: svc.id, addr: cidr.address };
          if (cidr.family === 'IPv6') put('sourceRanges6', rangeKey, { allow: 1 });
          else put('sourceRanges4', rangeKey, { allow: 1 });
        }
      }
    }
  }
  return { keyLog: keyLog.text(), uses: usesText(uses) };
}

/** One Service's ServicePorts (model order), under its "namespace/name". */
interface ServicePorts {
  readonly key: string;
  readonly ref: ObjectRef;
  readonly ports: readonly ServicePort[];
}

/** A model's ServicePorts by Service (each Service's are consecutive in model order). */
function* servicesOf(ports: readonly ServicePort[]): Generator<ServicePorts> {
  for (let start = 0, end = 0; start < ports.length; start = end) {
    const { name } = ports[start] as ServicePort;
    while (end < ports.length && (ports[end] as ServicePort).name.name === name.name && (ports[end] as ServicePort).name.namespace === name.namespace) end++;
    yield {
      key: `${name.namespace}/${name.name}`,
      ref: { kind: 'Service', namespace: name.namespace, name: name.name },
      ports: end - start === 1 ? [ports[start] as ServicePort] : ports.slice(start, end),
    };
  }
}

/** The Services of a stream that have ServicePorts (after claims). */
function* streamedServices(stream: ModelStream): Generator<ServicePorts> {
  for (const item of stream) {
    if (!('service' in item) || item.service.servicePorts.length === 0) continue;
    const { ref } = item.service.model;
    yield { key: `${ref.namespace}/${ref.name}`, ref, ports: item.service.servicePorts };
  }
}

/**
 * A map from backend id to T: an array indexed by id (ids are the lowest free
 * ones: dense), a Map for ids past DENSE (a corrupt map's).
 */
class IdIndex<T> {
  static readonly DENSE = 1 << 22;
  #dense: (T | undefined)[] = [];
  readonly #far = new Map<number, T>();
  #size = 0;

  get(id: number): T | undefined {
    return id < IdIndex.DENSE ? this.#dense[id] : this.#far.get(id);
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  set(id: number, value: T): void {
    if (!this.has(id)) this.#size++;
    if (id < IdIndex.DENSE) {
      while (this.#dense.length < id) this.#dense.push(undefined);
      this.#dense[id] = value;
    } else this.#far.set(id, value);
  }

  delete(id: number): void {
    if (!this.has(id)) return;
    this.#size--;
    if (id < IdIndex.DENSE) this.#dense[id] = undefined;
    else this.#far.delete(id);
  }

  clear(): void {
    this.#dense = [];
    this.#far.clear();
    this.#size = 0;
  }

  get size(): number {
    return this.#size;
  }

  /** Every id with a value, ascending. */
  ids(): number[] {
    const out: number[] = [];
    for (let id = 0; id < this.#dense.length; id++) if (this.#dense[id] !== undefined) out.push(id);
    out.push(...[...this.#far.keys()].sort((a, b) => a - b));
    return out;
  }
}

/**
 * The compiled entries of every Service, kept between syncs, so that a sync
 * compiles only the Services whose ServicePorts changed (compileChanged) and
 * gets the entries and ids a full compile (compileAll) of the whole model
 * would: a Service's entries are its own (frontends, rev-NAT ids, service ids
 * and their slots are claimed by one Service), but a backend (one per address,
 * port and protocol) is shared by every Service using it, and its entry is
 * merged from their uses: the first Service in model order gives its endpoint,
 * and it is ready when any use is.
 *
 * Per Service the cache keeps the keys of its entries (the entries themselves
 * are in the tables the caller keeps: the maps' state) and its backend uses
 * (Uses), not the model.
 */
export class CompiledServices {
  /** `strait agent --dsr`: LB_F_DSR on the frontends that can keep their port (wantsDsr). */
  readonly #dsr: boolean;
  /** By "namespace/name". */
  readonly #services = new Map<string, CachedService>();
  /** Backend id → the Services using it, in model order (one key, or several). */
  readonly #users = new IdIndex<string | string[]>();
  /** Zone and node names the uses refer to by index (0: none), interned until the next full compile. */
  #names: (string | undefined)[] = [undefined];
  readonly #nameIndex = new Map<string, number>();
  readonly #intern = (name: string | undefined): number => {
    if (name === undefined) return 0;
    let i = this.#nameIndex.get(name);
    if (i === undefined) {
      i = this.#names.length;
      this.#names.push(name);
      this.#nameIndex.set(name, i);
    }
    return i;
  };
  /** Zone name → backends in it (those some Service uses). */
  readonly #zones = new Map<string, number>();
  #node: NodeInfo | undefined;
  #nodeAddresses: ReadonlyMap<string, readonly string[]> | undefined;
  /** Backend ids deleted behind compile's back (forget): the next compile releases them if unused. */
  #forgotten: number[] = [];
  /** Entries per map of the last full compile. */
  readonly #sizes: Partial<Record<ManagedMapName, number>> = {};
  /** #merge's answer: the first use (its Service's uses and position) and whether any use is ready. */
  #mergedUses: Uses = '';
  #mergedAt = 0;
  #mergedReady = false;

  constructor(opts: { readonly dsr?: boolean } = {}) {
    this.#dsr = opts.dsr ?? false;
  }

  /** Every Service of the model: the whole desired state (a full sync); the cache starts over. */
  compileAll(model: Model, ids: IdRegistry, opts: CompileOptions = {}): CompileResult {
    return this.#compileServices(model.node, servicesOf(model.servicePorts), ids, opts);
  }

  /**
   * compileAll over a model stream (ServiceModels.rebuildStream or
   * streamModel), each Service compiled as the stream builds it: the same
   * entries, ids and cache as compileAll(collectModel(stream)), without the
   * whole model in memory at once.
   */
  compileStream(stream: ModelStream, ids: IdRegistry, opts: CompileOptions = {}): CompileResult {
    return this.#compileServices(stream.node, streamedServices(stream), ids, opts);
  }

  #compileServices(node: NodeInfo, services: Iterable<ServicePorts>, ids: IdRegistry, opts: CompileOptions): CompileResult {
    // held first, so no new backend takes a quarantined backend's id
    for (const [id, ref] of opts.quarantine ?? []) ids.holdBackend(id, ref);
    this.#services.clear();
    this.#users.clear();
    this.#zones.clear();
    this.#names = [undefined];
    this.#nameIndex.clear();
    this.#forgotten = [];
    this.#node = node;
    this.#nodeAddresses = opts.nodeAddresses;

    const tables = emptyTables();
    // as big as the last full compile's (no growing and rehashing on the way)
    for (const map of WRITE_ORDER) tables[map].bytes.reserve(this.#sizes[map] ?? opts.sizeHint?.[map] ?? 0);
    const hint = opts.sizeHint;
    if (hint !== undefined && this.#sizes.backends4 === undefined) {
      ids.reserve({
        backends: (hint.backends4 ?? 0) + (hint.backends6 ?? 0),
        revNats: (hint.revnat4 ?? 0) + (hint.revnat6 ?? 0),
        services: hint.serviceNames ?? 0,
      });
    }
    const emit: Emit = (map, key, value) => tables[map].bytes.set(key, 0, value, 0);
    const serviceNames = new Map<number, string>();
    for (const { key, ports } of services) {
      const compiled = compileService(ports, ids, serviceNames, emit, this.#dsr, this.#intern);
      this.#services.set(key, compiled);
      // Services come in model order: a backend's users are appended in order
      const { uses } = compiled;
      for (let i = 0; i < uses.length; i += USE_STRIDE) this.#appendUser(useId(uses, i), key);
    }

    // backends, in id order (zone ids are handed out in that order)
    const zoneNames = new Map<number, string>();
    const backendIds = this.#users.ids();
    for (const id of backendIds) this.#emitBackend(id, ids, zoneNames, emit);
    ids.endSync();
    for (const map of WRITE_ORDER) this.#sizes[map] = tables[map].size;
    return { maps: tables as unknown as DesiredMaps, serviceNames, zoneNames };
  }

  /**
   * Compiles the Services `changed` holds (their ServicePorts; [] = gone) and
   * nothing else: the entries they touch as `current` (what the maps hold)
   * has them, and as they should be — diff(previous, next) is the part of the
   * full plan that concerns them, which is all of it when nothing else changed.
   * Ids are taken and released as compileAll on the whole model would (a
   * backend `current` holds that diffOptions keeps for its flows keeps its id).
   */
  compileChanged(
    changed: ChangedServices,
    ids: IdRegistry,
    current: DesiredMaps,
    diffOptions: DiffOptions,
  ): { previous: DesiredMaps; next: DesiredMaps } {
    if (this.#node === undefined) throw new Error('compileChanged before compileAll');
    // tables made when first written: a sync of one Service touches a few maps of ten
    const previous = lazyTables();
    const next = lazyTables();
    const currentBytes = new Map<ManagedMapName, ByteTable>();
    const touch = (map: ManagedMapName, key: Uint8Array): void => {
      let cur = currentBytes.get(map);
      if (cur === undefined) currentBytes.set(map, (cur = bytesOf(current[map], map)));
      const slot = cur.slotOf(key, 0);
      if (slot >= 0) previous.get(map).bytes.setFrom(cur, slot);
    };
    const emit: Emit = (map, key, value) => {
      touch(map, key);
      next.get(map).bytes.set(key, 0, value, 0);
    };
    const serviceIds: number[] = [];
    const revNatIds: number[] = [];

    // the backends these Services used and the zones they were in, before anything moves
    const zonesBefore = new Map<number, string | undefined>();
    for (const key of changed.keys()) {
      const uses = this.#services.get(key)?.uses ?? '';
      for (let i = 0; i < uses.length; i += USE_STRIDE) {
        const id = useId(uses, i);
        if (zonesBefore.has(id)) continue;
        this.#merge(id);
        zonesBefore.set(id, this.#names[useName(this.#mergedUses, this.#mergedAt + 4)]);
      }
    }
    const affected = new Set(zonesBefore.keys());

    for (const [key, { servicePorts }] of changed) {
      const old = this.#services.get(key);
      if (old !== undefined) {
        readKeyLog(old.keyLog, (map, key) => {
          touch(map, key);
          if (map === 'serviceNames') serviceIds.push(idOfKey(key));
          else if (map === 'revnat4' || map === 'revnat6') revNatIds.push(idOfKey(key));
        });
        for (let i = 0; i < old.uses.length; i += USE_STRIDE) this.#removeUser(useId(old.uses, i), key);
        this.#services.delete(key);
      }
      if (servicePorts.length === 0) continue;
      const compiled = compileService(servicePorts, ids, undefined, emit, this.#dsr, this.#intern);
      this.#services.set(key, compiled);
      const { uses } = compiled;
      for (let i = 0; i < uses.length; i += USE_STRIDE) {
        const id = useId(uses, i);
        this.#addUser(id, key);
        affected.add(id);
      }
    }

    // the affected backends merged again, in id order
    for (const id of [...affected].sort((a, b) => a - b)) {
      encodeKeyInto('backends4', id, KEY, 0);
      touch('backends4', KEY);
      touch('backends6', KEY);
      if (zonesBefore.has(id)) this.#dropZone(zonesBefore.get(id));
      if (!this.#users.has(id)) continue;
      this.#emitBackend(id, ids, undefined, (map, key, value) => next.get(map).bytes.set(key, 0, value, 0));
    }

    // Ids these Services may have stopped using stay while others use them (or
    // the maps keep the backend for its flows), as in a full compile.
    const backendIds = [...zonesBefore.keys(), ...this.#forgotten];
    this.#forgotten = [];
    for (const id of backendIds) {
      if (this.#users.has(id)) ids.useBackend(id);
      else {
        const held = heldBackend(current, id, diffOptions);
        if (held !== undefined) ids.holdBackend(id, held);
      }
    }
    const zoneIds: number[] = [];
    for (const zone of new Set(zonesBefore.values())) {
      if (zone === undefined || zone === '') continue;
      const id = ids.peekZoneId(zone);
      if (id !== undefined) zoneIds.push(id);
      if ((this.#zones.get(zone) ?? 0) > 0) ids.zoneId(zone);
    }
    ids.endSync({ services: serviceIds, revNats: revNatIds, backends: backendIds, zones: zoneIds });
    return { previous: previous.done(), next: next.done() };
  }

  /** Backends deleted from the maps behind compile's back (collectQuarantine): the next compile releases their ids unless used. */
  forget(backendIds: Iterable<number>): void {
    this.#forgotten.push(...backendIds);
  }

  /** A backend's use merged over its Services, into #mergedUses/#mergedAt/#mergedReady. */
  #merge(id: number): void {
    const users = this.#users.get(id);
    let found = false;
    let ready = false;
    for (const key of typeof users === 'string' ? [users] : (users ?? [])) {
      const uses = this.#services.get(key)?.uses;
      const at = uses === undefined ? -1 : findUse(uses, id);
      if (uses === undefined || at < 0) continue;
      if (!found) {
        found = true;
        this.#mergedUses = uses;
        this.#mergedAt = at;
      }
      if ((uses.charCodeAt(at + 2) & USE_READY) !== 0) ready = true;
    }
    if (!found) throw new Error(`backend ${id}: no Service uses it`);
    this.#mergedReady = ready;
  }

  /** The entry of backend `id`, merged over the Services using it, passed to `emit`. */
  #emitBackend(id: number, ids: IdRegistry, zoneNames: Map<number, string> | undefined, emit: Emit): void {
    this.#merge(id);
    const uses = this.#mergedUses;
    const at = this.#mergedAt;
    const flags = uses.charCodeAt(at + 2);
    const port = uses.charCodeAt(at + 3);
    const zoneName = this.#names[useName(uses, at + 4)];
    const nodeName = this.#names[useName(uses, at + 6)];
    const family: IPFamily = (flags & USE_V6) !== 0 ? 'IPv6' : 'IPv4';
    const isLocal = (flags & USE_LOCAL) !== 0;
    const state = this.#mergedReady ? BE_STATE_ACTIVE : BE_STATE_TERMINATING;
    const beFlags = isLocal ? BE_F_LOCAL : 0;
    if (zoneName !== undefined && zoneName !== '') this.#zones.set(zoneName, (this.#zones.get(zoneName) ?? 0) + 1);
    const zone = ids.zoneId(zoneName, id);
    if (zone !== 0 && zoneName !== undefined) zoneNames?.set(zone, zoneName);
    const nodeAddresses =
      nodeName === undefined ? undefined : (this.#nodeAddresses?.get(nodeName) ?? (isLocal ? this.#node?.addresses : undefined));
    const nodeAddr = firstOfFamily(nodeAddresses, family) ?? (family === 'IPv6' ? '::' : '0.0.0.0');
    if (FAST_BACKEND4 && family === 'IPv4') {
      // the address as the registry holds it (a number), no text in between
      const addrNumber = ids.backendAddressNumber(id);
      const nodeNumber = ipv4Value(nodeAddr);
      if (addrNumber >= 0 && nodeNumber >= 0 && writeBackend4Value(addrNumber, nodeNumber, port, flags >>> USE_PROTO_SHIFT, state, beFlags, zone, VALUE)) {
        encodeKeyInto('backends4', id, KEY, 0);
        emit('backends4', KEY, VALUE);
        return;
      }
    }
    const addr = ids.backendAddress(id);
    if (addr === undefined) throw new Error(`backend ${id}: no address (the id registry does not know it)`);
    const map = family === 'IPv6' ? 'backends6' : 'backends4';
    const value = { addr, port, proto: flags >>> USE_PROTO_SHIFT, state, flags: beFlags, zone, nodeAddr };
    encodeKeyInto(map, id, KEY, 0);
    encodeValueInto(map, value, VALUE, 0);
    emit(map, KEY, VALUE);
  }

  #dropZone(zone: string | undefined): void {
    if (zone === undefined || zone === '') return;
    const n = (this.#zones.get(zone) ?? 0) - 1;
    if (n > 0) this.#zones.set(zone, n);
    else this.#zones.delete(zone);
  }

  /** A user appended: compileAll adds Services in model order. */
  #appendUser(id: number, key: string): void {
    const users = this.#users.get(id);
    if (users === undefined) this.#users.set(id, key);
    else if (typeof users === 'string') this.#users.set(id, [users, key]);
    else users.push(key);
  }

  #addUser(id: number, key: string): void {
    const users = this.#users.get(id);
    if (users === undefined) {
      this.#users.set(id, key);
      return;
    }
    const list = typeof users === 'string' ? [users] : users;
    let i = list.length;
    while (i > 0 && compareKeys(list[i - 1] as string, key) > 0) i--;
    list.splice(i, 0, key);
    this.#users.set(id, list);
  }

  #removeUser(id: number, key: string): void {
    const users = this.#users.get(id);
    if (users === undefined) return;
    if (typeof users === 'string') {
      if (users === key) this.#users.delete(id);
      return;
    }
    const list = users.filter((k) => k !== key);
    if (list.length === 0) this.#users.delete(id);
    else this.#users.set(id, list.length === 1 ? (list[0] as string) : list);
  }
}

/** The entries of the whole model (a full compile without a cache to keep). */
export function compile(model: Model, ids: IdRegistry, opts: CompileOptions = {}): CompileResult {
  return new CompiledServices().compileAll(model, ids, opts);
}
