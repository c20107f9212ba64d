// EndpointSlices joined to their Service and turned into Endpoints per Service
// port name and family, as kube-proxy's EndpointSliceCache does.
import { parseIP, sortKeyOf } from './ip.js';
import {
  LABEL_HEADLESS,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
  type EndpointSlice,
  type SliceEndpoint,
} from './k8s-types.js';
import type { Endpoint, IPFamily, ModelError, ObjectRef, Protocol } from './types.js';

/** "namespace/name": how Services and the slices that name them are joined. */
export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** "name/protocol": how a slice port is matched to a Service port. */
export function portKey(name: string, protocol: Protocol): string {
  return `${name}/${protocol}`;
}

export function sliceRef(slice: EndpointSlice): ObjectRef {
  return {
    kind: 'EndpointSlice',
    namespace: slice.metadata?.namespace || 'default',
    name: slice.metadata?.name ?? '',
  };
}

/**
 * The Service key a slice belongs to, or undefined for slices kube-proxy does not
 * watch: no kubernetes.io/service-name label, labelled for another proxy, or of a
 * headless Service.
 */
export function sliceServiceKey(slice: EndpointSlice): string | undefined {
  const labels = slice.metadata?.labels ?? {};
  const service = labels[LABEL_SERVICE_NAME];
  if (typeof service !== 'string' || service === '') return undefined;
  if (LABEL_SERVICE_PROXY_NAME in labels || LABEL_HEADLESS in labels) return undefined;
  return serviceKey(slice.metadata?.namespace || 'default', service);
}

/** Slices grouped by the Service they belong to, each group sorted by slice name. */
export function groupEndpointSlices(slices: Iterable<EndpointSlice>): Map<string, EndpointSlice[]> {
  const groups = new Map<string, EndpointSlice[]>();
  for (const slice of slices) {
    const key = sliceServiceKey(slice);
    if (key === undefined) continue;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, [slice]);
    else group.push(slice);
  }
  for (const group of groups.values()) {
    group.sort((a, b) => compareStrings(a.metadata?.name ?? '', b.metadata?.name ?? ''));
  }
  return groups;
}

export interface ServicePortKeys {
  readonly ref: ObjectRef;
  /** portKey(name, protocol) of every Service port. */
  readonly ports: ReadonlySet<string>;
}

export interface CollectedEndpoints {
  /** portKey → family → endpoints, deduplicated by address:port and sorted. */
  readonly byPort: ReadonlyMap<string, ReadonlyMap<IPFamily, readonly Endpoint[]>>;
  readonly errors: readonly ModelError[];
}

interface CheckedEndpoint {
  readonly sortKey: string;
  readonly address: string;
  readonly family: IPFamily;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName: string | undefined;
  readonly zone: string | undefined;
  readonly zoneHints: readonly string[];
  readonly nodeHints: readonly string[];
  readonly isLocal: boolean;
}

/**
 * The endpoints of one Service's ports from its slices (sorted by name, so the
 * result is deterministic). Each slice port is matched to the Service port of
 * the same name and protocol; its number is that port's targetPort for the
 * slice's endpoints. An address in several slices is kept once, preferring the
 * copy that is local to this node, else the first.
 */
