// The read-only views behind `strait lb list`, `ct list`, `backends` and
// `status`: built from the pinned maps alone (plus the agent's status file when
// present), so they work with the agent stopped. Pure over the maps given.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  BE_F_LOCAL,
  BE_STATE_ACTIVE,
  BE_STATE_QUARANTINED,
  BE_STATE_TERMINATING,
  CT_DIR_SERVICE,
  CT_F_CLOSING,
  CT_F_DSR,
  CT_F_ESTABLISHED,
  CT_F_SEEN_REPLY,
  CT_F_SNAT,
  LB_ALG_MAGLEV,
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
  LB_SCOPE_INTERNAL,
  NODE_MODE_DSR,
  type CtEntry,
  type LbService,
} from '../bpf/abi.js';
import { LINKS_DIR, sumMetrics, type DataplaneMaps, type MetricSample } from '../bpf/dataplane.js';
import type { AgentStatus } from '../agent/status-file.js';
import { flagNames, hostPort, protoName } from './format.js';

export const SERVICE_FLAGS = {
  affinity: LB_F_AFFINITY,
  'local-external': LB_F_LOCAL_EXTERNAL,
  'local-internal': LB_F_LOCAL_INTERNAL,
  dsr: LB_F_DSR,
  'source-ranges': LB_F_SOURCE_RANGES,
  'two-scopes': LB_F_TWO_SCOPES,
  'reject-no-endpoints': LB_F_REJECT_NO_ENDPOINTS,
} as const;

const CT_FLAGS = {
  'seen-reply': CT_F_SEEN_REPLY,
  established: CT_F_ESTABLISHED,
  closing: CT_F_CLOSING,
  snat: CT_F_SNAT,
  dsr: CT_F_DSR,
} as const;

const KIND_NAMES: Record<number, string> = {
  [LB_KIND_CLUSTER_IP]: 'ClusterIP',
  [LB_KIND_NODE_PORT]: 'NodePort',
  [LB_KIND_EXTERNAL_IP]: 'ExternalIP',
  [LB_KIND_LOAD_BALANCER]: 'LoadBalancer',
};

const STATE_NAMES: Record<number, string> = {
  [BE_STATE_ACTIVE]: 'active',
  [BE_STATE_TERMINATING]: 'terminating',
  [BE_STATE_QUARANTINED]: 'quarantined',
};

export type PinnedMaps = Partial<DataplaneMaps>;

export interface BackendView {
  readonly id: number;
  readonly address: string;
  readonly port: number;
  readonly protocol: string;
  readonly state: string;
  readonly local: boolean;
  readonly zone: number;
  readonly nodeAddress: string | null;
}

export interface FrontendView {
  readonly frontend: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: string;
  readonly scope: 'external' | 'internal';
  readonly kind: string;
  readonly service: string | null;
  readonly serviceId: number;
  readonly revNatId: number;
  readonly algorithm: 'random' | 'maglev';
  readonly flags: readonly string[];
  readonly affinityTimeoutSeconds: number;
  /** The Service has no endpoints here: what happens to its traffic. */
  readonly noEndpoints: 'reject' | 'drop' | null;
  /** How traffic arriving from outside reaches a backend on another node (see remoteMode). */
  readonly remote: RemoteMode;
  /**
   * Why a north-south frontend is SNATed on a node running with --dsr:
   * 'targetPort≠port' — a backend listens on another port than the
   * frontend's, which DSR cannot carry (bpf/lib/dsr.h). null otherwise.
   */
  readonly remoteWhy: 'targetPort≠port' | null;
  readonly backends: readonly (BackendView & { readonly slot: number })[];
  /** Slots whose backend entry is missing (should never happen: a bug or a map edited by hand). */
  readonly missingBackends: readonly { slot: number; id: number | null }[];
}

/**
 * How a frontend's traffic from outside the node reaches a backend on another
 * node (bpf/lib/uplink.h): 'snat' — source rewritten to the node (north-south
 * frontends, the default); 'dsr' — encapsulated, the backend answers the client
 * directly; 'local-only' — externalTrafficPolicy: Local, only this node's
 * backends, client address kept; 'dnat' — destination rewritten only, the
 * replies must route back through this node (ClusterIP, and internal-scope
 * entries, which only cluster traffic uses). A backend on this node is always
 * reached directly, without SNAT.
 */
