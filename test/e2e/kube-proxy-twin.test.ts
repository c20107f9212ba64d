// kube-proxy twin nodes of the lab (src/lab/kube-proxy.ts): `labUp({ kubeProxyNodes })` adds
// nodes whose Service dataplane is the real kube-proxy (cached v1.37 build) in nftables or
// iptables mode, run inside the node's namespace and reaching kube-apiserver through the
// loopback relays only. Checked with real traffic from the external client: a NodePort on each
// twin reaches a backend on the strait node (masqueraded to the twin's address, as kube-proxy
// does for externalTrafficPolicy Cluster), an externalTrafficPolicy Local NodePort reaches the
// twin's own pod with the client's address kept; and teardown (also after a crash) leaves no
// kube-proxy, relay, rule or namespace.
//
// Address plan (src/lab/addresses.ts): node1 (strait) 198.18.0.1, node2 (kube-proxy nftables)
// 198.18.0.2, node3 (kube-proxy iptables) 198.18.0.3; pods 198.18.(16+N).K; external client
// 198.18.0.250; ClusterIPs 198.19.0.0/16. Lab "labkp": namespaces strait-labkp-*, state
// /run/strait-labkp. Needs nft and iptables (make deps); never skipped.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { cmdline, livePid } from '../../src/lab/host.js';
import { kubeProxyMetrics, kubeProxySyncs } from '../../src/lab/kube-proxy.js';
import { labDown, labStatus } from '../../src/lab/lab.js';
import { labLayout } from '../../src/lab/layout.js';
import { expectLabGone, useLab } from './semantics/lab-cluster.js';

const NAME = 'labkp';
const layout = labLayout(NAME);

/** Tables of the root namespace's nftables (kube-proxy's must never appear there). */
const rootTables = (): string => execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });
let rootTablesBefore = '';
beforeAll(() => {
  rootTablesBefore = rootTables();
});

const lab = useLab(NAME, { nodes: 1, kubeProxyNodes: ['nftables', 'iptables'] });

/** The network namespace a process is in (`ip netns identify`). */
const netnsOf = (pid: number): string => execFileSync('ip', ['netns', 'identify', String(pid)], { encoding: 'utf8' }).trim();

