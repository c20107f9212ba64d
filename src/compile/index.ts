// The compile → diff → apply stages' public surface.
export * from './types.js';
export { compile, CompiledServices, KIND_NUMBER, PROTO_NUMBER } from './compile.js';
export type { CompileOptions, CompileResult } from './compile.js';
export { IdRegistry, backendKey, frontendKey, serviceKey } from './ids.js';
export type { BackendRef, EndpointSet, IdCandidates, IdRegistryStats } from './ids.js';
export { collectQuarantine, diff, heldBackend, heldBackends, isEmptyPlan, isStreamProto, patchMaps } from './diff.js';
export { rawStepOf, releasePlan } from './diff.js';
export type { BackendMapName, DeleteStep, DiffOptions, PlanStep, RawStep, StepCounts, SyncPlan, WriteStep } from './diff.js';
export { APPLY_CHUNK, applyPlan, ctBackendIds, readCurrent } from './apply.js';
export type { ApplyFailure, ApplyResult, ConntrackTarget, ManagedMap, ManagedMaps, MapTarget } from './apply.js';
export { isTraceHit, trace } from './trace.js';
export type { TraceBackend, TraceHit, TraceMiss, TraceQuery, TraceResult } from './trace.js';
export { ByteTable } from './byte-table.js';
export {
  DELETE_ORDER,
  MANAGED_CODECS,
  PackedTable,
  emptyMaps,
  keyHex,
  renderMaps,
  sameValue,
  tableOf,
  tableOfMaps,
  valueHex,
} from './entry-table.js';
export type { KeyOf, MapCodecs, ValueOf } from './entry-table.js';
export { planInvalidatesFlows } from './flow-epoch.js';
