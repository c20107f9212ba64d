// The agent's socket LB: `strait agent --manifests DIR --cgroup <test cgroup>`
// (the compiled CLI, in the root namespace) attaches the socket programs to a
// cgroup v2 directory this file creates (<cgroup2 mount>/strait-test-sockagent-<pid>,
// never the machine's root); pods run clients inside it. No tc program is
// attached anywhere: a VIP is reachable only through the socket programs.
// Covers: the flag attaches, a sync that deletes a UDP backend destroys the
// connected UDP sockets translated to it (the DNS-client case, cilium#27300),
// and --no-socket-lb detaches what an earlier agent attached. Needs root:
// fails, never skips, without it.
//
// Address plan (test/lib/netns.ts): backend (pod) I 198.18.(10+I).2 on p0, its
// node side 198.18.(10+I).1; pods route 198.19.0.0/24 via the node, which has
// no route for it. ClusterIP 198.19.0.20: TCP 80 → 8080, UDP 53 → 5353.
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { SocketLb } from '../../src/bpf/socket-lb.js';
import { AgentProcess, assertDistFresh, killAllAgents } from '../lib/agent-process.js';
import { TestCgroup } from '../lib/cgroup.js';
import { hostPort, topology, type Topology } from '../lib/netns.js';

const PREFIX = 'st-sla-';
const BPF_ROOT = '/sys/fs/bpf/strait-test-sock-agent';
const NODE = 'st-sla-node';
const NS = 'lab';
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const MAP_SIZES = [
  'ct4=65536', 'ct6=65536', 'services4=1024', 'services6=1024', 'service_slots=8192', 'service_names=1024',
  'backends4=4096', 'backends6=4096', 'revnat4=1024', 'revnat6=1024', 'snat4=4096', 'snat6=4096',
  'sock_revnat4=16384', 'sock_revnat6=16384',
];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('strait agent --cgroup: socket LB from the agent', () => {
  let topo: Topology;
  let cgroup: TestCgroup;
  let tmp = '';
  let manifests = '';
  let agent: AgentProcess;
  const vip = (): string => topo.vip4(20);

  const agentArgs = (socketLb: string[]): string[] => [
    '--manifests', manifests,
    '--node-name', NODE,
    '--bpf-root', BPF_ROOT,
    '--state-dir', join(tmp, 'state'),
    '--metrics-addr', '127.0.0.1:0',
    '--healthz-addr', '127.0.0.1:0',
    '--min-sync-period', '100ms',
    ...socketLb,
    ...MAP_SIZES.flatMap((s) => ['--map-size', s]),
  ];

  function writeManifest(name: string, docs: readonly unknown[]): void {
    const file = join(manifests, `.${name}.tmp`);
    writeFileSync(file, docs.map((d) => stringify(d)).join('---\n'));
    renameSync(file, join(manifests, name));
  }

  const writeSlice = (pods: readonly number[]): void =>
    writeManifest('web-slice.yaml', [
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'web-v4', namespace: NS, labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        ports: [
          { name: 'http', port: TCP_PORT, protocol: 'TCP' },
          { name: 'dns', port: UDP_PORT, protocol: 'UDP' },
        ],
        endpoints: pods.map((i) => ({
          addresses: [topo.backends[i - 1]!.addr4],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: NODE,
          targetRef: { kind: 'Pod', namespace: NS, name: `pod${i}` },
        })),
      },
    ]);

  const inCgroup = (mode: 'tcp' | 'udp-connected', port: number, spec: Parameters<Topology['lab']['echoClient']>[3] = {}) =>
    topo.lab.echoClient(topo.backends[0]!.ns, mode, hostPort(vip(), port), { timeoutMs: 3000, ...spec, cgroup: cgroup.reachablePath });

  async function startAgent(socketLb: string[], ready: string): Promise<AgentProcess> {
    const a = AgentProcess.start(agentArgs(socketLb), { label: 'strait agent (st-sla)' });
    await a.waitForLog((l) => l.msg === ready, { timeoutMs: 30_000, what: ready });
    const first = await a.waitForSync({ timeoutMs: 30_000 });
    expect(first['failures'], a.tail()).toBe(0);
    return a;
  }

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF, cgroups)');
    assertDistFresh();
    Dataplane.destroy(BPF_ROOT);
    cgroup = TestCgroup.create('strait-test-sockagent-');
    topo = await topology(PREFIX, { backends: 3 });
    for (const b of topo.backends) await topo.lab.startEchoServer(b.ns, { name: `pod${b.index}`, tcp: TCP_PORT, udp: UDP_PORT });
    tmp = mkdtempSync(join(tmpdir(), 'strait-sla-'));
    manifests = join(tmp, 'manifests');
    mkdirSync(manifests);
    writeManifest('web-service.yaml', [
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: NS },
        spec: {
          type: 'ClusterIP',
          clusterIP: vip(),
          clusterIPs: [vip()],
          ports: [
            { name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' },
            { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' },
          ],
        },
      },
    ]);
    writeSlice([1, 2, 3]);
    agent = await startAgent(['--cgroup', cgroup.path], 'socket LB attached');
  });

  afterAll(async () => {
    try {
      await killAllAgents();
      Dataplane.destroy(BPF_ROOT); // unpins the cgroup links: detached
    } finally {
      try {
        await topo?.destroy();
      } finally {
        cgroup?.destroy();
        if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
      }
    }
  });

  it('attaches every hook to --cgroup: a pod reaches the ClusterIP with no tc program anywhere', async () => {
    expect(SocketLb.attachedHooks(BPF_ROOT)).toHaveLength(8);
    const res = await inCgroup('tcp', 80, { count: 30, parallel: 6 });
    expect(res.errors).toEqual([]);
    expect(Object.keys(res.byPod).sort()).toEqual(['pod1', 'pod2', 'pod3']);
    for (const r of res.replies) expect(r.from).toBe(hostPort(vip(), 80));
  });

  it('a sync that deletes a UDP backend destroys the connected sockets sent to it; the client moves on', async () => {
    const client = inCgroup('udp-connected', 53, { count: 40, reuse: true, intervalMs: 100, reconnect: true });
    // which backend the client's socket got: the peer it is connected to (ss, in the pod)
    let pod = 0;
    for (let i = 0; i < 100 && pod === 0; i++) {
      const r = await topo.lab.exec(topo.backends[0]!.ns, 'ss', ['-u', '-n', '-H', 'state', 'established'], { check: true });
      const peer = r.stdout.trim().split(/\s+/)[3] ?? '';
      pod = topo.backends.findIndex((b) => peer === `${b.addr4}:${UDP_PORT}`) + 1;
      if (pod === 0) await sleep(50);
    }
    expect(pod).toBeGreaterThan(0);
    await sleep(500);

    const mark = agent.mark;
    writeSlice([1, 2, 3].filter((i) => i !== pod));
    const sync = await agent.waitForSync({ from: mark, where: (l) => Number(l['socketsDestroyed']) > 0 });
    expect(sync['socketsDestroyed']).toBe(1);

    const res = await client;
    expect(res.errors).toEqual([]);
    expect(res.reconnects).toBe(1);
    const pods = res.replies.map((r) => r.pod);
    const moved = pods.findIndex((p) => p !== `pod${pod}`);
    expect(moved).toBeGreaterThan(0);
    expect(pods.slice(moved).includes(`pod${pod}`)).toBe(false);
    writeSlice([1, 2, 3]);
  });

  it('--no-socket-lb: the next agent detaches the programs, and cgroup clients are no longer translated', async () => {
    await agent.kill();
    expect(SocketLb.attachedHooks(BPF_ROOT)).toHaveLength(8); // pinned: they outlive the agent
    agent = await startAgent(['--no-socket-lb'], 'socket LB off: detached');
    expect(SocketLb.attachedHooks(BPF_ROOT)).toEqual([]);
    const res = await inCgroup('tcp', 80, { count: 2, timeoutMs: 1500 });
    expect(res.ok).toBe(0); // the node has no route for the VIP and no tc program: unreachable
  });
});
