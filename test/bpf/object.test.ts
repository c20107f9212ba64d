// Loading, pinning and adopting the datapath's maps; typed map operations on
// real kernel maps; tc attach/detach inside a network namespace; destroy.
//
// Address plan: services 198.18.0.0/24 and 2001:2::/64, backends
// 198.18.1.0/24; the netns is private to this file (stffi-<pid>), its veth
// pair lives entirely inside it, nothing touches the host's interfaces.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_SCOPE_EXTERNAL,
  METRIC_DIR_EGRESS,
  METRIC_DIR_INGRESS,
  MetricReason,
  lbSettings,
  metricsIndex,
  type Lb4Backend,
} from '../../src/bpf/abi.js';
import { Dataplane, DATAPLANE_MAP_NAMES } from '../../src/bpf/dataplane.js';
import { BpfLoadError, BpfMapError, IncompatiblePinError } from '../../src/bpf/errors.js';
import { loadNative, packageRoot } from '../../src/bpf/native.js';
import { loadObject } from '../../src/bpf/object.js';
import { progTestRun, skbContext } from '../../src/bpf/test-run.js';

const OBJECT = join(packageRoot(), 'build', 'bpf', 'strait_tc.o');
const PREFIX = 'strait-test-object-';
const ROOT = `/sys/fs/bpf/${PREFIX}${process.pid}`;
const ROOT_FULL = `${ROOT}-full`;
const ROOT_DESTROY = `${ROOT}-destroy`;
const NETNS = `stffi-${process.pid}`;
const VETH_A = `stffi-${process.pid}a`.slice(0, 15);
const VETH_B = `stffi-${process.pid}b`.slice(0, 15);

/** Small tables: one test file must not reserve the defaults' hundreds of MB. */
const SIZES: Record<string, number> = {
  services4: 1024,
  services6: 1024,
  service_slots: 4096,
  maglev: 64,
  backends4: 4096,
  backends6: 4096,
  revnat4: 1024,
  revnat6: 1024,
  ct4: 4096,
  ct6: 4096,
  frag4: 256,
  frag6: 256,
  snat4: 1024,
  snat6: 1024,
  affinity4: 256,
  affinity6: 256,
  source_ranges4: 256,
  source_ranges6: 256,
};

const sh = (cmd: string, args: string[]): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const shQuiet = (cmd: string, args: string[]): void => {
  try {
    sh(cmd, args);
  } catch {
    /* already gone */
  }
};
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Leftovers of crashed runs (their pid is gone) are removed, not tripped over. */
function cleanStale(): void {
  for (const name of readdirSync('/sys/fs/bpf')) {
    const m = new RegExp(`^${PREFIX}(\\d+)`).exec(name);
    if (m && !alive(Number(m[1]))) Dataplane.destroy(join('/sys/fs/bpf', name));
  }
  const list = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
  for (const ns of list) {
    const m = /^stffi-(\d+)$/.exec(ns);
    if (m && !alive(Number(m[1]))) shQuiet('ip', ['netns', 'del', ns]);
  }
}

function cleanup(): void {
  for (const root of [ROOT, ROOT_FULL, ROOT_DESTROY]) Dataplane.destroy(root);
  shQuiet('ip', ['netns', 'del', NETNS]);
}

/** A link's or program's id from /proc/self/fdinfo of its pin. */
function pinnedId(path: string, field: 'link_id' | 'prog_id'): number {
  const native = loadNative();
  const fd = native.bpf_obj_get(path);
  if (fd < 0) throw new Error(`bpf_obj_get ${path}: ${fd}`);
  try {
    const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    const m = new RegExp(`^${field}:\\s*(\\d+)`, 'm').exec(info);
    return Number(m?.[1] ?? -1);
  } finally {
    native.close(fd);
  }
}

function tcFilters(dev: string, dir: 'ingress' | 'egress'): string {
  return sh('ip', ['netns', 'exec', NETNS, 'tc', 'filter', 'show', 'dev', dev, dir]);
}

