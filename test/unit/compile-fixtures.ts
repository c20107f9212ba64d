// Small Services, EndpointSlices and a Node for the compile / diff / apply
// tests, in the lab ranges only.
//
// Address plan:
//   node-a (this node, zone-a)   198.18.0.1, 2001:2::1
//   node-b (zone-b)              198.18.0.2, 2001:2::2
//   cluster IPs                  198.19.0.0/24, 2001:2:0:20::/64
//   LB / external IPs            198.19.100.0/24, 2001:2:0:30::/64
//   pods                         198.18.16.0/20, 2001:2:0:10::/64
//   clients                      198.18.200.0/24, 198.18.201.0/24
import type {
  EndpointSlice,
  Model,
  Node,
  Service,
  ServiceSpec,
  ServiceStatus,
  SliceEndpoint,
} from '../../src/model/index.js';
import { buildModel } from '../../src/model/index.js';

export const NODE: Node = {
  metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
  status: {
    addresses: [
      { type: 'InternalIP', address: '198.18.0.1' },
      { type: 'InternalIP', address: '2001:2::1' },
    ],
  },
};

export const http = { name: 'http', port: 80, protocol: 'TCP', targetPort: 'web' } as const;
export const dns = { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 } as const;

export function svc(name: string, spec: ServiceSpec, status?: ServiceStatus): Service {
  return { metadata: { name, namespace: 'default' }, spec, ...(status ? { status } : {}) };
}

export function lbStatus(...ips: string[]): ServiceStatus {
  return { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } };
}

export type Ports = [name: string, port: number, protocol?: string][];

export function slice(
  service: string,
  name: string,
  addressType: 'IPv4' | 'IPv6',
  ports: Ports,
  endpoints: SliceEndpoint[],
): EndpointSlice {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType,
    ports: ports.map(([n, port, protocol]) => ({ name: n, port, protocol: protocol ?? 'TCP' })),
    endpoints,
  };
}

export interface EpOptions {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  /** default node-b (remote) */
  node?: string;
  zone?: string;
}

export function ep(address: string, o: EpOptions = {}): SliceEndpoint {
  const node = o.node ?? 'node-b';
  return {
    addresses: [address],
    conditions: {
      ready: o.ready ?? true,
      ...(o.serving !== undefined ? { serving: o.serving } : {}),
      ...(o.terminating !== undefined ? { terminating: o.terminating } : {}),
    },
    nodeName: node,
    zone: o.zone ?? (node === 'node-a' ? 'zone-a' : 'zone-b'),
  };
}

export const local = (address: string, o: EpOptions = {}): SliceEndpoint => ep(address, { ...o, node: 'node-a' });

export function model(services: Service[], slices: EndpointSlice[] = []): Model {
  return buildModel({ services, endpointSlices: slices, node: NODE, nodeName: 'node-a' });
}

/** A small cluster: most Service shapes at once (golden file, diff and apply tests). */
export function sampleCluster(): { services: Service[]; slices: EndpointSlice[] } {
  return {
    services: [
      svc('web', {
        type: 'LoadBalancer',
        clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
        ports: [{ ...http, nodePort: 30080 }],
        externalTrafficPolicy: 'Local',
        loadBalancerSourceRanges: ['198.18.200.0/24', '2001:2:0:40::/64'],
        healthCheckNodePort: 30999,
      }, lbStatus('198.19.100.1', '2001:2:0:30::1')),
      svc('dns', {
        clusterIP: '198.19.0.53',
        ports: [dns, { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 }],
        sessionAffinity: 'ClientIP',
      }),
      svc('empty', { clusterIP: '198.19.0.20', ports: [http], externalIPs: ['198.19.100.20'] }),
      svc('node-local', { clusterIP: '198.19.0.30', ports: [http], internalTrafficPolicy: 'Local' }),
    ],
    slices: [
      slice('web', 'web-v4', 'IPv4', [['http', 8080]], [
        local('198.18.16.1'),
        ep('198.18.17.1'),
        ep('198.18.17.2', { ready: false, serving: true, terminating: true }),
      ]),
      slice('web', 'web-v6', 'IPv6', [['http', 8080]], [local('2001:2:0:10::1'), ep('2001:2:0:10::2')]),
      slice('dns', 'dns-1', 'IPv4', [['dns', 5353, 'UDP'], ['dns-tcp', 5353]], [ep('198.18.17.53'), local('198.18.16.53')]),
      slice('node-local', 'node-local-1', 'IPv4', [['http', 8080]], [local('198.18.16.30'), ep('198.18.17.30')]),
    ],
  };
}
