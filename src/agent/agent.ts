// The node agent: a source (Kubernetes informers or a manifest directory)
// fills the object store; every change asks the bounded-frequency runner for a
// sync; a sync reads top to bottom like kube-proxy's syncProxyRules:
//   wait for the initial lists → model → compile → diff → ordered apply →
//   flush conntrack of what left → health checks, metrics, status, one log line.
// Like kube-proxy's partial syncs, a sync rebuilds the model of and compiles
// only the Services whose objects changed since the last one, and diffs only
// their entries; the first sync, a periodic one, a Node change or a sync after
// a failed one redo every Service.
// The pinned maps outlive the agent: a restart adopts them, recovers every id
// from them, and its first sync writes only what changed meanwhile.
import { performance } from 'node:perf_hooks';
import { CT_F_SNAT } from '../bpf/abi.js';
import { Dataplane, type TcMode } from '../bpf/dataplane.js';
import { SocketLb, cgroupNetnsPaths } from '../bpf/socket-lb.js';
import { XdpProgram, type XdpMode } from '../bpf/xdp.js';
import {
  CompiledServices,
  IdRegistry,
  applyPlan,
  collectQuarantine,
  ctBackendIds,
  diff,
  heldBackends,
  patchMaps,
  planInvalidatesFlows,
  readCurrent,
  releasePlan,
  type DesiredMaps,
  type DiffOptions,
  type ManagedMapName,
  type SyncPlan,
} from '../compile/index.js';
import type { ClusterWatch } from '../k8s/index.js';
import { buildNodeInfo, formatObjectRef, ServiceModels, type ModelSummary, type Node, type ServiceObjects } from '../model/index.js';
import { BoundedFrequencyRunner, type RunOutcome } from './bounded-frequency-runner.js';
import { DEVICE_RESCAN_MS, isDevicePattern, listDevices, selectDevices, type Device } from './devices.js';
import { HealthCheckServers } from './health-check-servers.js';
import { AgentHealth } from './health.js';
import { applyAgentHeapPolicy } from './heap.js';
import { startHttp, type HttpServers } from './http.js';
import type { Logger } from './logger.js';
import { watchManifests, type ManifestWatcher } from './manifests.js';
import { DEFAULT_NODEPORT_RANGE, DEFAULT_SNAT_PORT_RANGE, nodeConfigValue, sameNodeConfig, type PortRange } from './node-config.js';
import { Counter, Gauge, Histogram, Registry, exponentialBuckets } from './metrics.js';
import { ObjectStore, servicesOfChange, type StoreChange } from './object-store.js';
import { statusFilePath, writeStatusFile, type AgentStatus } from './status-file.js';

/**
 * Where the objects come from: the Kubernetes API, a manifest directory, or
 * `store`: the caller writes agent.store itself and marks each kind synced
 * (benchmarks, tests).
 */
export type AgentSource =
  | { readonly kind: 'kubernetes'; readonly kubeconfig?: string }
  | { readonly kind: 'manifests'; readonly dir: string }
  | { readonly kind: 'store' };

export interface AgentConfig {
  readonly nodeName: string;
  readonly source: AgentSource;
  readonly bpfRoot: string;
  readonly stateDir: string;
  /** Uplinks to attach the tc programs to. */
  readonly devices: readonly string[];
  /** The network namespace the devices live in (a path or a name under /run/netns); default the agent's own. */
  readonly devicesNetns: string | undefined;
  readonly tcMode: TcMode;
  /**
   * Socket LB: the cgroup v2 directory its programs attach to (the machine's
   * cgroup2 root covers every process of the node). Undefined: off — Services
   * are served by the tc path only, and socket-LB links an earlier run left
   * pinned are removed.
   */
  readonly socketLbCgroup?: string | undefined;
  readonly metricsAddr: string;
  readonly healthzAddr: string;
  /** Addresses the health-check node ports listen on ("" = all). */
  readonly healthCheckBindAddresses: readonly string[];
  /** Node health and the health-check node ports listen in this network namespace (path or /run/netns name); default the agent's own. */
  readonly healthNetns?: string | undefined;
  readonly minSyncPeriodMs: number;
  readonly syncPeriodMs: number;
  readonly nodePortAddresses: readonly string[] | undefined;
  /** The node's addresses when no Node object says them (manifest mode). */
  readonly nodeAddresses: readonly string[] | undefined;
  readonly mapSizes: Readonly<Record<string, number>>;
  /** Ports north-south SNAT may use (default DEFAULT_SNAT_PORT_RANGE). */
  readonly snatPortRange?: PortRange | undefined;
  /** `--dsr`: LB_F_DSR on the frontends that can keep their port, NODE_MODE_DSR in `config`. */
  readonly dsr?: boolean | undefined;
  /** `--xdp`: the XDP program on the uplinks (the devices named without patterns), in this mode; undefined: off. */
  readonly xdp?: XdpMode | undefined;
  readonly log: Logger;
}