export type RemoteMode = 'snat' | 'dsr' | 'local-only' | 'dnat';

export function remoteMode(scope: number, svc: Pick<LbService, 'kind' | 'flags'>): RemoteMode {
  if (svc.kind === LB_KIND_CLUSTER_IP || scope === LB_SCOPE_INTERNAL) return 'dnat';
  if ((svc.flags & LB_F_LOCAL_EXTERNAL) !== 0) return 'local-only';
  if ((svc.flags & LB_F_DSR) !== 0) return 'dsr';
  return 'snat';
}

export interface LbList {
  readonly frontends: readonly FrontendView[];
  /** From the agent's status file; absent when the agent never ran on this root. */
  readonly skipped: AgentStatus['skipped'];
  readonly errors: AgentStatus['errors'];
}

function backendView(maps: PinnedMaps, id: number): BackendView | undefined {
  const b4 = maps.backends4?.lookup(id);
  const b = b4 ?? maps.backends6?.lookup(id);
  if (!b) return undefined;
  const unspecified = b.nodeAddr === '0.0.0.0' || b.nodeAddr === '::';
  return {
    id,
    address: b.addr,
    port: b.port,
    protocol: protoName(b.proto),
    state: STATE_NAMES[b.state] ?? `state-${b.state}`,
    local: (b.flags & BE_F_LOCAL) !== 0,
    zone: b.zone,
    nodeAddress: unspecified ? null : b.nodeAddr,
  };
}

function frontendView(
  maps: PinnedMaps,
  key: { addr: string; port: number; proto: number; scope: number },
  svc: LbService,
  dsrNode: boolean,
): FrontendView {
  const backends: (BackendView & { slot: number })[] = [];
  const missingBackends: { slot: number; id: number | null }[] = [];
  for (let slot = 1; slot <= svc.backendCount; slot++) {
    const s = maps.serviceSlots?.lookup({ serviceId: svc.serviceId, slot });
    const b = s ? backendView(maps, s.backendId) : undefined;
    if (b) backends.push({ ...b, slot });
    else missingBackends.push({ slot, id: s?.backendId ?? null });
  }
  const name = maps.serviceNames?.lookup(svc.serviceId)?.name;
  return {
    frontend: `${hostPort(key.addr, key.port)}/${protoName(key.proto)}`,
    address: key.addr,
    port: key.port,
    protocol: protoName(key.proto),
    scope: key.scope === LB_SCOPE_INTERNAL ? 'internal' : 'external',
    kind: KIND_NAMES[svc.kind] ?? `kind-${svc.kind}`,
    service: name === undefined || name === '' ? null : name,
    serviceId: svc.serviceId,
    revNatId: svc.revNatId,
    algorithm: svc.algorithm === LB_ALG_MAGLEV ? 'maglev' : 'random',
    flags: flagNames(svc.flags, SERVICE_FLAGS),
    affinityTimeoutSeconds: (svc.flags & LB_F_AFFINITY) !== 0 ? svc.affinityTimeout : 0,
    noEndpoints: svc.backendCount === 0 ? ((svc.flags & LB_F_REJECT_NO_ENDPOINTS) !== 0 ? 'reject' : 'drop') : null,
    remote: remoteMode(key.scope, svc),
    remoteWhy:
      dsrNode && remoteMode(key.scope, svc) === 'snat' && backends.some((b) => b.port !== key.port) ? 'targetPort≠port' : null,
    backends,
    missingBackends,
  };
}

export function lbList(maps: PinnedMaps, status: AgentStatus | undefined): LbList {
  const frontends: FrontendView[] = [];
  const dsrNode = ((maps.config?.lookup(0)?.modes ?? 0) & NODE_MODE_DSR) !== 0;
  for (const [key, svc] of maps.services4?.entries() ?? []) frontends.push(frontendView(maps, key, svc, dsrNode));
  for (const [key, svc] of maps.services6?.entries() ?? []) frontends.push(frontendView(maps, key, svc, dsrNode));
  frontends.sort(
    (a, b) => (a.service ?? '').localeCompare(b.service ?? '') || a.frontend.localeCompare(b.frontend) || a.scope.localeCompare(b.scope),
  );
  return { frontends, skipped: status?.skipped ?? [], errors: status?.errors ?? [] };
}

