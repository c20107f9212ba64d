// The model stage, Services → frontends: which addresses, ports and settings each
// Service gets on this node, which Services are ignored, and how bad input is
// reported without disturbing other Services.
//
// Address plan (lab ranges only):
//   node-a        InternalIP 198.18.0.1, 2001:2::1; ExternalIP 198.18.1.1
//   cluster IPs   198.19.0.0/24, 2001:2:0:20::/64
//   LB / external 198.19.100.0/24, 2001:2:0:30::/64
//   pods          198.18.16.0/20, 2001:2:0:10::/64
import { describe, expect, it } from 'vitest';

import {
  buildModel,
  joinHostPort,
  type EndpointSlice,
  type Model,
  type ModelInput,
  type Node,
  type Service,
  type ServicePort,
  type ServiceSpec,
  type ServiceStatus,
} from '../../src/model/index.js';

const NODE: Node = {
  metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
  status: {
    addresses: [
      { type: 'Hostname', address: 'node-a' },
      { type: 'ExternalIP', address: '198.18.1.1' },
      { type: 'InternalIP', address: '198.18.0.1' },
      { type: 'InternalIP', address: '2001:2::1' },
    ],
  },
};

interface Meta {
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  status?: ServiceStatus;
}

function svc(name: string, spec: ServiceSpec, meta: Meta = {}): Service {
  return {
    metadata: {
      name,
      namespace: meta.namespace ?? 'default',
      ...(meta.labels ? { labels: meta.labels } : {}),
      ...(meta.annotations ? { annotations: meta.annotations } : {}),
    },
    spec,
    ...(meta.status ? { status: meta.status } : {}),
  };
}

const http = { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 } as const;

function build(services: Service[], extra: Partial<ModelInput> = {}): Model {
  return buildModel({ services, endpointSlices: [], node: NODE, nodeName: 'node-a', ...extra });
}

/** "kind address:port/protocol", the compact form the tables assert. */
function frontend(sp: ServicePort): string {
  return `${sp.kind} ${joinHostPort(sp.address, sp.port)}/${sp.protocol}`;
}

