// North-south traffic (issue 6) through the real lab: Services with selectors, pods from the lab's
// kubelet, slices from the real EndpointSlice controller, one `strait agent` per node (2 nodes),
// real echo servers, traffic from the lab's external client (198.18.0.250 / 2001:2::250).
//
//   SNAT (default agents, lab "labns"): a Cluster-policy LoadBalancer Service with an externalIP,
//     pods on both nodes; its NodePort, its ingress IP and its externalIP via every node, TCP and
//     UDP, IPv4 and IPv6: both pods answer; the one on the other node sees the entry node's
//     address (SNAT), the one on the entry node the client's own; the replies come from the
//     frontend; the entry node counted service_snat and snat_revnat.
//   DSR (agents with --dsr, lab "labdsr"): a LoadBalancer / externalIP frontend whose targetPort
//     equals its port, backend on node2 only, entered via node1: the backend sees the client's
//     own address; a capture on the client's port of the fabric bridge sees every reply from the
//     VIP come from node2's MAC, none from node1's; `strait lb list -o json` says dsr for it and
//     snat ("targetPort≠port") for its NodePort, which still works (SNAT). Also there: SNAT port
//     exhaustion on node1 (started with a 2-port --snat-port-range).
//   XDP (agents with --dsr --xdp, lab "labxdp", XDP-capable fabric): the same DSR check, and
//     node1's xdp_dsr_encap counter shows XDP did the encapsulation.
//
// SNAT port exhaustion: the client's own source port is kept whenever it is free (bpf/lib/snat.h),
// so one client with ephemeral ports never exhausts anything; the range is used only when another
// flow to the same backend:port already holds the client's port on that node. The lab makes that
// happen honestly: one UDP source port of the external client, sent from to six frontends (two
// Service ports × NodePort / ingress IP / externalIP) of one remote backend: the first flow keeps
// the port, the next two take the range's two ports, the last three are dropped — counted as
// drop_snat_exhausted, the client sees a timeout, nothing hangs, and a flow from a fresh port is
// served at once. (The BPF-level cases, with expiry and reuse: test/bpf/snat.test.ts.)
//
// Lab addresses only: load-balancer and external IPs from 198.18.240.0/24 and 2001:2:0:240::/64,
// routed by the external client via the node under test (as a router in front of it would).
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Dataplane, sumMetrics } from '../../src/bpf/dataplane.js';
import { hostPort } from '../../src/lab/echo-client.js';
import type { EchoSummary, FrontendView, Pod } from './semantics/cluster.js';
import { addrOf, createService } from './semantics/checks.js';
import { parseTcpdump, tcpdumpArgs, type CapturedFrame } from '../lib/tcpdump.js';
import { BINARIES_HOOK_MS, LAB_DOWN_MS, LAB_UP_MS, LabCluster, prepareLab, type LabSpec } from './semantics/lab-cluster.js';

const SERVICES = '/api/v1/namespaces/default/services';
const LB_NET = { 4: '198.18.240.0/24', 6: '2001:2:0:240::/64' } as const;
const FAMILIES = [4, 6] as const;
type Family = (typeof FAMILIES)[number];
/** The controller's slices and then every agent's maps: slow on a loaded 2-core machine. */
const PROGRAM_WAIT_MS = 60_000;

beforeAll(prepareLab, BINARIES_HOOK_MS);

// ---- helpers --------------------------------------------------------------------------------

const nodeAddr = (c: LabCluster, node: string, f: Family): string => {
  const n = c.lab.node(node);
  return f === 4 ? n.addr4 : n.addr6;
};
const podAddr = (p: Pod, f: Family): string => (f === 4 ? p.addr4 : (p.addr6 as string));
const clientAddr = (c: LabCluster, f: Family): string => (f === 4 ? c.external.addr4 : (c.external.addr6 as string));

