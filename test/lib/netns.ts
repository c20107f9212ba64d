// Network-namespace test harness: a small typed layer over `ip` that builds throw-away labs of
// namespaces joined by veths, runs processes inside them, and removes everything again.
//
// Safety rules this file enforces (not just documents):
//   * It never changes the root namespace: every `ip` call carries `-n NS` or runs under
//     `ip netns exec NS`, and NS must be a namespace this Lab created. Veths are created inside a
//     lab namespace with their peer placed straight into another (`ip -n A link add … peer … netns B`),
//     so no link ever exists in the root namespace, even for a moment.
//   * Addresses and route prefixes must lie in 198.18.0.0/15 or 2001:2::/48 (route nexthops may also
//     be IPv6 link-local). Default routes (0.0.0.0/0, ::/0, "default") are refused.
//   * IPv6 router advertisements are ignored in every lab namespace (accept_ra=0), so no default
//     route can appear behind our back.
//   * Names: every namespace is `<prefix><suffix>`; prefix is per test file, ends with '-', and the
//     suffix has no '-', so cleaning "st-" never touches "st-dp-c". All names fit in IFNAMSIZ (15).
//     Lab.create(prefix) first removes leftovers of a crashed run with the same prefix (killing the
//     processes still inside them); destroy() kills spawned processes and deletes the namespaces
//     (which deletes their veths); a process 'exit' hook does the same if destroy() was never called.
//
// Standard dataplane topology (topology(prefix, {backends: N})) — the address plan:
//
//   <p>c  client          c0   198.18.0.2/24        2001:2::2/64
//                          │   (veth)
//   <p>n  node            up0  198.18.0.1/24        2001:2::1/64        ← the "uplink" the datapath attaches to
//                         bk1  198.18.11.1/24       2001:2:0:11::1/64
//                         bkI  198.18.(10+I).1/24   2001:2:0:(10+I)::1/64
//                          │   (one veth per backend)
//   <p>bI backend I       p0   198.18.(10+I).2/24   2001:2:0:(10+I)::2/64   (I = 1..N, N ≤ 200)
//
//   Service VIP ranges:   198.19.0.0/24, 2001:2:0:ff::/64 (vip4(n) = 198.19.0.n, vip6(n) = 2001:2:0:ff::n)
//   Node:     ip_forward=1, IPv6 forwarding=1, rp_filter=0, accept_local=1; no route for the VIP
//             ranges (only the datapath makes them reachable; without it the node answers ICMP
//             unreachable).
//   Client:   198.18.0.0/16, 198.19.0.0/24, 2001:2::/48, 2001:2:0:ff::/64 via the node (198.18.0.1 / 2001:2::1).
//   Backends: the same four prefixes via their node-side address. No default route anywhere.
//   MTU: veth default 1500 on every link; topology options uplinkMtu / backendMtu change it.
//
// Child processes: Node scripts run inside namespaces as
//   ip netns exec NS <node ≥ 22.6> --experimental-strip-types src/lab/<script>.ts …
// i.e. straight from the TypeScript source through Node's type stripping — no build step.

