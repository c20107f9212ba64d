// Which syncs must invalidate the datapath's cached rewrites of established flows
// (bpf/lib/flowcache.h for tc, the slots and LRU of bpf/lib/xdp.h): those that change
// how an existing flow is translated. An established flow's packets read its conntrack
// entry, its backend and its frontend's reverse-NAT entry, and (XDP) the frontend's
// source ranges; the slots, the backend count and the selection fields only ever matter
// to new flows. So a sync that only adds endpoints (new backends, new slots, a higher
// count: the common scale-up and readiness flip) leaves every cache valid, and the
// agent bumps the flow epoch only when this says so.
import type { Lb4Backend, Lb6Backend, LbService } from '../bpf/abi.js';
import type { SyncPlan } from './diff.js';
import { keyHex, sameValue } from './entry-table.js';
import type { DesiredMaps, ManagedMapName } from './types.js';

/** Do two values agree on everything an established flow's translation reads? */
function sameForFlows(map: ManagedMapName, a: unknown, b: unknown): boolean {
  switch (map) {
    case 'services4':
    case 'services6': {
      const x = a as LbService;
      const y = b as LbService;
      // backendCount, affinityTimeout and algorithm choose backends for new flows only
      return x.serviceId === y.serviceId && x.revNatId === y.revNatId && x.flags === y.flags && x.kind === y.kind;
    }
    case 'backends4':
    case 'backends6': {
      // state (active, terminating, quarantined) never stops a flow that has the backend
      const x = a as Lb4Backend | Lb6Backend;
      const y = b as Lb4Backend | Lb6Backend;
      return sameValue(map, { ...x, state: 0 } as never, { ...y, state: 0 } as never);
    }
    default:
      return sameValue(map, a as never, b as never);
  }
}

/**
 * Does applying `plan` over `before` (the maps as they were) change the translation of a
 * flow that exists? Deletions of frontends, backends or reverse-NAT entries do, any
 * change of source ranges does, and so does an overwrite that changes what a flow reads;
 * additions, slots, names and quarantines do not.
 */
export function planInvalidatesFlows(plan: SyncPlan, before: DesiredMaps): boolean {
  for (const step of plan.steps) {
    if (step.map === 'serviceSlots' || step.map === 'serviceNames') continue;
    if (step.map === 'sourceRanges4' || step.map === 'sourceRanges6') return true;
    if (step.op === 'delete') return true;
    if (step.op === 'quarantine') continue; // a backend kept for the flows it has
    const table = before[step.map] as ReadonlyMap<string, { value: unknown }>;
    for (const e of step.entries) {
      const old = table.get(keyHex(step.map, e.key as never));
      if (old !== undefined && !sameForFlows(step.map, old.value, e.value)) return true;
    }
  }
  return false;
}
