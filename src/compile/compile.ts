// compile: model → the entries every managed map should hold. Pure apart from
// the IdRegistry (which remembers ids and slot tables between syncs) and
// deterministic: the same model and registry history give the same entries.
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
import type { Endpoint, FrontendKind, IPFamily, Model, Protocol, ServicePort } from '../model/types.js';
import { TableBuilder } from './entry-table.js';
import { frontendKey, type BackendRef, type EndpointSet, type IdRegistry } from './ids.js';
import type { DesiredMaps } from './types.js';

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

export function compile(model: Model, ids: IdRegistry, opts: CompileOptions = {}): CompileResult {
  // held first, so no new backend takes a quarantined backend's id
  for (const [id, ref] of opts.quarantine ?? []) ids.holdBackend(id, ref);

  const backends4 = new TableBuilder('backends4');
  const backends6 = new TableBuilder('backends6');
  const serviceSlots = new TableBuilder('serviceSlots');
  const serviceNameTable = new TableBuilder('serviceNames');
  const revnat4 = new TableBuilder('revnat4');
  const revnat6 = new TableBuilder('revnat6');
  const sourceRanges4 = new TableBuilder('sourceRanges4');
  const sourceRanges6 = new TableBuilder('sourceRanges6');
  const services4 = new TableBuilder('services4');
  const services6 = new TableBuilder('services6');
  const serviceNames = new Map<number, string>();
  const backendUses = new Map<number, BackendUse>();

  // Service ports, each with its frontends, in model order (sorted).
  const groups = new Map<string, ServicePort[]>();
  for (const sp of model.servicePorts) {
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
        const seen = backendUses.get(backendId);
        if (seen === undefined) backendUses.set(backendId, { family: first.family, ref, ep, ready: ep.ready });
        else if (ep.ready) seen.ready = true;
      }
      const table = ids.arrangeSlots(id, wanted);
      table.forEach((backendId, i) => serviceSlots.set({ serviceId: id, slot: i + 1 }, { backendId }));
      services.set(set, { id, count: table.length });
      const name = set === 'local' ? `${first.portName} local` : first.portName;
      serviceNames.set(id, name);
      serviceNameTable.set(id, { name: fitServiceName(name) });
    }

    // frontends
    for (const sp of group) {
      const revNatId = ids.revNatId(sp.address, sp.port, proto);
      if (v6) revnat6.set(revNatId, { addr: sp.address, port: sp.port });
      else revnat4.set(revNatId, { addr: sp.address, port: sp.port });

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
        if (v6) services6.set(key, value);
        else services4.set(key, value);

        for (const range of sp.loadBalancerSourceRanges) {
          const cidr = parseCIDR(range);
          if (cidr === undefined) continue; // the model keeps valid ranges only
          const rangeKey = { prefixlen: 32 + cidr.prefixLength, serviceId: svc.id, addr: cidr.address };
          if (cidr.family === 'IPv6') sourceRanges6.set(rangeKey, { allow: 1 });
          else sourceRanges4.set(rangeKey, { allow: 1 });
        }
      }
    }
  }

  // backends, in id order
  const zoneNames = new Map<number, string>();
  const thisNode = model.node;
  for (const id of [...backendUses.keys()].sort((a, b) => a - b)) {
    const use = backendUses.get(id) as BackendUse;
    const { ep, family } = use;
    const zone = ids.zoneId(ep.zone, id);
    if (zone !== 0 && ep.zone !== undefined) zoneNames.set(zone, ep.zone);
    const nodeAddresses =
      ep.nodeName === undefined
        ? undefined
        : (opts.nodeAddresses?.get(ep.nodeName) ?? (ep.isLocal ? thisNode.addresses : undefined));
    const value = {
      addr: ep.address,
      port: ep.port,
      proto: use.ref.proto,
      state: use.ready ? BE_STATE_ACTIVE : BE_STATE_TERMINATING,
      flags: ep.isLocal ? BE_F_LOCAL : 0,
      zone,
    };
    if (family === 'IPv6') backends6.set(id, { ...value, nodeAddr: firstOfFamily(nodeAddresses, family) ?? '::' });
    else backends4.set(id, { ...value, nodeAddr: firstOfFamily(nodeAddresses, family) ?? '0.0.0.0' });
  }

  ids.endSync();
  return {
    maps: {
      backends4: backends4.entries,
      backends6: backends6.entries,
      serviceSlots: serviceSlots.entries,
      serviceNames: serviceNameTable.entries,
      revnat4: revnat4.entries,
      revnat6: revnat6.entries,
      sourceRanges4: sourceRanges4.entries,
      sourceRanges6: sourceRanges6.entries,
      services4: services4.entries,
      services6: services6.entries,
    },
    serviceNames,
    zoneNames,
  };
}