import { spawn as spawnChild, execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { assertLabCidr, isLabAddress, isLinkLocal6 } from '../../src/lab/addresses.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EchoMode, EchoSummary } from '../../src/lab/echo-client.js';

export type { EchoMode, EchoSummary } from '../../src/lab/echo-client.js';

// ---- constants and address checks ------------------------------------------------------------

/** The directory holding package.json: from test/lib (vitest) or dist/test/lib (compiled benches). */
function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export const REPO_ROOT = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
export const ECHO_SERVER = join(REPO_ROOT, 'src', 'lab', 'echo-server.ts');
export const ECHO_CLIENT = join(REPO_ROOT, 'src', 'lab', 'echo-client.ts');

const IFNAMSIZ_MAX = 15;
const PREFIX_RE = /^[a-z][a-z0-9-]{0,9}-$/;
const SUFFIX_RE = /^[a-z0-9]+$/;
const DEVNAME_RE = /^[a-zA-Z0-9_.]{1,15}$/;

// The address checks are the lab's own (src/lab/addresses.ts): one definition of "lab address".
export { isLabAddress };

function assertDev(dev: string): void {
  if (!DEVNAME_RE.test(dev)) throw new Error(`bad device name ${JSON.stringify(dev)} (1–15 chars of [A-Za-z0-9_.])`);
}

/** Node binary that can run .ts files (type stripping, Node ≥ 22.6). */
export function nodeBinary(): string {
  const [maj, min] = process.versions.node.split('.').map(Number) as [number, number];
  if (maj > 22 || (maj === 22 && min >= 6)) return process.execPath;
  const local = join(REPO_ROOT, 'node_modules', 'node', 'bin', 'node');
  if (existsSync(local)) return local;
  throw new Error(`Node ${process.versions.node} cannot strip types and ${local} is missing (npm ci)`);
}

/** Arguments that make nodeBinary() run a .ts file. */
export const NODE_TS_FLAGS = ['--experimental-strip-types', '--disable-warning=ExperimentalWarning'];

function assertRoot(): void {
  const uid = process.getuid?.();
  if (uid !== 0) {
    throw new Error(
      `the network-namespace harness needs root (uid 0), running as uid ${uid ?? '?'}: ` +
        'run the netns/e2e tests as root (e.g. sudo make test-netns)',
    );
  }
}

// ---- process running -------------------------------------------------------------------------

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface ExecOptions {
  /** Kill the process (SIGKILL) after this long; default 10 000 ms. */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Throw unless the exit code is 0 (default false for exec, true for ip/sysctl helpers). */
  check?: boolean;
}

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Run a command in the *current* namespace (used only for `ip netns …` bookkeeping and `ip -n`). */
function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${describe(cmd, args)}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r: ExecResult = { code, signal, stdout, stderr, timedOut };
      if (opts.check && code !== 0) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : `exit ${code ?? signal}`;
        reject(new Error(`${describe(cmd, args)}: ${why}\n${stderr.trim() || stdout.trim()}`));
      } else resolve(r);
    });
    child.stdin.on('error', () => {});
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A process running inside a lab namespace; killed by Lab.destroy() if still alive. */
export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly label: string;
  readonly exited: Promise<ExitStatus>;
  private out = '';
  private err = '';
  private status: ExitStatus | null = null;
  private static readonly MAX_BUF = 4 << 20;

  constructor(child: ChildProcess, label: string) {
    if (child.pid === undefined) throw new Error(`${label}: failed to start`);
    this.child = child;
    this.pid = child.pid;
    this.label = label;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      if (this.out.length < Proc.MAX_BUF) this.out += d;
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (this.err.length < Proc.MAX_BUF) this.err += d;
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.status = { code, signal };
        resolve(this.status);
      });
    });
  }

  get stdout(): string {
    return this.out;
  }
  get stderr(): string {
    return this.err;
  }
  get running(): boolean {
    return this.status === null;
  }

  /** Resolve with the first complete stdout line matching `match`; reject on exit or timeout. */
  waitForLine(match: string | RegExp, timeoutMs = 10_000): Promise<string> {
    const test = (l: string): boolean => (typeof match === 'string' ? l === match : match.test(l));
    const find = (): string | undefined => {
      const lines = this.out.split('\n');
      lines.pop(); // incomplete last line
      return lines.find(test);
    };
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, line?: string): void => {
        clearTimeout(timer);
        this.child.stdout?.off('data', onData);
        this.child.off('close', onClose);
        if (err) reject(err);
        else resolve(line as string);
      };
      const onData = (): void => {
        const l = find();
        if (l !== undefined) done(null, l);
      };
      const onClose = (): void => {
        setImmediate(() => {
          const l = find();
          if (l !== undefined) done(null, l);
          else done(new Error(`${this.label} exited (${JSON.stringify(this.status)}) before printing ${match}:\n${this.err.trim()}`));
        });
      };
      const timer = setTimeout(
        () => done(new Error(`${this.label}: no line ${match} within ${timeoutMs} ms\nstdout: ${this.out.trim()}\nstderr: ${this.err.trim()}`)),
        timeoutMs,
      );
      this.child.stdout?.on('data', onData);
      this.child.on('close', onClose);
      if (!this.running) onClose();
      else onData();
    });
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
  async kill(graceMs = 2000): Promise<ExitStatus> {
    if (this.status) return this.status;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    const t = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, graceMs);
    const s = await this.exited;
    clearTimeout(t);
    return s;
  }
}

