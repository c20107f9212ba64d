// `strait lab demo` (make demo): a 2-node lab, 4 echo-server backends (2 per node), a client pod,
// a ClusterIP + NodePort Service and an externalTrafficPolicy: Local NodePort Service; real HTTP
// requests through them; the distribution per backend and the client address each backend saw.
// The lab stays up for inspection. Exit code 1 when any check fails (the output says which).
//
// North-south (issue 6): a NodePort packet whose backend is on *another* node is SNATed to the
// entry node's address, so that backend answers through the entry node (part 3: every backend
// answers via node1, the remote ones seeing node1's address); externalTrafficPolicy: Local keeps
// the client's address and stays on the node (part 2).
import type { EchoSummary } from './echo-client.js';
import { labSummary } from './command.js';
import { labUp, type Lab } from './lab.js';
import type { PodRecord } from './kubelet.js';
import { STRAIT_MAIN } from './programs.js';
import { hostPort, table } from '../cli/format.js';

const BACKENDS = [
  { name: 'web-1', node: 'node1' },
  { name: 'web-2', node: 'node1' },
  { name: 'web-3', node: 'node2' },
  { name: 'web-4', node: 'node2' },
] as const;
const REQUESTS = 200;

interface Check {
  readonly what: string;
  readonly ok: boolean;
  readonly detail: string;
}

function service(name: string, externalTrafficPolicy: 'Cluster' | 'Local'): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, labels: { demo: 'strait' } },
    spec: {
      type: 'NodePort',
      selector: { app: 'web' },
      ipFamilyPolicy: 'PreferDualStack',
      externalTrafficPolicy,
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' }],
    },
  };
}

const addrOnly = (hp: string): string => hp.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');

/** One table row per backend: requests, share, the client addresses it saw. */
function distribution(s: EchoSummary, pods: readonly PodRecord[]): string {
  const seen = new Map<string, Set<string>>();
  for (const r of s.replies) {
    const set = seen.get(r.pod) ?? new Set<string>();
    set.add(addrOnly(r.client));
    seen.set(r.pod, set);
  }
  const rows = pods.map((p) => {
    const n = s.byPod[p.name] ?? 0;
    return [p.name, p.node, p.addr4, String(n), `${((100 * n) / s.count).toFixed(0)}%`, [...(seen.get(p.name) ?? [])].join(' ') || '-'];
  });
  return table(['backend', 'node', 'pod IP', 'requests', 'share', 'client address seen'], rows)
    .split('\n').map((l) => `   ${l}`).join('\n');
}

function failures(s: EchoSummary): string {
  const codes = Object.entries(s.byCode).map(([c, n]) => `${n}× ${c}`).join(', ');
  return s.failed === 0 ? 'none failed' : `${s.failed} failed (${codes})`;
}

