// What the agent's Kubernetes watch needs from the API, as RBAC PolicyRules: list and watch
// Services, EndpointSlices and Nodes — nothing more. The lab's ClusterRole, the DaemonSet
// manifest and the least-privilege test all take the rules from here, so they cannot drift from
// what src/k8s/watch.ts actually requests.

export interface PolicyRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
}

export const AGENT_CLUSTER_ROLE_RULES: readonly PolicyRule[] = [
  { apiGroups: [''], resources: ['services', 'nodes'], verbs: ['list', 'watch'] },
  { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
];

/** The ClusterRole object for the agent (rbac.authorization.k8s.io/v1). */
export function agentClusterRole(name = 'strait-agent'): Record<string, unknown> {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRole',
    metadata: { name, labels: { 'app.kubernetes.io/name': 'strait' } },
    rules: AGENT_CLUSTER_ROLE_RULES.map((r) => ({
      apiGroups: [...r.apiGroups],
      resources: [...r.resources],
      verbs: [...r.verbs],
    })),
  };
}
