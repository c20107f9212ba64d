// The lab, end to end (smoke): `strait lab up` with 2 nodes (real etcd, kube-apiserver,
// kube-controller-manager built from the official Go modules; one compiled `strait agent` per
// node), pods played by the lab's kubelet, a selector Service turned into EndpointSlices by the
// real controller, real HTTP from a client pod through the ClusterIP to pods on both nodes, a
// readiness flip taking a pod out of rotation and back, and `lab down` leaving nothing behind —
// also after a crash.
//
// Address plan (src/lab/addresses.ts): nodes 198.18.0.1-2 / 2001:2::1-2 on the fabric bridge;
// pods 198.18.17.K (node1) and 198.18.18.K (node2), 2001:2:0:17::K / 2001:2:0:18::K; Services
// from 198.19.0.0/16 and 2001:2:0:ff::/112. The lab is named "labe2e", so it never meets the
// demo's lab ("lab"): namespaces strait-labe2e-*, bpf roots /sys/fs/bpf/strait-labe2e-*,
// state /run/strait-labe2e, agent listeners on 127.18.<hash>.N.
//
// Never skipped: missing Kubernetes binaries are built first (long: hence the hook timeout); a
// missing or stale dist/ (the agents run the compiled CLI) fails the file with "run make ts".
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { hostPort } from '../../src/cli/format.js';
import { cmdline, listNamespaces, livePid } from '../../src/lab/host.js';
import { labDown, labStatus, labUp } from '../../src/lab/lab.js';
import { labLayout } from '../../src/lab/layout.js';
import { expectLabGone, useLab } from './semantics/lab-cluster.js';

const NAME = 'labe2e';
const layout = labLayout(NAME);
const lab = useLab(NAME);

/** 'a.b.c.d:port' / '[v6]:port' → the address. */
const addrOf = (hp: string): string => hp.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');