// ---- the lab ---------------------------------------------------------------------------------

export interface RouteOptions {
  via?: string;
  dev?: string;
  src?: string;
  /** Extra `ip route add` words, e.g. ['mtu', '1400']. */
  extra?: string[];
}

export interface VethOptions {
  /** MTU on both ends. */
  mtu?: number;
  /** Bring both ends up (default true). */
  up?: boolean;
}

export interface EchoServerSpec {
  name: string;
  tcp?: number;
  udp?: number;
  http?: number;
  /** Default '::' (dual-stack). */
  bind?: string[];
}

export interface EchoClientSpec {
  count?: number;
  size?: number;
  timeoutMs?: number;
  parallel?: number;
  reuse?: boolean;
  local?: string;
  localPort?: number;
  intervalMs?: number;
  /** udp-connected with reuse: reopen the socket after a socket error and retry once (echo-client --reconnect). */
  reconnect?: boolean;
  /**
   * Run the client inside this cgroup v2 directory (echo-client --cgroup), e.g. where socket LB is
   * attached; as reachable inside `ip netns exec`, which remounts /sys (TestCgroup.reachablePath).
   */
  cgroup?: string;
}

// `ip` argument builders shared by Lab's methods and topology()'s batches (no `-4`/`-6`:
// `ip -batch` lines cannot carry options, and the family follows from the addresses).

function vethLines(ifA: string, nsB: string, ifB: string, opts: VethOptions): string[] {
  assertDev(ifA);
  assertDev(ifB);
  const mtu = opts.mtu !== undefined ? ['mtu', String(opts.mtu)] : [];
  const lines = [['link', 'add', ifA, ...mtu, 'type', 'veth', 'peer', 'name', ifB, ...mtu, 'netns', nsB].join(' ')];
  if (opts.up !== false) lines.push(`link set ${ifA} up`);
  return lines;
}

function addrArgs(dev: string, cidr: string): string[] {
  assertDev(dev);
  const { v6 } = assertLabCidr(cidr, 'addr');
  return v6 ? ['addr', 'add', cidr, 'dev', dev, 'nodad'] : ['addr', 'add', cidr, 'dev', dev];
}

function routeArgs(prefix: string, opts: RouteOptions): string[] {
  if (/^(default|all|any)$/.test(prefix)) throw new Error(`refusing route ${prefix}`);
  assertLabCidr(prefix, 'route');
  if (opts.via === undefined && opts.dev === undefined) throw new Error(`route ${prefix}: needs via or dev`);
  const args = ['route', 'add', prefix];
  if (opts.via !== undefined) {
    if (!isLabAddress(opts.via) && !isLinkLocal6(opts.via)) throw new Error(`route ${prefix}: nexthop ${opts.via} outside the lab`);
    args.push('via', opts.via);
  }
  if (opts.dev !== undefined) {
    assertDev(opts.dev);
    args.push('dev', opts.dev);
  }
  if (opts.src !== undefined) {
    if (!isLabAddress(opts.src)) throw new Error(`route ${prefix}: src ${opts.src} outside the lab`);
    args.push('src', opts.src);
  }
  for (const w of opts.extra ?? []) {
    if (/^(default|table|vrf)$/.test(w)) throw new Error(`route ${prefix}: extra word ${w} not allowed`);
    args.push(w);
  }
  return args;
}