describe('frontends', () => {
  it.each<{ name: string; service: Service; options?: Partial<ModelInput>; want: string[] }>([
    {
      name: 'ClusterIP: one frontend per port',
      service: svc('web', { clusterIP: '198.19.0.10', ports: [http, { name: 'dns', port: 53, protocol: 'UDP' }] }),
      want: ['clusterIP 198.19.0.10:53/UDP', 'clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'clusterIPs dual-stack: a frontend per family',
      service: svc('web', {
        clusterIP: '198.19.0.10',
        clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
        ipFamilies: ['IPv4', 'IPv6'],
        ports: [http],
      }),
      want: ['clusterIP 198.19.0.10:80/TCP', 'clusterIP [2001:2:0:20::a]:80/TCP'],
    },
    {
      name: 'clusterIPs IPv6-primary: addresses canonicalised',
      service: svc('web', { clusterIPs: ['2001:0002:0000:0020:0000:0000:0000:000A', '198.19.0.10'], ports: [http] }),
      want: ['clusterIP 198.19.0.10:80/TCP', 'clusterIP [2001:2:0:20::a]:80/TCP'],
    },
    {
      name: 'NodePort on every node address (InternalIP and ExternalIP) of the Service families',
      service: svc('web', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] }),
      want: ['clusterIP 198.19.0.10:80/TCP', 'nodePort 198.18.0.1:30080/TCP', 'nodePort 198.18.1.1:30080/TCP'],
    },
    {
      name: 'NodePort dual-stack on the node addresses of both families',
      service: svc('web', {
        type: 'NodePort',
        clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
        ports: [{ ...http, nodePort: 30080 }],
      }),
      want: [
        'clusterIP 198.19.0.10:80/TCP',
        'nodePort 198.18.0.1:30080/TCP',
        'nodePort 198.18.1.1:30080/TCP',
        'clusterIP [2001:2:0:20::a]:80/TCP',
        'nodePort [2001:2::1]:30080/TCP',
      ],
    },
    {
      name: 'nodePortAddresses filter: only node addresses inside the CIDRs; a family with no CIDR keeps all',
      service: svc('web', {
        type: 'NodePort',
        clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
        ports: [{ ...http, nodePort: 30080 }],
      }),
      options: { nodePortAddresses: ['198.18.0.0/24'] },
      want: [
        'clusterIP 198.19.0.10:80/TCP',
        'nodePort 198.18.0.1:30080/TCP',
        'clusterIP [2001:2:0:20::a]:80/TCP',
        'nodePort [2001:2::1]:30080/TCP',
      ],
    },
    {
      name: 'nodePortAddresses primary: the first address of each family',
      service: svc('web', {
        type: 'NodePort',
        clusterIPs: ['198.19.0.10', '2001:2:0:20::a'],
        ports: [{ ...http, nodePort: 30080 }],
      }),
      options: { nodePortAddresses: ['primary'] },
      want: [
        'clusterIP 198.19.0.10:80/TCP',
        'nodePort 198.18.0.1:30080/TCP',
        'clusterIP [2001:2:0:20::a]:80/TCP',
        'nodePort [2001:2::1]:30080/TCP',
      ],
    },
    {
      name: 'nodeAddresses option replaces the Node object (cluster-less mode)',
      service: svc('web', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] }),
      options: { node: undefined, nodeAddresses: ['198.18.0.7'] },
      want: ['clusterIP 198.19.0.10:80/TCP', 'nodePort 198.18.0.7:30080/TCP'],
    },
    {
      name: 'LoadBalancer: ingress IPs are frontends, ipMode Proxy and hostname-only entries skipped',
      service: svc(
        'web',
        { type: 'LoadBalancer', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] },
        {
          status: {
            loadBalancer: {
              ingress: [
                { ip: '198.19.100.1' },
                { ip: '198.19.100.2', ipMode: 'VIP' },
                { ip: '198.19.100.3', ipMode: 'Proxy' },
                { hostname: 'lb.example.test' },
              ],
            },
          },
        },
      ),
      want: [
        'clusterIP 198.19.0.10:80/TCP',
        'loadBalancer 198.19.100.1:80/TCP',
        'loadBalancer 198.19.100.2:80/TCP',
        'nodePort 198.18.0.1:30080/TCP',
        'nodePort 198.18.1.1:30080/TCP',
      ],
    },
    {
      name: 'allocateLoadBalancerNodePorts false: no NodePort frontends',
      service: svc(
        'web',
        { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, clusterIP: '198.19.0.10', ports: [http] },
        { status: { loadBalancer: { ingress: [{ ip: '198.19.100.1' }] } } },
      ),
      want: ['clusterIP 198.19.0.10:80/TCP', 'loadBalancer 198.19.100.1:80/TCP'],
    },
    {
      name: 'externalIPs are frontends on the Service port',
      service: svc('web', { clusterIP: '198.19.0.10', externalIPs: ['198.19.100.7', '198.19.100.8'], ports: [http] }),
      want: ['clusterIP 198.19.0.10:80/TCP', 'externalIP 198.19.100.7:80/TCP', 'externalIP 198.19.100.8:80/TCP'],
    },
    {
      name: 'externalIPs and LB IPs of a family the Service has no cluster IP for are not programmed',
      service: svc(
        'web',
        { clusterIP: '198.19.0.10', externalIPs: ['2001:2:0:30::7'], ports: [http] },
        { status: { loadBalancer: { ingress: [{ ip: '2001:2:0:30::1' }] } } },
      ),
      want: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'nodePort on a ClusterIP Service is ignored',
      service: svc('web', { clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] }),
      want: ['clusterIP 198.19.0.10:80/TCP'],
    },
  ])('$name', ({ service, options, want }) => {
    const m = build([service], options);
    expect(m.servicePorts.map(frontend)).toEqual(want);
    expect(m.skipped).toEqual([]);
  });

  it('every frontend of a port carries its Service port name, family and cluster IP', () => {
    const m = build([
      svc('web', { type: 'NodePort', clusterIPs: ['198.19.0.10', '2001:2:0:20::a'], ports: [{ ...http, nodePort: 30080 }] }),
    ]);
    for (const sp of m.servicePorts) {
      expect(sp.name).toEqual({ namespace: 'default', name: 'web', port: 'http', protocol: 'TCP' });
      expect(sp.portName).toBe('default/web:http/TCP');
      expect(sp.servicePort).toBe(80);
      expect(sp.nodePort).toBe(30080);
      expect(sp.targetPort).toBe(8080);
      expect(sp.clusterIP).toBe(sp.family === 'IPv4' ? '198.19.0.10' : '2001:2:0:20::a');
    }
  });

  it('the model is the same whatever order the objects come in', () => {
    const services = [
      svc('b', { clusterIP: '198.19.0.11', ports: [http] }),
      svc('a', { clusterIP: '198.19.0.10', ports: [http] }, { namespace: 'zeta' }),
      svc('a', { clusterIP: '198.19.0.12', ports: [http] }),
    ];
    const forward = build(services);
    const backward = build([...services].reverse());
    expect(backward).toEqual(forward);
    expect(forward.servicePorts.map((sp) => sp.portName)).toEqual([
      'default/a:http/TCP',
      'default/b:http/TCP',
      'zeta/a:http/TCP',
    ]);
  });
});