export interface CtView {
  readonly family: 4 | 6;
  readonly direction: 'service' | 'reply';
  readonly protocol: string;
  readonly source: string;
  readonly destination: string;
  readonly backendId: number;
  readonly revNatId: number;
  readonly flags: readonly string[];
  /** Seconds until the entry stops matching; negative = expired (a miss, awaiting LRU reuse). */
  readonly expiresInSeconds: number;
  readonly ageSeconds: number;
}

/** CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() reads (libuv's hrtime uses it on Linux). */
const monotonicNs = (): bigint => process.hrtime.bigint();

function ctView(family: 4 | 6, key: { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }, e: CtEntry, nowNs: bigint): CtView {
  return {
    family,
    direction: key.dir === CT_DIR_SERVICE ? 'service' : 'reply',
    protocol: protoName(key.proto),
    source: hostPort(key.saddr, key.sport),
    destination: hostPort(key.daddr, key.dport),
    backendId: e.backendId,
    revNatId: e.revNatId,
    flags: flagNames(e.flags, CT_FLAGS),
    expiresInSeconds: Math.round(Number(e.expires - nowNs) / 1e8) / 10,
    ageSeconds: Math.max(0, Math.round(Number(nowNs / 1_000_000_000n) - e.created)),
  };
}

export function ctList(maps: PinnedMaps, opts: { family?: 4 | 6; includeExpired?: boolean } = {}): CtView[] {
  const now = monotonicNs();
  const out: CtView[] = [];
  if (opts.family !== 6) for (const [k, e] of maps.ct4?.entries() ?? []) out.push(ctView(4, k, e, now));
  if (opts.family !== 4) for (const [k, e] of maps.ct6?.entries() ?? []) out.push(ctView(6, k, e, now));
  return out
    .filter((c) => opts.includeExpired === true || c.expiresInSeconds > 0)
    .sort((a, b) => a.source.localeCompare(b.source) || a.destination.localeCompare(b.destination));
}

export interface BackendListItem extends BackendView {
  readonly family: 4 | 6;
  /** Service ids whose slots reference this backend. */
  readonly serviceIds: readonly number[];
}

export function backendsList(maps: PinnedMaps): BackendListItem[] {
  const refs = new Map<number, Set<number>>();
  for (const [k, v] of maps.serviceSlots?.entries() ?? []) {
    const set = refs.get(v.backendId) ?? new Set<number>();
    set.add(k.serviceId);
    refs.set(v.backendId, set);
  }
  const out: BackendListItem[] = [];
  for (const [family, map] of [
    [4, maps.backends4],
    [6, maps.backends6],
  ] as const) {
    for (const [id] of map?.entries() ?? []) {
      const view = backendView(maps, id);
      if (view) out.push({ ...view, family, serviceIds: [...(refs.get(id) ?? [])].sort((a, b) => a - b) });
    }
  }
  return out.sort((a, b) => a.id - b.id);
}

export interface StatusView {
  readonly bpfRoot: string;
  readonly pinned: boolean;
  readonly maps: readonly { name: string; entries: number; maxEntries: number }[];
  /** Pins under <root>/links: tcx links (netns-ifname-direction) and clsact records. */
  readonly attachments: readonly string[];
  readonly metrics: readonly MetricSample[];
  readonly agent: AgentStatus | null;
}

export function statusView(bpfRoot: string, maps: PinnedMaps, agent: AgentStatus | undefined): StatusView {
  const mapRows: { name: string; entries: number; maxEntries: number }[] = [];
  for (const m of Object.values(maps)) {
    if (!m || m.name === 'metrics' || m.name === 'icmp_ratelimit' || m.name === 'config') continue;
    mapRows.push({ name: m.name, entries: m.count(), maxEntries: m.maxEntries });
  }
  const linksDir = join(bpfRoot, LINKS_DIR);
  return {
    bpfRoot,
    pinned: existsSync(bpfRoot),
    maps: mapRows.sort((a, b) => a.name.localeCompare(b.name)),
    attachments: existsSync(linksDir) ? readdirSync(linksDir).sort() : [],
    metrics: maps.metrics ? sumMetrics(maps.metrics) : [],
    agent: agent ?? null,
  };
}
