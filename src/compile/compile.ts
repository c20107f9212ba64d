// compile: model → the entries every managed map should hold. Pure apart from
// the IdRegistry (which remembers ids and slot tables between syncs) and
// deterministic: the same model and registry history give the same entries.
// Each Service compiles on its own (compileService) but for its backends, which
// Services share; CompiledServices keeps every Service's entries so that a sync
// can compile only the Services that changed (compileChanged) and get what the
// full compile (compileAll, compile) would.
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
import { parseCIDR } from '../model/ip.js';
import type { ChangedServices } from '../model/service-models.js';
import type { Endpoint, FrontendKind, IPFamily, Model, NodeInfo, ObjectRef, Protocol, ServicePort } from '../model/types.js';
import { heldBackend, type DiffOptions } from './diff.js';
import { keyHex, type KeyOf, type ValueOf } from './entry-table.js';
import { frontendKey, type BackendRef, type EndpointSet, type IdRegistry } from './ids.js';
import { WRITE_ORDER, type DesiredMaps, type Entry, type ManagedMapName } from './types.js';

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

/** A backend as the Service ports using it see it; merged into one entry. */
interface BackendUse {
  readonly family: IPFamily;
  readonly ref: BackendRef;
  readonly ep: Endpoint;
  ready: boolean;
}

/** An entry of one map under its canonical key (keyHex). */
interface KeyedEntry {
  readonly map: ManagedMapName;
  readonly hex: string;
  readonly entry: Entry<unknown, unknown>;
}

/** What one Service compiles to. */
interface ServiceEntries {
  /** Its entries in every map but the backends (which Services share). */
  readonly entries: readonly KeyedEntry[];
  /** The backends its endpoint sets use: id → its first use (ready when any use is). */
  readonly backends: ReadonlyMap<number, BackendUse>;
}

/** Tables being filled, any map. */
type Tables = Record<ManagedMapName, Map<string, Entry<unknown, unknown>>>;

function emptyTables(): Tables {
  return Object.fromEntries(WRITE_ORDER.map((m) => [m, new Map()])) as Tables;
}

function tableOf(maps: DesiredMaps, map: ManagedMapName): ReadonlyMap<string, Entry<unknown, unknown>> {
  return maps[map] as ReadonlyMap<string, Entry<unknown, unknown>>;
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
  if (Buffer.byteLength(name, 'utf8') < SERVICE_NAME_MAX) return name;
  let out = name;
  while (Buffer.byteLength(out, 'utf8') >= SERVICE_NAME_MAX) out = out.slice(0, -1);
  return out;
}

