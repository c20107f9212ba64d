// Socket-level load balancing: the cgroup sock_addr programs of
// build/bpf/strait_sock.o (bpf/lib/sock.h), loaded next to the tc object so
// that both use the same pinned maps, attached to a cgroup v2 directory, and
// the socket iterator of build/bpf/strait_sock_destroy.o that destroys
// connected UDP sockets whose backend has gone.
//
// Pins (under the Dataplane's bpf root):
//   ${bpfRoot}/sock_peer              the socket programs' sk storage (connected
//                                     sockets' translations), next to the maps
//   ${bpfRoot}/links/cgroup-${hook}   one cgroup link per hook (connect4,
//                                     connect6, sendmsg4, …): attached while
//                                     pinned; a later attach swaps programs
//                                     atomically; removing the pin detaches.
//
// The cgroup decides whose sockets are translated: every socket created by a
// process in it or below, whatever network namespace the socket lives in
// (pods) — the cgroup v2 root covers the whole node (host processes too).
// Tests use a subtree they create, never the machine's root.
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { lbSettings } from './abi.js';
import { DATAPLANE_MAP_NAMES, LINKS_DIR, unlinkIfExists, type Dataplane } from './dataplane.js';
import { BpfError, ENOENT, IncompatiblePinError, describeErrno } from './errors.js';
import { loadNative, packageRoot, type Native, type NativeCgroupAttachment } from './native.js';
import { loadObject, type LoadedObject } from './object.js';

/** The hooks, in attach order; each program is named sock_<hook> in strait_sock.c (getpeername: sock_peername). */
export const SOCKET_LB_HOOKS = [
  { hook: 'connect4', program: 'sock_connect4' },
  { hook: 'connect6', program: 'sock_connect6' },
  { hook: 'sendmsg4', program: 'sock_sendmsg4' },
  { hook: 'sendmsg6', program: 'sock_sendmsg6' },
  { hook: 'recvmsg4', program: 'sock_recvmsg4' },
  { hook: 'recvmsg6', program: 'sock_recvmsg6' },
  { hook: 'getpeername4', program: 'sock_peername4' },
  { hook: 'getpeername6', program: 'sock_peername6' },
] as const;
export type SocketLbHook = (typeof SOCKET_LB_HOOKS)[number]['hook'];

const LINK_PREFIX = 'cgroup-';
const DESTROY_PROGRAM = 'sock_destroy_udp';
/** The socket objects' own map (bpf/lib/sock.h), pinned next to the datapath's. */
const SOCK_PEER_MAP = 'sock_peer';

export interface CgroupAttachment {
  hook: SocketLbHook;
  program: string;
  cgroup: string;
  cgroupId: bigint;
  pinPath: string;
  /** An existing pinned link got the new program (atomic swap). */
  updated: boolean;
  /** A pinned link for another cgroup was detached first. */
  replaced: boolean;
}

export interface SocketDestroyResult {
  /** Sockets destroyed. */
  destroyed: number;
  /** Their cookies (the first 8,192 per namespace). */
  cookies: bigint[];
  /** Network namespaces walked. */
  namespaces: number;
  /** Namespaces that could not be walked (a process that exited meanwhile, …). */
  errors: { netns: string | null; error: string }[];
}

export interface SocketLbOptions {
  /** The loaded tc datapath: its bpf root, map sizes and settings are used. */
  dataplane: Dataplane;
  /** Default: <package root>/build/bpf/strait_sock.o */
  objectPath?: string;
  /** Default: <package root>/build/bpf/strait_sock_destroy.o; null: no socket destroy. */
  destroyObjectPath?: string | null;
  native?: Native;
}

