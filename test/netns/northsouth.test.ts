// North-south traffic through two nodes with real packets: an external client
// on a bridge reaches a NodePort, a LoadBalancer ingress IP and an externalIP
// via each node, TCP and UDP, IPv4 and IPv6; a backend on the entry node gets
// the packet directly (client address kept), a backend on the other node is
// reached by SNAT (it sees the entry node's address, and its replies come back
// through the entry node to the client). externalTrafficPolicy: Local keeps the
// client address and drops (counted) on a node without local endpoints;
// loadBalancerSourceRanges refuse a client outside the ranges. One `strait
// agent --manifests` per node (the compiled CLI, as users run it), each
// attached to its node's up0. Needs root: fails, never skips, without it.
//
// Topology and address plan (all in 198.18.0.0/15 and 2001:2::/48):
//
//   st-ns-c   client   c0  198.18.0.250/24, 198.18.0.251/24   2001:2::fa/64, 2001:2::fb/64
//                        │   routes: 198.19.0.0/24, 2001:2:0:ff::/64 via the node under test
//   st-ns-f   fabric   br0 (a bridge; no address)
//                        │
//   st-ns-n1  node1    up0 198.18.0.1/24 2001:2::1/64   bk1 198.18.17.1/24 2001:2:0:17::1/64
//                        routes: 198.18.18.0/24 via 198.18.0.2, 2001:2:0:18::/64 via 2001:2::2
//   st-ns-n2  node2    up0 198.18.0.2/24 2001:2::2/64   bk1 198.18.18.1/24 2001:2:0:18::1/64
//                        routes: 198.18.17.0/24 via 198.18.0.1, 2001:2:0:17::/64 via 2001:2::1
//   st-ns-p1  pod1 (node1)  p0 198.18.17.2 2001:2:0:17::2    echo server TCP 8080, UDP 5353
//   st-ns-p2  pod2 (node2)  p0 198.18.18.2 2001:2:0:18::2
//
// Services (manifests, both families):
//   web         LoadBalancer, Cluster policy: LB 198.19.0.10 / 2001:2:0:ff::10, externalIP 198.19.0.11 /
//               2001:2:0:ff::11, NodePorts 30080/TCP 30053/UDP; endpoints pod1, pod2
//   web-local   LoadBalancer, Local policy: LB 198.19.0.12 / ff::12, NodePorts 30081/30054; pod1, pod2
//   web-one     LoadBalancer, Local policy: LB 198.19.0.14 / ff::14, NodePort 30083/TCP; pod1 only
//   web-ranges  LoadBalancer, loadBalancerSourceRanges 198.18.0.250/32, 2001:2::fa/128: LB 198.19.0.13 / ff::13
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { AgentProcess, assertDistFresh, killAllAgents, straitJson } from '../lib/agent-process.js';
import { Lab, hostPort, type EchoSummary, type Proc } from '../lib/netns.js';

const PREFIX = 'st-ns-';
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const MAP_SIZES = [
  'ct4=65536', 'ct6=65536', 'services4=1024', 'services6=1024', 'service_slots=8192', 'service_names=1024',
  'backends4=4096', 'backends6=4096', 'revnat4=1024', 'revnat6=1024', 'snat4=65536', 'snat6=65536',
];
const CLIENT = { 4: '198.18.0.250', 6: '2001:2::fa' } as const;
const OUTSIDER = { 4: '198.18.0.251', 6: '2001:2::fb' } as const;
const REQUESTS = 40;

type Family = 4 | 6;
type Proto = 'tcp' | 'udp';

interface NodeSpec {
  name: 'node1' | 'node2';
  index: 1 | 2;
  ns: string;
  addr: Record<Family, string>;
  pod: { name: string; ns: string; addr: Record<Family, string> };
  bpfRoot: string;
  stateDir: string;
}

const addrOnly = (hp: string): string => hp.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
const portOf = (hp: string): number => Number(/:(\d+)$/.exec(hp)?.[1]);

