// `strait lab up|down|status|demo`: the local lab (src/lab/lab.ts) from the command line.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { table } from '../cli/format.js';
import { DEFAULT_LAB_NAME } from './layout.js';
import { parseKubeProxyModes, type KubeProxyMode } from './kube-proxy.js';
import { describeDown, labDown, labStatus, labUp, type Lab } from './lab.js';

export const LAB_USAGE = `strait lab — a real Kubernetes control plane with namespace nodes on this machine (root)

Usage:
  strait lab up [--nodes N] [--xdp] [--kube-proxy-nodes K [--kube-proxy-mode M[,M…]]]
                                (re)create the lab: etcd, kube-apiserver, kube-controller-manager,
                                N node namespaces (default 2) on a bridge, an external client,
                                one strait agent per node; first removes whatever an earlier lab left
  strait lab down               remove everything the lab made (also after a crash)
  strait lab status [-o json]   what runs, node agents, pods, leftovers
  strait lab demo [--xdp]       lab up + backends, Services and traffic; leaves the lab up

Flags:
  --name NAME    another lab beside the default one ("lab" + up to 8 of [a-z0-9]; default ${DEFAULT_LAB_NAME})
  --kube-proxy-nodes K
                 add K kube-proxy twin nodes (node<N+1>…node<N+K>, default 0): lab nodes like the
                 others (uplink, pod CIDR, Node object, pods) whose Service dataplane is the real
                 kube-proxy of the cached Kubernetes build, run inside the node's namespace, instead
                 of a strait agent — the same Services to the same backends, for comparison
  --kube-proxy-mode M[,M…]
                 nftables (default) or iptables; a list is given out to the twin nodes in turn
                 (--kube-proxy-nodes 2 --kube-proxy-mode nftables,iptables: one of each). Needs nft,
                 or iptables/ip6tables(-restore) (make deps installs both)
  --xdp          agents run with --xdp (XDP on the node uplinks); the fabric is made to carry
                 XDP_TX: XDP_PASS on the bridge-side veth peers, tx checksum offload off on the
                 external client and the pods
  -o, --output   table (default) or json (status)

Addresses: 198.18.0.0/15 and 2001:2::/48 only; nothing is routed from the root namespace into the lab.
`;

function stderrLog(line: string): void {
  process.stderr.write(`[lab] ${line}\n`);
}

export function labSummary(lab: Lab): string {
  const s = lab.state;
  const kubectl = `${join(lab.cp.binDir, 'kubectl')} --kubeconfig ${s.adminKubeconfig}`;
  const out = [
    `lab "${s.name}" is up: ${s.nodes.length} node(s), apiserver ${s.server}`,
    '',
    table(
      ['node', 'namespace', 'zone', 'addresses', 'pod CIDRs', 'bpf root', 'agent'],
      s.nodes.map((n) => [
        n.name, n.ns, n.zone, `${n.addr4} ${n.addr6}`, `${n.podCidr4} ${n.podCidr6}`,
        n.kubeProxy ? '-' : n.bpfRoot, n.kubeProxy ? `kube-proxy ${n.kubeProxy.mode} (log ${n.kubeProxy.log})` : n.metricsUrl,
      ]),
    ),
    '',
    `external client: ip netns exec ${s.external.ns} …  (${s.external.addr4}, ${s.external.addr6})`,
    `kubectl:         ${kubectl} get nodes`,
    `agent logs:      ${s.nodes.map((n) => n.kubeProxy?.log ?? n.agentLog).join(' ')}`,
    `timings:         ${Object.entries(s.timings).map(([k, v]) => `${k.replace(/Ms$/, '')} ${(v / 1000).toFixed(1)}s`).join(', ')}`,
    `take it down:    strait lab down${s.name === DEFAULT_LAB_NAME ? '' : ` --name ${s.name}`}`,
  ];
  return out.join('\n');
}

