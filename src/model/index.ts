// The model stage's public surface.
export * from './types.js';
export * from './k8s-types.js';
export {
  buildModel,
  buildServiceModel,
  claimFrontends,
  claimKey,
  collectModel,
  endpointsForScope,
  finishService,
  planService,
  scopesDiffer,
  streamModel,
} from './build-model.js';
export type {
  IndexedModelInput,
  ModelInput,
  ModelStream,
  PlannedFrontend,
  ServiceModel,
  ServicePlan,
  StreamedService,
  StreamItem,
  TrafficScope,
} from './build-model.js';
export { ServiceModels } from './service-models.js';
export type { ChangedServices, ModelSummary, ServiceObjects } from './service-models.js';
export { buildNodeInfo, PRIMARY_NODE_PORT_ADDRESSES } from './node-info.js';
export type { NodeInput } from './node-info.js';
export { categorizeEndpoints, topologyModeFromHints, usesClusterEndpoints, usesLocalEndpoints } from './topology.js';
export type { EndpointCategories, EndpointPolicy } from './topology.js';
export { groupEndpointSlices, sliceServiceKey, serviceKey } from './endpoint-slices.js';
export { DEFAULT_AFFINITY_TIMEOUT_SECONDS } from './service-spec.js';
export { canonicalIP, cidrContains, ipFamilyOf, ipSortKey, joinHostPort, parseCIDR, parseIP } from './ip.js';
export type { ParsedCIDR, ParsedIP } from './ip.js';
export { ChangeTracker } from './change-tracker.js';
export type { Change, ChangeTrackerOptions } from './change-tracker.js';