describe('ignored Services', () => {
  it.each<{ name: string; service: Service; reason: string }>([
    { name: 'headless (clusterIP None)', service: svc('h', { clusterIP: 'None', ports: [http] }), reason: 'headless' },
    { name: 'headless (clusterIPs [None])', service: svc('h', { clusterIPs: ['None'], ports: [http] }), reason: 'headless' },
    {
      name: 'ExternalName',
      service: svc('x', { type: 'ExternalName', externalName: 'db.example.test', ports: [http] }),
      reason: 'externalName',
    },
    {
      name: 'labelled service.kubernetes.io/service-proxy-name',
      service: svc('p', { clusterIP: '198.19.0.10', ports: [http] }, { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }),
      reason: 'serviceProxyName',
    },
    {
      name: 'labelled service-proxy-name with an empty value',
      service: svc('p', { clusterIP: '198.19.0.10', ports: [http] }, { labels: { 'service.kubernetes.io/service-proxy-name': '' } }),
      reason: 'serviceProxyName',
    },
    { name: 'no cluster IP yet', service: svc('n', { ports: [http] }), reason: 'noClusterIP' },
    { name: 'no ports', service: svc('n', { clusterIP: '198.19.0.10' }), reason: 'noPorts' },
    { name: 'only invalid cluster IPs', service: svc('n', { clusterIP: '198.19.0.300', ports: [http] }), reason: 'invalid' },
    { name: 'only invalid ports', service: svc('n', { clusterIP: '198.19.0.10', ports: [{ port: 0 }] }), reason: 'invalid' },
  ])('$name: skipped with reason $reason', ({ service, reason }) => {
    const m = build([service]);
    expect(m.servicePorts).toEqual([]);
    expect(m.skipped).toEqual([
      { ref: { kind: 'Service', namespace: 'default', name: service.metadata!.name }, reason, message: expect.any(String) },
    ]);
  });
});

