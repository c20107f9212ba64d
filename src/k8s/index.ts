// The Kubernetes watch stage: cluster objects → ClusterStore.
export { watchCluster, loadKubeConfig, backoffDelay } from './watch.js';
export { KubeconfigError, loadApiConfig } from './kubeconfig.js';
export type { ApiConfig } from './kubeconfig.js';
export type {
  ApiErrorInfo, BackoffOptions, ClusterStore, ClusterWatch, ClusterWatchStatus, ConnectionChange, LogFields,
  ResourceStatus, WatchClusterOptions, WatchedResource, WatchLogger,
} from './watch.js';
export { MemoryClusterStore, objectKey } from './memory-store.js';
export { AGENT_CLUSTER_ROLE_RULES, agentClusterRole } from './rbac.js';
export type { PolicyRule } from './rbac.js';