const open = (root = ROOT, extra: Partial<Parameters<typeof Dataplane.open>[0]> = {}): Dataplane =>
  Dataplane.open({ bpfRoot: root, objectPath: OBJECT, mapSizes: SIZES, ...extra });

/** Ethernet + IPv4 + UDP 198.18.0.100:40000 → 198.18.0.200:9 (not a Service). */
function udpPacket(): Buffer {
  const eth = Buffer.from('02000000000202000000000108 00'.replace(/ /g, ''), 'hex');
  const ip = Buffer.from('450000200000400040110000c6120064c61200c8', 'hex');
  const udp = Buffer.from('9c40000900080000', 'hex');
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  return Buffer.concat([eth, ip, udp, Buffer.alloc(4)]);
}

beforeAll(() => {
  if (process.getuid?.() !== 0) {
    throw new Error('test/bpf/object.test.ts needs root (BPF maps, bpffs pins, network namespaces)');
  }
  if (!existsSync(OBJECT)) throw new Error(`${OBJECT} is missing: run \`make bpf\``);
  cleanStale();
  cleanup();
});

afterAll(() => {
  cleanup();
});

describe('load, pin, adopt', () => {
  const backend: Lb4Backend = {
    addr: '198.18.1.10',
    nodeAddr: '198.18.2.1',
    port: 8080,
    proto: IPPROTO_TCP,
    state: 0,
    flags: 1,
    zone: 3,
  };
  const vip = { addr: '198.18.0.10', port: 80, proto: IPPROTO_TCP, scope: LB_SCOPE_EXTERNAL };

  it('first load creates every map and pins it under the root', () => {
    const dp = open();
    try {
      expect([...dp.load.created].sort()).toEqual([...DATAPLANE_MAP_NAMES].sort());
      expect(dp.load.adopted).toEqual([]);
      for (const name of DATAPLANE_MAP_NAMES) expect(existsSync(join(ROOT, name)), name).toBe(true);
      expect(existsSync(join(ROOT, 'settings'))).toBe(true);
      expect(dp.program('strait_tc_ingress').fd).toBeGreaterThan(0);
      expect(dp.program('strait_tc_egress').fd).toBeGreaterThan(0);
      expect(() => dp.program('nope')).toThrow(/no program nope/);
      expect(dp.maps.ct4.maxEntries).toBe(4096);

      dp.maps.services4.update(vip, {
        serviceId: 1,
        backendCount: 1,
        revNatId: 1,
        affinityTimeout: 0,
        flags: 0,
        kind: 0,
        algorithm: 0,
      });
      dp.maps.serviceSlots.update({ serviceId: 1, slot: 1 }, { backendId: 7 });
      dp.maps.backends4.update(7, backend);
      dp.maps.services6.update(
        { addr: '2001:2::10', port: 53, proto: IPPROTO_UDP, scope: 0 },
        dp.maps.services6.valueCodec.create({ serviceId: 2 }),
      );
      dp.maps.config.update(0, dp.maps.config.valueCodec.create({ addr4: '198.18.2.1', modes: 1 }));
    } finally {
      dp.close();
    }
  });

  it('a restarted agent adopts every pin: entries and hash seed survive', () => {
    const first = open();
    const seed = first.settings.hashSeed;
    first.close();
    const dp = open();
    try {
      expect([...dp.load.adopted].sort()).toEqual([...DATAPLANE_MAP_NAMES].sort());
      expect(dp.load.created).toEqual([]);
      expect(dp.settings.hashSeed).toBe(seed);
      expect(dp.maps.services4.lookup(vip)?.serviceId).toBe(1);
      expect(dp.maps.backends4.lookup(7)).toEqual(backend);
      expect(dp.maps.serviceSlots.lookup({ serviceId: 1, slot: 1 })).toEqual({ backendId: 7 });
      expect(dp.maps.services6.lookup({ addr: '2001:2::10', port: 53, proto: IPPROTO_UDP, scope: 0 })?.serviceId).toBe(2);
      expect(dp.maps.config.lookup(0)?.addr4).toBe('198.18.2.1');
      // the programs run with these settings: .rodata holds them byte for byte
      const rodata = [...dp.internalMaps.entries()].find(([n]) => n.endsWith('.rodata'));
      expect(rodata).toBeDefined();
      const value = Buffer.alloc(rodata?.[1].info.valueSize ?? 0);
      const native = loadNative();
      expect(native.bpf_map_lookup_elem(rodata?.[1].fd ?? -1, Buffer.alloc(4), value)).toBe(0);
      expect(value.indexOf(lbSettings.encode(dp.settings))).toBeGreaterThanOrEqual(0);
    } finally {
      dp.close();
    }
  });

  it('an explicit hash seed and timeouts win, and the seed is stored for the next start', () => {
    const dp = open(ROOT, { settings: { hashSeed: 0x5eed, ctUdpNs: 5_000_000_000n } });
    expect(dp.settings.hashSeed).toBe(0x5eed);
    expect(dp.settings.ctUdpNs).toBe(5_000_000_000n);
    expect(dp.settings.ctTcpEstablishedNs).toBe(21600n * 1_000_000_000n);
    dp.close();
    const again = open();
    expect(again.settings.hashSeed).toBe(0x5eed);
    expect(again.settings.ctUdpNs).toBe(60_000_000_000n);
    again.close();
  });

  it('a failed load is a typed error with the libbpf log, and leaves the old pins alone', () => {
    let err: unknown;
    try {
      open(ROOT, { mapSizes: { ...SIZES, services4: 0 } }); // the kernel refuses max_entries 0
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfLoadError);
    const e = err as BpfLoadError;
    expect(e.stage).toBe('load');
    expect(e.log).toMatch(/services4/);
    expect(e.message).toMatch(/libbpf log/);
    const dp = open();
    expect(dp.load.replaced).toEqual([]);
    expect(dp.maps.services4.lookup(vip)?.serviceId).toBe(1);
    dp.close();
  });

  it("an incompatible pin with 'fail' throws, naming map and mismatch, and keeps the pin", () => {
    let err: unknown;
    try {
      open(ROOT, { mapSizes: { ...SIZES, backends4: 2048 }, onIncompatiblePin: 'fail' });
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(IncompatiblePinError);
    const e = err as IncompatiblePinError;
    expect(e.mapName).toBe('backends4');
    expect(e.mismatches).toEqual(['max_entries 4096 != 2048']);
    const dp = open();
    expect(dp.maps.backends4.lookup(7)).toEqual(backend);
    dp.close();
  });

  it("an incompatible pin with 'replace' is replaced (empty), the rest adopted", () => {
    const dp = open(ROOT, { mapSizes: { ...SIZES, backends4: 2048 }, onIncompatiblePin: 'replace' });
    try {
      expect(dp.load.replaced).toEqual([{ name: 'backends4', reason: 'max_entries 4096 != 2048' }]);
      expect(dp.load.created).toEqual(['backends4']);
      expect(dp.load.adopted).not.toContain('backends4');
      expect(dp.maps.backends4.maxEntries).toBe(2048);
      expect(dp.maps.backends4.lookup(7)).toBeUndefined();
      expect(dp.maps.services4.lookup(vip)?.serviceId).toBe(1);
    } finally {
      dp.close();
    }
  });

  it('unknown map names in mapSizes are an error', () => {
    expect(() => open(ROOT, { mapSizes: { nosuchmap: 1 } })).toThrow(/no map named nosuchmap/);
  });

  it('an object that fails to open is a typed error with the libbpf log', () => {
    let err: unknown;
    try {
      loadObject({ file: '/nonexistent/strait.o', bpfRoot: ROOT, onIncompatiblePin: 'fail' });
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfLoadError);
    expect((err as BpfLoadError).code).toBe('ENOENT');
    expect((err as BpfLoadError).log).toMatch(/nonexistent/);
  });
});

describe('typed maps on kernel maps', () => {
  let dp: Dataplane;
  beforeAll(() => {
    dp = open(ROOT_FULL, { mapSizes: { ...SIZES, services4: 4, revnat4: 8 } });
  });
  afterAll(() => dp?.close());

  const svc = (i: number) => ({
    addr: `198.18.0.${i}`,
    port: 80,
    proto: IPPROTO_TCP,
    scope: LB_SCOPE_EXTERNAL,
  });

  it('a full map is a BpfMapError that says so and names the map', () => {
    const value = dp.maps.services4.valueCodec.create({ serviceId: 1 });
    for (let i = 1; i <= 4; i++) dp.maps.services4.update(svc(i), value);
    let err: unknown;
    try {
      dp.maps.services4.update(svc(5), value);
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfMapError);
    const e = err as BpfMapError;
    expect(e.full).toBe(true);
    expect(e.mapName).toBe('services4');
    expect(e.operation).toBe('update');
    expect(e.code).toBe('E2BIG');
    expect(e.message).toMatch(/services4 is full \(max_entries 4\)/);
    expect(e.key).toContain('198.18.0.5');
  });

  it('an array index beyond max_entries is not reported as a full map', () => {
    let err: unknown;
    try {
      dp.maps.config.update(1, dp.maps.config.valueCodec.create());
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfMapError);
    expect((err as BpfMapError).full).toBe(false);
    expect((err as BpfMapError).message).toMatch(/index beyond max_entries 1 of array map config/);
  });

  it('update flags: noexist on an existing key, exist on a missing key', () => {
    const value = dp.maps.services4.valueCodec.create({ serviceId: 9 });
    expect(() => dp.maps.services4.update(svc(1), value, 'noexist')).toThrow(/EEXIST/);
    expect(() => dp.maps.revnat4.update(99, { addr: '198.18.0.1', port: 1 }, 'exist')).toThrow(
      BpfMapError,
    );
    dp.maps.services4.update(svc(1), value, 'exist');
    expect(dp.maps.services4.lookup(svc(1))?.serviceId).toBe(9);
  });

  it('batchUpdate into a full map names the first entry not written', () => {
    const entries = Array.from({ length: 10 }, (_, i) => [i + 1, { addr: `198.18.0.${i + 1}`, port: 80 }] as const);
    let err: unknown;
    try {
      dp.maps.revnat4.batchUpdate(entries);
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfMapError);
    expect((err as BpfMapError).full).toBe(true);
    expect((err as BpfMapError).key).toBe('9');
    expect(dp.maps.revnat4.count()).toBe(8);
  });

  it('batches, iteration, count and delete on hash maps', () => {
    const m = dp.maps.backends4;
    const entries = Array.from({ length: 3000 }, (_, i) => [
      i + 1,
      m.valueCodec.create({ addr: `198.18.${1 + (i >> 8)}.${i & 0xff}`, port: 1000 + i, proto: IPPROTO_TCP }),
    ] as const);
    m.batchUpdate(entries);
    expect(m.count()).toBe(3000);
    const seen = new Map(m.entries());
    expect(seen.size).toBe(3000);
    expect(seen.get(42)?.port).toBe(1041);
    expect([...m.keys()].length).toBe(3000);
    // batchDelete skips keys that are already gone
    expect(m.delete(5)).toBe(true);
    expect(m.delete(5)).toBe(false);
    expect(m.batchDelete([4, 5, 6, 99999, 7])).toBe(3);
    expect(m.lookup(6)).toBeUndefined();
    expect(m.clear()).toBe(2996);
    expect(m.count()).toBe(0);
  });

  it('LPM trie source ranges: batch update and longest-prefix lookup', () => {
    const m = dp.maps.sourceRanges4;
    m.batchUpdate([
      [{ prefixlen: 32 + 24, serviceId: 3, addr: '198.18.5.0' }, { allow: 1 }],
      [{ prefixlen: 32 + 32, serviceId: 3, addr: '198.18.6.7' }, { allow: 1 }],
    ]);
    expect(m.lookup({ prefixlen: 64, serviceId: 3, addr: '198.18.5.77' })).toEqual({ allow: 1 });
    expect(m.lookup({ prefixlen: 64, serviceId: 3, addr: '198.18.6.8' })).toBeUndefined();
    expect(m.lookup({ prefixlen: 64, serviceId: 4, addr: '198.18.5.77' })).toBeUndefined();
    expect(m.count()).toBe(2);
  });

  it('per-CPU metrics: one value per possible CPU, readMetrics sums and names them', () => {
    const m = dp.maps.metrics;
    expect(m.cpus).toBe(loadNative().libbpf_num_possible_cpus());
    const perCpu = Array.from({ length: m.cpus }, (_, cpu) => ({ packets: BigInt(cpu + 1), bytes: 100n }));
    m.update(metricsIndex(MetricReason.REASON_SERVICE_DNAT, METRIC_DIR_INGRESS), perCpu);
    m.update(metricsIndex(MetricReason.DROP_CT_FULL, METRIC_DIR_EGRESS), { packets: 2n, bytes: 3n });
    expect(m.lookup(metricsIndex(2, 0))).toEqual(perCpu);
    const n = BigInt(m.cpus);
    const metrics = dp.readMetrics();
    expect(metrics).toEqual([
      { reason: 'service_dnat', dir: 'ingress', packets: (n * (n + 1n)) / 2n, bytes: 100n * n },
      { reason: 'drop_ct_full', dir: 'egress', packets: 2n * n, bytes: 3n * n },
    ]);
  });

  it('progTestRun runs the ingress program on a packet with an skb context', () => {
    const pkt = udpPacket();
    const r = progTestRun(dp.program('strait_tc_ingress'), {
      data: pkt,
      ctx: skbContext({ mark: 0x42 }),
      repeat: 10,
    });
    expect(typeof r.retval).toBe('number');
    expect(r.data.length).toBeGreaterThanOrEqual(14);
    expect(r.ctx?.length).toBe(192);
  });
});

describe('tc attach in a network namespace', () => {
  let dp: Dataplane;
  beforeAll(() => {
    sh('ip', ['netns', 'add', NETNS]);
    sh('ip', ['-n', NETNS, 'link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B]);
    sh('ip', ['-n', NETNS, 'link', 'set', VETH_A, 'up']);
    sh('ip', ['-n', NETNS, 'link', 'set', VETH_B, 'up']);
    dp = open();
  });
  afterAll(() => dp?.close());

  const linkPin = (dir: string): string => join(ROOT, 'links', `${NETNS}-${VETH_A}-${dir}`);

  it('attaches tcx links and pins them under the root', () => {
    const { ingress, egress } = dp.attachTc({ ifname: VETH_A, netns: NETNS });
    expect(ingress).toMatchObject({ mode: 'tcx', direction: 'ingress', netns: `/run/netns/${NETNS}`, updated: false });
    expect(egress).toMatchObject({ mode: 'tcx', direction: 'egress', pinPath: linkPin('egress') });
    expect(ingress.ifindex).toBe(Number(sh('ip', ['netns', 'exec', NETNS, 'cat', `/sys/class/net/${VETH_A}/ifindex`])));
    expect(pinnedId(linkPin('ingress'), 'link_id')).toBeGreaterThan(0);
    expect(sh('bpftool', ['link', 'show', 'pinned', linkPin('ingress')])).toMatch(/prog \d+/);
  });

  it('attaching again swaps the program in the pinned link (same link)', () => {
    const before = pinnedId(linkPin('ingress'), 'link_id');
    const { ingress } = dp.attachTc({ ifname: VETH_A, netns: NETNS });
    expect(ingress.updated).toBe(true);
    expect(pinnedId(linkPin('ingress'), 'link_id')).toBe(before);
  });

  it('the links stay attached after close(); a new agent updates them in place', () => {
    const before = pinnedId(linkPin('egress'), 'link_id');
    dp.close();
    dp = open();
    const { egress } = dp.attachTc({ ifname: VETH_A, netns: NETNS });
    expect(egress.updated).toBe(true);
    expect(pinnedId(linkPin('egress'), 'link_id')).toBe(before);
  });

  it('clsact mode replaces the tcx links with filters, auto switches back', () => {
    const { ingress, egress } = dp.attachTc({ ifname: VETH_A, netns: NETNS, mode: 'clsact' });
    expect(ingress).toMatchObject({ mode: 'clsact', handle: 0x5354, priority: 1 });
    expect(egress.mode).toBe('clsact');
    expect(existsSync(linkPin('ingress'))).toBe(false);
    expect(tcFilters(VETH_A, 'ingress')).toMatch(/strait_tc_ingre.*direct-action|handle 0x5354/s);
    expect(tcFilters(VETH_A, 'egress')).toMatch(/handle 0x5354/);

    const back = dp.attachTc({ ifname: VETH_A, netns: NETNS });
    expect(back.ingress.mode).toBe('tcx');
    expect(tcFilters(VETH_A, 'ingress')).not.toMatch(/0x5354/);
    expect(existsSync(ingress.pinPath)).toBe(false);
  });

  it('a pinned link whose device was recreated is replaced by a fresh link', () => {
    const before = pinnedId(linkPin('ingress'), 'link_id');
    sh('ip', ['-n', NETNS, 'link', 'del', VETH_A]); // the veth pair goes, links go defunct
    sh('ip', ['-n', NETNS, 'link', 'add', VETH_A, 'type', 'veth', 'peer', 'name', VETH_B]);
    sh('ip', ['-n', NETNS, 'link', 'set', VETH_A, 'up']);
    sh('ip', ['-n', NETNS, 'link', 'set', VETH_B, 'up']);
    const { ingress } = dp.attachTc({ ifname: VETH_A, netns: NETNS });
    expect(ingress.updated).toBe(false);
    expect(pinnedId(linkPin('ingress'), 'link_id')).not.toBe(before);
    expect(sh('bpftool', ['link', 'show', 'pinned', linkPin('ingress')])).toMatch(/ifindex|prog \d+/);
  });

  it('detachTc removes links and filters', () => {
    dp.attachTc({ ifname: VETH_A, netns: NETNS });
    dp.detachTc({ ifname: VETH_A, netns: NETNS });
    expect(existsSync(linkPin('ingress'))).toBe(false);
    expect(existsSync(linkPin('egress'))).toBe(false);
    dp.attachTc({ ifname: VETH_A, netns: NETNS, mode: 'clsact' });
    dp.detachTc({ ifname: VETH_A, netns: NETNS });
    expect(tcFilters(VETH_A, 'ingress')).not.toMatch(/0x5354/);
    expect(readdirSync(join(ROOT, 'links'))).toEqual([]);
  });

  it('an interface that does not exist is a typed error', () => {
    expect(() => dp.attachTc({ ifname: 'stffi-none', netns: NETNS })).toThrow(/ENODEV/);
  });
});

describe('Dataplane.destroy', () => {
  it('removes every pin under the root and detaches tcx and clsact attachments', () => {
    const dp = open(ROOT_DESTROY);
    dp.attachTc({ ifname: VETH_A, netns: NETNS });
    dp.attachTc({ ifname: VETH_B, netns: NETNS, mode: 'clsact' });
    const linkId = pinnedId(join(ROOT_DESTROY, 'links', `${NETNS}-${VETH_A}-ingress`), 'link_id');
    dp.close();
    Dataplane.destroy(ROOT_DESTROY);
    expect(existsSync(ROOT_DESTROY)).toBe(false);
    expect(() => sh('bpftool', ['link', 'show', 'id', String(linkId)])).toThrow();
    expect(tcFilters(VETH_B, 'ingress')).not.toMatch(/0x5354/);
    expect(tcFilters(VETH_B, 'egress')).not.toMatch(/0x5354/);
  });
});
