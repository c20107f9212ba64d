// Dataplane: the typed face of the loaded datapath for the agent, tests and
// benches: typed maps, programs, tc attachment, metrics.
//
// Pins (all under bpfRoot, default /sys/fs/bpf/strait):
//   ${bpfRoot}/${map}                          every map of the object (object.ts)
//   ${bpfRoot}/settings                        the lb_settings the programs run with
//   ${bpfRoot}/links/${netns|host}-${if}-${dir}   tcx links (attached while pinned)
//   ${bpfRoot}/links/clsact:${if}:${dir}:${netns path, URI-encoded}
//                                              clsact attachments (a program pin that
//                                              records the filter for detach/destroy)
//   ${bpfRoot}/links/xdp:${if}:${netns path, URI-encoded}
//                                              XDP links (xdp.ts; attached while pinned)
//
// Hash seed: the flow hash picks a flow's backend, so it must survive agent
// restarts. bpffs holds only BPF objects, so the settings are kept in a
// one-entry array map pinned at ${bpfRoot}/settings (typed with the object's
// BTF: `bpftool map dump pinned …/settings` prints the fields). open() takes
// the seed from settings.hashSeed if given, else from that pin, else a random
// non-zero u32, and writes the effective settings back after load. The seed
// lives and dies with the bpf root (Dataplane.destroy removes it).
import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  DEFAULT_LB_SETTINGS,
  METRIC_REASONS,
  affinity4Key,
  affinity6Key,
  affinityEntry,
  ct4Key,
  ct6Key,
  ctEntry,
  xdpFlow,
  xdpFlowSlot,
  flowCacheEntry,
  flowEpoch,
  xdpNexthop,
  xdpNhKey,
  frag4Entry,
  frag4Key,
  frag6Entry,
  frag6Key,
  icmpBucket,
  lb4Backend,
  lb4Key,
  lb4Revnat,
  lb6Backend,
  lb6Key,
  lb6Revnat,
  lbService,
  lbSettings,
  lbSlot,
  serviceName,
  lbSlotKey,
  metricReasonName,
  metricsValue,
  nodeConfig,
  snat4Entry,
  snat4Key,
  snat6Entry,
  snat6Key,
  snat6Scratch,
  sock4RevnatEntry,
  sock4RevnatKey,
  sock6RevnatEntry,
  sock6RevnatKey,
  srange4Key,
  srange6Key,
  srangeEntry,
  u32Codec,
  type Affinity4Key,
  type Affinity6Key,
  type AffinityEntry,
  type Ct4Key,
  type Ct6Key,
  type CtEntry,
  type Frag4Entry,
  type Frag4Key,
  type Frag6Entry,
  type Frag6Key,
  type IcmpBucket,
  type Lb4Backend,
  type Lb4Key,
  type Lb4Revnat,
  type Lb6Backend,
  type Lb6Key,
  type Lb6Revnat,
  type LbService,
  type LbSettings,
  type LbSlot,
  type ServiceName,
  type LbSlotKey,
  type MetricsValue,
  type NodeConfig,
  type Snat4Entry,
  type Snat4Key,
  type Snat6Entry,
  type Snat6Key,
  type Sock4RevnatEntry,
  type Sock4RevnatKey,
  type Sock6RevnatEntry,
  type Sock6RevnatKey,
  type Srange4Key,
  type Srange6Key,
  type SrangeEntry,
  type XdpFlow,
  type XdpFlowSlot,
  type FlowCacheEntry,
  type FlowEpoch,
  type XdpNexthop,
  type XdpNhKey,
} from './abi.js';
import type { Codec } from './codec.js';
import { BpfError, ENODEV, ENOENT } from './errors.js';
import { BpfMap, MapType, PerCpuMap, mapInfo, openPinnedMap, type MapSpec } from './map.js';
import {
  STRAIT_TC_AUTO,
  STRAIT_TC_CLSACT,
  STRAIT_TC_EGRESS,
  STRAIT_TC_INGRESS,
  STRAIT_TC_TCX,
  loadNative,
  packageRoot,
  type Native,
  type NativeTcAttachment,
} from './native.js';
import { loadObject, type IncompatiblePinPolicy, type LoadedObject } from './object.js';