export async function runDemo(opts: { name: string; xdp?: boolean; log: (line: string) => void }): Promise<number> {
  const t0 = performance.now();
  const out = (line = ''): void => void process.stdout.write(`${line}\n`);
  const checks: Check[] = [];
  const check = (what: string, ok: boolean, detail: string): void => void checks.push({ what, ok, detail });

  const lab: Lab = await labUp({ name: opts.name, nodes: 2, xdp: opts.xdp === true, log: opts.log });
  const upMs = lab.state.timings.totalMs;
  out(labSummary(lab));

  // ---- pods and Services ----
  let t = performance.now();
  const backends = await Promise.all(BACKENDS.map((b) => lab.kubelet.createPod({ name: b.name, node: b.node, labels: { app: 'web' } })));
  const client = await lab.kubelet.createPod({ name: 'client', node: 'node1', labels: { app: 'client' }, serve: null });
  const podsMs = Math.round(performance.now() - t);
  opts.log(`pods: ${backends.map((p) => `${p.name} ${p.addr4} (${p.node})`).join(', ')}, client ${client.addr4} (node1) in ${podsMs} ms`);

  t = performance.now();
  const web = await lab.cp.api('POST', '/api/v1/namespaces/default/services', service('web', 'Cluster'));
  const local = await lab.cp.api('POST', '/api/v1/namespaces/default/services', service('web-local', 'Local'));
  const clusterIPs: string[] = web.spec.clusterIPs;
  const [vip4, vip6] = [clusterIPs.find((a) => !a.includes(':')), clusterIPs.find((a) => a.includes(':'))];
  const webNodePort: number = web.spec.ports[0].nodePort;
  const localNodePort: number = local.spec.ports[0].nodePort;
  if (!vip4) throw new Error(`Service web got no IPv4 ClusterIP: ${clusterIPs.join(', ')}`);

  // The real EndpointSlice controller turns the pods into slices; each agent programs them.
  const programmedMs = await lab.waitFor('both agents to program the Services', async () => {
    for (const n of lab.nodes) {
      const vip = await lab.frontend(n.name, vip4, 80);
      if ((vip?.backends.length ?? 0) !== 4) return `${n.name}: ClusterIP ${vip4}:80 has ${vip?.backends.length ?? 0} of 4 backends`;
      const np = await lab.frontend(n.name, n.addr4, localNodePort);
      if ((np?.backends.length ?? 0) !== 2) return `${n.name}: NodePort ${n.addr4}:${localNodePort} (Local) has ${np?.backends.length ?? 0} of 2 local backends`;
    }
    return true;
  }, 30_000);
  opts.log(`Services created and programmed on both nodes in ${Math.round(performance.now() - t)} ms (${programmedMs} ms after creation)`);

  out();
  out('Services (default namespace):');
  out(`   web        ClusterIP ${clusterIPs.join(', ')} port 80, NodePort ${webNodePort}, externalTrafficPolicy: Cluster`);
  out(`   web-local  ClusterIP ${local.spec.clusterIPs.join(', ')} port 80, NodePort ${localNodePort}, externalTrafficPolicy: Local`);
  out('   both select app=web (targetPort "http" = 8080 on web-1..web-4); slices made by the real EndpointSlice controller');

  // ---- 1. ClusterIP from a pod ----
  const tTraffic = performance.now();
  const s4 = await lab.echoClient(client.netns, 'http', hostPort(vip4, 80), { count: REQUESTS, parallel: 8, timeoutMs: 2_000 });
  out();
  out(`1. ClusterIP ${hostPort(vip4, 80)}: ${REQUESTS} HTTP requests from pod client (${client.addr4}, node1), ${failures(s4)}`);
  out(distribution(s4, backends));
  const hit4 = backends.filter((b) => (s4.byPod[b.name] ?? 0) > 0).length;
  const clients4 = new Set(s4.replies.map((r) => addrOnly(r.client)));
  check('ClusterIP: every request answered', s4.ok === REQUESTS, `${s4.ok}/${REQUESTS}`);
  check('ClusterIP: all 4 backends (both nodes) used', hit4 === 4, `${hit4}/4`);
  check('ClusterIP: backends saw the client pod\'s own address', clients4.size === 1 && clients4.has(client.addr4), [...clients4].join(' '));
  if (vip6) {
    const s6 = await lab.echoClient(client.netns, 'http', hostPort(vip6, 80), { count: 50, parallel: 8, timeoutMs: 2_000 });
    const clients6 = new Set(s6.replies.map((r) => addrOnly(r.client)));
    out(`   IPv6: ${hostPort(vip6, 80)}, 50 requests: ${s6.ok} answered by ${Object.entries(s6.byPod).map(([p, n]) => `${p} ${n}`).join(', ')}; client seen ${[...clients6].join(' ')}`);
    check('ClusterIP IPv6: every request answered', s6.ok === 50, `${s6.ok}/50`);
    check('ClusterIP IPv6: client address kept', clients6.size === 1 && clients6.has(client.addr6), [...clients6].join(' '));
  }

  // ---- 2. externalTrafficPolicy: Local NodePort from the external client ----
  out();
  out(`2. NodePort ${localNodePort} of web-local (externalTrafficPolicy: Local): ${REQUESTS} HTTP requests from the external client ${lab.state.external.addr4}, ${REQUESTS / 2} to each node`);
  for (const n of lab.nodes) {
    const s = await lab.echoClient(lab.state.external.ns, 'http', hostPort(n.addr4, localNodePort), { count: REQUESTS / 2, parallel: 8, timeoutMs: 2_000 });
    out(`   to ${n.name} ${hostPort(n.addr4, localNodePort)}: ${failures(s)}`);
    out(distribution(s, backends));
    const remote = backends.filter((b) => b.node !== n.name && (s.byPod[b.name] ?? 0) > 0).map((b) => b.name);
    const localHit = backends.filter((b) => b.node === n.name && (s.byPod[b.name] ?? 0) > 0).length;
    const seen = new Set(s.replies.map((r) => addrOnly(r.client)));
    check(`Local NodePort via ${n.name}: every request answered`, s.ok === REQUESTS / 2, `${s.ok}/${REQUESTS / 2}`);
    check(`Local NodePort via ${n.name}: only its own backends, both of them`, remote.length === 0 && localHit === 2, remote.length > 0 ? `remote: ${remote.join(', ')}` : `${localHit}/2 local`);
    check(`Local NodePort via ${n.name}: client address kept`, seen.size === 1 && seen.has(lab.state.external.addr4), [...seen].join(' '));
  }

  // ---- 3. the Cluster-policy NodePort: remote backends by SNAT ----
  const n1 = lab.node('node1');
  const s3 = await lab.echoClient(lab.state.external.ns, 'http', hostPort(n1.addr4, webNodePort), { count: REQUESTS, parallel: 8, timeoutMs: 2_000 });
  out();
  out(`3. NodePort ${webNodePort} of web (externalTrafficPolicy: Cluster) via node1: ${REQUESTS} HTTP requests from the external client ${lab.state.external.addr4}, ${failures(s3)}`);
  out(distribution(s3, backends));
  out(`   Backends on node2 are reached by SNAT: they see node1's address (${n1.addr4}) and answer through node1;`);
  out(`   node1's own backends get the packet directly and see the client's address.`);
  const hit3 = backends.filter((b) => (s3.byPod[b.name] ?? 0) > 0).length;
  const remoteSeen = new Set(s3.replies.filter((r) => backends.find((b) => b.name === r.pod)?.node !== 'node1').map((r) => addrOnly(r.client)));
  const localSeen = new Set(s3.replies.filter((r) => backends.find((b) => b.name === r.pod)?.node === 'node1').map((r) => addrOnly(r.client)));
  const remoteOk = s3.replies.filter((r) => backends.find((b) => b.name === r.pod)?.node !== 'node1').length;
  check('Cluster NodePort via node1: every request answered', s3.ok === REQUESTS, `${s3.ok}/${REQUESTS}`);
  check('Cluster NodePort via node1: all 4 backends (both nodes) answer', hit3 === 4, `${hit3}/4`);
  check('Cluster NodePort via node1: requests to node2\'s backends work (SNAT)', remoteOk > 0 && s3.errors.length === 0, `${remoteOk} answered by node2's backends, ${s3.errors.length} errors`);
  check('Cluster NodePort via node1: node2\'s backends see node1\'s address (SNAT)', remoteSeen.size === 1 && remoteSeen.has(n1.addr4), [...remoteSeen].join(' ') || 'none');
  check('Cluster NodePort via node1: node1\'s backends see the client (no SNAT)', localSeen.size === 1 && localSeen.has(lab.state.external.addr4), [...localSeen].join(' ') || 'none');
  const trafficMs = Math.round(performance.now() - tTraffic);

  // ---- verdict and where to look ----
  const failed = checks.filter((c) => !c.ok);
  out();
  out(failed.length === 0 ? `All ${checks.length} checks passed.` : `${failed.length} of ${checks.length} checks FAILED:`);
  for (const c of failed) out(`   FAILED: ${c.what} (${c.detail})`);
  const name = lab.state.name;
  const nameFlag = name === 'lab' ? '' : ` --name ${name}`;
  const kubectl = `${lab.cp.binDir}/kubectl --kubeconfig ${lab.state.adminKubeconfig}`;
  out();
  out(`The lab stays up. Inspect it (strait = node ${STRAIT_MAIN}):`);
  out(`   strait lab status${nameFlag}`);
  for (const n of lab.nodes) out(`   strait lb list --bpf-root ${n.bpfRoot} --state-dir ${n.stateDir}`);
  out(`   strait ct list --bpf-root ${n1.bpfRoot}`);
  out(`   strait status --bpf-root ${n1.bpfRoot} --state-dir ${n1.stateDir}`);
  out(`   bpftool map dump pinned ${n1.bpfRoot}/services4`);
  out(`   bpftool map dump pinned ${n1.bpfRoot}/service_names`);
  out(`   bpftool link show          (tcx links on up0 and every lxc* veth of each node)`);
  out(`   curl -s ${n1.metricsUrl}/metrics | grep ^strait_`);
  out(`   ${kubectl} get pods,svc,endpointslices -o wide`);
  out(`   ip netns exec ${client.netns} …   (the client pod; backends: ${backends.map((b) => b.netns).join(' ')})`);
  out(`Take it down: strait lab down${nameFlag}   (or: make demo-down)`);
  out();
  const totalMs = Math.round(performance.now() - t0);
  out(`Timings: lab up ${(upMs / 1000).toFixed(1)} s, pods ${(podsMs / 1000).toFixed(1)} s, Services programmed ${(programmedMs / 1000).toFixed(1)} s, traffic ${(trafficMs / 1000).toFixed(1)} s, demo total ${(totalMs / 1000).toFixed(1)} s`);
  return failed.length === 0 ? 0 : 1;
}