describe('strait lab', () => {
  let clusterIP = '';

  test('lab up: control plane, 2 node namespaces, agents ready, Node objects with addresses and zones', async () => {
    const st = await labStatus(NAME);
    expect(st.problems).toEqual([]);
    expect(st.state).toBe('up');
    expect(st.nodes.map((n) => [n.name, n.agentReady])).toEqual([['node1', true], ['node2', true]]);
    expect([...st.namespaces].sort()).toEqual([layout.externalNs, layout.fabricNs, `${layout.prefix}-node1`, `${layout.prefix}-node2`].sort());
    const nodes = await lab().cp.api('GET', '/api/v1/nodes');
    expect(nodes.items.map((n: { metadata: { name: string; labels: Record<string, string> }; status: { addresses: { type: string; address: string }[] } }) => [
      n.metadata.name,
      n.metadata.labels['topology.kubernetes.io/zone'],
      n.status.addresses.filter((a) => a.type === 'InternalIP').map((a) => a.address),
    ])).toEqual([
      ['node1', 'zone-a', ['198.18.0.1', '2001:2::1']],
      ['node2', 'zone-b', ['198.18.0.2', '2001:2::2']],
    ]);
    // The root namespace gets no route into the lab and no lab address.
    for (const args of [['-4', 'route', 'show', 'table', 'all'], ['-6', 'route', 'show', 'table', 'all'], ['addr', 'show']]) {
      const out = execFileSync('ip', args, { encoding: 'utf8' });
      expect(out, `ip ${args.join(' ')}`).not.toMatch(/198\.1[89]\.|2001:2:/);
    }
  });

  test('a selector Service through the real EndpointSlice controller: a client pod reaches pods on both nodes through the ClusterIP', async () => {
    const k = lab().kubelet;
    const [web1, web2, client] = await Promise.all([
      k.createPod({ name: 'web-1', node: 'node1', labels: { app: 'web' } }),
      k.createPod({ name: 'web-2', node: 'node2', labels: { app: 'web' } }),
      k.createPod({ name: 'client', node: 'node1', labels: { app: 'client' }, serve: null }),
    ]);
    expect(web1.addr4).toMatch(/^198\.18\.17\.\d+$/);
    expect(web2.addr4).toMatch(/^198\.18\.18\.\d+$/);
    const svc = await lab().cp.api('POST', '/api/v1/namespaces/default/services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web' },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    });
    clusterIP = svc.spec.clusterIP;
    const slices = await lab().waitFor('the EndpointSlice controller', async () => {
      const l = await lab().cp.api('GET', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb');
      const eps = l.items.flatMap((s: { endpoints?: { addresses: string[]; nodeName?: string }[] }) => s.endpoints ?? []);
      return eps.length === 2 || `${eps.length} endpoints`;
    }, 60_000); // the controller's first slice waits on its informers: slow on a loaded 2-core machine
    const ms = await lab().waitFor('node1 to program the ClusterIP with both backends', async () => {
      const f = await lab().frontend('node1', clusterIP, 80);
      return f?.backends.length === 2 || `${f?.backends.length ?? 0} backends`;
    });
    console.log(`slices after ${slices} ms, programmed on node1 ${ms} ms later`);

    const s = await lab().echoClient(client.netns, 'http', hostPort(clusterIP, 80), { count: 60, parallel: 6, timeoutMs: 2_000 });
    expect(s.errors).toEqual([]);
    expect(s.ok).toBe(60);
    expect(Object.keys(s.byPod).sort()).toEqual(['web-1', 'web-2']);
    expect(s.byPod['web-2']).toBeGreaterThan(5); // the other node's pod: the reply came back through node1's uplink
    expect(new Set(s.replies.map((r) => addrOf(r.client)))).toEqual(new Set([client.addr4]));
    expect(new Set(s.replies.map((r) => r.from))).toEqual(new Set([hostPort(clusterIP, 80)]));
  });

  test('a readiness flip takes a pod out of rotation, and back', async () => {
    const client = lab().kubelet.pod('client');
    await lab().kubelet.setReady('web-2', false);
    const out = await lab().waitFor('web-2 out of node1\'s ClusterIP backends', async () => {
      const f = await lab().frontend('node1', clusterIP, 80);
      return (f?.backends.length === 1 && f.backends[0]?.address === lab().kubelet.pod('web-1').addr4) || `${f?.backends.map((b) => b.address).join(',')}`;
    });
    const s = await lab().echoClient(client.netns, 'http', hostPort(clusterIP, 80), { count: 40, parallel: 4, timeoutMs: 2_000 });
    expect(s.ok).toBe(40);
    expect(s.byPod).toEqual({ 'web-1': 40 });

    await lab().kubelet.setReady('web-2', true);
    const back = await lab().waitFor('web-2 back', async () => (await lab().frontend('node1', clusterIP, 80))?.backends.length === 2);
    const s2 = await lab().echoClient(client.netns, 'http', hostPort(clusterIP, 80), { count: 40, parallel: 4, timeoutMs: 2_000 });
    expect(s2.ok).toBe(40);
    expect(Object.keys(s2.byPod).sort()).toEqual(['web-1', 'web-2']);
    console.log(`not ready → out of the maps in ${out} ms; ready → back in ${back} ms`);
  });

  test('a deleted pod goes through terminating and leaves rotation; its namespace and address go', async () => {
    const web2 = lab().kubelet.pod('web-2');
    await lab().kubelet.startDeletion('web-2');
    const pod = await lab().cp.api('GET', '/api/v1/namespaces/default/pods/web-2');
    expect(pod.metadata.deletionTimestamp).toBeTruthy();
    await lab().waitFor('web-2 out of rotation while terminating', async () => (await lab().frontend('node1', clusterIP, 80))?.backends.length === 1);
    await lab().kubelet.finishDeletion('web-2');
    expect((await lab().cp.request('GET', '/api/v1/namespaces/default/pods/web-2')).status).toBe(404);
    expect(await listNamespaces()).not.toContain(web2.netns);
    expect(existsSync(web2.ipamFile)).toBe(false);
    // The agent's --devices pattern (lxc*) forgets the vanished veth: its link pin goes.
    const n2 = lab().node('node2');
    await lab().waitFor("node2's agent to forget web-2's veth", () => !existsSync(join(n2.bpfRoot, 'links', `${n2.ns}-${web2.hostVeth}-ingress`)), 5_000);
  });

  test('lab down leaves nothing: namespaces, pins, processes, state', async () => {
    const agentPids = lab().nodes.map((n) => livePid(n.agentPidFile, n.bpfRoot));
    expect(agentPids.every((p) => p !== undefined)).toBe(true);
    const cpPids = lab().cp.runningPids();
    expect(cpPids).toHaveLength(3);
    const podPids = lab().kubelet.pods().flatMap((p) => (p.pidFile ? [livePid(p.pidFile, 'echo-server')] : []));

    const r = await lab().down();
    expect(r.namespaces.length).toBeGreaterThanOrEqual(5);
    await expectNothingLeft([...agentPids, ...cpPids, ...podPids].filter((p): p is number => p !== undefined));
  });

  test('lab up after a crash succeeds, and down cleans that too', async () => {
    // A crash: a lab half up (processes, namespaces, pins) and no one left to take it down.
    const first = await labUp({ name: NAME, nodes: 1 });
    const pids = [livePid(first.nodes[0]!.agentPidFile, first.nodes[0]!.bpfRoot)!, ...first.cp.runningPids()];
    process.kill(pids[0]!, 'SIGKILL'); // the agent died; pins and tcx links stay
    const second = await labUp({ name: NAME, nodes: 2 });
    for (const p of pids) expect(cmdline(p)).toBeUndefined();
    expect((await labStatus(NAME)).state).toBe('up');
    const morePids = [...second.nodes.map((n) => livePid(n.agentPidFile, n.bpfRoot)!), ...second.cp.runningPids()];
    await labDown({ name: NAME });
    await expectNothingLeft(morePids);
  }, 120_000);
});

async function expectNothingLeft(pids: readonly number[]): Promise<void> {
  for (const p of pids) expect(cmdline(p), `process ${p}`).toBeUndefined();
  await expectLabGone(layout);
}