export const DEFAULT_BPF_ROOT = '/sys/fs/bpf/strait';
export const SETTINGS_PIN = 'settings';
export const LINKS_DIR = 'links';

export interface DataplaneMaps {
  services4: BpfMap<Lb4Key, LbService>;
  services6: BpfMap<Lb6Key, LbService>;
  serviceSlots: BpfMap<LbSlotKey, LbSlot>;
  /** Service id → "namespace/name:port/PROTO"; for the CLI and bpftool only. */
  serviceNames: BpfMap<number, ServiceName>;
  /** Hash of maps: service id → inner array (update with the inner map fd; lookup gives its id). */
  maglev: BpfMap<number, number>;
  backends4: BpfMap<number, Lb4Backend>;
  backends6: BpfMap<number, Lb6Backend>;
  revnat4: BpfMap<number, Lb4Revnat>;
  revnat6: BpfMap<number, Lb6Revnat>;
  /** Socket LB: (socket cookie, backend) → the frontend it stands for (LRU). */
  sockRevnat4: BpfMap<Sock4RevnatKey, Sock4RevnatEntry>;
  sockRevnat6: BpfMap<Sock6RevnatKey, Sock6RevnatEntry>;
  /** DSR receiver: a flow's CT_DIR_REPLY key → the frontend its replies leave from (LRU). */
  dsrRevnat4: BpfMap<Ct4Key, Lb4Revnat>;
  dsrRevnat6: BpfMap<Ct6Key, Lb6Revnat>;
  ct4: BpfMap<Ct4Key, CtEntry>;
  ct6: BpfMap<Ct6Key, CtEntry>;
  frag4: BpfMap<Frag4Key, Frag4Entry>;
  frag6: BpfMap<Frag6Key, Frag6Entry>;
  snat4: BpfMap<Snat4Key, Snat4Entry>;
  snat6: BpfMap<Snat6Key, Snat6Entry>;
  /** Per-CPU working space of the IPv6 SNAT paths (opaque). */
  snat6Scratch: PerCpuMap<number, Buffer>;
  affinity4: BpfMap<Affinity4Key, AffinityEntry>;
  affinity6: BpfMap<Affinity6Key, AffinityEntry>;
  sourceRanges4: BpfMap<Srange4Key, SrangeEntry>;
  sourceRanges6: BpfMap<Srange6Key, SrangeEntry>;
  config: BpfMap<number, NodeConfig>;
  metrics: PerCpuMap<number, MetricsValue>;
  icmpRatelimit: PerCpuMap<number, IcmpBucket>;
  /** XDP fast path caches (lib/xdp.h): next hops, established DSR flows. */
  xdpNexthop: BpfMap<XdpNhKey, XdpNexthop>;
  xdpFlow4: BpfMap<Ct4Key, XdpFlow>;
  xdpFlow6: BpfMap<Ct6Key, XdpFlow>;
  /** XDP established fast path, first level (lib/xdp.h): per-CPU direct-mapped slots. */
  xdpFlowCache: PerCpuMap<number, XdpFlowSlot>;
  /** tc established fast path (lib/flowcache.h): per-CPU rewrite cache, and its epoch. */
  flowCache: PerCpuMap<number, FlowCacheEntry>;
  flowEpoch: BpfMap<number, FlowEpoch>;
}