/** 'a.b.c.d' / 'v6' + port → 'a.b.c.d:port' / '[v6]:port'. */
export function hostPort(addr: string, port: number): string {
  return isIPv6(addr) ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Names of all network namespaces (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { check: true });
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

function ownedBy(prefix: string, name: string): boolean {
  return name.startsWith(prefix) && SUFFIX_RE.test(name.slice(prefix.length));
}

async function killNamespacePids(ns: string): Promise<void> {
  const r = await run('ip', ['netns', 'pids', ns]);
  for (const p of r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

async function deleteNamespace(ns: string): Promise<void> {
  await killNamespacePids(ns);
  const r = await run('ip', ['netns', 'del', ns]);
  if (r.code !== 0 && (await listNamespaces()).includes(ns)) {
    throw new Error(`ip netns del ${ns}: ${r.stderr.trim()}`);
  }
}

/**
 * Remove every namespace `<prefix><suffix>` (suffix without '-') left by an earlier run,
 * killing the processes inside first. Returns the names removed.
 */
export async function cleanupPrefix(prefix: string): Promise<string[]> {
  if (!PREFIX_RE.test(prefix)) throw new Error(`bad prefix ${prefix}`);
  const stale = (await listNamespaces()).filter((n) => ownedBy(prefix, n));
  for (const ns of stale) await deleteNamespace(ns);
  return stale;
}

// Labs not yet destroyed; one process 'exit' hook removes what they left (synchronously).
const liveLabs = new Set<Lab>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.destroySync();
  });
}

export class Lab {
  readonly prefix: string;
  private readonly nsSet = new Set<string>();
  private readonly procs = new Set<Proc>();
  private destroyed = false;

  private constructor(prefix: string) {
    this.prefix = prefix;
    liveLabs.add(this);
    installExitHook();
  }

  /**
   * Start a lab. `prefix` is unique per test file, 2–11 chars of [a-z0-9-], ending in '-'
   * (e.g. 'st-dp-'); leftovers with this prefix from a crashed run are removed first.
   * Throws when not root.
   */
  static async create(prefix: string): Promise<Lab> {
    assertRoot();
    if (!PREFIX_RE.test(prefix)) {
      throw new Error(`lab prefix ${JSON.stringify(prefix)} must match ${PREFIX_RE} (e.g. 'st-dp-')`);
    }
    await cleanupPrefix(prefix);
    return new Lab(prefix);
  }

  /** Namespaces this lab created, in creation order. */
  get namespaces(): string[] {
    return [...this.nsSet];
  }

  /** `/run/netns/NAME` — open it and setns(2) to enter the namespace from FFI code. */
  netnsPath(ns: string): string {
    this.own(ns);
    return `/run/netns/${ns}`;
  }

  private own(ns: string): string {
    if (!this.nsSet.has(ns)) throw new Error(`namespace ${ns} does not belong to lab ${this.prefix}`);
    if (this.destroyed) throw new Error(`lab ${this.prefix} is destroyed`);
    return ns;
  }

  /**
   * Create namespace `<prefix><suffix>` (suffix: [a-z0-9]+) and return its full name. The namespace
   * gets lo up, IPv6 DAD off (addresses usable at once), RAs ignored, rp_filter 0.
   */
  async addNamespace(suffix: string): Promise<string> {
    if (this.destroyed) throw new Error(`lab ${this.prefix} is destroyed`);
    if (!SUFFIX_RE.test(suffix)) throw new Error(`namespace suffix ${suffix} must be [a-z0-9]+`);
    const ns = this.prefix + suffix;
    if (ns.length > IFNAMSIZ_MAX) throw new Error(`namespace name ${ns} is longer than ${IFNAMSIZ_MAX}`);
    if (this.nsSet.has(ns)) throw new Error(`namespace ${ns} exists in this lab`);
    this.nsSet.add(ns); // recorded first so that a failure below is still cleaned up
    await run('ip', ['netns', 'add', ns], { check: true });
    await Promise.all([
      this.sysctls(ns, {
        'net.ipv6.conf.all.accept_dad': 0,
        'net.ipv6.conf.default.accept_dad': 0,
        'net.ipv6.conf.all.accept_ra': 0,
        'net.ipv6.conf.default.accept_ra': 0,
        'net.ipv4.conf.all.rp_filter': 0,
        'net.ipv4.conf.default.rp_filter': 0,
      }),
      this.ip(ns, ['link', 'set', 'lo', 'up']),
    ]);
    return ns;
  }