function compareRefs(a: ObjectRef, b: ObjectRef): number {
  return a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** One Service's ServicePorts (model order) → its entries; `names` gets service id → name. */
function compileService(ports: readonly ServicePort[], ids: IdRegistry, names: Map<number, string> | undefined): ServiceEntries {
  const entries: KeyedEntry[] = [];
  const put = <M extends ManagedMapName>(map: M, key: KeyOf<M>, value: ValueOf<M>): void => {
    entries.push({ map, hex: keyHex(map, key), entry: { key, value } });
  };
  const backends = new Map<number, BackendUse>();

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

    // which sets the scopes use, and the entries ("frontend|scope") of each
    const setUses = new Map<EndpointSet, { endpoints: readonly Endpoint[]; frontends: string[] }>();
    for (const sp of group) {
      const scopes: TrafficScope[] = scopesDiffer(sp) ? ['external', 'internal'] : ['external'];
      for (const scope of scopes) {
        const set = endpointSet(sp, scope);
        let use = setUses.get(set);
        if (use === undefined) {
          use = { endpoints: endpointsForScope(sp, scope), frontends: [] };
          setUses.set(set, use);
        }
        use.frontends.push(`${frontendKey(sp.address, sp.port, proto)}|${SCOPE_NUMBER[scope]}`);
      }
    }

    // service ids and slot tables
    const services = new Map<EndpointSet, { id: number; count: number }>();
    for (const set of ['cluster', 'local'] as const) {
      const use = setUses.get(set);
      if (use === undefined) continue;
      const id = ids.serviceId(first.portName, first.family, set, use.frontends);
      const wanted: number[] = [];
      for (const ep of use.endpoints) {
        const ref: BackendRef = { addr: ep.address, port: ep.port, proto };
        const backendId = ids.backendId(ref);
        wanted.push(backendId);
        const seen = backends.get(backendId);
        if (seen === undefined) backends.set(backendId, { family: first.family, ref, ep, ready: ep.ready });
        else if (ep.ready) seen.ready = true;
      }
      const table = ids.arrangeSlots(id, wanted);
      table.forEach((backendId, i) => put('serviceSlots', { serviceId: id, slot: i + 1 }, { backendId }));
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
  return { entries, backends };
}

interface CachedService extends ServiceEntries {
  readonly ref: ObjectRef;
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
 */
export class CompiledServices {
  /** By "namespace/name". */
  readonly #services = new Map<string, CachedService>();
  /** Backend id → the Services using it, in model order (one key, or several). */
  readonly #users = new Map<number, string | string[]>();
  /** Zone name → backends in it (those some Service uses). */
  readonly #zones = new Map<string, number>();
  #node: NodeInfo | undefined;
  #nodeAddresses: ReadonlyMap<string, readonly string[]> | undefined;
  /** Backend ids deleted behind compile's back (forget): the next compile releases them if unused. */
  #forgotten: number[] = [];

  /** Every Service of the model: the whole desired state (a full sync); the cache starts over. */
  compileAll(model: Model, ids: IdRegistry, opts: CompileOptions = {}): CompileResult {
    // held first, so no new backend takes a quarantined backend's id
    for (const [id, ref] of opts.quarantine ?? []) ids.holdBackend(id, ref);
    this.#services.clear();
    this.#users.clear();
    this.#zones.clear();
    this.#forgotten = [];
    this.#node = model.node;
    this.#nodeAddresses = opts.nodeAddresses;

    const tables = emptyTables();
    const serviceNames = new Map<number, string>();
    // each Service's ServicePorts are consecutive in model order
    const ports = model.servicePorts;
    for (let start = 0, end = 0; start < ports.length; start = end) {
      const { name } = ports[start] as ServicePort;
      while (end < ports.length && (ports[end] as ServicePort).name.name === name.name && (ports[end] as ServicePort).name.namespace === name.namespace) end++;
      const key = `${name.namespace}/${name.name}`;
      const compiled = compileService(ports.slice(start, end), ids, serviceNames);
      this.#services.set(key, { ref: { kind: 'Service', namespace: name.namespace, name: name.name }, ...compiled });
      for (const e of compiled.entries) tables[e.map].set(e.hex, e.entry);
      for (const id of compiled.backends.keys()) this.#addUser(id, key);
    }

    // backends, in id order (zone ids are handed out in that order)
    const zoneNames = new Map<number, string>();
    for (const id of Uint32Array.from(this.#users.keys()).sort()) {
      const e = this.#backendEntry(id, ids, zoneNames);
      tables[e.map].set(e.hex, e.entry);
    }
    ids.endSync();
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
    const previous = emptyTables();
    const next = emptyTables();
    const touch = (map: ManagedMapName, hex: string): void => {
      const e = tableOf(current, map).get(hex);
      if (e !== undefined) previous[map].set(hex, e);
    };
    const serviceIds: number[] = [];
    const revNatIds: number[] = [];

    // the backends these Services used and the zones they were in, before anything moves
    const zonesBefore = new Map<number, string | undefined>();
    for (const key of changed.keys()) {
      for (const id of this.#services.get(key)?.backends.keys() ?? []) {
        if (!zonesBefore.has(id)) zonesBefore.set(id, this.#merged(id).ep.zone);
      }
    }
    const affected = new Set(zonesBefore.keys());

    for (const [key, { ref, servicePorts }] of changed) {
      const old = this.#services.get(key);
      if (old !== undefined) {
        for (const e of old.entries) {
          touch(e.map, e.hex);
          if (e.map === 'serviceNames') serviceIds.push(e.entry.key as number);
          else if (e.map === 'revnat4' || e.map === 'revnat6') revNatIds.push(e.entry.key as number);
        }
        for (const id of old.backends.keys()) this.#removeUser(id, key);
        this.#services.delete(key);
      }
      if (servicePorts.length === 0) continue;
      const compiled = compileService(servicePorts, ids, undefined);
      this.#services.set(key, { ref, ...compiled });
      for (const e of compiled.entries) {
        touch(e.map, e.hex);
        next[e.map].set(e.hex, e.entry);
      }
      for (const id of compiled.backends.keys()) {
        this.#addUser(id, key);
        affected.add(id);
      }
    }

    // the affected backends merged again, in id order
    for (const id of [...affected].sort((a, b) => a - b)) {
      const hex = keyHex('backends4', id);
      touch('backends4', hex);
      touch('backends6', hex);
      if (zonesBefore.has(id)) this.#dropZone(zonesBefore.get(id));
      if (!this.#users.has(id)) continue;
      const e = this.#backendEntry(id, ids, undefined);
      next[e.map].set(e.hex, e.entry);
    }

    // Ids these Services may have stopped using stay while others use them (or
    // the maps keep the backend for its flows), as in a full compile.
    const backendIds = [...zonesBefore.keys(), ...this.#forgotten];
    this.#forgotten = [];
    for (const id of backendIds) {
      if (this.#users.has(id)) ids.backendId(this.#merged(id).ref);
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
    return { previous: previous as unknown as DesiredMaps, next: next as unknown as DesiredMaps };
  }

  /** Backends deleted from the maps behind compile's back (collectQuarantine): the next compile releases their ids unless used. */
  forget(backendIds: Iterable<number>): void {
    this.#forgotten.push(...backendIds);
  }

  /** A backend's use merged over its Services. */
  #merged(id: number): BackendUse {
    const users = this.#users.get(id);
    let merged: BackendUse | undefined;
    for (const key of typeof users === 'string' ? [users] : (users ?? [])) {
      const use = this.#services.get(key)?.backends.get(id);
      if (use === undefined) continue;
      if (merged === undefined) merged = use;
      else if (use.ready && !merged.ready) merged = { ...merged, ready: true };
    }
    if (merged === undefined) throw new Error(`backend ${id}: no Service uses it`);
    return merged;
  }

  /** The entry of backend `id`, merged over the Services using it. */
  #backendEntry(id: number, ids: IdRegistry, zoneNames: Map<number, string> | undefined): KeyedEntry {
    const use = this.#merged(id);
    const { ep, family } = use;
    if (ep.zone !== undefined && ep.zone !== '') this.#zones.set(ep.zone, (this.#zones.get(ep.zone) ?? 0) + 1);
    const zone = ids.zoneId(ep.zone, id);
    if (zone !== 0 && ep.zone !== undefined) zoneNames?.set(zone, ep.zone);
    const nodeAddresses =
      ep.nodeName === undefined
        ? undefined
        : (this.#nodeAddresses?.get(ep.nodeName) ?? (ep.isLocal ? this.#node?.addresses : undefined));
    const map = family === 'IPv6' ? 'backends6' : 'backends4';
    const value = {
      addr: ep.address,
      port: ep.port,
      proto: use.ref.proto,
      state: use.ready ? BE_STATE_ACTIVE : BE_STATE_TERMINATING,
      flags: ep.isLocal ? BE_F_LOCAL : 0,
      zone,
      nodeAddr: firstOfFamily(nodeAddresses, family) ?? (family === 'IPv6' ? '::' : '0.0.0.0'),
    };
    return { map, hex: keyHex(map, id), entry: { key: id, value } };
  }

  #dropZone(zone: string | undefined): void {
    if (zone === undefined || zone === '') return;
    const n = (this.#zones.get(zone) ?? 0) - 1;
    if (n > 0) this.#zones.set(zone, n);
    else this.#zones.delete(zone);
  }

  #addUser(id: number, key: string): void {
    const users = this.#users.get(id);
    if (users === undefined) {
      this.#users.set(id, key);
      return;
    }
    const list = typeof users === 'string' ? [users] : users;
    const ref = (this.#services.get(key) as CachedService).ref;
    let i = list.length;
    while (i > 0 && compareRefs((this.#services.get(list[i - 1] as string) as CachedService).ref, ref) > 0) i--;
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