describe('Service settings carried on each frontend', () => {
  const lbStatus = { loadBalancer: { ingress: [{ ip: '198.19.100.1' }, { ip: '2001:2:0:30::1' }] } };
  const base: ServiceSpec = { clusterIPs: ['198.19.0.10', '2001:2:0:20::a'], ports: [http] };

  it.each<{ name: string; spec: ServiceSpec; status?: ServiceStatus; check: (sp: ServicePort) => void }>([
    {
      name: 'no session affinity by default',
      spec: base,
      check: (sp) => expect(sp.sessionAffinity).toBeUndefined(),
    },
    {
      name: 'sessionAffinity ClientIP without a timeout: 10800 s',
      spec: { ...base, sessionAffinity: 'ClientIP' },
      check: (sp) => expect(sp.sessionAffinity).toEqual({ mode: 'ClientIP', timeoutSeconds: 10800 }),
    },
    {
      name: 'sessionAffinity ClientIP with timeoutSeconds',
      spec: { ...base, sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } },
      check: (sp) => expect(sp.sessionAffinity).toEqual({ mode: 'ClientIP', timeoutSeconds: 60 }),
    },
    {
      name: 'named targetPort carried as the name',
      spec: { ...base, ports: [{ ...http, targetPort: 'web' }] },
      check: (sp) => expect(sp.targetPort).toBe('web'),
    },
    {
      name: 'absent targetPort is the port',
      spec: { ...base, ports: [{ name: 'http', port: 80 }] },
      check: (sp) => expect(sp.targetPort).toBe(80),
    },
    {
      name: 'externalTrafficPolicy Local with a healthCheckNodePort on a LoadBalancer',
      spec: { ...base, type: 'LoadBalancer', externalTrafficPolicy: 'Local', healthCheckNodePort: 32000, ports: [{ ...http, nodePort: 30080 }] },
      status: lbStatus,
      check: (sp) => {
        expect(sp.externalPolicyLocal).toBe(true);
        expect(sp.externalUsesLocal).toBe(true);
        expect(sp.healthCheckNodePort).toBe(32000);
      },
    },
    {
      name: 'externalTrafficPolicy Local means nothing on a plain ClusterIP Service',
      spec: { ...base, externalTrafficPolicy: 'Local' },
      check: (sp) => {
        expect(sp.externalPolicyLocal).toBe(false);
        expect(sp.healthCheckNodePort).toBe(0);
      },
    },
    {
      name: 'internalTrafficPolicy Local',
      spec: { ...base, internalTrafficPolicy: 'Local' },
      check: (sp) => {
        expect(sp.internalPolicyLocal).toBe(true);
        expect(sp.internalUsesLocal).toBe(true);
      },
    },
    {
      name: 'loadBalancerSourceRanges: canonical CIDRs of the frontend family, on LB frontends only',
      spec: {
        ...base,
        type: 'LoadBalancer',
        allocateLoadBalancerNodePorts: false,
        loadBalancerSourceRanges: [' 198.18.7.9/24 ', '2001:2:0:40::/64', '198.19.200.0/24'],
      },
      status: lbStatus,
      check: (sp) => {
        const want =
          sp.kind !== 'loadBalancer' ? [] : sp.family === 'IPv4' ? ['198.18.7.0/24', '198.19.200.0/24'] : ['2001:2:0:40::/64'];
        expect(sp.loadBalancerSourceRanges).toEqual(want);
      },
    },
    {
      name: 'trafficDistribution carried',
      spec: { ...base, trafficDistribution: 'PreferClose' },
      check: (sp) => expect(sp.trafficDistribution).toBe('PreferClose'),
    },
  ])('$name', ({ spec, status, check }) => {
    const m = build([svc('web', spec, status ? { status } : {})]);
    expect(m.servicePorts.length).toBeGreaterThan(0);
    expect(m.errors).toEqual([]);
    m.servicePorts.forEach(check);
  });

  it('health checks list the LoadBalancer Services with externalTrafficPolicy Local', () => {
    const m = build([
      svc('local', {
        type: 'LoadBalancer',
        clusterIP: '198.19.0.10',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
        ports: [{ ...http, nodePort: 30080 }],
      }),
      svc('cluster', { type: 'LoadBalancer', clusterIP: '198.19.0.11', healthCheckNodePort: 32001, ports: [{ ...http, nodePort: 30081 }] }),
    ]);
    expect(m.healthChecks).toEqual([
      { ref: { kind: 'Service', namespace: 'default', name: 'local' }, nodePort: 32000, localEndpoints: 0 },
    ]);
  });
});

