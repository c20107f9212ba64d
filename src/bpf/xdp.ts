// XDP on the uplink (`strait agent --xdp`): build/bpf/strait_xdp.o
// (bpf/strait_xdp.c, lib/xdp.h), loaded next to the tc object so that both
// use the same pinned maps (conntrack included: a flow XDP starts, tc
// continues, and the other way round), and attached to uplink devices as
// pinned XDP links — native (driver) mode where the driver has XDP, generic
// otherwise.
//
// Pins (under the Dataplane's bpf root):
//   ${bpfRoot}/links/xdp:${ifname}:${netns path, URI-encoded}
//       one XDP link per device: attached while pinned, a later attach
//       swaps the program atomically (bpf_link_update), removing the pin
//       (detach, or Dataplane.destroy) detaches.
//
// Links rather than netlink attachment (bpf_xdp_attach): like the tcx
// links, they survive the agent, are replaced without a gap, cannot be
// overwritten by another tool by accident, and go with the bpf root.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { lbSettings } from './abi.js';
import { DATAPLANE_MAP_NAMES, LINKS_DIR, resolveNetns, unlinkIfExists, type Dataplane } from './dataplane.js';
import { BpfError, ENODEV, ENOENT, describeErrno } from './errors.js';
import {
  STRAIT_XDP_AUTO,
  STRAIT_XDP_GENERIC,
  STRAIT_XDP_NATIVE,
  loadNative,
  packageRoot,
  type Native,
  type NativeXdpAttachment,
} from './native.js';
import { loadObject, type LoadedObject } from './object.js';

export const XDP_PROGRAM = 'strait_xdp';
const PIN_PREFIX = 'xdp:';

export type XdpMode = 'auto' | 'native' | 'generic';

export interface XdpAttachOptions {
  ifname: string;
  /** A netns path (/run/netns/X, /proc/PID/ns/net) or a name under /run/netns. */
  netns?: string;
  /** Default auto: native, else generic. */
  mode?: XdpMode;
}

export interface XdpAttachment {
  ifname: string;
  /** The netns path, null for the agent's own. */
  netns: string | null;
  ifindex: number;
  mode: 'native' | 'generic';
  pinPath: string;
  /** An existing pinned link got the new program (atomic swap). */
  updated: boolean;
  /** Auto mode fell back to generic: why native failed (e.g. 'EOPNOTSUPP'). */
  nativeError?: string;
}

export interface XdpOptions {
  /** The loaded tc datapath: its bpf root, map sizes and settings are used. */
  dataplane: Dataplane;
  /** Default: <package root>/build/bpf/strait_xdp.o */
  objectPath?: string;
  native?: Native;
}

function pinName(ifname: string, netns: string | null): string {
  return `${PIN_PREFIX}${ifname}:${encodeURIComponent(netns ?? '')}`;
}

function parsePinName(name: string): { ifname: string; netns: string | null } | undefined {
  if (!name.startsWith(PIN_PREFIX)) return undefined;
  const rest = name.slice(PIN_PREFIX.length);
  const colon = rest.indexOf(':');
  if (colon <= 0) return undefined;
  const netns = decodeURIComponent(rest.slice(colon + 1));
  return { ifname: rest.slice(0, colon), netns: netns === '' ? null : netns };
}

const MODE_CODE: Readonly<Record<XdpMode, number>> = {
  auto: STRAIT_XDP_AUTO,
  native: STRAIT_XDP_NATIVE,
  generic: STRAIT_XDP_GENERIC,
};

export class XdpProgram {
  readonly bpfRoot: string;
  readonly objectPath: string;
  private readonly native: Native;
  private readonly object: LoadedObject;
  private closed = false;

  private constructor(bpfRoot: string, object: LoadedObject, native: Native) {
    this.bpfRoot = bpfRoot;
    this.objectPath = object.file;
    this.object = object;
    this.native = native;
  }

  /**
   * Loads the XDP program adopting the maps the Dataplane pinned (same
   * sizes, same settings: the hash seed included, so XDP and tc choose the
   * same backend for a flow). An incompatible pin fails the load rather
   * than splitting the maps between the two objects.
   */
  static open(opts: XdpOptions): XdpProgram {
    const native = opts.native ?? loadNative();
    const dp = opts.dataplane;
    const sizes = dp.mapSizes();
    const mapSizes = Object.fromEntries(
      DATAPLANE_MAP_NAMES.filter((n) => sizes[n] !== undefined).map((n) => [n, sizes[n] as number]),
    );
    const object = loadObject({
      file: opts.objectPath ?? join(packageRoot(), 'build', 'bpf', 'strait_xdp.o'),
      bpfRoot: dp.bpfRoot,
      mapSizes,
      rodata: { settings: lbSettings.encode(dp.settings) },
      onIncompatiblePin: 'fail',
      native,
    });
    return new XdpProgram(dp.bpfRoot, object, native);
  }