/** Waits until `node` programmed address:port/protocol (external scope) with exactly the backend addresses `want`. */
async function waitProgrammed(c: LabCluster, node: string, address: string, port: number, protocol: 'TCP' | 'UDP', want: readonly string[]): Promise<FrontendView> {
  const wanted = [...want].sort().join(',');
  let found: FrontendView | undefined;
  await c.waitFor(`${node} to program ${hostPort(address, port)}/${protocol} with [${wanted}]`, async () => {
    found = (await c.frontends(node)).find((f) => f.address === address && f.port === port && f.protocol === protocol && f.scope === 'external');
    if (found === undefined) return 'no frontend';
    const have = found.backends.map((b) => b.address).sort().join(',');
    return have === wanted || `[${have}]`;
  }, PROGRAM_WAIT_MS);
  return found as FrontendView;
}

/** A datapath counter of a node's agent (its pinned metrics map), packets summed over CPUs. */
function counter(c: LabCluster, node: string, reason: string, dir?: 'ingress' | 'egress'): bigint {
  const maps = Dataplane.openPinned(c.lab.node(node).bpfRoot);
  try {
    if (!maps.metrics) throw new Error(`${node}: no pinned metrics map under ${c.lab.node(node).bpfRoot}`);
    return sumMetrics(maps.metrics).filter((m) => m.reason === reason && (dir === undefined || m.dir === dir)).reduce((a, m) => a + m.packets, 0n);
  } finally {
    for (const m of Object.values(maps)) m?.close();
  }
}

/** Sends the external client's traffic for both families' LB_NET through `node`. */
async function routeLbVia(c: LabCluster, node: string): Promise<void> {
  for (const f of FAMILIES) await c.externalRoute(LB_NET[f], node);
}

function expectAllOk(s: EchoSummary, what: string): void {
  expect(s.errors, what).toEqual([]);
  expect(s.ok, what).toBe(s.count);
}

/** Per pod, the set of client addresses it saw. */
function clientsByPod(s: EchoSummary): Record<string, string[]> {
  const out: Record<string, Set<string>> = {};
  for (const r of s.replies) (out[r.pod] ??= new Set()).add(addrOf(r.client));
  return Object.fromEntries(Object.entries(out).map(([p, set]) => [p, [...set].sort()]));
}

// ---- fabric capture -------------------------------------------------------------------------

/**
 * Runs fn with tcpdump on the external client's port of the fabric bridge ("ext" in the fabric
 * namespace: every frame to or from the client, with the MAC of the host that sent it).
 */