it('health check of a dual-stack Service: counted per family, as kube-proxy\'s one server per family (one dual-stack pod is 1 on each)', () => {
  const local = svc('dual', {
    type: 'LoadBalancer',
    clusterIP: '198.19.0.12',
    clusterIPs: ['198.19.0.12', '2001:2:0:ff::12'],
    ipFamilies: ['IPv4', 'IPv6'],
    externalTrafficPolicy: 'Local',
    healthCheckNodePort: 32002,
    ports: [{ ...http, nodePort: 30082 }],
  });
  const slice = (name: string, addressType: 'IPv4' | 'IPv6', addresses: string[]): EndpointSlice => ({
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': 'dual' } },
    addressType,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: addresses.map((a) => ({ addresses: [a], nodeName: 'node-a', conditions: { ready: true } })),
  });
  const m = build([local], {
    endpointSlices: [slice('dual-4', 'IPv4', ['198.18.16.1']), slice('dual-6', 'IPv6', ['2001:2:0:16::1', '2001:2:0:16::2'])],
  });
  expect(m.healthChecks).toEqual([{
    ref: { kind: 'Service', namespace: 'default', name: 'dual' },
    nodePort: 32002,
    localEndpoints: 2,
    localEndpointsByFamily: { IPv4: 1, IPv6: 2 },
  }]);
});

