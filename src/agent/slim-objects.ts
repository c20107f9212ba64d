// Slim projections: a Service, EndpointSlice or Node cut down to the fields
// the agent reads (src/model/k8s-types.ts lists them; AgentHealth reads a
// Node's deletionTimestamp and taints). An API object carries much more —
// managedFields, annotations (the last applied configuration among them),
// owner references, a Node's image list — none of which the agent needs to
// keep for as long as the object lives.
//
// What is kept is copied as it is, malformed or not, so the model reports a
// bad value in a slim object exactly as in the full one; an array element or
// sub-object that is not an object is kept as is for the same reason. Fields
// the object does not have are not added.
import type { EndpointSlice, Node, ObjectMeta, Service } from '../model/k8s-types.js';

type Plain = Record<string, unknown>;

function isObject(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The named fields of `from` that it has (undefined ones left out). */
function pick(from: Plain, fields: readonly string[]): Plain {
  const out: Plain = {};
  for (const f of fields) {
    const v = from[f];
    if (v !== undefined) out[f] = v;
  }
  return out;
}

/** `value` with `fields` picked from it when it is an object, else as it is. */
function pickIf(value: unknown, fields: readonly string[]): unknown {
  return isObject(value) ? pick(value, fields) : value;
}

/** Each element with `fields` picked (pickIf); anything but an array as it is. */
function pickEach(value: unknown, fields: readonly string[]): unknown {
  return Array.isArray(value) ? value.map((v) => pickIf(v, fields)) : value;
}

const META = ['name', 'namespace', 'labels', 'resourceVersion'];
const SERVICE_SPEC = [
  'type',
  'clusterIP',
  'clusterIPs',
  'ports',
  'externalIPs',
  'externalTrafficPolicy',
  'internalTrafficPolicy',
  'healthCheckNodePort',
  'sessionAffinity',
  'sessionAffinityConfig',
  'loadBalancerSourceRanges',
  'trafficDistribution',
];
const SERVICE_PORT = ['name', 'port', 'protocol', 'targetPort', 'nodePort'];
const INGRESS = ['ip', 'ipMode'];
const SLICE_ENDPOINT = ['addresses', 'conditions', 'hints', 'nodeName', 'zone'];
const SLICE_PORT = ['name', 'port', 'protocol'];

/** A copy of object `o` with `build` applied to it when it is an object, else `o` itself. */
function slim<T>(o: T, build: (from: Plain) => Plain): T {
  return (isObject(o) ? build(o) : o) as T;
}

export function slimService(s: Service): Service {
  return slim(s, (from) => {
    const out: Plain = {};
    if (from['metadata'] !== undefined) out['metadata'] = pickIf(from['metadata'], META);
    const spec = from['spec'];
    if (spec !== undefined) {
      const o = isObject(spec) ? pick(spec, SERVICE_SPEC) : spec;
      if (isObject(o) && o['ports'] !== undefined) o['ports'] = pickEach(o['ports'], SERVICE_PORT);
      out['spec'] = o;
    }
    const status = from['status'];
    if (status !== undefined) {
      if (!isObject(status)) out['status'] = status;
      else if (status['loadBalancer'] !== undefined) {
        const lb = status['loadBalancer'];
        out['status'] = {
          loadBalancer: isObject(lb) && lb['ingress'] !== undefined ? { ingress: pickEach(lb['ingress'], INGRESS) } : isObject(lb) ? {} : lb,
        };
      }
    }
    return out;
  });
}

export function slimEndpointSlice(s: EndpointSlice): EndpointSlice {
  return slim(s, (from) => {
    const out: Plain = {};
    if (from['metadata'] !== undefined) out['metadata'] = pickIf(from['metadata'], META);
    if (from['addressType'] !== undefined) out['addressType'] = from['addressType'];
    if (from['endpoints'] !== undefined) out['endpoints'] = pickEach(from['endpoints'], SLICE_ENDPOINT);
    if (from['ports'] !== undefined) out['ports'] = pickEach(from['ports'], SLICE_PORT);
    return out;
  });
}

export function slimNode(n: Node): Node {
  return slim(n, (from) => {
    const out: Plain = {};
    if (from['metadata'] !== undefined) out['metadata'] = pickIf(from['metadata'], [...META, 'deletionTimestamp']);
    const spec = from['spec'];
    if (spec !== undefined) out['spec'] = pickIf(spec, ['taints']);
    const status = from['status'];
    if (status !== undefined) out['status'] = pickIf(status, ['addresses']);
    return out;
  });
}

/** metadata.resourceVersion when it is a non-empty string. */
export function resourceVersionOf(o: { readonly metadata?: ObjectMeta } | undefined): string | undefined {
  const rv = o?.metadata?.resourceVersion;
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}

// ---- packed slices: how the object store writes a slim EndpointSlice as JSON ----
//
// An endpoint is most of a slice's text, and nearly every endpoint has the same
// shape: {addresses, conditions: {ready, serving, terminating}, nodeName, zone}.
// Written as [1, address(es), conditions code, node name, zone] it takes a
// quarter of the bytes, and parses into fewer objects (the conditions object is
// one of 64 shared ones). Any other endpoint is written as [0, endpoint], as it is.

const TRI: readonly unknown[] = [undefined, true, false, null];
const CONDITION_KEYS = ['ready', 'serving', 'terminating'] as const;
const SIMPLE_ENDPOINT_KEYS = new Set(['addresses', 'conditions', 'nodeName', 'zone']);

/** The conditions' code (1 + 4-ary digits of ready, serving, terminating), or -1 when they are not simple. */
function conditionsCode(c: unknown): number {
  if (c === undefined) return 0;
  if (!isObject(c)) return -1;
  let code = 0;
  let weight = 1;
  let keys = 0;
  for (const k of CONDITION_KEYS) {
    const v = c[k];
    if (v !== undefined) keys++;
    const digit = TRI.indexOf(v);
    if (digit < 0) return -1;
    code += digit * weight;
    weight *= 4;
  }
  return Object.keys(c).length === keys ? code + 1 : -1;
}

const SHARED_CONDITIONS: readonly Readonly<Plain>[] = Array.from({ length: 64 }, (_, code) => {
  const c: Plain = {};
  CONDITION_KEYS.forEach((k, i) => {
    const v = TRI[Math.floor(code / 4 ** i) % 4];
    if (v !== undefined) c[k] = v;
  });
  return Object.freeze(c);
});

function packEndpoint(ep: unknown): unknown[] {
  if (!isObject(ep) || !Object.keys(ep).every((k) => SIMPLE_ENDPOINT_KEYS.has(k))) return [0, ep];
  const { addresses, nodeName, zone } = ep;
  const code = conditionsCode(ep['conditions']);
  if (
    code < 0 ||
    !Array.isArray(addresses) ||
    !addresses.every((a) => typeof a === 'string') ||
    (nodeName !== undefined && typeof nodeName !== 'string') ||
    (zone !== undefined && typeof zone !== 'string')
  ) {
    return [0, ep];
  }
  const out: unknown[] = [1, addresses.length === 1 ? addresses[0] : addresses, code, nodeName ?? 0, zone ?? 0];
  while (out.length > 3 && out[out.length - 1] === 0) out.pop();
  return out;
}

function unpackEndpoint(p: unknown): unknown {
  if (!Array.isArray(p) || p[0] !== 1) return Array.isArray(p) ? p[1] : p;
  const [, addrs, code, node, zone] = p as [1, string | string[], number, (string | 0)?, (string | 0)?];
  const ep: Plain = { addresses: typeof addrs === 'string' ? [addrs] : addrs };
  if (code !== 0) ep['conditions'] = SHARED_CONDITIONS[code - 1];
  if (node !== undefined && node !== 0) ep['nodeName'] = node;
  if (zone !== undefined && zone !== 0) ep['zone'] = zone;
  return ep;
}

/** A slim slice with its endpoints packed (JSON of it is what the store keeps). */
export function packEndpointSlice(s: EndpointSlice): unknown {
  if (!isObject(s) || !Array.isArray(s['endpoints'])) return s;
  return { ...s, endpoints: (s['endpoints'] as unknown[]).map(packEndpoint) };
}

/** The slim slice packEndpointSlice packed. */
export function unpackEndpointSlice(p: unknown): EndpointSlice {
  if (!isObject(p) || !Array.isArray(p['endpoints'])) return p as EndpointSlice;
  p['endpoints'] = (p['endpoints'] as unknown[]).map(unpackEndpoint);
  return p as EndpointSlice;
}