type MapBinding = readonly [cName: string, key: Codec<unknown>, value: Codec<unknown>];
/** Property → [C map name, key codec, value codec]. */
const MAP_BINDINGS: { readonly [P in keyof DataplaneMaps]: MapBinding } = {
  services4: ['services4', lb4Key, lbService],
  services6: ['services6', lb6Key, lbService],
  serviceSlots: ['service_slots', lbSlotKey, lbSlot],
  serviceNames: ['service_names', u32Codec, serviceName],
  maglev: ['maglev', u32Codec, u32Codec],
  backends4: ['backends4', u32Codec, lb4Backend],
  backends6: ['backends6', u32Codec, lb6Backend],
  revnat4: ['revnat4', u32Codec, lb4Revnat],
  revnat6: ['revnat6', u32Codec, lb6Revnat],
  sockRevnat4: ['sock_revnat4', sock4RevnatKey, sock4RevnatEntry],
  sockRevnat6: ['sock_revnat6', sock6RevnatKey, sock6RevnatEntry],
  dsrRevnat4: ['dsr_revnat4', ct4Key, lb4Revnat],
  dsrRevnat6: ['dsr_revnat6', ct6Key, lb6Revnat],
  ct4: ['ct4', ct4Key, ctEntry],
  ct6: ['ct6', ct6Key, ctEntry],
  frag4: ['frag4', frag4Key, frag4Entry],
  frag6: ['frag6', frag6Key, frag6Entry],
  snat4: ['snat4', snat4Key, snat4Entry],
  snat6: ['snat6', snat6Key, snat6Entry],
  snat6Scratch: ['snat6_scratch', u32Codec, snat6Scratch],
  affinity4: ['affinity4', affinity4Key, affinityEntry],
  affinity6: ['affinity6', affinity6Key, affinityEntry],
  sourceRanges4: ['source_ranges4', srange4Key, srangeEntry],
  sourceRanges6: ['source_ranges6', srange6Key, srangeEntry],
  config: ['config', u32Codec, nodeConfig],
  metrics: ['metrics', u32Codec, metricsValue],
  icmpRatelimit: ['icmp_ratelimit', u32Codec, icmpBucket],
  xdpNexthop: ['xdp_nexthop', xdpNhKey, xdpNexthop],
  xdpFlow4: ['xdp_flow4', ct4Key, xdpFlow],
  xdpFlow6: ['xdp_flow6', ct6Key, xdpFlow],
  xdpFlowCache: ['xdp_flow_cache', u32Codec, xdpFlowSlot],
  flowCache: ['flow_cache', u32Codec, flowCacheEntry],
  flowEpoch: ['flow_epoch', u32Codec, flowEpoch],
};

/** The C map names a strait datapath object defines (bpf/lib/maps.h). */
export const DATAPLANE_MAP_NAMES: readonly string[] = Object.values(MAP_BINDINGS).map((b) => b[0]);

export interface DataplaneOptions {
  bpfRoot?: string;
  /** Default: <package root>/build/bpf/strait_tc.o */
  objectPath?: string;
  /** max_entries by C map name (e.g. { ct4: 65536 }). */
  mapSizes?: Record<string, number>;
  settings?: Partial<LbSettings>;
  /** Default 'replace': an ABI change replaces the pinned map. */
  onIncompatiblePin?: IncompatiblePinPolicy;
  native?: Native;
}

export type TcDirection = 'ingress' | 'egress';
export type TcMode = 'auto' | 'tcx' | 'clsact';

export interface TcAttachOptions {
  ifname: string;
  /** A netns path (/run/netns/X, /proc/PID/ns/net) or a name under /run/netns. */
  netns?: string;
  mode?: TcMode;
  /** Program names; default strait_tc_ingress / strait_tc_egress. */
  programs?: { ingress?: string; egress?: string };
}

export interface TcAttachment {
  direction: TcDirection;
  mode: 'tcx' | 'clsact';
  ifname: string;
  /** ifindex inside the namespace. */
  ifindex: number;
  /** The netns path, null for the agent's own. */
  netns: string | null;
  program: string;
  /** tcx: the link pin; clsact: the record pin. */
  pinPath: string;
  /** tcx: an existing pinned link got the new program (atomic swap). */
  updated: boolean;
  /** clsact filter handle and priority. */
  handle?: number;
  priority?: number;
  /** auto mode fell back to clsact: why tcx failed (e.g. 'EINVAL'). */
  tcxError?: string;
}

export interface MetricSample {
  reason: string;
  dir: TcDirection;
  packets: bigint;
  bytes: bigint;
}