  /** The program fd (for BPF_PROG_TEST_RUN and benchmarks). */
  get fd(): number {
    const fd = this.object.programs.get(XDP_PROGRAM);
    if (fd === undefined) throw new BpfError(`program ${XDP_PROGRAM}`, ENOENT, `${this.objectPath} has no program ${XDP_PROGRAM}`);
    return fd;
  }

  /** Any pinned map of the object by C name, fd only (test hooks: fib_test, dsr_test). */
  mapFd(name: string): number {
    const m = this.object.maps.get(name);
    if (!m) throw new BpfError(`map ${name}`, ENOENT, `${this.objectPath} has no map ${name}`);
    return m.fd;
  }

  /**
   * Attaches the program to ifname (inside netns if given) as a pinned XDP
   * link; an earlier link pinned for the same device gets the new program
   * atomically.
   */
  attach(opts: XdpAttachOptions): XdpAttachment {
    const netns = resolveNetns(opts.netns);
    const mode = opts.mode ?? 'auto';
    const links = join(this.bpfRoot, LINKS_DIR);
    mkdirSync(links, { recursive: true });
    const pinPath = join(links, pinName(opts.ifname, netns));
    const out: Partial<NativeXdpAttachment> = {};
    const ret = this.native.strait_xdp_attach(netns, opts.ifname, this.fd, MODE_CODE[mode], pinPath, out);
    if (ret < 0) throw new BpfError(`XDP attach to ${netns ?? 'host'} ${opts.ifname} (${mode})`, -ret);
    const attachment: XdpAttachment = {
      ifname: opts.ifname,
      netns,
      ifindex: out.ifindex ?? 0,
      mode: out.mode === STRAIT_XDP_GENERIC ? 'generic' : 'native',
      pinPath,
      updated: out.updated === 1,
    };
    if (out.native_errno) attachment.nativeError = describeErrno(out.native_errno).code;
    return attachment;
  }

  /** Detaches from ifname (unpins its link); false if none was pinned. */
  static detach(bpfRoot: string, opts: { ifname: string; netns?: string }): boolean {
    return unlinkIfExists(join(bpfRoot, LINKS_DIR, pinName(opts.ifname, resolveNetns(opts.netns))));
  }

  /** Detaches every XDP link pinned under bpfRoot; returns the devices. */
  static detachAll(bpfRoot: string): { ifname: string; netns: string | null }[] {
    const out: { ifname: string; netns: string | null }[] = [];
    for (const a of XdpProgram.attached(bpfRoot)) {
      if (unlinkIfExists(join(bpfRoot, LINKS_DIR, pinName(a.ifname, a.netns)))) out.push(a);
    }
    return out;
  }

  /** The devices with an XDP link pinned under bpfRoot. */
  static attached(bpfRoot: string): { ifname: string; netns: string | null }[] {
    const links = join(bpfRoot, LINKS_DIR);
    if (!existsSync(links)) return [];
    const out: { ifname: string; netns: string | null }[] = [];
    for (const name of readdirSync(links)) {
      const p = parsePinName(name);
      if (p) out.push(p);
    }
    return out;
  }

  /** What is attached to a device right now (any program, ours or not). */
  static query(opts: { ifname: string; netns?: string }, native: Native = loadNative()): { progId: number; mode: 'native' | 'generic' | null } {
    const id = Buffer.alloc(4);
    const mode = Buffer.alloc(4);
    const netns = resolveNetns(opts.netns);
    const ret = native.strait_xdp_query(netns, opts.ifname, id, mode);
    if (ret < 0) {
      if (-ret === ENODEV) throw new BpfError(`XDP query ${netns ?? 'host'} ${opts.ifname}`, -ret, 'no such device');
      throw new BpfError(`XDP query ${netns ?? 'host'} ${opts.ifname}`, -ret);
    }
    const m = mode.readInt32LE(0);
    return { progId: id.readUInt32LE(0), mode: m === STRAIT_XDP_NATIVE ? 'native' : m === STRAIT_XDP_GENERIC ? 'generic' : null };
  }

  /** Closes the fds; pinned links keep the program attached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.object.close();
  }
}
