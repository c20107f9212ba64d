// EndpointSlices joined to their Service and turned into Endpoints per Service
// port name and family, as kube-proxy's EndpointSliceCache does.
import { ipSortKey, ipv4Value, parseIP } from './ip.js';
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
  // portKey → family → the endpoints of every slice, in slice order (sorted and deduplicated below)
  const sets = new Map<string, Map<IPFamily, Endpoint[]>>();

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
    const first = ports[0];
    if (first === undefined) continue;

    // the endpoints with the first port's number; the other ports get copies
    const checked: Endpoint[] = [];
    (Array.isArray(slice.endpoints) ? slice.endpoints : []).forEach((ep, i) => {
      const result = checkEndpoint(ep, addressType, nodeName, first.port);
      if (typeof result === 'string') err(`endpoints[${i}].addresses`, result);
      else checked.push(result);
    });

    for (const { key, port } of ports) {
      let byFamily = sets.get(key);
      if (byFamily === undefined) sets.set(key, (byFamily = new Map()));
      let list = byFamily.get(addressType);
      if (list === undefined) byFamily.set(addressType, (list = []));
      for (const c of checked) list.push(port === c.port ? c : { ...c, port });
    }
  }

  const byPort = new Map<string, Map<IPFamily, readonly Endpoint[]>>();
  for (const [key, byFamily] of sets) {
    const out = new Map<IPFamily, readonly Endpoint[]>();
    for (const [family, list] of byFamily) out.set(family, sortEndpoints(list));
    byPort.set(key, out);
  }
  return { byPort, errors };
}

/** An address's sort key (ipSortKey's order): IPv4 as its number, IPv6 as text. */
function addressSortKey(address: string): number | string {
  const v4 = ipv4Value(address);
  return v4 >= 0 ? v4 : ipSortKey(address);
}

/**
 * Endpoints (one family) sorted by address and port, each address:port once:
 * the copy local to this node when there is one (the last such), else the first.
 */
function sortEndpoints(list: Endpoint[]): readonly Endpoint[] {
  const n = list.length;
  if (n <= 1) return list;
  const keys = list.map((ep) => addressSortKey(ep.address));
  const order = (a: number, b: number): number => {
    const ka = keys[a] as number | string;
    const kb = keys[b] as number | string;
    const byAddress = typeof ka === 'number' && typeof kb === 'number' ? ka - kb : compareStrings(String(ka), String(kb));
    return byAddress || (list[a] as Endpoint).port - (list[b] as Endpoint).port;
  };
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) sorted = order(i - 1, i) < 0;
  if (sorted) return list;
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => order(a, b) || a - b);
  const out: Endpoint[] = [];
  for (let i = 0; i < n; ) {
    let pick = idx[i] as number;
    let local: number | undefined;
    let j = i;
    while (j < n && order(idx[i] as number, idx[j] as number) === 0) {
      if ((list[idx[j] as number] as Endpoint).isLocal) local = idx[j];
      j++;
    }
    if (local !== undefined) pick = local;
    out.push(list[pick] as Endpoint);
    i = j;
  }
  return out;
}

function checkEndpoint(ep: SliceEndpoint, addressType: IPFamily, nodeName: string, port: number): Endpoint | string {
  if (ep === null || typeof ep !== 'object') return 'endpoint is not an object';
  const text = Array.isArray(ep.addresses) ? ep.addresses[0] : undefined;
  // Addresses are fungible; kube-proxy (and we) use the first.
  if (typeof text !== 'string') return 'no address';
  let address: string;
  let family: IPFamily;
  if (ipv4Value(text) >= 0) {
    // a strict dotted quad is its own canonical form (parseIP's fast path, without the bytes)
    address = text;
    family = 'IPv4';
  } else {
    const ip = parseIP(text);
    if (ip === undefined) return `invalid IP address ${JSON.stringify(text)}`;
    address = ip.address;
    family = ip.family;
  }
  if (family !== addressType) return `${family} address ${address} in an ${addressType} slice`;
  const c = ep.conditions ?? {};
  const epNode = typeof ep.nodeName === 'string' && ep.nodeName !== '' ? ep.nodeName : undefined;
  return {
    address,
    family,
    port,
    ready: c.ready === undefined || c.ready === null || c.ready,
    serving: c.serving === undefined || c.serving === null || c.serving,
    terminating: c.terminating === true,
    nodeName: epNode,
    zone: typeof ep.zone === 'string' && ep.zone !== '' ? ep.zone : undefined,
    zoneHints: hintNames(ep.hints?.forZones),
    nodeHints: hintNames(ep.hints?.forNodes),
    isLocal: nodeName !== '' && epNode === nodeName,
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