describe('north-south: NodePort, LoadBalancer and externalIP via every node', () => {
  let lab: Lab;
  let nsClient = '';
  let tmp = '';
  let manifests = '';
  let docs: unknown[] = [];
  const nodes: NodeSpec[] = [];
  const agents: AgentProcess[] = [];
  const servers: Proc[] = [];

  const lbIP = (n: number, f: Family) => (f === 4 ? `198.19.0.${n}` : `2001:2:0:ff::${n}`);

  /** Route the client's frontend ranges (LB and external IPs) through `node`. */
  async function routeVia(node: NodeSpec): Promise<void> {
    await lab.ip(nsClient, ['route', 'replace', '198.19.0.0/24', 'via', node.addr[4], 'dev', 'c0']);
    await lab.ip(nsClient, ['-6', 'route', 'replace', '2001:2:0:ff::/64', 'via', node.addr[6], 'dev', 'c0']);
  }

  const mode = (proto: Proto): 'tcp' | 'udp' => proto;

  /** Requests from the client's own address (CLIENT: the client has a second address, OUTSIDER, on the same link). */
  function echo(to: string, proto: Proto, opts: { count?: number; local?: string; timeoutMs?: number } = {}): Promise<EchoSummary> {
    const family: Family = to.startsWith('[') ? 6 : 4;
    return lab.echoClient(nsClient, mode(proto), to, {
      count: opts.count ?? REQUESTS,
      parallel: 8,
      timeoutMs: opts.timeoutMs ?? 3000,
      local: opts.local ?? CLIENT[family],
    });
  }

  /** strait status -o json of a node: its datapath counters. */
  async function metric(node: NodeSpec, reason: string): Promise<number> {
    const s = await straitJson<{ metrics: { reason: string; dir: string; packets: number }[] }>(['status', '--bpf-root', node.bpfRoot, '--state-dir', node.stateDir]);
    return s.metrics.filter((m) => m.reason === reason).reduce((a, m) => a + m.packets, 0);
  }

  // ---- manifests ----
  function service(name: string, o: { lb: number; nodePorts: [number, number] | [number]; local?: number; externalIP?: number; ranges?: string[] }) {
    const ports = [{ name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP', nodePort: o.nodePorts[0] }];
    if (o.nodePorts[1] !== undefined) ports.push({ name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP', nodePort: o.nodePorts[1] });
    const c = 100 + o.lb;
    return {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'ns' },
      spec: {
        type: 'LoadBalancer',
        clusterIP: `198.19.1.${c}`,
        clusterIPs: [`198.19.1.${c}`, `2001:2:0:ff::1:${c}`],
        ipFamilies: ['IPv4', 'IPv6'],
        ipFamilyPolicy: 'RequireDualStack',
        externalTrafficPolicy: o.local !== undefined ? 'Local' : 'Cluster',
        ...(o.local !== undefined ? { healthCheckNodePort: o.local } : {}),
        ...(o.externalIP !== undefined ? { externalIPs: [lbIP(o.externalIP, 4), lbIP(o.externalIP, 6)] } : {}),
        ...(o.ranges ? { loadBalancerSourceRanges: o.ranges } : {}),
        ports,
      },
      status: { loadBalancer: { ingress: [{ ip: lbIP(o.lb, 4) }, { ip: lbIP(o.lb, 6) }] } },
    };
  }

  function slices(svc: string, members: readonly NodeSpec[], udp = true) {
    return ([4, 6] as const).map((f) => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${svc}-v${f}`, namespace: 'ns', labels: { 'kubernetes.io/service-name': svc } },
      addressType: f === 4 ? 'IPv4' : 'IPv6',
      ports: [{ name: 'http', port: TCP_PORT, protocol: 'TCP' }, ...(udp ? [{ name: 'dns', port: UDP_PORT, protocol: 'UDP' }] : [])],
      endpoints: members.map((n) => ({
        addresses: [n.pod.addr[f]],
        conditions: { ready: true },
        nodeName: n.name,
        targetRef: { kind: 'Pod', namespace: 'ns', name: n.pod.name },
      })),
    }));
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF)');
    assertDistFresh();
    lab = await Lab.create(PREFIX);
    const fabric = await lab.addNamespace('f');
    nsClient = await lab.addNamespace('c');
    for (const i of [1, 2] as const) {
      const ns = await lab.addNamespace(`n${i}`);
      const pod = await lab.addNamespace(`p${i}`);
      nodes.push({
        name: `node${i}`,
        index: i,
        ns,
        addr: { 4: `198.18.0.${i}`, 6: `2001:2::${i}` },
        pod: { name: `pod${i}`, ns: pod, addr: { 4: `198.18.${16 + i}.2`, 6: `2001:2:0:${16 + i}::2` } },
        bpfRoot: `/sys/fs/bpf/strait-test-ns-node${i}`,
        stateDir: '',
      });
    }
    await lab.ip(fabric, ['link', 'add', 'br0', 'type', 'bridge']);
    await lab.ip(fabric, ['link', 'set', 'br0', 'up']);

    // client
    await lab.veth(fabric, 'c', nsClient, 'c0');
    await lab.ip(fabric, ['link', 'set', 'c', 'master', 'br0']);
    for (const a of ['198.18.0.250/24', '198.18.0.251/24', '2001:2::fa/64', '2001:2::fb/64']) await lab.addr(nsClient, 'c0', a);

    for (const n of nodes) {
      const other = nodes.find((o) => o !== n)!;
      await lab.sysctls(n.ns, {
        'net.ipv4.ip_forward': 1,
        'net.ipv6.conf.all.forwarding': 1,
        'net.ipv6.conf.default.forwarding': 1,
        'net.ipv4.conf.all.send_redirects': 0,
        'net.ipv4.conf.default.send_redirects': 0,
      });
      await lab.veth(fabric, `n${n.index}`, n.ns, 'up0');
      await lab.ip(fabric, ['link', 'set', `n${n.index}`, 'master', 'br0']);
      await lab.addr(n.ns, 'up0', `${n.addr[4]}/24`);
      await lab.addr(n.ns, 'up0', `${n.addr[6]}/64`);
      const o = 16 + n.index;
      await lab.veth(n.ns, 'bk1', n.pod.ns, 'p0');
      await lab.addr(n.ns, 'bk1', `198.18.${o}.1/24`);
      await lab.addr(n.ns, 'bk1', `2001:2:0:${o}::1/64`);
      await lab.addr(n.pod.ns, 'p0', `${n.pod.addr[4]}/24`);
      await lab.addr(n.pod.ns, 'p0', `${n.pod.addr[6]}/64`);
      await lab.route(n.pod.ns, '198.18.0.0/16', { via: `198.18.${o}.1`, dev: 'p0' });
      await lab.route(n.pod.ns, '2001:2::/48', { via: `2001:2:0:${o}::1`, dev: 'p0' });
      const oo = 16 + other.index;
      await lab.route(n.ns, `198.18.${oo}.0/24`, { via: other.addr[4], dev: 'up0' });
      await lab.route(n.ns, `2001:2:0:${oo}::/64`, { via: other.addr[6], dev: 'up0' });
      servers.push(await lab.startEchoServer(n.pod.ns, { name: n.pod.name, tcp: TCP_PORT, udp: UDP_PORT }));
    }

    tmp = mkdtempSync(join(tmpdir(), 'strait-ns-'));
    manifests = join(tmp, 'manifests');
    mkdirSync(manifests);
    docs = [
      service('web', { lb: 10, externalIP: 11, nodePorts: [30080, 30053] }),
      ...slices('web', nodes),
      service('web-local', { lb: 12, local: 32012, nodePorts: [30081, 30054] }),
      ...slices('web-local', nodes),
      service('web-one', { lb: 14, local: 32014, nodePorts: [30083] }),
      ...slices('web-one', [nodes[0]!], false),
      service('web-ranges', { lb: 13, nodePorts: [30082, 30055], ranges: [`${CLIENT[4]}/32`, `${CLIENT[6]}/128`] }),
      ...slices('web-ranges', nodes),
    ];
    writeFileSync(join(manifests, 'services.yaml'), docs.map((d) => stringify(d)).join('---\n'));

    for (const n of nodes) {
      Dataplane.destroy(n.bpfRoot);
      n.stateDir = join(tmp, n.name);
      const a = AgentProcess.start(
        [
          '--manifests', manifests,
          '--node-name', n.name,
          '--node-ip', `${n.addr[4]},${n.addr[6]}`,
          '--bpf-root', n.bpfRoot,
          '--state-dir', n.stateDir,
          '--devices', 'up0',
          '--devices-netns', lab.netnsPath(n.ns),
          '--metrics-addr', '127.0.0.1:0',
          '--healthz-addr', '127.0.0.1:0',
          // health-check node ports of the Local Services: inside the node's namespace
          '--health-netns', lab.netnsPath(n.ns),
          '--min-sync-period', '100ms',
          '--log-format', 'json',
          ...MAP_SIZES.flatMap((s) => ['--map-size', s]),
        ],
        { label: `strait agent (${n.name})` },
      );
      agents.push(a);
      const sync = await a.waitForSync({ timeoutMs: 30_000 });
      expect(sync['errors'], a.tail()).toBe(0);
    }
  }, 120_000);

  afterAll(async () => {
    try {
      await killAllAgents();
      for (const n of nodes) Dataplane.destroy(n.bpfRoot);
    } finally {
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      await lab?.destroy();
    }
  });

  it('each agent wrote its node\'s addresses and the SNAT range into the config map', () => {
    for (const n of nodes) {
      const maps = Dataplane.openPinned(n.bpfRoot);
      try {
        expect(maps.config?.lookup(0)).toMatchObject({ addr4: n.addr[4], addr6: n.addr[6], snatPortMin: 61000, snatPortMax: 65535 });
      } finally {
        for (const m of Object.values(maps)) m?.close();
      }
    }
  });

  it('strait lb list says how remote backends are reached', async () => {
    const lb = await straitJson<{ frontends: { frontend: string; scope: string; remote: string }[] }>(['lb', 'list', '--bpf-root', nodes[0]!.bpfRoot, '--state-dir', nodes[0]!.stateDir]);
    // the external entry: what traffic from outside uses
    const remote = (fe: string) => lb.frontends.find((f) => f.frontend === fe && f.scope === 'external')?.remote;
    expect(remote(`${hostPort('198.18.0.1', 30080)}/TCP`)).toBe('snat');
    expect(remote(`${hostPort('198.19.0.10', 80)}/TCP`)).toBe('snat');
    expect(remote(`${hostPort('198.19.0.11', 80)}/TCP`)).toBe('snat');
    expect(remote(`${hostPort('2001:2:0:ff::10', 53)}/UDP`)).toBe('snat');
    expect(remote(`${hostPort('198.19.0.12', 80)}/TCP`)).toBe('local-only');
    expect(remote(`${hostPort('198.19.1.110', 80)}/TCP`)).toBe('dnat');
  });

  const FRONTENDS = ['NodePort', 'LoadBalancer', 'externalIP'] as const;
  const cases = [1, 2].flatMap((node) => ([4, 6] as const).flatMap((f) => (['tcp', 'udp'] as const).map((proto) => [node, f, proto] as const)));

  it.each(cases)('via node%i, IPv%i %s: every frontend reaches both pods; the remote one by SNAT, the local one directly', async (index, f, proto) => {
    const node = nodes[index - 1]!;
    const other = nodes.find((n) => n !== node)!;
    await routeVia(node);
    const port = proto === 'tcp' ? 80 : 53;
    let kept = 0;
    for (const kind of FRONTENDS) {
      const to =
        kind === 'NodePort' ? hostPort(node.addr[f], proto === 'tcp' ? 30080 : 30053) : hostPort(lbIP(kind === 'LoadBalancer' ? 10 : 11, f), port);
      const s = await echo(to, proto);
      expect(s.errors, `${kind} ${to}`).toEqual([]);
      expect(s.ok, `${kind} ${to}`).toBe(REQUESTS);
      expect(Object.keys(s.byPod).sort(), `${kind} ${to}`).toEqual(['pod1', 'pod2']);
      for (const r of s.replies) {
        // the client's socket talked to the frontend: replies come from it
        expect(r.from, kind).toBe(to);
        const seen = addrOnly(r.client);
        if (r.pod === node.pod.name) {
          expect(seen, `${kind}: the local pod sees the client`).toBe(CLIENT[f]);
        } else {
          expect(r.pod).toBe(other.pod.name);
          expect(seen, `${kind}: the remote pod sees the entry node`).toBe(node.addr[f]);
          // SNAT keeps the client's own source port when the tuple is free (bpf/lib/snat.h), as
          // netfilter's masquerade does; when another live flow to this backend holds it (UDP: an
          // earlier frontend's flow from the same client port), a port of the range.
          const p = portOf(r.client);
          if (p === portOf(r.local)) kept++;
          else expect(p, `${kind}: not the client's port, so one of the range`).toBeGreaterThanOrEqual(61000);
          expect(p).toBeLessThanOrEqual(65535);
        }
      }
    }
    expect(kept, "replies through SNAT with the client's own port").toBeGreaterThan(0);
  });

  it.each([1, 2].flatMap((node) => ([4, 6] as const).map((f) => [node, f] as const)))(
    'via node%i, IPv%i: externalTrafficPolicy Local: only the node\'s own pod, which sees the client\'s address',
    async (index, f) => {
      const node = nodes[index - 1]!;
      await routeVia(node);
      for (const [to, proto] of [
        [hostPort(lbIP(12, f), 80), 'tcp'],
        [hostPort(node.addr[f], 30081), 'tcp'],
        [hostPort(lbIP(12, f), 53), 'udp'],
      ] as const) {
        const s = await echo(to, proto, { count: 20 });
        expect(s.errors, to).toEqual([]);
        expect(Object.keys(s.byPod), to).toEqual([node.pod.name]);
        expect(new Set(s.replies.map((r) => addrOnly(r.client))), to).toEqual(new Set([CLIENT[f]]));
      }
    },
  );

  it.each([4, 6] as const)('IPv%i: externalTrafficPolicy Local on a node without local endpoints: dropped and counted, not refused', async (f) => {
    const node2 = nodes[1]!;
    await routeVia(node2);
    const before = await metric(node2, 'drop_no_local_endpoints');
    const s = await echo(hostPort(lbIP(14, f), 80), 'tcp', { count: 2, timeoutMs: 1500 });
    expect(s.ok).toBe(0);
    expect(s.byCode).toEqual({ ETIMEDOUT: 2 });
    expect((await metric(node2, 'drop_no_local_endpoints')) - before).toBeGreaterThanOrEqual(2);
    // node1 has the endpoint: served there.
    await routeVia(nodes[0]!);
    const ok = await echo(hostPort(lbIP(14, f), 80), 'tcp', { count: 5 });
    expect(ok.byPod).toEqual({ pod1: 5 });
  });

  it.each([4, 6] as const)('IPv%i: loadBalancerSourceRanges: the client inside is served, the one outside dropped and counted', async (f) => {
    const node1 = nodes[0]!;
    await routeVia(node1);
    const to = hostPort(lbIP(13, f), 80);
    const inside = await echo(to, 'tcp', { count: 10, local: CLIENT[f] });
    expect(inside.errors).toEqual([]);
    expect(inside.ok).toBe(10);
    const before = await metric(node1, 'drop_source_range');
    const outside = await echo(to, 'tcp', { count: 2, local: OUTSIDER[f], timeoutMs: 1500 });
    expect(outside.ok).toBe(0);
    expect(outside.byCode).toEqual({ ETIMEDOUT: 2 });
    expect((await metric(node1, 'drop_source_range')) - before).toBeGreaterThanOrEqual(2);
  });

  it('counted what it did: SNAT out, SNAT replies back', async () => {
    for (const n of nodes) {
      expect(await metric(n, 'service_snat')).toBeGreaterThan(0);
      expect(await metric(n, 'snat_revnat')).toBeGreaterThan(0);
    }
  });

  it('a UDP endpoint that goes away takes its flows\' SNAT ports along (conntrack flush)', async () => {
    const node1 = nodes[0]!;
    const pod2 = nodes[1]!.pod.addr[4];
    const maps = Dataplane.openPinned(node1.bpfRoot);
    try {
      const udpInEntries = () =>
        [...(maps.snat4?.entries() ?? [])].filter(([k, v]) => k.dir === 1 && k.saddr === pod2 && k.proto === 17 && v.expires > process.hrtime.bigint()).length;
      await routeVia(node1);
      const s = await echo(hostPort(node1.addr[4], 30053), 'udp', { count: 20 });
      expect(s.byPod['pod2'] ?? 0).toBeGreaterThan(0);
      expect(udpInEntries()).toBeGreaterThan(0);
      // pod2 leaves every Service: its UDP backend (one per address, port and protocol, shared by
      // the Services) is deleted and its flows are flushed; its TCP one is kept for its flows.
      const next = docs.map((d) => {
        const o = d as { kind: string; endpoints?: { nodeName: string }[] };
        return o.kind === 'EndpointSlice' ? { ...o, endpoints: o.endpoints?.filter((e) => e.nodeName === 'node1') } : o;
      });
      writeFileSync(join(manifests, '.services.yaml.tmp'), next.map((d) => stringify(d)).join('---\n'));
      renameSync(join(manifests, '.services.yaml.tmp'), join(manifests, 'services.yaml'));
      const agent = agents[0]!;
      await agent.waitForSync({ where: (l) => Number(l['ctFlushed']) > 0, timeoutMs: 15_000 });
      expect(udpInEntries()).toBe(0);
    } finally {
      for (const m of Object.values(maps)) m?.close();
    }
  });
});