  /** `ip -n NS ARGS…` (throws on failure); returns stdout. */
  async ip(ns: string, args: string[], opts: ExecOptions = {}): Promise<string> {
    this.own(ns);
    const r = await run('ip', ['-n', ns, ...args], { check: true, ...opts });
    return r.stdout;
  }

  /** Several `ip` commands in one process: `ip -n NS -batch -` (one command per line, no 'ip'). */
  async ipBatch(ns: string, lines: string[]): Promise<void> {
    this.own(ns);
    if (lines.length === 0) return;
    await run('ip', ['-n', ns, '-batch', '-'], { check: true, input: lines.join('\n') + '\n' });
  }

  /**
   * A veth pair: `ifA` in nsA, `ifB` in nsB (created inside nsA with the peer placed straight into
   * nsB — nothing passes through the root namespace). Both ends up unless opts.up === false.
   */
  async veth(nsA: string, ifA: string, nsB: string, ifB: string, opts: VethOptions = {}): Promise<void> {
    this.own(nsB);
    await this.ipBatch(nsA, vethLines(ifA, nsB, ifB, opts));
    if (opts.up !== false) await this.ip(nsB, ['link', 'set', ifB, 'up']);
  }

  /** Add an address (v4 or v6; IPv6 gets `nodad`). cidr must be inside the lab ranges. */
  async addr(ns: string, dev: string, cidr: string): Promise<void> {
    await this.ip(ns, addrArgs(dev, cidr));
  }

  /** Add a route for a lab prefix via a nexthop and/or out of a device. Default routes are refused. */
  async route(ns: string, prefix: string, opts: RouteOptions): Promise<void> {
    await this.ip(ns, routeArgs(prefix, opts));
  }

  /** Set the MTU of a device. */
  async mtu(ns: string, dev: string, mtu: number): Promise<void> {
    assertDev(dev);
    await this.ip(ns, ['link', 'set', 'dev', dev, 'mtu', String(mtu)]);
  }

  /** ifindex of a device inside a namespace. */
  async ifindex(ns: string, dev: string): Promise<number> {
    return (await this.link(ns, dev)).ifindex;
  }

  /** `ip -j link show dev DEV` of a device inside a namespace. */
  async link(ns: string, dev: string): Promise<{ ifindex: number; ifname: string; mtu: number; address: string; [k: string]: unknown }> {
    assertDev(dev);
    const out = await this.ip(ns, ['-j', 'link', 'show', 'dev', dev]);
    const j = JSON.parse(out) as Array<{ ifindex: number; ifname: string; mtu: number; address: string }>;
    if (!j[0]) throw new Error(`no device ${dev} in ${ns}`);
    return j[0];
  }

  /** `sysctl -w key=value` inside the namespace (key like net.ipv4.ip_forward). */
  async sysctl(ns: string, key: string, value: string | number): Promise<void> {
    await this.sysctls(ns, { [key]: value });
  }

  /** Several sysctls in one process. */
  async sysctls(ns: string, kv: Record<string, string | number>): Promise<void> {
    const args = Object.entries(kv).map(([k, v]) => {
      if (!/^net\.[\w.-]+$/.test(k)) throw new Error(`sysctl ${k}: only net.* keys are per-namespace`);
      return `${k}=${v}`;
    });
    if (args.length === 0) return;
    await this.exec(ns, 'sysctl', ['-q', '-w', ...args], { check: true });
  }

  /** Run a command inside the namespace and wait for it (default timeout 10 s; not checked). */
  async exec(ns: string, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    this.own(ns);
    return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  }

