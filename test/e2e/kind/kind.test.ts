// The same Kubernetes-semantics checks as the lab (test/e2e/semantics/checks.ts), on a kind
// cluster: real kubelets and containers, kube-proxy absent (kind-config.yaml: kubeProxyMode none,
// dual-stack, pod and Service ranges inside 198.18.0.0/15 and 2001:2::/48), strait deployed as a
// DaemonSet (strait-daemonset.yaml) from an image built of this checkout (Dockerfile).
//
// Where docker or kind is missing (or STRAIT_KIND=0), the cluster checks are skipped — visibly:
// the describe block's title says "SKIPPED" and why, and the file prints a banner. The manifest
// and config checks below run everywhere.
//
//   make build && npx vitest run test/e2e/kind        (cluster strait-e2e, network strait-kind;
//                                                      removed afterwards, also after a crash on the next run)
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseAgentFlags } from '../../../src/agent/command.js';
import { AGENT_CLUSTER_ROLE_RULES } from '../../../src/k8s/rbac.js';
import { assertLabCidr } from '../../../src/lab/addresses.js';
import { POLICY_CHECKS, SERVICE_CHECKS, checkTitle, testFor } from '../semantics/checks.js';
import { assertBuilt } from '../semantics/lab-cluster.js';
import { DAEMONSET, KIND, KIND_CONFIG, KindCluster, kindAvailability } from './kind-cluster.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

const availability = kindAvailability();
if (!availability.ok) {
  console.warn(
    `\n*** test/e2e/kind: the kind cluster checks are SKIPPED: ${availability.reason}.\n` +
      '*** They run where docker and kind exist (STRAIT_KIND=0 turns them off); the lab runs the same checks.\n',
  );
}

const docs = (path: string): Obj[] => parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJS());

describe('kind manifests (checked everywhere)', () => {
  test('the DaemonSet manifest: its ClusterRole is the agent\'s (src/k8s/rbac.ts), its agent flags parse, hostNetwork and privileged', () => {
    const all = docs(DAEMONSET);
    const role = all.find((d) => d.kind === 'ClusterRole');
    expect(role.rules).toEqual(AGENT_CLUSTER_ROLE_RULES.map((r) => ({ apiGroups: [...r.apiGroups], resources: [...r.resources], verbs: [...r.verbs] })));
    const ds = all.find((d) => d.kind === 'DaemonSet');
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const agent = pod.containers.find((c: Obj) => c.name === 'agent');
    expect(agent.securityContext.privileged).toBe(true);
    const [cmd, ...flags] = (agent.args as string[]).map((a) => a.replace('$(NODE_NAME)', 'kind-worker'));
    expect(cmd).toBe('agent');
    const config = parseAgentFlags(flags);
    if (config === 'help') throw new Error('the manifest asks for --help');
    expect(config.nodeName).toBe('kind-worker');
    expect(config.devices).toEqual(['eth0', 'veth*']);
    expect(config.socketLbCgroup).toBe('/host/sys/fs/cgroup');
    expect(config.healthzAddr).toBe(':10256');
    expect(agent.env.find((e: Obj) => e.name === 'KUBERNETES_SERVICE_HOST').value).toBe('${API_HOST}');
  });

  test('the kind config: no kube-proxy, dual-stack, pod and Service ranges inside the lab ranges', () => {
    const [cfg] = docs(KIND_CONFIG);
    expect(cfg.networking.kubeProxyMode).toBe('none');
    expect(cfg.networking.ipFamily).toBe('dual');
    for (const cidr of [...cfg.networking.podSubnet.split(','), ...cfg.networking.serviceSubnet.split(','), KIND.subnet4, KIND.subnet6]) {
      expect(() => assertLabCidr(cidr.trim(), 'kind'), cidr).not.toThrow();
    }
    expect(cfg.nodes.filter((n: Obj) => n.role === 'worker')).toHaveLength(2);
  });
});

const title = availability.ok ? 'Kubernetes semantics on kind (strait DaemonSet, kubeProxyMode none)' : `Kubernetes semantics on kind — SKIPPED: ${availability.reason}`;

// Not a silent skip: issue 5 asks for these checks wherever docker and a kind
// node image are available, and neither can be installed on the CI machines (no
// registry is reachable). Without them the suite says so above, in its title
// and in the run's summary (22 skipped), and the manifests are still checked by
// the two tests before this block.
describe.skipIf(!availability.ok)(title, () => {
  let cluster: KindCluster;

  beforeAll(async () => {
    assertBuilt();
    cluster = await KindCluster.up((l) => console.log(`[kind] ${l}`));
  }, 1_800_000);

  afterAll(async () => {
    if (process.env['STRAIT_KIND_KEEP'] !== '1') await KindCluster.down();
  }, 600_000);

  for (const ch of [...SERVICE_CHECKS, ...POLICY_CHECKS]) {
    // Real kubelets are slower than the lab's: readiness through probes, containers to start.
    (testFor(ch, 'kind') === 'fails' ? test.fails : test)(checkTitle(ch, 'kind'), () => ch.run(cluster), ch.timeoutMs * 4);
  }
});