describe('kube-proxy twin nodes', () => {
  test('lab up: node2 runs kube-proxy nftables and node3 iptables, inside their namespaces, synced', async () => {
    const st = await labStatus(NAME);
    expect(st.problems).toEqual([]);
    expect(st.nodes.map((n) => [n.name, n.dataplane, n.agentReady])).toEqual([
      ['node1', 'strait', true],
      ['node2', 'kube-proxy nftables', true],
      ['node3', 'kube-proxy iptables', true],
    ]);
    for (const name of ['node2', 'node3']) {
      const n = lab().node(name);
      const pid = livePid(n.kubeProxy!.pidFile, 'kube-proxy');
      expect(pid, `${name}'s kube-proxy`).toBeDefined();
      expect(netnsOf(pid!)).toBe(n.ns);
      expect(cmdline(pid!)).toContain(`--hostname-override=${name}`);
      // no strait agent and no bpf root on a twin
      expect(existsSync(n.bpfRoot)).toBe(false);
      expect(kubeProxySyncs(await kubeProxyMetrics(n.kubeProxy!)).ipv4).toBeGreaterThan(0);
    }
    // its rules are the node namespace's own: nothing in the root namespace
    expect(rootTables()).toBe(rootTablesBefore);
    const nft = execFileSync('ip', ['netns', 'exec', lab().node('node2').ns, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    expect(nft).toContain('table ip kube-proxy');
    const ipt = execFileSync('ip', ['netns', 'exec', lab().node('node3').ns, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' });
    expect(ipt).toContain(':KUBE-SERVICES');
  });

  test('NodePort on each twin reaches the backend on the strait node, masqueraded to the twin', async () => {
    await lab().kubelet.createPod({ name: 'web-1', node: 'node1', labels: { app: 'web' } });
    await lab().cp.api('POST', '/api/v1/namespaces/default/services', {
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' },
      spec: { type: 'NodePort', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30090, protocol: 'TCP' }] },
    });
    for (const name of ['node2', 'node3']) {
      const n = lab().node(name);
      await lab().waitFor(`${name} to serve 30090`, async () => {
        const r = await lab().echoClient(lab().state.external.ns, 'http', `${n.addr4}:30090`, { count: 1, timeoutMs: 1_000 }).catch(() => undefined);
        return r?.ok === 1 || 'no reply yet';
      }, 60_000);
      const r = await lab().echoClient(lab().state.external.ns, 'http', `${n.addr4}:30090`, { count: 20 });
      expect(r.failed).toBe(0);
      expect(r.byPod).toEqual({ 'web-1': 20 });
      // externalTrafficPolicy Cluster: kube-proxy masquerades to the entry node's address
      expect(new Set(r.replies.map((x) => x.client.replace(/:\d+$/, '')))).toEqual(new Set([n.addr4]));
    }
    // --nodeport-addresses: the twin serves NodePorts on its own address only
    const nodeports = execFileSync('ip', ['netns', 'exec', lab().node('node2').ns, 'nft', 'list', 'set', 'ip', 'kube-proxy', 'nodeport-ips'], { encoding: 'utf8' });
    expect(nodeports).toMatch(/elements = \{ 198\.18\.0\.2 \}/);
  }, 120_000);

  test("externalTrafficPolicy Local on a twin reaches the twin's own pod with the client's address", async () => {
    for (const name of ['node2', 'node3']) {
      // a pod on a twin: no agent attaches to its veth, the lab's kubelet must not wait for one
      await lab().kubelet.createPod({ name: `local-${name}`, node: name, labels: { app: 'local' } });
    }
    await lab().cp.api('POST', '/api/v1/namespaces/default/services', {
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'local' },
      spec: { type: 'NodePort', externalTrafficPolicy: 'Local', selector: { app: 'local' }, ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30091, protocol: 'TCP' }] },
    });
    for (const name of ['node2', 'node3']) {
      const n = lab().node(name);
      await lab().waitFor(`${name} to serve 30091`, async () => {
        const r = await lab().echoClient(lab().state.external.ns, 'http', `${n.addr4}:30091`, { count: 1, timeoutMs: 1_000 }).catch(() => undefined);
        return r?.ok === 1 || 'no reply yet';
      }, 60_000);
      const r = await lab().echoClient(lab().state.external.ns, 'http', `${n.addr4}:30091`, { count: 10 });
      expect(r.byPod).toEqual({ [`local-${name}`]: 10 });
      expect(new Set(r.replies.map((x) => x.client.replace(/:\d+$/, '')))).toEqual(new Set([lab().state.external.addr4]));
    }
  }, 120_000);

  test('lab down after a crash leaves no kube-proxy, relay, namespace or state', async () => {
    const kp = lab().nodes.flatMap((n) => (n.kubeProxy ? [n.kubeProxy] : []));
    const pids = kp.flatMap((k) => [livePid(k.pidFile, 'kube-proxy'), livePid(k.apiRelayPidFile, 'netns-relay'), livePid(k.nodeRelayPidFile, 'netns-relay')]);
    expect(pids.every((p) => p !== undefined)).toBe(true);
    // A crash that lost the bookkeeping: no lab.json, no relay pid files.
    for (const k of kp) execFileSync('rm', ['-f', k.apiRelayPidFile, k.nodeRelayPidFile, join(layout.stateDir, 'lab.json')]);
    const r = await labDown({ name: NAME });
    expect(r.removedAnything).toBe(true);
    for (const p of pids) expect(cmdline(p!), `process ${p}`).toBeUndefined();
    await expectLabGone(layout);
    expect(rootTables()).toBe(rootTablesBefore);
  }, 60_000);
});