  /** `ethtool ARGS… DEV`-style call inside the namespace, e.g. ethtool(ns, 'up0', '-K', 'up0', 'tx', 'off'). */
  async ethtool(ns: string, ...args: string[]): Promise<string> {
    return (await this.exec(ns, 'ethtool', args, { check: true })).stdout;
  }

  /**
   * Start a long-running process inside the namespace. `ip netns exec` execs the command, so
   * proc.pid is the command itself. Killed (SIGTERM, then SIGKILL) by destroy().
   */
  spawn(ns: string, cmd: string, args: string[] = [], opts: { env?: NodeJS.ProcessEnv; label?: string } = {}): Proc {
    this.own(ns);
    const child = spawnChild('ip', ['netns', 'exec', ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    const proc = new Proc(child, opts.label ?? `${ns}: ${describe(cmd, args)}`);
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    return proc;
  }

  private nodeEnv(): NodeJS.ProcessEnv {
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // the test runner's loader options are not for our children
    return env;
  }

  /** Run a Node script (.ts via type stripping, or .js) inside the namespace and wait. */
  node(ns: string, script: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(ns, nodeBinary(), [...NODE_TS_FLAGS, script, ...args], { env: this.nodeEnv(), ...opts });
  }

  /** Start a Node script (.ts via type stripping, or .js) inside the namespace. */
  spawnNode(ns: string, script: string, args: string[] = [], label?: string): Proc {
    return this.spawn(ns, nodeBinary(), [...NODE_TS_FLAGS, script, ...args], {
      env: this.nodeEnv(),
      label: label ?? `${ns}: ${script.split('/').pop() ?? script}`,
    });
  }

  /** Start src/lab/echo-server.ts in the namespace and wait for its "ready" line. */
  async startEchoServer(ns: string, spec: EchoServerSpec, readyTimeoutMs = 15_000): Promise<Proc> {
    const args = ['--name', spec.name];
    if (spec.tcp !== undefined) args.push('--tcp', String(spec.tcp));
    if (spec.udp !== undefined) args.push('--udp', String(spec.udp));
    if (spec.http !== undefined) args.push('--http', String(spec.http));
    if (spec.bind !== undefined) args.push('--bind', spec.bind.join(','));
    const proc = this.spawnNode(ns, ECHO_SERVER, args, `echo-server ${spec.name} in ${ns}`);
    try {
      await proc.waitForLine('ready', readyTimeoutMs);
    } catch (err) {
      await proc.kill(500);
      throw err;
    }
    return proc;
  }

  /** Run src/lab/echo-client.ts in the namespace and return its parsed summary. */
  async echoClient(ns: string, mode: EchoMode, to: string, spec: EchoClientSpec = {}): Promise<EchoSummary> {
    const args: string[] = [mode, '--to', to];
    const count = spec.count ?? 1;
    const timeoutMs = spec.timeoutMs ?? 2000;
    args.push('--count', String(count), '--timeout-ms', String(timeoutMs));
    if (spec.size !== undefined) args.push('--size', String(spec.size));
    if (spec.parallel !== undefined) args.push('--parallel', String(spec.parallel));
    if (spec.reuse) args.push('--reuse');
    if (spec.local !== undefined) args.push('--local', spec.local);
    if (spec.localPort !== undefined) args.push('--local-port', String(spec.localPort));
    if (spec.intervalMs !== undefined) args.push('--interval-ms', String(spec.intervalMs));
    if (spec.reconnect) args.push('--reconnect');
    if (spec.cgroup !== undefined) args.push('--cgroup', spec.cgroup);
    const budget = 15_000 + (count * (timeoutMs + (spec.intervalMs ?? 0))) / Math.max(1, spec.reuse ? 1 : (spec.parallel ?? 1));
    const r = await this.node(ns, ECHO_CLIENT, args, { timeoutMs: budget });
    if (r.code !== 0) {
      throw new Error(`echo-client ${args.join(' ')} in ${ns}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\n${r.stderr.trim()}`);
    }
    return JSON.parse(r.stdout) as EchoSummary;
  }

  /** Kill every spawned process, then delete every namespace of this lab (and stray ones with its prefix). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    liveLabs.delete(this);
    await Promise.all([...this.procs].map((p) => p.kill(1000)));
    const errors: string[] = [];
    const present = await listNamespaces();
    const names = new Set([...this.nsSet, ...present.filter((n) => ownedBy(this.prefix, n))]);
    for (const ns of names) {
      if (!present.includes(ns)) continue;
      try {
        await deleteNamespace(ns);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    if (errors.length > 0) throw new Error(`lab ${this.prefix} teardown:\n${errors.join('\n')}`);
  }

  /** Last-resort cleanup when the process exits without destroy() (called from the exit hook). */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    liveLabs.delete(this);
    for (const p of this.procs) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of this.nsSet) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        for (const p of pids.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
          try {
            process.kill(Number(p), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* best effort; the next create() with this prefix cleans up */
      }
    }
  }
}

// ---- the standard dataplane topology ---------------------------------------------------------

export interface TopologyOptions {
  /** Number of backend namespaces (default 2, max 200). */
  backends?: number;
  /** MTU of the client↔node link (c0, up0). Default: veth default (1500). */
  uplinkMtu?: number;
  /** MTU of every node↔backend link (bkI, p0). Default: veth default (1500). */
  backendMtu?: number;
}

export interface TopoBackend {
  /** 1-based. */
  index: number;
  ns: string;
  /** Device inside the backend namespace. */
  dev: string;
  /** Node-side device of this backend's link. */
  nodeDev: string;
  addr4: string;
  addr6: string;
  /** Node-side addresses (the backend's gateway). */
  gw4: string;
  gw6: string;
  subnet4: string;
  subnet6: string;
}

export interface Topology {
  lab: Lab;
  prefix: string;
  nsClient: string;
  nsNode: string;
  /** Node device facing the client (where north-south programs attach). */
  uplink: string;
  client: { ns: string; dev: string; addr4: string; addr6: string; gw4: string; gw6: string; subnet4: string; subnet6: string };
  nodeUplinkAddr4: string;
  nodeUplinkAddr6: string;
  backends: TopoBackend[];
  vipRange4: string;
  vipRange6: string;
  /** 198.19.0.n */
  vip4(n: number): string;
  /** 2001:2:0:ff::<n in hex>, e.g. vip6(10) → 2001:2:0:ff::a */
  vip6(n: number): string;
  netnsPath(ns: string): string;
  /** Wall time topology() took, ms. */
  setupMs: number;
  destroy(): Promise<void>;
}

export const TOPO = {
  clientDev: 'c0',
  uplink: 'up0',
  backendDev: 'p0',
  client4: '198.18.0.2',
  client6: '2001:2::2',
  nodeUplink4: '198.18.0.1',
  nodeUplink6: '2001:2::1',
  vipRange4: '198.19.0.0/24',
  vipRange6: '2001:2:0:ff::/64',
  /** Prefixes every leaf namespace routes via the node. */
  leafRoutes4: ['198.18.0.0/16', '198.19.0.0/24'],
  leafRoutes6: ['2001:2::/48', '2001:2:0:ff::/64'],
} as const;

/**
 * Build the standard dataplane topology (see the top of this file) with namespaces
 * `<prefix>c`, `<prefix>n`, `<prefix>b1..bN`. On failure everything created is removed.
 */
export async function topology(prefix: string, opts: TopologyOptions = {}): Promise<Topology> {
  const t0 = performance.now();
  const n = opts.backends ?? 2;
  if (!Number.isInteger(n) || n < 1 || n > 200) throw new Error(`backends must be 1..200, got ${n}`);
  const lab = await Lab.create(prefix);
  try {
    // Namespaces: sequential `ip netns add` (the first one may set up the /run/netns mount).
    const nsClient = await lab.addNamespace('c');
    const nsNode = await lab.addNamespace('n');
    const nsBackends: string[] = [];
    for (let i = 1; i <= n; i++) nsBackends.push(await lab.addNamespace(`b${i}`));

    const backends: TopoBackend[] = nsBackends.map((ns, k) => {
      const i = k + 1;
      const o = 10 + i;
      return {
        index: i,
        ns,
        dev: TOPO.backendDev,
        nodeDev: `bk${i}`,
        addr4: `198.18.${o}.2`,
        addr6: `2001:2:0:${o}::2`,
        gw4: `198.18.${o}.1`,
        gw6: `2001:2:0:${o}::1`,
        subnet4: `198.18.${o}.0/24`,
        subnet6: `2001:2:0:${o}::/64`,
      };
    });

    const line = (args: string[]): string => args.join(' ');

    // Node side in one `ip -batch`: every veth (peers land in their namespaces), addresses, up.
    const nodeLines: string[] = [
      ...vethLines(TOPO.uplink, nsClient, TOPO.clientDev, { mtu: opts.uplinkMtu }),
      line(addrArgs(TOPO.uplink, `${TOPO.nodeUplink4}/24`)),
      line(addrArgs(TOPO.uplink, `${TOPO.nodeUplink6}/64`)),
    ];
    for (const b of backends) {
      nodeLines.push(
        ...vethLines(b.nodeDev, b.ns, b.dev, { mtu: opts.backendMtu }),
        line(addrArgs(b.nodeDev, `${b.gw4}/24`)),
        line(addrArgs(b.nodeDev, `${b.gw6}/64`)),
      );
    }
    await lab.ipBatch(nsNode, nodeLines);

    const leaf = (dev: string, addr4: string, addr6: string, gw4: string, gw6: string): string[] => [
      line(addrArgs(dev, `${addr4}/24`)),
      line(addrArgs(dev, `${addr6}/64`)),
      `link set ${dev} up`,
      ...TOPO.leafRoutes4.map((p) => line(routeArgs(p, { via: gw4, dev }))),
      ...TOPO.leafRoutes6.map((p) => line(routeArgs(p, { via: gw6, dev }))),
    ];
    await Promise.all([
      lab.sysctls(nsNode, {
        'net.ipv4.ip_forward': 1,
        'net.ipv6.conf.all.forwarding': 1,
        'net.ipv6.conf.default.forwarding': 1,
        'net.ipv4.conf.all.accept_local': 1,
        'net.ipv4.conf.default.accept_local': 1,
      }),
      lab.ipBatch(nsClient, leaf(TOPO.clientDev, TOPO.client4, TOPO.client6, TOPO.nodeUplink4, TOPO.nodeUplink6)),
      ...backends.map((b) => lab.ipBatch(b.ns, leaf(b.dev, b.addr4, b.addr6, b.gw4, b.gw6))),
    ]);

    return {
      lab,
      prefix,
      nsClient,
      nsNode,
      uplink: TOPO.uplink,
      client: {
        ns: nsClient,
        dev: TOPO.clientDev,
        addr4: TOPO.client4,
        addr6: TOPO.client6,
        gw4: TOPO.nodeUplink4,
        gw6: TOPO.nodeUplink6,
        subnet4: '198.18.0.0/24',
        subnet6: '2001:2::/64',
      },
      nodeUplinkAddr4: TOPO.nodeUplink4,
      nodeUplinkAddr6: TOPO.nodeUplink6,
      backends,
      vipRange4: TOPO.vipRange4,
      vipRange6: TOPO.vipRange6,
      vip4: (k) => {
        if (!Number.isInteger(k) || k < 1 || k > 254) throw new Error(`vip4(${k}): 1..254`);
        return `198.19.0.${k}`;
      },
      vip6: (k) => {
        if (!Number.isInteger(k) || k < 1 || k > 0xffff) throw new Error(`vip6(${k}): 1..65535`);
        return `2001:2:0:ff::${k.toString(16)}`;
      },
      netnsPath: (ns) => lab.netnsPath(ns),
      setupMs: Math.round(performance.now() - t0),
      destroy: () => lab.destroy(),
    };
  } catch (err) {
    await lab.destroy().catch(() => {});
    throw err;
  }
}