describe('bad input: reported with namespace/name and field, other Services unaffected', () => {
  const good = svc('good', { type: 'NodePort', clusterIP: '198.19.0.20', ports: [{ ...http, nodePort: 30090 }] }, { namespace: 'ok' });
  const goodSlice: EndpointSlice = {
    metadata: { name: 'good-1', namespace: 'ok', labels: { 'kubernetes.io/service-name': 'good' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['198.18.16.1'], nodeName: 'node-a' }],
  };
  const alone = buildModel({ services: [good], endpointSlices: [goodSlice], node: NODE, nodeName: 'node-a' });

  it.each<{
    name: string;
    service?: Service;
    slice?: EndpointSlice;
    errors: { kind: string; namespace: string; name: string; field: string }[];
    frontends: string[];
  }>([
    {
      name: 'invalid cluster IP of one family: the other family still served',
      service: svc('bad', { clusterIPs: ['198.19.0.10', '2001:2:0:20::g'], ports: [http] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.clusterIPs[1]' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'invalid external IP left out',
      service: svc('bad', { clusterIP: '198.19.0.10', externalIPs: ['198.19.100.x', '198.19.100.7'], ports: [http] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.externalIPs[0]' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP', 'externalIP 198.19.100.7:80/TCP'],
    },
    {
      name: 'invalid load balancer IP left out',
      service: svc(
        'bad',
        { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, clusterIP: '198.19.0.10', ports: [http] },
        { namespace: 'team', status: { loadBalancer: { ingress: [{ ip: '198.19.100.256' }] } } },
      ),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'status.loadBalancer.ingress[0].ip' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'duplicate port/protocol: the first kept',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'again', port: 80, protocol: 'TCP' }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].port' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'same port on another protocol is not a duplicate',
      service: svc('fine', { clusterIP: '198.19.0.10', ports: [http, { name: 'udp', port: 80, protocol: 'UDP' }] }, { namespace: 'team' }),
      errors: [],
      frontends: ['clusterIP 198.19.0.10:80/TCP', 'clusterIP 198.19.0.10:80/UDP'],
    },
    {
      name: 'duplicate port name',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'http', port: 81 }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].name' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'unsupported protocol',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'x', port: 81, protocol: 'ICMP' }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].protocol' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'port out of range',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'x', port: 65536 }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].port' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'missing port number',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'x' } as never] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].port' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'nodePort out of range: the port stays, without NodePort',
      service: svc('bad', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 70000 }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[0].nodePort' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'invalid targetPort',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http, { name: 'x', port: 81, targetPort: 'Not_A_Name' }] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.ports[1].targetPort' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'invalid loadBalancerSourceRange left out',
      service: svc(
        'bad',
        { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, clusterIP: '198.19.0.10', ports: [http], loadBalancerSourceRanges: ['198.18.0.0/40'] },
        { namespace: 'team', status: { loadBalancer: { ingress: [{ ip: '198.19.100.1' }] } } },
      ),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.loadBalancerSourceRanges[0]' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP', 'loadBalancer 198.19.100.1:80/TCP'],
    },
    {
      name: 'session affinity timeout out of range: the default used',
      service: svc(
        'bad',
        { clusterIP: '198.19.0.10', ports: [http], sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } },
        { namespace: 'team' },
      ),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.sessionAffinityConfig.clientIP.timeoutSeconds' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'LoadBalancer with externalTrafficPolicy Local but no healthCheckNodePort',
      service: svc(
        'bad',
        { type: 'LoadBalancer', externalTrafficPolicy: 'Local', allocateLoadBalancerNodePorts: false, clusterIP: '198.19.0.10', ports: [http] },
        { namespace: 'team' },
      ),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.healthCheckNodePort' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'external IP of a family without a cluster IP',
      service: svc('bad', { clusterIP: '198.19.0.10', externalIPs: ['2001:2:0:30::7'], ports: [http] }, { namespace: 'team' }),
      errors: [{ kind: 'Service', namespace: 'team', name: 'bad', field: 'spec.externalIPs[0]' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'Service with missing spec fields: skipped, nothing thrown',
      service: { metadata: { name: 'bad', namespace: 'team' } },
      errors: [],
      frontends: [],
    },
    {
      name: 'Service without a name',
      service: { metadata: { namespace: 'team' }, spec: { clusterIP: '198.19.0.10', ports: [http] } },
      errors: [{ kind: 'Service', namespace: 'team', name: '', field: 'metadata.name' }],
      frontends: [],
    },
    {
      name: 'slice naming a port the Service does not have',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http] }, { namespace: 'team' }),
      slice: {
        metadata: { name: 'bad-1', namespace: 'team', labels: { 'kubernetes.io/service-name': 'bad' } },
        addressType: 'IPv4',
        ports: [{ name: 'metrics', port: 9090, protocol: 'TCP' }],
        endpoints: [{ addresses: ['198.18.16.9'] }],
      },
      errors: [{ kind: 'EndpointSlice', namespace: 'team', name: 'bad-1', field: 'ports[0].name' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'slice with an invalid endpoint address and a wrong-family one: the rest kept',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http] }, { namespace: 'team' }),
      slice: {
        metadata: { name: 'bad-1', namespace: 'team', labels: { 'kubernetes.io/service-name': 'bad' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: ['198.18.16.300'] }, { addresses: ['2001:2:0:10::9'] }, { addresses: ['198.18.16.9'] }],
      },
      errors: [
        { kind: 'EndpointSlice', namespace: 'team', name: 'bad-1', field: 'endpoints[0].addresses' },
        { kind: 'EndpointSlice', namespace: 'team', name: 'bad-1', field: 'endpoints[1].addresses' },
      ],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
    {
      name: 'slice with a port out of range',
      service: svc('bad', { clusterIP: '198.19.0.10', ports: [http] }, { namespace: 'team' }),
      slice: {
        metadata: { name: 'bad-1', namespace: 'team', labels: { 'kubernetes.io/service-name': 'bad' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 0, protocol: 'TCP' }],
        endpoints: [{ addresses: ['198.18.16.9'] }],
      },
      errors: [{ kind: 'EndpointSlice', namespace: 'team', name: 'bad-1', field: 'ports[0].port' }],
      frontends: ['clusterIP 198.19.0.10:80/TCP'],
    },
  ])('$name', ({ service, slice, errors, frontends }) => {
    const m = buildModel({
      services: [good, ...(service ? [service] : [])],
      endpointSlices: [goodSlice, ...(slice ? [slice] : [])],
      node: NODE,
      nodeName: 'node-a',
    });
    expect(m.errors.map((e) => ({ ...e.ref, field: e.field }))).toEqual(errors);
    for (const e of m.errors) expect(e.message).not.toBe('');
    expect(m.servicePorts.filter((sp) => sp.name.namespace === 'team').map(frontend)).toEqual(frontends);
    // The well-formed Service comes out exactly as when it is alone.
    expect(m.servicePorts.filter((sp) => sp.name.namespace === 'ok')).toEqual(alone.servicePorts);
  });

  it('invalid node address and nodePortAddresses entry are reported against the Node and the option', () => {
    const m = buildModel({
      services: [good],
      endpointSlices: [],
      node: { metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: '198.18.0.999' }, { type: 'InternalIP', address: '198.18.0.1' }] } },
      nodeName: 'node-a',
      nodePortAddresses: ['198.18.0.0/24', 'not-a-cidr'],
    });
    expect(m.errors.map((e) => ({ ...e.ref, field: e.field }))).toEqual([
      { kind: 'Node', namespace: '', name: 'node-a', field: 'status.addresses[0].address' },
      { kind: 'Option', namespace: '', name: 'nodePortAddresses', field: '[1]' },
    ]);
    expect(m.node.nodePortAddresses).toEqual(['198.18.0.1']);
  });

  it('a duplicate Service object is reported and the first one used', () => {
    const m = build([svc('web', { clusterIP: '198.19.0.10', ports: [http] }), svc('web', { clusterIP: '198.19.0.11', ports: [http] })]);
    expect(m.servicePorts.map(frontend)).toEqual(['clusterIP 198.19.0.10:80/TCP']);
    expect(m.errors.map((e) => `${e.ref.name} ${e.field}`)).toEqual(['web metadata.name']);
  });
});