async function captureClientPort<T>(c: LabCluster, fn: () => Promise<T>): Promise<{ result: T; frames: CapturedFrame[] }> {
  const dump: ChildProcess = spawn('ip', ['netns', 'exec', c.lab.state.fabricNs, 'tcpdump', ...tcpdumpArgs('ext')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  dump.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  dump.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => dump.on('exit', () => r()));
  try {
    await c.waitFor('tcpdump on the fabric to listen', () => err.includes('listening on') || (dump.exitCode !== null ? `exited: ${err}` : false), 10_000);
    const result = await fn();
    await new Promise((r) => setTimeout(r, 200)); // the last replies reach the capture
    return { result, frames: parseTcpdump(out) };
  } finally {
    if (dump.exitCode === null) dump.kill('SIGINT');
    await exited;
  }
}

async function uplinkMac(c: LabCluster, node: string): Promise<string> {
  const [link] = JSON.parse(await c.lab.ns.ip(c.lab.node(node).ns, ['-j', 'link', 'show', 'up0'])) as { address: string }[];
  if (!link?.address) throw new Error(`${node}: no MAC for up0`);
  return link.address;
}

// ---- SNAT -----------------------------------------------------------------------------------

describe('SNAT (default agents): NodePort, LoadBalancer ingress IP and externalIP via every node', () => {
  const NAME = 'labns';
  const LB = { 4: '198.18.240.10', 6: '2001:2:0:240::10' } as const;
  const EIP = { 4: '198.18.240.11', 6: '2001:2:0:240::11' } as const;
  let c: LabCluster;
  let pods: Pod[] = [];
  let nodePort: Record<'TCP' | 'UDP', number>;
  const PORT = { TCP: 80, UDP: 53 } as const;

  beforeAll(async () => {
    c = await LabCluster.up(NAME);
    pods = await c.createPods([
      { name: 'ns-1', node: 'node1', labels: { app: 'ns' } },
      { name: 'ns-2', node: 'node2', labels: { app: 'ns' } },
    ]);
    const svc = await createService(c, 'ns', {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Cluster',
      ipFamilyPolicy: 'RequireDualStack',
      externalIPs: [EIP[4], EIP[6]],
      selector: { app: 'ns' },
      ports: [
        { name: 'tcp', port: PORT.TCP, targetPort: 'echo-tcp', protocol: 'TCP' },
        { name: 'udp', port: PORT.UDP, targetPort: 'echo-udp', protocol: 'UDP' },
      ],
    });
    nodePort = { TCP: svc.spec.ports[0].nodePort, UDP: svc.spec.ports[1].nodePort };
    await c.patch(`${SERVICES}/ns/status`, { status: { loadBalancer: { ingress: [{ ip: LB[4] }, { ip: LB[6] }] } } });
    for (const n of ['node1', 'node2']) {
      for (const f of FAMILIES) {
        const both = pods.map((p) => podAddr(p, f));
        for (const proto of ['TCP', 'UDP'] as const) {
          await waitProgrammed(c, n, nodeAddr(c, n, f), nodePort[proto], proto, both);
          await waitProgrammed(c, n, LB[f], PORT[proto], proto, both);
          await waitProgrammed(c, n, EIP[f], PORT[proto], proto, both);
        }
      }
    }
  }, LAB_UP_MS);
  afterAll(() => c?.lab.down(), LAB_DOWN_MS);

  test('strait lb list: the NodePort, ingress IP and externalIP frontends reach remote backends by SNAT', async () => {
    const lb = await c.lbList('node1');
    const mine = lb.frontends.filter((f) => f.service?.startsWith('default/ns:') && f.scope === 'external' && f.kind !== 'ClusterIP');
    const n1 = c.lab.node('node1');
    const want = (['TCP', 'UDP'] as const).flatMap((proto) => [
      `NodePort ${hostPort(n1.addr4, nodePort[proto])}/${proto}`,
      `NodePort ${hostPort(n1.addr6, nodePort[proto])}/${proto}`,
      ...FAMILIES.flatMap((f) => [`LoadBalancer ${hostPort(LB[f], PORT[proto])}/${proto}`, `ExternalIP ${hostPort(EIP[f], PORT[proto])}/${proto}`]),
    ]);
    expect(mine.map((f) => `${f.kind} ${f.frontend}`).sort()).toEqual(want.sort());
    for (const f of mine) expect({ frontend: f.frontend, remote: f.remote, remoteWhy: f.remoteWhy }).toEqual({ frontend: f.frontend, remote: 'snat', remoteWhy: null });
  });

  for (const via of ['node1', 'node2'] as const) {
    for (const f of FAMILIES) {
      test(`via ${via}, IPv${f}: NodePort, ingress IP and externalIP, TCP and UDP: both pods answer; the remote one sees ${via}'s address, the local one the client's`, async () => {
        await routeLbVia(c, via);
        const local = pods.find((p) => p.node === via) as Pod;
        const remote = pods.find((p) => p.node !== via) as Pod;
        const snatBefore = counter(c, via, 'service_snat');
        const revBefore = counter(c, via, 'snat_revnat');
        const targets = (['TCP', 'UDP'] as const).flatMap((proto) => [
          { what: `NodePort ${proto}`, proto, to: hostPort(nodeAddr(c, via, f), nodePort[proto]) },
          { what: `ingress IP ${proto}`, proto, to: hostPort(LB[f], PORT[proto]) },
          { what: `externalIP ${proto}`, proto, to: hostPort(EIP[f], PORT[proto]) },
        ]);
        // Three frontends at once per protocol: each run is a Node process in the client's namespace.
        const results = await Promise.all(
          targets.map((t) => c.echo('external', t.proto === 'TCP' ? 'tcp' : 'udp', t.to, { count: 20, parallel: 4, timeoutMs: 3_000 })),
        );
        targets.forEach((t, i) => {
          const s = results[i] as EchoSummary;
          const what = `${t.what} ${t.to} via ${via}`;
          expectAllOk(s, what);
          expect(Object.keys(s.byPod).sort(), `${what}: pods that answered`).toEqual([local.name, remote.name].sort());
          expect(clientsByPod(s), `${what}: the client address each pod saw`).toEqual({
            [local.name]: [clientAddr(c, f)],
            [remote.name]: [nodeAddr(c, via, f)],
          });
          expect([...new Set(s.replies.map((r) => r.from))], `${what}: replies come from the frontend`).toEqual([t.to]);
        });
        const remoteReplies = results.reduce((a, s) => a + (s.byPod[remote.name] ?? 0), 0);
        expect(counter(c, via, 'service_snat') - snatBefore, `${via}: packets SNATed to the remote pod`).toBeGreaterThanOrEqual(BigInt(remoteReplies));
        expect(counter(c, via, 'snat_revnat') - revBefore, `${via}: replies reversed to the client`).toBeGreaterThanOrEqual(BigInt(remoteReplies));
      }, 90_000);
    }
  }
});

// ---- DSR, XDP off and on --------------------------------------------------------------------

/**
 * The DSR checks of one lab: a LoadBalancer Service (port 9000 → targetPort 9000, TCP and UDP,
 * dual-stack) with an externalIP, its only pod on node2, entered via node1.
 */
function dsrChecks(name: string, opts: LabSpec, xdp: boolean, exhaustion: boolean): void {
  const LB = { 4: '198.18.240.20', 6: '2001:2:0:240::20' } as const;
  const EIP = { 4: '198.18.240.21', 6: '2001:2:0:240::21' } as const;
  const PORT = 9000;
  let c: LabCluster;
  let pod: Pod;
  let nodePort: number;
  const macs = { node1: '', node2: '' };

  beforeAll(async () => {
    c = await LabCluster.up(name, opts);
    [pod] = (await c.createPods([{ name: 'dsr-2', node: 'node2', labels: { app: 'dsr' } }])) as [Pod];
    const svc = await createService(c, 'dsr', {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Cluster',
      ipFamilyPolicy: 'RequireDualStack',
      externalIPs: [EIP[4], EIP[6]],
      selector: { app: 'dsr' },
      ports: [
        { name: 'tcp', port: PORT, targetPort: PORT, protocol: 'TCP' },
        { name: 'udp', port: PORT, targetPort: PORT, protocol: 'UDP' },
      ],
    });
    nodePort = svc.spec.ports[0].nodePort;
    await c.patch(`${SERVICES}/dsr/status`, { status: { loadBalancer: { ingress: [{ ip: LB[4] }, { ip: LB[6] }] } } });
    await routeLbVia(c, 'node1');
    macs.node1 = await uplinkMac(c, 'node1');
    macs.node2 = await uplinkMac(c, 'node2');
    for (const f of FAMILIES) {
      for (const proto of ['TCP', 'UDP'] as const) {
        await waitProgrammed(c, 'node1', LB[f], PORT, proto, [podAddr(pod, f)]);
        await waitProgrammed(c, 'node1', EIP[f], PORT, proto, [podAddr(pod, f)]);
      }
      await waitProgrammed(c, 'node1', nodeAddr(c, 'node1', f), nodePort, 'TCP', [podAddr(pod, f)]);
    }
  }, LAB_UP_MS);
  afterAll(() => c?.lab.down(), LAB_DOWN_MS);

  test('strait lb list -o json on node1: dsr for the ingress IP and externalIP (targetPort = port), snat for the NodePort and why', async () => {
    const lb = await c.lbList('node1');
    const by = new Map(lb.frontends.filter((f) => f.scope === 'external').map((f) => [f.frontend, f]));
    for (const f of FAMILIES) {
      for (const proto of ['TCP', 'UDP'] as const) {
        for (const addr of [LB[f], EIP[f]]) {
          const key = `${hostPort(addr, PORT)}/${proto}`;
          expect(by.get(key), key).toMatchObject({ kind: addr === LB[f] ? 'LoadBalancer' : 'ExternalIP', remote: 'dsr', remoteWhy: null });
        }
      }
      const np = `${hostPort(nodeAddr(c, 'node1', f), nodePort)}/TCP`;
      expect(by.get(np), np).toMatchObject({ kind: 'NodePort', remote: 'snat', remoteWhy: 'targetPort≠port' });
    }
  });

  const cases = FAMILIES.flatMap((f) => [
    { f, proto: 'TCP' as const, kind: 'ingress IP' as const },
    { f, proto: 'UDP' as const, kind: 'ingress IP' as const },
    { f, proto: 'TCP' as const, kind: 'externalIP' as const },
  ]);
  for (const { f, proto, kind } of cases) {
    test(`IPv${f} ${proto} to the ${kind} via node1: the pod on node2 sees the client's own address; every reply from the VIP leaves node2, none node1${xdp ? '; XDP encapsulated' : ''}`, async () => {
      const vip = kind === 'ingress IP' ? LB[f] : EIP[f];
      const to = hostPort(vip, PORT);
      const before = {
        encap: counter(c, 'node1', 'dsr_encap'),
        xdpEncap: counter(c, 'node1', 'xdp_dsr_encap'),
        decap: counter(c, 'node2', 'dsr_decap'),
        revnat: counter(c, 'node2', 'dsr_revnat', 'egress'),
        snat: counter(c, 'node1', 'service_snat'),
      };
      const { result: s, frames } = await captureClientPort(c, () => c.echo('external', proto === 'TCP' ? 'tcp' : 'udp', to, { count: 10, parallel: 2, timeoutMs: 3_000 }));
      expectAllOk(s, `${to}/${proto}`);
      expect(s.byPod).toEqual({ [pod.name]: 10 });
      expect(clientsByPod(s), 'the client address the pod saw').toEqual({ [pod.name]: [clientAddr(c, f)] });
      expect([...new Set(s.replies.map((r) => r.from))], 'where the client saw the replies come from').toEqual([to]);

      const replies = frames.filter((fr) => fr.src === vip && fr.sport === PORT);
      expect(replies.length, `replies from ${to} captured on the fabric`).toBeGreaterThanOrEqual(10);
      expect([...new Set(replies.map((fr) => fr.srcMac))], "the replies' source MAC: node2's uplink").toEqual([macs.node2]);
      expect(frames.filter((fr) => fr.srcMac === macs.node1), 'anything node1 sent the client').toEqual([]);
      // The requests went to node1 (the route), which sent them on to node2 encapsulated.
      const requests = frames.filter((fr) => fr.dst === vip && fr.dport === PORT);
      expect([...new Set(requests.map((fr) => fr.dstMac))], 'the requests went to node1').toEqual([macs.node1]);

      const encap = counter(c, 'node1', 'dsr_encap') - before.encap;
      const xdpEncap = counter(c, 'node1', 'xdp_dsr_encap') - before.xdpEncap;
      expect(encap + xdpEncap, 'node1 encapsulated (tc + XDP)').toBeGreaterThanOrEqual(BigInt(requests.length));
      if (xdp) expect(xdpEncap, 'encapsulated by XDP').toBeGreaterThan(0n);
      else expect(xdpEncap, 'no XDP here').toBe(0n);
      expect(counter(c, 'node1', 'service_snat') - before.snat, 'nothing SNATed').toBe(0n);
      expect(counter(c, 'node2', 'dsr_decap') - before.decap, 'node2 decapsulated').toBeGreaterThanOrEqual(BigInt(requests.length));
      expect(counter(c, 'node2', 'dsr_revnat', 'egress') - before.revnat, 'node2 sent the replies from the VIP').toBeGreaterThanOrEqual(BigInt(replies.length));
    }, 60_000);
  }

  test.each(FAMILIES)("IPv%i: the NodePort (targetPort≠port) falls back to SNAT: the pod sees node1's address, the replies come back through node1", async (f) => {
    const to = hostPort(nodeAddr(c, 'node1', f), nodePort);
    const { result: s, frames } = await captureClientPort(c, () => c.echo('external', 'tcp', to, { count: 10, parallel: 2, timeoutMs: 3_000 }));
    expectAllOk(s, to);
    expect(clientsByPod(s)).toEqual({ [pod.name]: [nodeAddr(c, 'node1', f)] });
    const replies = frames.filter((fr) => fr.src === nodeAddr(c, 'node1', f) && fr.sport === nodePort);
    expect(replies.length).toBeGreaterThanOrEqual(10);
    expect([...new Set(replies.map((fr) => fr.srcMac))], 'SNAT replies leave node1').toEqual([macs.node1]);
  }, 60_000);

  if (exhaustion) {
    test('SNAT port exhaustion (node1: --snat-port-range 61000-61001): the fourth flow holding one client port to one backend is a counted drop and a client timeout, a fresh port is served at once', async () => {
      const EX_LB = '198.18.240.30';
      const EX_EIP = '198.18.240.31';
      const [exh] = (await c.createPods([{ name: 'exh-2', node: 'node2', labels: { app: 'exh' } }])) as [Pod];
      // Two Service ports to the pod's one UDP port: six SNAT frontends (targetPort≠port) of one backend:port.
      const svc = await createService(c, 'exh', {
        type: 'LoadBalancer',
        externalIPs: [EX_EIP],
        selector: { app: 'exh' },
        ports: [
          { name: 'a', port: 53, targetPort: 'echo-udp', protocol: 'UDP' },
          { name: 'b', port: 54, targetPort: 'echo-udp', protocol: 'UDP' },
        ],
      });
      await c.patch(`${SERVICES}/exh/status`, { status: { loadBalancer: { ingress: [{ ip: EX_LB }] } } });
      const n1 = nodeAddr(c, 'node1', 4);
      const frontends: [string, number][] = [
        [n1, svc.spec.ports[0].nodePort],
        [EX_LB, 53],
        [EX_EIP, 53],
        [n1, svc.spec.ports[1].nodePort],
        [EX_LB, 54],
        [EX_EIP, 54],
      ];
      for (const [a, p] of frontends) {
        const fe = await waitProgrammed(c, 'node1', a, p, 'UDP', [exh.addr4]);
        expect(fe.remote, `${hostPort(a, p)}`).toBe('snat');
      }
      const CLIENT_PORT = 40777;
      const dropsBefore = counter(c, 'node1', 'drop_snat_exhausted');
      // One after the other, from one source port: each flow's state lives 60 s (UDP conntrack).
      const runs: EchoSummary[] = [];
      for (const [a, p] of frontends) runs.push(await c.echo('external', 'udp', hostPort(a, p), { count: 1, timeoutMs: 1_500, localPort: CLIENT_PORT }));
      const served = runs.slice(0, 3);
      for (const s of served) {
        expectAllOk(s, s.to);
        expect(s.byPod).toEqual({ [exh.name]: 1 });
      }
      // The pod saw node1 with the client's port, then with each port of the range.
      const seen = served.map((s) => s.replies[0]?.client ?? '');
      expect(seen.map(addrOf)).toEqual([n1, n1, n1]);
      expect(seen.map((hp) => Number(/:(\d+)$/.exec(hp)?.[1])).sort()).toEqual([CLIENT_PORT, 61000, 61001]);
      for (const s of runs.slice(3)) expect(s.byCode, `${s.to}: no SNAT port left`).toEqual({ ETIMEDOUT: 1 });
      expect(counter(c, 'node1', 'drop_snat_exhausted') - dropsBefore, 'drop_snat_exhausted on node1').toBe(3n);

      // Not a hang: the same frontend from a free client port is served (that port is kept), and the agent is well.
      const fresh = await c.echo('external', 'udp', hostPort(EX_EIP, 54), { count: 1, timeoutMs: 3_000, localPort: CLIENT_PORT + 1 });
      expectAllOk(fresh, 'a fresh client port');
      expect(fresh.replies[0]?.client).toBe(hostPort(n1, CLIENT_PORT + 1));
      await c.lab.agentsReady();
    }, 90_000);
  }
}

describe('DSR (agents with --dsr), XDP off', () => {
  dsrChecks('labdsr', { agentArgs: ['--dsr'], nodeAgentArgs: { node1: ['--snat-port-range', '61000-61001'] } }, false, true);
});

describe('DSR with XDP on (agents with --dsr --xdp, XDP-capable fabric)', () => {
  dsrChecks('labxdp', { agentArgs: ['--dsr'], xdp: true }, true, false);
});