export function collectEndpoints(
  slices: readonly EndpointSlice[],
  service: ServicePortKeys,
  nodeName: string,
): CollectedEndpoints {
  const errors: ModelError[] = [];
  const sets = new Map<string, Map<IPFamily, Map<string, { key: string; ep: Endpoint }>>>();

  for (const slice of slices) {
    const ref = sliceRef(slice);
    const err = (field: string, message: string): void => {
      errors.push({ ref, field, message });
    };
    const addressType = slice.addressType;
    if (addressType === 'FQDN') continue; // kube-proxy proxies IPs only
    if (addressType !== 'IPv4' && addressType !== 'IPv6') {
      err('addressType', `unknown addressType ${JSON.stringify(addressType)}`);
      continue;
    }

    // Ports first: endpoints are checked only when some port matches.
    const ports: { key: string; port: number }[] = [];
    (Array.isArray(slice.ports) ? slice.ports : []).forEach((p, i) => {
      const at = `ports[${i}]`;
      if (p === null || typeof p !== 'object') return err(at, 'not an object');
      // A nil port means "all ports" in the API; kube-proxy ignores it, so do we.
      if (p.port === undefined || p.port === null) return;
      const name = p.name ?? '';
      const protocol = p.protocol ?? 'TCP';
      if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') {
        return err(`${at}.protocol`, `unsupported protocol ${JSON.stringify(protocol)}`);
      }
      if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
        return err(`${at}.port`, `port ${JSON.stringify(p.port)} out of range 1-65535`);
      }
      const key = portKey(name, protocol);
      if (!service.ports.has(key)) {
        return err(
          `${at}.name`,
          `Service ${service.ref.namespace}/${service.ref.name} has no port named ${JSON.stringify(name)} with protocol ${protocol}; ignored`,
        );
      }
      if (ports.some((q) => q.key === key)) return err(`${at}.name`, `duplicate port ${key}`);
      ports.push({ key, port: p.port });
    });
    if (ports.length === 0) continue;

    const checked: CheckedEndpoint[] = [];
    (Array.isArray(slice.endpoints) ? slice.endpoints : []).forEach((ep, i) => {
      const result = checkEndpoint(ep, addressType, nodeName);
      if (typeof result === 'string') err(`endpoints[${i}].addresses`, result);
      else checked.push(result);
    });

    for (const { key, port } of ports) {
      let byFamily = sets.get(key);
      if (byFamily === undefined) sets.set(key, (byFamily = new Map()));
      let set = byFamily.get(addressType);
      if (set === undefined) byFamily.set(addressType, (set = new Map()));
      for (const c of checked) {
        const id = `${c.address}|${port}`;
        if (!c.isLocal && set.has(id)) continue;
        set.set(id, { key: c.sortKey, ep: toEndpoint(c, port) });
      }
    }
  }

  const byPort = new Map<string, Map<IPFamily, readonly Endpoint[]>>();
  for (const [key, byFamily] of sets) {
    const out = new Map<IPFamily, readonly Endpoint[]>();
    for (const [family, set] of byFamily) {
      const list = [...set.values()];
      list.sort((a, b) => compareStrings(a.key, b.key) || a.ep.port - b.ep.port);
      out.set(family, list.map((e) => e.ep));
    }
    byPort.set(key, out);
  }
  return { byPort, errors };
}

function checkEndpoint(ep: SliceEndpoint, addressType: IPFamily, nodeName: string): CheckedEndpoint | string {
  if (ep === null || typeof ep !== 'object') return 'endpoint is not an object';
  const text = Array.isArray(ep.addresses) ? ep.addresses[0] : undefined;
  // Addresses are fungible; kube-proxy (and we) use the first.
  if (typeof text !== 'string') return 'no address';
  const ip = parseIP(text);
  if (ip === undefined) return `invalid IP address ${JSON.stringify(text)}`;
  if (ip.family !== addressType) return `${ip.family} address ${ip.address} in an ${addressType} slice`;
  const c = ep.conditions ?? {};
  const ready = c.ready === undefined || c.ready === null || c.ready;
  const epNode = typeof ep.nodeName === 'string' && ep.nodeName !== '' ? ep.nodeName : undefined;
  return {
    sortKey: sortKeyOf(ip),
    address: ip.address,
    family: ip.family,
    ready,
    serving: c.serving === undefined || c.serving === null || c.serving,
    terminating: c.terminating === true,
    nodeName: epNode,
    zone: typeof ep.zone === 'string' && ep.zone !== '' ? ep.zone : undefined,
    zoneHints: hintNames(ep.hints?.forZones),
    nodeHints: hintNames(ep.hints?.forNodes),
    isLocal: nodeName !== '' && epNode === nodeName,
  };
}

function toEndpoint(c: CheckedEndpoint, port: number): Endpoint {
  return {
    address: c.address,
    family: c.family,
    port,
    ready: c.ready,
    serving: c.serving,
    terminating: c.terminating,
    nodeName: c.nodeName,
    zone: c.zone,
    zoneHints: c.zoneHints,
    nodeHints: c.nodeHints,
    isLocal: c.isLocal,
  };
}

const NO_HINTS: readonly string[] = Object.freeze([]);

function hintNames(list: readonly { readonly name: string }[] | undefined): readonly string[] {
  if (!Array.isArray(list) || list.length === 0) return NO_HINTS;
  const names = new Set<string>();
  for (const h of list) if (typeof h?.name === 'string' && h.name !== '') names.add(h.name);
  return names.size === 0 ? NO_HINTS : [...names].sort(compareStrings);
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