/** Mount points of cgroup2 file systems, from /proc/mounts (first = the one to use). */
export function cgroup2Mounts(mounts: string = readFileSync('/proc/mounts', 'utf8')): string[] {
  const out: string[] = [];
  for (const line of mounts.split('\n')) {
    const f = line.split(' ');
    // fields: source mountpoint fstype options …; octal escapes (\040) in paths
    if (f[2] === 'cgroup2' && f[1] !== undefined) out.push(f[1].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/** The cgroup v2 root of this machine (these hosts: /sys/fs/cgroup/unified; kind nodes: /sys/fs/cgroup). */
export function findCgroup2Root(mounts?: string): string | undefined {
  return cgroup2Mounts(mounts)[0];
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * The distinct network namespaces of the processes in a cgroup and its
 * descendants, as /proc/PID/ns/net paths: where sockets created under that
 * cgroup (the ones socket LB translated) live.
 */
export function cgroupNetnsPaths(cgroupPath: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  const walk = (dir: string): void => {
    let procs = '';
    try {
      procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      return; // removed meanwhile
    }
    for (const pid of procs.split('\n')) {
      if (!/^\d+$/.test(pid)) continue;
      const path = `/proc/${pid}/ns/net`;
      try {
        const st = statSync(path);
        const id = `${st.dev}:${st.ino}`;
        if (seen.has(id)) continue;
        seen.add(id);
        out.push(path);
      } catch {
        /* exited meanwhile */
      }
    }
    let children: string[] = [];
    try {
      children = readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return;
    }
    for (const c of children) walk(join(dir, c));
  };
  walk(cgroupPath);
  return out;
}

export class SocketLb {
  readonly bpfRoot: string;
  /** Why connected UDP sockets cannot be destroyed on this kernel, if they cannot. */
  readonly destroyUnavailable: string | undefined;
  private readonly native: Native;
  private readonly object: LoadedObject;
  private readonly destroyObject: LoadedObject | undefined;
  private readonly dataplane: Dataplane;
  private closed = false;

  private constructor(
    dataplane: Dataplane,
    object: LoadedObject,
    destroyObject: LoadedObject | undefined,
    destroyUnavailable: string | undefined,
    native: Native,
  ) {
    this.dataplane = dataplane;
    this.bpfRoot = dataplane.bpfRoot;
    this.object = object;
    this.destroyObject = destroyObject;
    this.destroyUnavailable = destroyUnavailable;
    this.native = native;
  }

  /**
   * Loads the socket programs, adopting the maps the Dataplane pinned (same
   * sizes, same settings: the hash seed included). An incompatible pin of a
   * shared map fails the load rather than splitting the maps between the
   * two objects; one of sock_peer, the socket objects' own map (a layout
   * change between versions), is replaced.
   */
  static open(opts: SocketLbOptions): SocketLb {
    const native = opts.native ?? loadNative();
    const dp = opts.dataplane;
    const build = join(packageRoot(), 'build', 'bpf');
    const sizes = dp.mapSizes();
    const mapSizes = Object.fromEntries(DATAPLANE_MAP_NAMES.filter((n) => sizes[n] !== undefined).map((n) => [n, sizes[n] as number]));
    const common = {
      bpfRoot: dp.bpfRoot,
      mapSizes,
      rodata: { settings: lbSettings.encode(dp.settings) },
      onIncompatiblePin: 'fail' as const,
      native,
    };
    const file = opts.objectPath ?? join(build, 'strait_sock.o');
    let object: LoadedObject;
    try {
      object = loadObject({ ...common, file });
    } catch (e: unknown) {
      if (!(e instanceof IncompatiblePinError && e.mapName === SOCK_PEER_MAP)) throw e;
      // Sockets translated under the old layout lose their reverse
      // translation; everything else carries on.
      unlinkIfExists(e.path);
      object = loadObject({ ...common, file });
    }
    let destroyObject: LoadedObject | undefined;
    let unavailable: string | undefined;
    const destroyPath = opts.destroyObjectPath === undefined ? join(build, 'strait_sock_destroy.o') : opts.destroyObjectPath;
    if (destroyPath === null) {
      unavailable = 'disabled';
    } else {
      try {
        destroyObject = loadObject({ ...common, file: destroyPath });
      } catch (e: unknown) {
        // bpf_sock_destroy() is 6.5+: older kernels keep socket LB without it.
        unavailable = e instanceof Error ? e.message.split('\n')[0] : String(e);
      }
    }
    return new SocketLb(dp, object, destroyObject, unavailable, native);
  }

  /**
   * Attaches every hook to the cgroup v2 directory cgroupPath (pinned links
   * under ${bpfRoot}/links). Re-attaching to the same cgroup swaps programs
   * atomically; attaching to another one moves the links.
   */
  attach(cgroupPath: string): CgroupAttachment[] {
    const cgroup = resolve(cgroupPath);
    if (!cgroup2Mounts().some((m) => isUnder(cgroup, m))) {
      throw new BpfError(`socket LB attach to ${cgroup}`, 22, 'not inside a cgroup2 mount (see /proc/mounts)');
    }
    const links = join(this.bpfRoot, LINKS_DIR);
    mkdirSync(links, { recursive: true });
    const out: CgroupAttachment[] = [];
    for (const { hook, program } of SOCKET_LB_HOOKS) {
      const prog = this.native.bpf_object__find_program_by_name(this.object.handle, program);
      const fd = this.object.programs.get(program);
      if (!prog || fd === undefined) throw new BpfError(`program ${program}`, ENOENT, `${this.object.file} has no program ${program}`);
      const attachType = this.native.bpf_program__expected_attach_type(prog);
      const pinPath = join(links, `${LINK_PREFIX}${hook}`);
      const res: Partial<NativeCgroupAttachment> = {};
      const ret = this.native.strait_cgroup_attach(cgroup, attachType, fd, pinPath, res);
      if (ret < 0) throw new BpfError(`attach ${program} to cgroup ${cgroup} (${hook})`, -ret);
      out.push({
        hook,
        program,
        cgroup,
        cgroupId: BigInt(res.cgroup_id ?? 0),
        pinPath,
        updated: res.updated === 1,
        replaced: res.replaced === 1,
      });
    }
    return out;
  }

  /** Detaches the socket programs a bpf root holds (unpins its cgroup links); returns the hooks detached. */
  static detach(bpfRoot: string): string[] {
    const links = join(bpfRoot, LINKS_DIR);
    if (!existsSync(links)) return [];
    const out: string[] = [];
    for (const name of readdirSync(links)) {
      if (!name.startsWith(LINK_PREFIX)) continue;
      if (unlinkIfExists(join(links, name))) out.push(name.slice(LINK_PREFIX.length));
    }
    return out;
  }

  /** The hooks whose links are pinned under bpfRoot. */
  static attachedHooks(bpfRoot: string): string[] {
    const links = join(bpfRoot, LINKS_DIR);
    if (!existsSync(links)) return [];
    return readdirSync(links)
      .filter((n) => n.startsWith(LINK_PREFIX))
      .map((n) => n.slice(LINK_PREFIX.length));
  }

  /**
   * Destroys, in each network namespace given (null: the agent's own),
   * every connected UDP socket socket LB translated to a backend that is no
   * longer in backends{4,6} (or whose id now names another address): its
   * owner sees ECONNABORTED, the socket is disconnected, and reconnecting
   * through the frontend lands on a live backend.
   */
  destroyStaleUdpSockets(netns: readonly (string | null)[]): SocketDestroyResult {
    const result: SocketDestroyResult = { destroyed: 0, cookies: [], namespaces: 0, errors: [] };
    if (!this.destroyObject) return result;
    const fd = this.destroyObject.programs.get(DESTROY_PROGRAM);
    if (fd === undefined) throw new BpfError(`program ${DESTROY_PROGRAM}`, ENOENT);
    const buf = Buffer.alloc(64 * 1024);
    for (const ns of netns) {
      const n = Number(this.native.strait_iter_run(fd, ns, buf, buf.length));
      if (n < 0) {
        result.errors.push({ netns: ns, error: describeErrno(-n).code });
        continue;
      }
      result.namespaces++;
      result.destroyed += Math.floor(n / 8); // one __u64 cookie per socket
      for (let off = 0; off + 8 <= Math.min(n, buf.length); off += 8) result.cookies.push(buf.readBigUInt64LE(off));
    }
    return result;
  }

  /** Closes the fds; pinned links keep the programs attached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyObject?.close();
    this.object.close();
  }
}