export async function runLabCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    strict: true,
    allowPositionals: false,
    options: {
      nodes: { type: 'string' },
      'kube-proxy-nodes': { type: 'string' },
      'kube-proxy-mode': { type: 'string' },
      name: { type: 'string', default: DEFAULT_LAB_NAME },
      output: { type: 'string', short: 'o', default: 'table' },
      xdp: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h' || values.help) {
    process.stdout.write(LAB_USAGE);
    return sub === undefined ? 2 : 0;
  }
  const name = values.name;
  switch (sub) {
    case 'up': {
      const nodes = values.nodes === undefined ? 2 : Number(values.nodes);
      const twins = values['kube-proxy-nodes'] === undefined ? 0 : Number(values['kube-proxy-nodes']);
      if (!Number.isInteger(twins) || twins < 0) throw new Error(`--kube-proxy-nodes: want a count ≥ 0, got ${values['kube-proxy-nodes']}`);
      if (values['kube-proxy-mode'] !== undefined && twins === 0) throw new Error('--kube-proxy-mode needs --kube-proxy-nodes K (K ≥ 1)');
      const modes = parseKubeProxyModes(values['kube-proxy-mode'] ?? 'nftables');
      const kubeProxyNodes = Array.from({ length: twins }, (_, i) => modes[i % modes.length] as KubeProxyMode);
      const lab = await labUp({ name, nodes, kubeProxyNodes, xdp: values.xdp, log: stderrLog });
      process.stdout.write(`${labSummary(lab)}\n`);
      return 0;
    }
    case 'down': {
      const r = await labDown({ name, log: stderrLog });
      process.stdout.write(r.removedAnything ? `lab "${name}" is down: removed ${describeDown(r)}\n` : `lab "${name}" was not up: nothing to remove\n`);
      return 0;
    }
    case 'status': {
      const st = await labStatus(name);
      if (values.output === 'json') {
        process.stdout.write(`${JSON.stringify(st, null, 2)}\n`);
      } else {
        const out = [`lab "${st.name}": ${st.state}${st.createdAt ? ` (since ${st.createdAt})` : ''}`];
        if (st.controlPlane) out.push(`control plane: ${st.controlPlane.pids.length} process(es), apiserver ${st.server} ${st.controlPlane.ready ? 'ready' : 'NOT ready'}`);
        if (st.nodes.length > 0) {
          out.push('', table(
            ['node', 'zone', 'addresses', 'dataplane', 'agent', 'last sync', 'services', 'frontends', 'backends'],
            st.nodes.map((n) => [
              n.name, n.zone, n.addresses.join(' '), n.dataplane,
              n.agentPid === null ? 'not running' : `pid ${n.agentPid}${n.agentReady ? ' ready' : ' NOT ready'}`,
              n.lastSync ?? '-', String(n.services ?? '-'), String(n.frontends ?? '-'), String(n.backends ?? '-'),
            ]),
          ));
        }
        if (st.pods.length > 0) {
          out.push('', table(['pod', 'node', 'addresses', 'netns', 'veth'], st.pods.map((p) => [`${p.namespace}/${p.name}`, p.node, `${p.addr4} ${p.addr6}`, p.netns, p.hostVeth])));
        }
        out.push('', `namespaces: ${st.namespaces.length > 0 ? st.namespaces.join(' ') : 'none'}`, `bpf roots:  ${st.bpfRoots.length > 0 ? st.bpfRoots.join(' ') : 'none'}`);
        for (const p of st.problems) out.push(`problem: ${p}`);
        process.stdout.write(`${out.join('\n')}\n`);
      }
      return st.problems.length > 0 ? 1 : 0;
    }
    case 'demo': {
      const { runDemo } = await import('./demo.js');
      return runDemo({ name, xdp: values.xdp, log: stderrLog });
    }
    default:
      throw new Error(`unknown command: strait lab ${sub} (strait lab --help)`);
  }
}
