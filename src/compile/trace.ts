// trace: "this VIP:port ⇒ which backends" answered from compiled maps, the way
// the datapath looks them up (kube-proxy's packet-flow tests): the external
// entry first, the internal one after an LB_F_TWO_SCOPES hit (socket LB),
// source ranges, the no-endpoints verdict, then the slot table.
import {
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_SOURCE_RANGES,
  LB_F_TWO_SCOPES,
  LB_SCOPE_EXTERNAL,
  LB_SCOPE_INTERNAL,
  type LbService,
} from '../bpf/abi.js';
import { joinHostPort, parseCIDR, parseIP } from '../model/ip.js';
import type { Protocol } from '../model/types.js';
import { keyHex } from './entry-table.js';
import type { DesiredMaps } from './types.js';

export interface TraceQuery {
  readonly dst: string;
  readonly dport: number;
  readonly proto: Protocol | number;
  /** 'external' (default): as tc sees traffic from elsewhere; 'internal': from this node (socket LB). */
  readonly scope?: 'external' | 'internal';
  /** The client address, checked against loadBalancerSourceRanges when given. */
  readonly src?: string;
}

export interface TraceBackend {
  readonly id: number;
  readonly addr: string;
  readonly port: number;
  /** BE_STATE_* */
  readonly state: number;
  /** BE_F_* */
  readonly flags: number;
}

export interface TraceHit {
  /** "198.19.0.10:80/TCP" */
  readonly frontend: string;
  readonly serviceId: number;
  readonly service: LbService;
  /** In slot order (slot 1 first). */
  readonly backends: readonly TraceBackend[];
}

export interface TraceMiss {
  readonly verdict: 'no-service' | 'reject' | 'drop';
  /** Why a drop: 'no-endpoints' | 'source-range' | 'scope-missing' | 'backend-missing'. */
  readonly reason?: string;
  readonly service?: LbService;
}

export type TraceResult = TraceHit | TraceMiss;

const PROTO: Readonly<Record<Protocol, number>> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP, SCTP: IPPROTO_SCTP };
const PROTO_NAME = new Map<number, string>(Object.entries(PROTO).map(([k, v]) => [v, k]));

export function isTraceHit(r: TraceResult): r is TraceHit {
  return !('verdict' in r);
}

export function trace(maps: DesiredMaps, q: TraceQuery): TraceResult {
  const proto = typeof q.proto === 'number' ? q.proto : PROTO[q.proto];
  const v6 = q.dst.includes(':');
  const lookup = (scope: number): LbService | undefined => {
    const key = { addr: q.dst, port: q.dport, proto, scope };
    return v6
      ? maps.services6.get(keyHex('services6', key))?.value
      : maps.services4.get(keyHex('services4', key))?.value;
  };

  let svc = lookup(LB_SCOPE_EXTERNAL);
  if (svc === undefined) return { verdict: 'no-service' };
  if (q.scope === 'internal' && (svc.flags & LB_F_TWO_SCOPES) !== 0) {
    svc = lookup(LB_SCOPE_INTERNAL);
    if (svc === undefined) return { verdict: 'drop', reason: 'scope-missing' };
  }
  if (q.src !== undefined && (svc.flags & LB_F_SOURCE_RANGES) !== 0 && !sourceAllowed(maps, svc.serviceId, q.src)) {
    return { verdict: 'drop', reason: 'source-range', service: svc };
  }
  if (svc.backendCount === 0) {
    return (svc.flags & LB_F_REJECT_NO_ENDPOINTS) !== 0
      ? { verdict: 'reject', service: svc }
      : { verdict: 'drop', reason: 'no-endpoints', service: svc };
  }

  const backends: TraceBackend[] = [];
  for (let slot = 1; slot <= svc.backendCount; slot++) {
    const s = maps.serviceSlots.get(keyHex('serviceSlots', { serviceId: svc.serviceId, slot }));
    const be =
      s === undefined
        ? undefined
        : v6
          ? maps.backends6.get(keyHex('backends6', s.value.backendId))?.value
          : maps.backends4.get(keyHex('backends4', s.value.backendId))?.value;
    if (s === undefined || be === undefined) return { verdict: 'drop', reason: 'backend-missing', service: svc };
    backends.push({ id: s.value.backendId, addr: be.addr, port: be.port, state: be.state, flags: be.flags });
  }
  return {
    frontend: `${joinHostPort(q.dst, q.dport)}/${PROTO_NAME.get(proto) ?? proto}`,
    serviceId: svc.serviceId,
    service: svc,
    backends,
  };
}

/** The LPM lookup of source_ranges{4,6}: some prefix of this service id holds the client. */
function sourceAllowed(maps: DesiredMaps, serviceId: number, src: string): boolean {
  const ip = parseIP(src);
  if (ip === undefined) return false;
  const table = ip.family === 'IPv6' ? maps.sourceRanges6 : maps.sourceRanges4;
  for (const { key, value } of table.values()) {
    if (key.serviceId !== serviceId || value.allow === 0) continue;
    const cidr = parseCIDR(`${key.addr}/${key.prefixlen - 32}`);
    if (cidr === undefined) continue;
    const masked = parseCIDR(`${ip.address}/${cidr.prefixLength}`);
    if (masked?.address === cidr.address) return true;
  }
  return false;
}
