// Test fixtures that write Services into a loaded Dataplane the way the agent's
// apply stage does (backends → slots → revnat → service entry, then deletions),
// so test/bpf, test/netns and bench seed maps with one vocabulary: addService,
// setBackends, removeService. Each ends as a sync does, with the flow epoch
// bumped (cached rewrites of established flows are remade from the new maps).
import { isIPv6 } from 'node:net';
import {
  BE_STATE_ACTIVE,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_ALG_RANDOM,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_KIND_CLUSTER_IP,
  LB_SCOPE_EXTERNAL,
} from '../../src/bpf/abi.js';
import type { Dataplane } from '../../src/bpf/dataplane.js';

export type Proto = 'tcp' | 'udp';
export const protoNumber = (p: Proto): number => (p === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);

export interface BackendSpec {
  id: number;
  addr: string;
  port: number;
  state?: number;
  flags?: number;
}

export interface ServiceSpec {
  id: number;
  vip: string;
  port: number;
  proto: Proto;
  backends: BackendSpec[];
  flags?: number;
  algorithm?: number;
  scope?: number;
  kind?: number;
}

const familyOf = (addr: string): 4 | 6 => (isIPv6(addr) ? 6 : 4);

export function writeBackend(dp: Dataplane, proto: Proto, b: BackendSpec): void {
  const value = {
    port: b.port,
    proto: protoNumber(proto),
    state: b.state ?? BE_STATE_ACTIVE,
    flags: b.flags ?? 0,
    zone: 0,
  };
  if (familyOf(b.addr) === 6) dp.maps.backends6.update(b.id, { ...value, addr: b.addr, nodeAddr: '::' });
  else dp.maps.backends4.update(b.id, { ...value, addr: b.addr, nodeAddr: '0.0.0.0' });
}

function serviceKey(s: ServiceSpec) {
  return { addr: s.vip, port: s.port, proto: protoNumber(s.proto), scope: s.scope ?? LB_SCOPE_EXTERNAL };
}

/** Writes (or rewrites) a Service in hitless order. Returns the spec. */
export function addService(dp: Dataplane, s: ServiceSpec): ServiceSpec {
  for (const b of s.backends) writeBackend(dp, s.proto, b);
  s.backends.forEach((b, i) => dp.maps.serviceSlots.update({ serviceId: s.id, slot: i + 1 }, { backendId: b.id }));
  const value = {
    serviceId: s.id,
    backendCount: s.backends.length,
    revNatId: s.id,
    affinityTimeout: 0,
    flags: s.flags ?? LB_F_REJECT_NO_ENDPOINTS,
    kind: s.kind ?? LB_KIND_CLUSTER_IP,
    algorithm: s.algorithm ?? LB_ALG_RANDOM,
  };
  if (familyOf(s.vip) === 6) {
    dp.maps.revnat6.update(s.id, { addr: s.vip, port: s.port });
    dp.maps.services6.update(serviceKey(s), value);
  } else {
    dp.maps.revnat4.update(s.id, { addr: s.vip, port: s.port });
    dp.maps.services4.update(serviceKey(s), value);
  }
  dp.bumpFlowEpoch();
  return s;
}

/**
 * Replaces a Service's backend set: new slots first, then the count (one atomic
 * update), then the slots past the new count. Backend entries are left alone:
 * callers decide whether a removed backend is deleted or kept quarantined.
 */
export function setBackends(dp: Dataplane, s: ServiceSpec, backends: BackendSpec[]): ServiceSpec {
  const before = s.backends.length;
  const next = { ...s, backends };
  for (const b of backends) writeBackend(dp, s.proto, b);
  backends.forEach((b, i) => dp.maps.serviceSlots.update({ serviceId: s.id, slot: i + 1 }, { backendId: b.id }));
  const services = familyOf(s.vip) === 6 ? dp.maps.services6 : dp.maps.services4;
  const current = services.lookup(serviceKey(s));
  if (!current) throw new Error(`service ${s.vip}:${s.port} is not in the map`);
  services.update(serviceKey(s), { ...current, backendCount: backends.length });
  for (let slot = backends.length + 1; slot <= before; slot++) dp.maps.serviceSlots.delete({ serviceId: s.id, slot });
  dp.bumpFlowEpoch();
  return next;
}

export function removeService(dp: Dataplane, s: ServiceSpec): void {
  const v6 = familyOf(s.vip) === 6;
  (v6 ? dp.maps.services6 : dp.maps.services4).delete(serviceKey(s));
  s.backends.forEach((_, i) => dp.maps.serviceSlots.delete({ serviceId: s.id, slot: i + 1 }));
  (v6 ? dp.maps.revnat6 : dp.maps.revnat4).delete(s.id);
  dp.bumpFlowEpoch();
}

/** Sum of one metric reason over directions (or one direction). */
export function metric(dp: Dataplane, reason: string, dir?: 'ingress' | 'egress'): bigint {
  let total = 0n;
  for (const m of dp.readMetrics()) if (m.reason === reason && (dir === undefined || m.dir === dir)) total += m.packets;
  return total;
}