describe('frontend conflicts between Services', () => {
  it.each<{ name: string; services: Service[]; frontends: string[]; errors: string[] }>([
    {
      name: 'the same external IP and port: the first Service by namespace/name keeps it',
      services: [
        svc('b', { clusterIP: '198.19.0.11', externalIPs: ['198.19.100.7'], ports: [http] }),
        svc('a', { clusterIP: '198.19.0.10', externalIPs: ['198.19.100.7'], ports: [http] }),
      ],
      frontends: [
        'default/a:http/TCP externalIP 198.19.100.7:80/TCP',
        'default/b:http/TCP clusterIP 198.19.0.11:80/TCP',
        'default/a:http/TCP clusterIP 198.19.0.10:80/TCP',
      ].sort(),
      errors: ['default/b spec.externalIPs'],
    },
    {
      name: 'an external IP on a node address wins over a NodePort on the same port',
      services: [
        svc('a', { type: 'NodePort', clusterIP: '198.19.0.10', ports: [{ ...http, nodePort: 30080 }] }),
        svc('b', { clusterIP: '198.19.0.11', externalIPs: ['198.18.0.1'], ports: [{ name: 'http', port: 30080 }] }),
      ],
      frontends: [
        'default/a:http/TCP clusterIP 198.19.0.10:80/TCP',
        'default/a:http/TCP nodePort 198.18.1.1:30080/TCP',
        'default/b:http/TCP clusterIP 198.19.0.11:30080/TCP',
        'default/b:http/TCP externalIP 198.18.0.1:30080/TCP',
      ],
      errors: ['default/a spec.ports[name="http"].nodePort'],
    },
    {
      name: 'an address that is both external IP and LB IP of one Service port is one frontend, no error',
      services: [
        svc(
          'a',
          { type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, clusterIP: '198.19.0.10', externalIPs: ['198.19.100.1'], ports: [http] },
          { status: { loadBalancer: { ingress: [{ ip: '198.19.100.1' }] } } },
        ),
      ],
      frontends: ['default/a:http/TCP clusterIP 198.19.0.10:80/TCP', 'default/a:http/TCP externalIP 198.19.100.1:80/TCP'],
      errors: [],
    },
  ])('$name', ({ services, frontends, errors }) => {
    const m = build(services);
    expect(m.servicePorts.map((sp) => `${sp.portName} ${frontend(sp)}`).sort()).toEqual([...frontends].sort());
    expect(m.errors.map((e) => `${e.ref.namespace}/${e.ref.name} ${e.field}`)).toEqual(errors);
  });
});