/** The metrics map summed over CPUs, non-zero counters only. */
export function sumMetrics(metrics: PerCpuMap<number, MetricsValue>): MetricSample[] {
  const out: MetricSample[] = [];
  for (const [index, perCpu] of metrics.entries()) {
    let packets = 0n;
    let bytes = 0n;
    for (const v of perCpu) {
      packets += v.packets;
      bytes += v.bytes;
    }
    if (packets === 0n && bytes === 0n) continue;
    out.push({
      reason: metricReasonName(index % METRIC_REASONS),
      dir: Math.floor(index / METRIC_REASONS) === 0 ? 'ingress' : 'egress',
      packets,
      bytes,
    });
  }
  return out;
}

export interface DataplaneLoadReport {
  adopted: readonly string[];
  created: readonly string[];
  replaced: readonly { name: string; reason: string }[];
}

/** A netns option (path, or name under /run/netns) as a path; null for the agent's own. */
export function resolveNetns(netns: string | undefined): string | null {
  if (netns === undefined || netns === '') return null;
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

/** /run/netns/X → X, /proc/123/ns/net → pid123, null → host */
export function netnsLabel(path: string | null): string {
  if (path === null) return 'host';
  const proc = /^\/proc\/(\d+)\/ns\/net$/.exec(path);
  if (proc) return `pid${proc[1]}`;
  return basename(path);
}

function linkPinPath(root: string, netns: string | null, ifname: string, dir: TcDirection): string {
  return join(root, LINKS_DIR, `${netnsLabel(netns)}-${ifname}-${dir}`);
}

function clsactRecordPath(
  root: string,
  netns: string | null,
  ifname: string,
  dir: TcDirection,
): string {
  return join(root, LINKS_DIR, `clsact:${ifname}:${dir}:${encodeURIComponent(netns ?? '')}`);
}

function parseClsactRecord(
  name: string,
): { ifname: string; dir: TcDirection; netns: string | null } | undefined {
  const m = /^clsact:([^:]+):(ingress|egress):(.*)$/.exec(name);
  if (!m) return undefined;
  const netns = decodeURIComponent(m[3] ?? '');
  return { ifname: m[1] ?? '', dir: m[2] as TcDirection, netns: netns === '' ? null : netns };
}

const dirCode = (dir: TcDirection): number => (dir === 'egress' ? STRAIT_TC_EGRESS : STRAIT_TC_INGRESS);

/** unlink(path); false when it was not there. Shared with xdp.ts and socket-lb.ts (their link pins). */
export function unlinkIfExists(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (e: unknown) {
    if (e instanceof Error && 'code' in e && e.code === 'ENOENT') return false;
    throw e;
  }
}

export class Dataplane {
  readonly bpfRoot: string;
  readonly objectPath: string;
  readonly maps: DataplaneMaps;
  readonly programs: ReadonlyMap<string, { name: string; fd: number }>;
  /** The settings the programs were loaded with. */
  readonly settings: LbSettings;
  readonly load: DataplaneLoadReport;
  private readonly native: Native;
  private readonly object: LoadedObject;
  private closed = false;

  private constructor(
    bpfRoot: string,
    objectPath: string,
    object: LoadedObject,
    settings: LbSettings,
    native: Native,
  ) {
    this.bpfRoot = bpfRoot;
    this.objectPath = objectPath;
    this.object = object;
    this.settings = settings;
    this.native = native;
    this.load = { adopted: object.adopted, created: object.created, replaced: object.replaced };
    this.programs = new Map([...object.programs].map(([name, fd]) => [name, { name, fd }]));
    this.maps = Dataplane.bindMaps(object, native);
  }

  static open(opts: DataplaneOptions = {}): Dataplane {
    const native = opts.native ?? loadNative();
    const bpfRoot = opts.bpfRoot ?? DEFAULT_BPF_ROOT;
    const objectPath = opts.objectPath ?? join(packageRoot(), 'build', 'bpf', 'strait_tc.o');
    const stored = readStoredSettings(bpfRoot, native);
    const given = Object.fromEntries(
      Object.entries(opts.settings ?? {}).filter(([, v]) => v !== undefined),
    ) as Partial<LbSettings>;
    const settings: LbSettings = {
      ...DEFAULT_LB_SETTINGS,
      ...given,
      hashSeed: given.hashSeed ?? stored?.hashSeed ?? randomInt(1, 2 ** 32),
    };
    const object = loadObject({
      file: objectPath,
      bpfRoot,
      mapSizes: opts.mapSizes ?? {},
      rodata: { settings: lbSettings.encode(settings) },
      onIncompatiblePin: opts.onIncompatiblePin ?? 'replace',
      native,
    });
    try {
      writeStoredSettings(bpfRoot, object, settings, native);
      return new Dataplane(bpfRoot, objectPath, object, settings, native);
    } catch (e: unknown) {
      object.close();
      throw e;
    }
  }

  private static bindMaps(object: LoadedObject, native: Native): DataplaneMaps {
    const out: Partial<Record<keyof DataplaneMaps, unknown>> = {};
    const missing: string[] = [];
    for (const [prop, [cName, key, value]] of Object.entries(MAP_BINDINGS)) {
      const m = object.maps.get(cName);
      if (!m) {
        missing.push(cName);
        continue;
      }
      if (m.info.keySize !== key.size || m.info.valueSize !== value.size) {
        throw new BpfError(
          `map ${cName}`,
          22,
          `object has key/value ${m.info.keySize}/${m.info.valueSize} bytes, abi.ts ${key.name} ${key.size} / ${value.name} ${value.size}`,
        );
      }
      const spec: MapSpec<unknown, unknown> = {
        name: cName,
        fd: m.fd,
        type: m.info.type,
        keyCodec: key,
        valueCodec: value,
        maxEntries: m.info.maxEntries,
        native,
      };
      out[prop as keyof DataplaneMaps] =
        m.info.type === MapType.percpuArray || m.info.type === MapType.percpuHash
          ? new PerCpuMap(spec)
          : new BpfMap(spec);
    }
    if (missing.length > 0) {
      throw new BpfError('bind maps', 22, `${object.file} lacks maps ${missing.join(', ')}`);
    }
    return out as DataplaneMaps;
  }

  /** A program by function name; throws if the object has none. */
  program(name: string): { name: string; fd: number } {
    const p = this.programs.get(name);
    if (!p) {
      throw new BpfError(
        `program ${name}`,
        ENOENT,
        `${this.objectPath} has no program ${name} (has ${[...this.programs.keys()].join(', ')})`,
      );
    }
    return p;
  }

  /**
   * Attaches the ingress and egress programs to ifname (inside netns if
   * given). tcx links are pinned, so they stay attached after close() and a
   * later attach swaps programs atomically; clsact is the fallback for
   * kernels before 6.6.
   */
  attachTc(opts: TcAttachOptions): { ingress: TcAttachment; egress: TcAttachment } {
    return {
      ingress: this.attachOne(opts, 'ingress', opts.programs?.ingress ?? 'strait_tc_ingress'),
      egress: this.attachOne(opts, 'egress', opts.programs?.egress ?? 'strait_tc_egress'),
    };
  }

  private attachOne(opts: TcAttachOptions, dir: TcDirection, programName: string): TcAttachment {
    const prog = this.program(programName);
    const netns = resolveNetns(opts.netns);
    const mode = opts.mode ?? 'auto';
    const linkPath = linkPinPath(this.bpfRoot, netns, opts.ifname, dir);
    const recordPath = clsactRecordPath(this.bpfRoot, netns, opts.ifname, dir);
    mkdirLinks(this.bpfRoot);
    const out: Partial<NativeTcAttachment> = {};
    const modeCode = mode === 'tcx' ? STRAIT_TC_TCX : mode === 'clsact' ? STRAIT_TC_CLSACT : STRAIT_TC_AUTO;
    const ret = this.native.strait_tc_attach(
      netns,
      opts.ifname,
      dirCode(dir),
      prog.fd,
      modeCode,
      linkPath,
      out,
    );
    const where = `${netns ?? 'host'} ${opts.ifname} ${dir}`;
    if (ret < 0) throw new BpfError(`tc attach ${programName} to ${where} (${mode})`, -ret);

    const attachment: TcAttachment = {
      direction: dir,
      mode: out.mode === STRAIT_TC_CLSACT ? 'clsact' : 'tcx',
      ifname: opts.ifname,
      ifindex: out.ifindex ?? 0,
      netns,
      program: programName,
      pinPath: linkPath,
      updated: out.updated === 1,
    };
    if (attachment.mode === 'clsact') {
      attachment.pinPath = recordPath;
      attachment.handle = out.handle ?? 0;
      attachment.priority = out.priority ?? 0;
      if (out.tcx_errno) attachment.tcxError = new BpfError('tcx', out.tcx_errno).code;
      // record the filter (a program pin) so detach/destroy find it after restarts
      unlinkIfExists(recordPath);
      const pin = this.native.bpf_obj_pin(prog.fd, recordPath);
      if (pin < 0) throw new BpfError(`bpf_obj_pin ${recordPath}`, -pin);
      // a tcx link from an earlier run would run first: retire it
      unlinkIfExists(linkPath);
    } else if (existsSync(recordPath)) {
      // switched from clsact to tcx: remove the old filter
      this.native.strait_tc_detach(netns, opts.ifname, dirCode(dir), STRAIT_TC_CLSACT, null);
      unlinkIfExists(recordPath);
    }
    return attachment;
  }

  /** Detaches both directions from ifname (tcx: unpins the links; clsact: removes the filters). */
  detachTc(opts: { ifname: string; netns?: string }): void {
    const netns = resolveNetns(opts.netns);
    for (const dir of ['ingress', 'egress'] as const) {
      unlinkIfExists(linkPinPath(this.bpfRoot, netns, opts.ifname, dir));
      const record = clsactRecordPath(this.bpfRoot, netns, opts.ifname, dir);
      if (existsSync(record)) {
        detachClsact(this.native, netns, opts.ifname, dir);
        unlinkIfExists(record);
      }
    }
  }

  /** Per-(reason, direction) counters summed over CPUs; only non-zero ones. */
  /**
   * Invalidate every cached established-flow rewrite (lib/flowcache.h): the
   * datapath treats a cache slot made under another epoch as a miss and runs
   * its full path (frontend, conntrack, backend) again. Call after any change
   * to the Service maps or conntrack that could change how an existing flow
   * is translated; the agent is the one writer. Returns the new epoch.
   */
  bumpFlowEpoch(): bigint {
    const next = (this.maps.flowEpoch.lookup(0)?.epoch ?? 0n) + 1n;
    this.maps.flowEpoch.update(0, { epoch: next });
    return next;
  }

  readMetrics(): MetricSample[] {
    return sumMetrics(this.maps.metrics);
  }

  /**
   * Any pinned map of the object by C name, typed with the given codecs: for
   * maps beyond the DataplaneMaps set (e.g. strait_tc_test.o's test hooks).
   */
  map<K, V>(name: string, keyCodec: Codec<K>, valueCodec: Codec<V>): BpfMap<K, V> {
    const m = this.object.maps.get(name);
    if (!m) throw new BpfError(`map ${name}`, ENOENT, `${this.objectPath} has no map ${name}`);
    if (m.info.keySize !== keyCodec.size || m.info.valueSize !== valueCodec.size) {
      throw new BpfError(
        `map ${name}`,
        22,
        `key/value ${m.info.keySize}/${m.info.valueSize} bytes, codecs ${keyCodec.size}/${valueCodec.size}`,
      );
    }
    return new BpfMap({
      name,
      fd: m.fd,
      type: m.info.type,
      keyCodec,
      valueCodec,
      maxEntries: m.info.maxEntries,
      native: this.native,
    });
  }

  /**
   * max_entries of every pinned map, by C name: what another object of the
   * datapath (strait_sock.o) must be loaded with to adopt the same maps.
   */
  mapSizes(): Record<string, number> {
    return Object.fromEntries([...this.object.maps].map(([name, m]) => [name, m.info.maxEntries]));
  }

  /** Internal maps of the load (e.g. the .rodata the programs read), by libbpf name. */
  get internalMaps(): LoadedObject['internalMaps'] {
    return this.object.internalMaps;
  }

  /** Closes every fd; pins and pinned (tcx) attachments stay. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.object.close();
  }

  /**
   * The pinned maps under bpfRoot, typed, without loading any program: what
   * the read-only CLI commands use, so they work with the agent stopped. Maps
   * not pinned there are absent; close() every map when done.
   */
  static openPinned(bpfRoot: string = DEFAULT_BPF_ROOT, native?: Native): Partial<DataplaneMaps> {
    const out: Partial<Record<keyof DataplaneMaps, unknown>> = {};
    for (const [prop, [cName, key, value]] of Object.entries(MAP_BINDINGS)) {
      const path = join(bpfRoot, cName);
      if (!existsSync(path)) continue;
      out[prop as keyof DataplaneMaps] = openPinnedMap(path, key, value, native);
    }
    return out as Partial<DataplaneMaps>;
  }

  /**
   * Removes everything under bpfRoot: maps, settings, tcx link pins (which
   * detaches them) and clsact filters recorded there.
   */
  static destroy(bpfRoot: string, native?: Native): void {
    if (!existsSync(bpfRoot)) return;
    const links = join(bpfRoot, LINKS_DIR);
    if (existsSync(links)) {
      for (const name of readdirSync(links)) {
        const rec = parseClsactRecord(name);
        if (rec) detachClsact(native ?? loadNative(), rec.netns, rec.ifname, rec.dir);
      }
    }
    rmSync(bpfRoot, { recursive: true, force: true });
  }
}

function mkdirLinks(root: string): void {
  mkdirSync(join(root, LINKS_DIR), { recursive: true });
}

/** Removes our clsact filter; a gone interface or namespace counts as done. */
function detachClsact(native: Native, netns: string | null, ifname: string, dir: TcDirection): void {
  const ret = native.strait_tc_detach(netns, ifname, dirCode(dir), STRAIT_TC_CLSACT, null);
  if (ret < 0 && -ret !== ENOENT && -ret !== ENODEV) {
    throw new BpfError(`tc detach (clsact) ${netns ?? 'host'} ${ifname} ${dir}`, -ret);
  }
}

/** The settings pinned at ${bpfRoot}/settings by an earlier open, if any. */
function readStoredSettings(bpfRoot: string, native: Native): LbSettings | undefined {
  const path = join(bpfRoot, SETTINGS_PIN);
  const fd = native.bpf_obj_get(path);
  if (fd < 0) return undefined;
  try {
    const info = mapInfo(fd, native);
    if (info.keySize !== 4 || info.valueSize !== lbSettings.size) return undefined;
    const value = Buffer.alloc(lbSettings.size);
    const ret = native.bpf_map_lookup_elem(fd, u32Codec.encode(0), value);
    if (ret < 0) return undefined;
    const s = lbSettings.decode(value);
    return s.hashSeed === 0 ? undefined : s;
  } catch {
    return undefined; // not a map: replaced on write
  } finally {
    native.close(fd);
  }
}

function writeStoredSettings(
  bpfRoot: string,
  object: LoadedObject,
  settings: LbSettings,
  native: Native,
): void {
  const path = join(bpfRoot, SETTINGS_PIN);
  let fd = native.bpf_obj_get(path);
  if (fd >= 0) {
    let ok = false;
    try {
      const info = mapInfo(fd, native);
      ok = info.type === MapType.array && info.keySize === 4 && info.valueSize === lbSettings.size;
    } catch {
      ok = false;
    }
    if (!ok) {
      native.close(fd);
      unlinkSync(path);
      fd = -1;
    }
  }
  if (fd < 0) {
    fd = native.strait_map_create_btf(
      object.handle,
      MapType.array,
      SETTINGS_PIN,
      '__u32',
      'lb_settings',
      4,
      lbSettings.size,
      1,
      0,
    );
    if (fd < 0) throw new BpfError('create settings map', -fd);
    const pin = native.bpf_obj_pin(fd, path);
    if (pin < 0) {
      native.close(fd);
      throw new BpfError(`bpf_obj_pin ${path}`, -pin);
    }
  }
  try {
    const ret = native.bpf_map_update_elem(fd, u32Codec.encode(0), lbSettings.encode(settings), 0);
    if (ret < 0) throw new BpfError(`write ${path}`, -ret);
  } finally {
    native.close(fd);
  }
}
