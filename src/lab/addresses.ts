// The lab's address plan and the checks that keep every lab address inside the benchmarking
// ranges 198.18.0.0/15 (RFC 2544) and 2001:2::/48 (RFC 5180). Nothing the lab configures — node,
// pod, Service, load-balancer addresses, route prefixes and nexthops — may lie outside them, and
// no default route is ever added (routeArgs refuses one).
//
// Plan (N = node index 1..20, K = pod index 2..254 on its node):
//   fabric (bridge in <prefix>-fabric)  198.18.0.0/24           2001:2::/64
//     node N uplink up0                 198.18.0.N              2001:2::N        (N in decimal digits)
//     external client ext0              198.18.0.250            2001:2::250
//   pod CIDR of node N                  198.18.(16+N).0/24      2001:2:0:(16+N)::/64
//     node side of every pod veth       198.18.(16+N).1/32      2001:2:0:(16+N)::1/128
//     pod K on node N (eth0)            198.18.(16+N).K/32      2001:2:0:(16+N)::K/128
//   Service ClusterIPs                  198.19.0.0/16           2001:2:0:ff::/112   (control-plane.ts)
//   apiserver --advertise-address       198.18.0.254 (assigned to nothing, never dialled)
// IPv6 groups are written with the decimal digits of the IPv4 octet (2001:2:0:17:: for
// 198.18.17.0), so the two families read alike; they are valid hex all the same.
import { isIP, isIPv6 } from 'node:net';

function v4ToInt(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function v6Groups(a: string): number[] {
  const addr = a.split('%')[0] as string;
  const [head, tail] = addr.includes('::') ? (addr.split('::') as [string, string]) : [addr, undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : new Array<string>(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((g) => parseInt(g, 16));
}

/** True when addr lies in the lab ranges 198.18.0.0/15 or 2001:2::/48. */
export function isLabAddress(addr: string): boolean {
  const fam = isIP(addr);
  if (fam === 4) return v4ToInt(addr) >>> 17 === v4ToInt('198.18.0.0') >>> 17;
  if (fam === 6) {
    const g = v6Groups(addr);
    return g[0] === 0x2001 && g[1] === 0x0002 && g[2] === 0;
  }
  return false;
}

export function isLinkLocal6(addr: string): boolean {
  return isIPv6(addr) && ((v6Groups(addr)[0] as number) & 0xffc0) === 0xfe80;
}

/** Throws unless cidr is ADDR/LEN inside the lab ranges (and not wider than them). */
export function assertLabCidr(cidr: string, what: string): { addr: string; len: number; v6: boolean } {
  const m = /^([^/]+)\/(\d+)$/.exec(cidr);
  if (!m) throw new Error(`${what}: ${cidr} is not ADDR/LEN`);
  const addr = m[1] as string;
  const len = Number(m[2]);
  const v6 = isIPv6(addr);
  if (!isLabAddress(addr)) throw new Error(`${what}: ${cidr} is outside 198.18.0.0/15 and 2001:2::/48`);
  if (v6 ? len < 48 || len > 128 : len < 15 || len > 32) {
    throw new Error(`${what}: ${cidr} is wider than the lab range (or an invalid length)`);
  }
  return { addr, len, v6 };
}

export const MAX_NODES = 20;
export const MAX_PODS_PER_NODE = 253; // K = 2..254

export const FABRIC = {
  subnet4: '198.18.0.0/24',
  subnet6: '2001:2::/64',
  external4: '198.18.0.250',
  external6: '2001:2::250',
} as const;

/** Where kube-apiserver says it lives (the `kubernetes` Service's endpoint): no lab host has it. */
export const LAB_ADVERTISE_ADDRESS = '198.18.0.254';

export interface NodeAddresses {
  readonly addr4: string;
  readonly addr6: string;
  readonly podCidr4: string;
  readonly podCidr6: string;
  /** The node-side address of every pod veth (each pod's gateway). */
  readonly podGateway4: string;
  readonly podGateway6: string;
}

export function nodeAddresses(index: number): NodeAddresses {
  if (!Number.isInteger(index) || index < 1 || index > MAX_NODES) throw new Error(`node index ${index}: want 1..${MAX_NODES}`);
  const o = 16 + index;
  return {
    addr4: `198.18.0.${index}`,
    addr6: `2001:2::${index}`,
    podCidr4: `198.18.${o}.0/24`,
    podCidr6: `2001:2:0:${o}::/64`,
    podGateway4: `198.18.${o}.1`,
    podGateway6: `2001:2:0:${o}::1`,
  };
}

export function podAddresses(nodeIndex: number, podIndex: number): { addr4: string; addr6: string } {
  if (!Number.isInteger(podIndex) || podIndex < 2 || podIndex > 254) throw new Error(`pod index ${podIndex}: want 2..254`);
  const o = 16 + nodeIndex;
  nodeAddresses(nodeIndex); // validates the node index
  return { addr4: `198.18.${o}.${podIndex}`, addr6: `2001:2:0:${o}::${podIndex}` };
}