interface AgentMetrics {
  readonly syncDuration: Histogram;
  readonly lastSync: Gauge;
  readonly services: Gauge;
  readonly frontends: Gauge;
  readonly backends: Gauge;
  readonly syncErrors: Counter;
  readonly writeFailures: Counter;
  readonly ctEntries: Gauge<'family'>;
  readonly datapathPackets: Counter<'reason' | 'direction'>;
  readonly datapathBytes: Counter<'reason' | 'direction'>;
  readonly apiErrors: Counter;
}

const DIFF_OPTIONS: DiffOptions = { quarantineTcpBackends: true };

/** At most one status file write per this long (see #writeStatus). */
const STATUS_INTERVAL_MS = 250;

export class Agent {
  readonly config: AgentConfig;
  readonly registry = new Registry();
  readonly store: ObjectStore;
  readonly health: AgentHealth;
  readonly #log: Logger;
  readonly #metrics: AgentMetrics;
  readonly #healthChecks: HealthCheckServers;
  #dp: Dataplane | undefined;
  #socketLb: SocketLb | undefined;
  #xdp: XdpProgram | undefined;
  #ids: IdRegistry | undefined;
  /** What the managed maps hold, as far as this agent knows (re-read on periodic syncs). */
  #state: DesiredMaps | undefined;
  /** Each Service's model and entries as the last sync left them. */
  readonly #models = new ServiceModels();
  readonly #compiled: CompiledServices;
  /** Services ("namespace/name") whose Service or slices changed since the last sync. */
  #dirty = new Set<string>();
  /** The next sync redoes every Service. */
  #fullPending = true;
  #runner: BoundedFrequencyRunner | undefined;
  #http: HttpServers | undefined;
  #watch: ClusterWatch | undefined;
  #manifests: ManifestWatcher | undefined;
  #periodicPending = false;
  /** ifindexes of the devices named (not matched by a pattern) in --devices: the node's uplinks. */
  readonly #uplinkIfindexes: number[] = [];
  /** Devices attached because a --devices pattern matched them: name → ifindex. */
  readonly #patternDevices = new Map<string, number>();
  #deviceScan: Promise<void> = Promise.resolve();
  #deviceRescan: NodeJS.Timeout | undefined;
  /** The status file: when it was last written, and the write waiting for STATUS_INTERVAL_MS to pass. */
  #statusWrittenAt = -Infinity;
  #statusTimer: NodeJS.Timeout | undefined;
  /** Model errors already logged (object, field, message): each is logged once, when it appears. */
  #loggedErrors = new Set<string>();
  #status: Omit<AgentStatus, 'version' | 'pid' | 'nodeName' | 'bpfRoot' | 'source'> = {
    lastSync: null,
    lastSyncDurationMs: null,
    lastError: null,
    services: 0,
    frontends: 0,
    backends: 0,
    skipped: [],
    errors: [],
  };

  constructor(config: AgentConfig) {
    applyAgentHeapPolicy();
    this.config = config;
    this.#log = config.log;
    this.#compiled = new CompiledServices({ dsr: config.dsr === true });
    this.store = new ObjectStore({ nodeName: config.nodeName });
    this.health = new AgentHealth({ healthTimeoutMs: 2 * config.syncPeriodMs });
    this.#healthChecks = new HealthCheckServers({
      bindAddresses: config.healthCheckBindAddresses,
      netns: config.healthNetns,
      isProxyHealthy: () => this.health.isHealthy(),
      log: config.log,
    });
    this.#metrics = this.#registerMetrics();
    this.store.onChange((c) => this.#noteChange(c));
  }

  /** Marks the Services a store change concerns for the next sync. */
  #noteChange(c: StoreChange): void {
    if (c.kind === 'Node' && c.key === this.config.nodeName) this.#fullPending = true;
    for (const key of servicesOfChange(c)) this.#dirty.add(key);
  }

  /** How ServiceModels.update reads one Service and its slices. */
  readonly #objects: ServiceObjects = {
    service: (key) => this.store.get('Service', key),
    endpointSlices: (key) => this.store.endpointSlicesFor(key),
  };

  get dataplane(): Dataplane {
    if (!this.#dp) throw new Error('agent not started');
    return this.#dp;
  }

  /** Opens (adopting) the maps, attaches, starts HTTP, the source and the runner. */
  async start(): Promise<void> {
    const { config } = this;
    const dp = Dataplane.open({ bpfRoot: config.bpfRoot, mapSizes: { ...config.mapSizes } });
    this.#dp = dp;
    this.#log.info('dataplane loaded', {
      bpfRoot: config.bpfRoot,
      adopted: dp.load.adopted.length,
      created: dp.load.created,
      replaced: dp.load.replaced,
    });
    for (const ifname of config.devices.filter((d) => !isDevicePattern(d))) {
      const a = dp.attachTc({ ifname, mode: config.tcMode, ...(config.devicesNetns !== undefined ? { netns: config.devicesNetns } : {}) });
      this.#uplinkIfindexes.push(a.ingress.ifindex);
      this.#log.info('attached', { device: ifname, netns: config.devicesNetns ?? null, mode: a.ingress.mode, updated: a.ingress.updated });
    }
    await this.#attachMatchingDevices();
    if (config.devices.some(isDevicePattern)) {
      this.#deviceRescan = setInterval(() => void this.#attachMatchingDevices(), DEVICE_RESCAN_MS);
      this.#deviceRescan.unref();
    }
    this.#startSocketLb(dp);
    this.#startXdp(dp);
    this.#state = readCurrent(dp);
    this.#ids = IdRegistry.recover(this.#state);
    // Cached rewrites (lib/flowcache.h) a previous agent's datapath made are
    // not ours to trust: whatever changed while no agent ran invalidates them.
    dp.bumpFlowEpoch();

    const http = await startHttp({
      metricsAddr: config.metricsAddr,
      healthzAddr: config.healthzAddr,
      healthzNetns: config.healthNetns,
      health: this.health,
      registry: this.registry,
      log: this.#log,
    });
    if (!http.ok) throw new Error(`http: ${http.error.server}: ${http.error.message}`);
    this.#http = http.value;

    this.#runner = new BoundedFrequencyRunner({
      name: 'sync',
      fn: () => this.#sync(),
      minInterval: config.minSyncPeriodMs,
      maxInterval: config.syncPeriodMs,
      onRun: (o) => this.#onRun(o),
    });
    this.store.onChange(() => {
      this.health.queuedUpdate();
      this.#runner?.run();
    });
    await this.#startSource();
    this.#runner.start();
    this.#runner.run();
  }

  async #startSource(): Promise<void> {
    const { source } = this.config;
    if (source.kind === 'store') return;
    if (source.kind === 'manifests') {
      this.health.setSource('manifests', { connected: true });
      const w = await watchManifests(source.dir, this.store, { log: this.#log });
      if (!w.ok) throw new Error(`--manifests ${w.error.dir}: ${w.error.message}`);
      this.#manifests = w.value;
      // The directory is the whole truth: once read it is "listed".
      for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) this.store.markSynced(kind);
      return;
    }
    this.health.setSource('kubernetes', { connected: false, reason: 'connecting' });
    // Loaded here, not at the top: the Kubernetes client is only needed (and only
    // paid for in memory) by the kubernetes source.
    const { watchCluster } = await import('../k8s/index.js');
    this.#watch = watchCluster({
      ...(source.kubeconfig !== undefined ? { kubeconfig: source.kubeconfig } : {}),
      nodeName: this.config.nodeName,
      store: this.store,
      log: this.#log.child({ component: 'watch' }),
      onSynced: () => {
        for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) this.store.markSynced(kind);
        this.#runner?.run();
      },
      onConnectionChange: (c) =>
        this.health.setSource('kubernetes', c.connected ? { connected: true } : { connected: false, reason: c.error ?? `${c.resource} disconnected` }),
      onApiError: () => this.#metrics.apiErrors.inc(),
    });
  }

  /** One sync; errors propagate to the runner, which retries with backoff. */
  async #sync(): Promise<void> {
    await this.#attachMatchingDevices();
    const dp = this.dataplane;
    const ids = this.#ids;
    if (!ids) throw new Error('agent not started');
    // Never program a partial view: before the initial lists nothing is withdrawn or added.
    if (!this.store.hasSynced(['Service', 'EndpointSlice'])) return;
    const started = performance.now();
    // A periodic sync re-reads the maps, so entries changed behind our back are repaired.
    const periodic = this.#periodicPending;
    this.#periodicPending = false;
    // The Services whose objects changed, rebuilt — or undefined: this sync redoes
    // every Service. A sync that does not finish leaves the next one full.
    const dirty = this.#dirty;
    this.#dirty = new Set();
    const changed = periodic || this.#fullPending ? undefined : this.#models.update(dirty, this.#objects);
    this.#fullPending = true;

    this.health.syncNode(this.store.get('Node', this.config.nodeName) as Parameters<AgentHealth['syncNode']>[0]);
    this.#syncNodeConfig(dp);
    let state = periodic || !this.#state ? readCurrent(dp) : this.#state;
    let plan: SyncPlan;
    if (changed === undefined) {
      // Each Service is built and compiled in turn (a stream), it and its slices
      // read from the store when it is reached: the whole model never exists at once.
      const stream = this.#models.rebuildStream({
        serviceKeys: this.store.keys('Service'),
        service: (key) => this.store.get('Service', key),
        endpointSlicesFor: (key) => this.store.endpointSlicesFor(key),
        nodeName: this.config.nodeName,
        node: this.store.get('Node', this.config.nodeName),
        nodePortAddresses: this.config.nodePortAddresses,
        nodeAddresses: this.config.nodeAddresses,
      });
      const compiled = this.#compiled.compileStream(stream, ids, {
        quarantine: heldBackends(state, DIFF_OPTIONS),
        sizeHint: this.#sizeHint(),
      });
      plan = diff(state, compiled.maps, DIFF_OPTIONS);
    } else {
      // only the changed Services' entries: as the maps hold them, and as they should be
      const { previous, next } = this.#compiled.compileChanged(changed, ids, state, DIFF_OPTIONS);
      plan = diff(previous, next, DIFF_OPTIONS);
      plan = { ...plan, after: patchMaps(state, previous, plan.after) };
    }
    // Before the plan's bytes go: a full sync (start, periodic) counts any write; an
    // incremental one asks what it changes for flows that exist (compile/flow-epoch.ts).
    const { upserts, deletes, quarantined } = plan.total;
    const invalidates = changed === undefined ? upserts + deletes + quarantined > 0 : planInvalidatesFlows(plan, state);
    const result = applyPlan(dp, plan);
    releasePlan(plan); // the written entries' bytes: megabytes after a full sync
    state = result.failures.length > 0 ? readCurrent(dp) : plan.after;
    const flushed = this.#flushConntrack(plan);
    const socketsDestroyed = this.#destroyStaleSockets(plan);
    let collectedDeletes = 0;
    if (periodic) {
      const collected = collectQuarantine(ctBackendIds(dp), state);
      if (collected.total.deletes > 0) {
        const r = applyPlan(dp, collected);
        state = r.failures.length > 0 ? readCurrent(dp) : collected.after;
        for (const step of collected.steps) if (step.op === 'delete') this.#compiled.forget(step.keys as readonly number[]);
        collectedDeletes = collected.total.deletes;
      }
    }
    // After the writes: the datapath's cached rewrites of established flows
    // (lib/flowcache.h, lib/xdp.h) were made from the maps as they were. A packet
    // that read the old epoch re-runs its full path; one that reads the new one
    // already sees the new maps. Syncs that only add endpoints leave them valid.
    if (invalidates || flushed + collectedDeletes > 0) dp.bumpFlowEpoch();
    this.#state = state;
    const model = this.#models.summary();
    this.#logModelErrors(model);

    const hcErrors = await this.#healthChecks.sync(model.healthChecks);
    const durationMs = performance.now() - started;
    this.#record(model, state, durationMs);
    for (const f of result.failures) {
      this.#metrics.writeFailures.inc();
      this.#log.error('map write failed', { map: f.map, op: f.op, key: f.key, error: f.error });
    }
    for (const e of hcErrors) this.#log.warn('health check port', { service: formatObjectRef(e.ref), port: e.nodePort, error: e.message });
    this.#log.info('sync', {
      full: periodic,
      rebuilt: changed === undefined ? 'all' : changed.size,
      services: this.#status.services,
      frontends: this.#status.frontends,
      backends: this.#status.backends,
      upserts: plan.total.upserts,
      deletes: plan.total.deletes,
      quarantined: plan.total.quarantined,
      ctFlushed: flushed,
      socketsDestroyed,
      failures: result.failures.length,
      skipped: model.skipped.length,
      errors: model.errors.length,
      durationMs: Math.round(durationMs * 100) / 100,
    });
    if (result.failures.length > 0) {
      throw new Error(`${result.failures.length} map writes failed (first: ${result.failures[0]?.map} ${result.failures[0]?.key}: ${result.failures[0]?.error})`);
    }
    this.#fullPending = false;
    this.health.updated();
  }

  /**
   * The `config` map entry (node-config.ts): the node's addresses, which
   * north-south SNAT rewrites sources to, the SNAT and NodePort ranges, the
   * uplinks, the modes. Rewritten only when it changes (a Node address change,
   * another agent's flags).
   */
  #syncNodeConfig(dp: Dataplane): void {
    const { node } = buildNodeInfo({
      nodeName: this.config.nodeName,
      node: this.store.get('Node', this.config.nodeName) as Node | undefined,
      nodeAddresses: this.config.nodeAddresses,
    });
    const next = nodeConfigValue({
      addresses: node.addresses,
      uplinkIfindexes: this.#uplinkIfindexes,
      socketLb: this.config.socketLbCgroup !== undefined,
      dsr: this.config.dsr === true,
      xdp: this.config.xdp !== undefined,
      snatPorts: this.config.snatPortRange ?? DEFAULT_SNAT_PORT_RANGE,
      nodePorts: DEFAULT_NODEPORT_RANGE,
    });
    const current = dp.maps.config.lookup(0);
    if (current !== undefined && sameNodeConfig(current, next)) return;
    dp.maps.config.update(0, next);
    this.#log.info('node config', {
      addr4: next.addr4,
      addr6: next.addr6,
      snatPorts: `${next.snatPortMin}-${next.snatPortMax}`,
      uplinks: next.uplinkIfindex.filter((i) => i !== 0),
      modes: next.modes,
    });
  }

  /** About as many entries as the store's Services and endpoints make (a first full compile's table sizes). */
  #sizeHint(): Partial<Record<ManagedMapName, number>> {
    const services = this.store.count('Service');
    const { IPv4, IPv6 } = this.store.endpointCounts();
    return { backends4: IPv4, backends6: IPv6, serviceSlots: IPv4 + IPv6, serviceNames: services, revnat4: services, services4: services };
  }

  /** Each error in the objects (an invalid IP, an unknown port…) is logged once, with the object and field. */
  #logModelErrors(model: ModelSummary): void {
    const now = new Set<string>();
    for (const e of model.errors) {
      const object = formatObjectRef(e.ref);
      const id = `${object}\0${e.field}\0${e.message}`;
      now.add(id);
      if (!this.#loggedErrors.has(id)) this.#log.error('invalid object', { object, field: e.field === '' ? undefined : e.field, error: e.message });
    }
    this.#loggedErrors = now;
  }

  /**
   * --devices patterns (e.g. lxc*): attach to devices that newly match (or
   * came back with a new ifindex), forget the ones that vanished. Runs
   * serialized; failures are logged and retried on the next scan.
   */
  #attachMatchingDevices(): Promise<void> {
    const patterns = this.config.devices.filter(isDevicePattern);
    if (patterns.length === 0) return Promise.resolve();
    const netns = this.config.devicesNetns;
    this.#deviceScan = this.#deviceScan.then(async () => {
      const dp = this.#dp;
      if (!dp) return;
      let devices: Device[];
      try {
        devices = await listDevices(netns);
      } catch (e: unknown) {
        this.#log.warn('listing devices failed', { netns: netns ?? null, error: e instanceof Error ? e.message : String(e) });
        return;
      }
      const ifindex = new Map(devices.map((d) => [d.name, d.ifindex]));
      for (const name of selectDevices(patterns, devices.map((d) => d.name))) {
        if (this.#patternDevices.get(name) === ifindex.get(name)) continue;
        try {
          const a = dp.attachTc({ ifname: name, mode: this.config.tcMode, ...(netns !== undefined ? { netns } : {}) });
          this.#patternDevices.set(name, a.ingress.ifindex);
          this.#log.info('attached', { device: name, netns: netns ?? null, mode: a.ingress.mode, updated: a.ingress.updated });
        } catch (e: unknown) {
          this.#log.warn('attach failed', { device: name, netns: netns ?? null, error: e instanceof Error ? e.message : String(e) });
        }
      }
      for (const name of [...this.#patternDevices.keys()]) {
        if (ifindex.has(name)) continue;
        this.#patternDevices.delete(name);
        try {
          dp.detachTc({ ifname: name, ...(netns !== undefined ? { netns } : {}) });
        } catch {
          /* the device is gone: so are its filters */
        }
        this.#log.info('device gone', { device: name, netns: netns ?? null });
      }
    });
    return this.#deviceScan;
  }

  /**
   * XDP on: load strait_xdp.o next to the tc object and attach it to the
   * uplinks (the devices named without a pattern: pods' veths get none);
   * off: detach what an earlier run attached, so tc does all the work.
   */
  #startXdp(dp: Dataplane): void {
    const { config } = this;
    const uplinks = config.devices.filter((d) => !isDevicePattern(d));
    if (config.xdp === undefined) {
      const detached = XdpProgram.detachAll(config.bpfRoot);
      if (detached.length > 0) this.#log.info('xdp off: detached', { devices: detached.map((d) => d.ifname) });
      return;
    }
    const xdp = XdpProgram.open({ dataplane: dp });
    this.#xdp = xdp;
    for (const ifname of uplinks) {
      const a = xdp.attach({ ifname, mode: config.xdp, ...(config.devicesNetns !== undefined ? { netns: config.devicesNetns } : {}) });
      this.#log.info('xdp attached', { device: ifname, netns: a.netns, mode: a.mode, updated: a.updated, nativeError: a.nativeError });
    }
  }

  /** Socket LB on: load and attach to the cgroup; off: detach what an earlier run attached. */
  #startSocketLb(dp: Dataplane): void {
    const cgroup = this.config.socketLbCgroup;
    if (cgroup === undefined) {
      const detached = SocketLb.detach(dp.bpfRoot);
      if (detached.length > 0) this.#log.info('socket LB off: detached', { hooks: detached });
      return;
    }
    const socketLb = SocketLb.open({ dataplane: dp });
    this.#socketLb = socketLb;
    const attached = socketLb.attach(cgroup);
    this.#log.info('socket LB attached', {
      cgroup,
      hooks: attached.map((a) => a.hook),
      updated: attached.every((a) => a.updated),
      socketDestroy: socketLb.destroyUnavailable === undefined ? 'bpf_sock_destroy' : `off: ${socketLb.destroyUnavailable}`,
    });
  }

  /**
   * Connected UDP sockets that socket LB sent to a backend this sync deleted
   * are destroyed, in every network namespace of the cgroup's processes: the
   * owner sees ECONNABORTED and reconnects through the frontend to a live
   * backend (cilium#27300) — what the conntrack flush does for tc flows.
   */
  #destroyStaleSockets(plan: SyncPlan): number {
    const socketLb = this.#socketLb;
    const cgroup = this.config.socketLbCgroup;
    if (!socketLb || cgroup === undefined || socketLb.destroyUnavailable !== undefined) return 0;
    const deleted = new Set<number>();
    for (const step of plan.steps) {
      if (step.op === 'delete' && (step.map === 'backends4' || step.map === 'backends6')) for (const k of step.keys) deleted.add(k);
    }
    // Sockets keep their translation in their own storage, which cannot be
    // listed: any deleted backend means a walk (rare: UDP endpoints that left,
    // quarantined TCP backends collected).
    if (deleted.size === 0) return 0;
    try {
      const r = socketLb.destroyStaleUdpSockets(cgroupNetnsPaths(cgroup));
      // a process that exited meanwhile takes its namespace along: nothing to do there
      for (const e of r.errors) this.#log.debug('socket destroy: namespace skipped', { netns: e.netns, error: e.error });
      return r.destroyed;
    } catch (e: unknown) {
      this.#log.warn('socket destroy failed', { error: e instanceof Error ? e.message : String(e) });
      return 0;
    }
  }

  /**
   * Conntrack entries of deleted backends and removed frontends go with them:
   * UDP flows move on at once (kube-proxy clears UDP conntrack), and a reused id
   * never inherits a stranger's flows. A SNAT flow's snat entries go too, freeing
   * its port: they are keyed by the very bytes of its conntrack keys (abi.h).
   */
  #flushConntrack(plan: SyncPlan): number {
    const backends = new Set<number>();
    const revNats = new Set<number>();
    for (const step of plan.steps) {
      if (step.op !== 'delete') continue;
      if (step.map === 'backends4' || step.map === 'backends6') for (const k of step.keys) backends.add(k);
      if (step.map === 'revnat4' || step.map === 'revnat6') for (const k of step.keys) revNats.add(k);
    }
    if (backends.size === 0 && revNats.size === 0) return 0;
    const dp = this.dataplane;
    let flushed = 0;
    for (const [ct, snat] of [[dp.maps.ct4, dp.maps.snat4], [dp.maps.ct6, dp.maps.snat6]] as const) {
      const doomed = [];
      const snatFlows = [];
      for (const [key, e] of ct.entries()) {
        if (!backends.has(e.backendId) && !revNats.has(e.revNatId)) continue;
        doomed.push(key);
        if ((e.flags & CT_F_SNAT) !== 0) snatFlows.push(key);
      }
      flushed += ct.batchDelete(doomed as never[]);
      snat.batchDelete(snatFlows as never[]);
    }
    return flushed;
  }

  #record(model: ModelSummary, state: DesiredMaps, durationMs: number): void {
    this.#status = {
      lastSync: new Date().toISOString(),
      lastSyncDurationMs: durationMs,
      lastError: null,
      services: model.services,
      frontends: state.services4.size + state.services6.size,
      backends: state.backends4.size + state.backends6.size,
      skipped: model.skipped.map((s) => ({ service: `${s.ref.namespace}/${s.ref.name}`, reason: s.reason, message: s.message })),
      errors: model.errors.map((e) => ({ object: formatObjectRef(e.ref), field: e.field, message: e.message })),
    };
    const m = this.#metrics;
    m.syncDuration.observe(durationMs / 1000);
    m.lastSync.set(Date.now() / 1000);
    m.services.set(this.#status.services);
    m.frontends.set(this.#status.frontends);
    m.backends.set(this.#status.backends);
    this.#writeStatus();
  }

  #onRun(o: RunOutcome): void {
    if (o.trigger === 'periodic') this.#periodicPending = false;
    if (o.ok) return;
    this.#metrics.syncErrors.inc();
    const message = o.error instanceof Error ? o.error.message : String(o.error);
    this.#status = { ...this.#status, lastError: message };
    this.#writeStatus();
    this.#log.error('sync failed', { error: message, failures: o.failures, retryInMs: o.retryInMs });
  }

  /**
   * The status file (`strait status`) after a sync: at once, unless one was
   * written less than STATUS_INTERVAL_MS ago — then once that interval is
   * over, with the status as it is then. A burst of syncs (endpoints flapping)
   * writes a few files instead of one per sync; stop() writes what is pending.
   */
  #writeStatus(): void {
    if (this.#statusTimer !== undefined) return;
    const wait = this.#statusWrittenAt + STATUS_INTERVAL_MS - performance.now();
    if (wait <= 0) {
      this.#writeStatusNow();
      return;
    }
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = undefined;
      this.#writeStatusNow();
    }, wait);
    this.#statusTimer.unref();
  }

  #writeStatusNow(): void {
    this.#statusWrittenAt = performance.now();
    const { config } = this;
    try {
      writeStatusFile(statusFilePath(config.bpfRoot, config.stateDir), {
        version: 1,
        pid: process.pid,
        nodeName: config.nodeName,
        bpfRoot: config.bpfRoot,
        source: config.source.kind,
        ...this.#status,
      });
    } catch (e: unknown) {
      this.#log.warn('status file not written', { error: e instanceof Error ? e.message : String(e) });
    }
  }

  #registerMetrics(): AgentMetrics {
    const r = this.registry;
    const m: AgentMetrics = {
      syncDuration: r.histogram({
        name: 'strait_sync_duration_seconds',
        help: 'Duration of one sync: model, compile, diff and map writes.',
        buckets: exponentialBuckets(0.0005, 2, 16),
      }),
      lastSync: r.gauge({ name: 'strait_last_sync_timestamp_seconds', help: 'Unix time of the last successful sync.' }),
      services: r.gauge({ name: 'strait_services', help: 'Services programmed.' }),
      frontends: r.gauge({ name: 'strait_frontends', help: 'Frontend entries (services4 + services6).' }),
      backends: r.gauge({ name: 'strait_backends', help: 'Backend entries (backends4 + backends6).' }),
      syncErrors: r.counter({ name: 'strait_sync_errors_total', help: 'Syncs that failed.' }),
      writeFailures: r.counter({ name: 'strait_map_write_failures_total', help: 'Map entries that could not be written.' }),
      ctEntries: r.gauge({ name: 'strait_ct_entries', help: 'Connection-tracking entries.', labelNames: ['family'] }),
      datapathPackets: r.counter({
        name: 'strait_datapath_packets_total',
        help: 'Packets by datapath outcome (the metrics map).',
        labelNames: ['reason', 'direction'],
      }),
      datapathBytes: r.counter({
        name: 'strait_datapath_bytes_total',
        help: 'Bytes by datapath outcome (the metrics map).',
        labelNames: ['reason', 'direction'],
      }),
      apiErrors: r.counter({ name: 'strait_api_errors_total', help: 'Kubernetes API errors (list/watch failures).' }),
    };
    // Kernel-side numbers are read when scraped, not on every packet.
    r.addCollector(() => {
      const dp = this.#dp;
      if (!dp) return;
      m.ctEntries.set(dp.maps.ct4.count(), { family: 'ipv4' });
      m.ctEntries.set(dp.maps.ct6.count(), { family: 'ipv6' });
      for (const s of dp.readMetrics()) {
        m.datapathPackets.set(Number(s.packets), { reason: s.reason, direction: s.dir });
        m.datapathBytes.set(Number(s.bytes), { reason: s.reason, direction: s.dir });
      }
    });
    return m;
  }

  /** Where HTTP listens (real ports), for tests and logs. */
  get http(): HttpServers | undefined {
    return this.#http;
  }

  /** Asks for a sync now (merged with others by the runner). */
  requestSync(): void {
    this.#runner?.run();
  }

  /** Stops everything but the dataplane: pins and attachments stay for the next agent. */
  async stop(): Promise<void> {
    clearInterval(this.#deviceRescan);
    if (this.#statusTimer !== undefined) {
      clearTimeout(this.#statusTimer);
      this.#statusTimer = undefined;
      this.#writeStatusNow();
    }
    await this.#runner?.stop();
    await this.#watch?.stop();
    this.#manifests?.close();
    await this.#healthChecks.close();
    await this.#http?.close();
    this.#socketLb?.close();
    this.#socketLb = undefined;
    this.#xdp?.close();
    this.#xdp = undefined;
    this.#dp?.close();
    this.#dp = undefined;
  }
}
