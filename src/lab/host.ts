// What the lab does to the machine, in one place: network namespaces, `ip` calls inside them,
// detached processes with pid files, and finding (and ending) what a crashed lab left behind.
//
// Safety rules enforced here (not just documented):
//   * Every `ip` call that changes something runs inside a namespace (`ip -n NS`, `ip netns exec
//     NS`), and NS must carry the lab's prefix. Veths are created inside a lab namespace with the
//     peer placed straight into another, so no link ever exists in the root namespace.
//   * Addresses and route prefixes must lie in 198.18.0.0/15 or 2001:2::/48 (nexthops too, or
//     IPv6 link-local); default routes are refused. IPv6 router advertisements are ignored in every
//     lab namespace (accept_ra=0), so no default route can appear behind our back.
//   * Processes are ended by pid, and only when their command line still shows they are ours.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { assertLabCidr, isLabAddress, isLinkLocal6 } from './addresses.js';

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export interface RunOptions {
  /** SIGKILL after this long (default 30 s). */
  readonly timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Throw unless the exit code is 0 (default true). */
  readonly check?: boolean;
}

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./*-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Runs a command to completion and collects its output. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
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
      if ((opts.check ?? true) && code !== 0) {
        const why = timedOut ? `timed out after ${timeoutMs} ms` : `exit ${code ?? signal}`;
        reject(new Error(`${describe(cmd, args)}: ${why}\n${stderr.trim() || stdout.trim()}`));
      } else resolve({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input);
  });
}

// ---- ip argument builders (checked) ---------------------------------------------------------

const DEVNAME_RE = /^[a-zA-Z0-9_.]{1,15}$/;

export function assertDev(dev: string): void {
  if (!DEVNAME_RE.test(dev)) throw new Error(`bad device name ${JSON.stringify(dev)} (1–15 chars of [A-Za-z0-9_.])`);
}

/** `addr add CIDR dev DEV` (IPv6 with nodad); CIDR must be a lab prefix. */
export function addrLine(dev: string, cidr: string): string {
  assertDev(dev);
  const { v6 } = assertLabCidr(cidr, 'addr');
  return `addr add ${cidr} dev ${dev}${v6 ? ' nodad' : ''}`;
}

/** `route add PREFIX [via NH] [dev DEV]`; PREFIX must be a lab prefix, never a default route. */
export function routeLine(prefix: string, opts: { via?: string; dev?: string }): string {
  if (/^(default|all|any)$/.test(prefix)) throw new Error(`refusing route ${prefix}`);
  assertLabCidr(prefix, 'route');
  if (opts.via === undefined && opts.dev === undefined) throw new Error(`route ${prefix}: needs via or dev`);
  let line = `route add ${prefix}`;
  if (opts.via !== undefined) {
    if (!isLabAddress(opts.via) && !isLinkLocal6(opts.via)) throw new Error(`route ${prefix}: nexthop ${opts.via} outside the lab`);
    line += ` via ${opts.via}`;
  }
  if (opts.dev !== undefined) {
    assertDev(opts.dev);
    line += ` dev ${opts.dev}`;
  }
  return line;
}

/** `link add A type veth peer name B netns NS` + `link set A up` (run inside A's namespace). */
export function vethLines(ifA: string, nsB: string, ifB: string): string[] {
  assertDev(ifA);
  assertDev(ifB);
  return [`link add ${ifA} type veth peer name ${ifB} netns ${nsB}`, `link set ${ifA} up`];
}

// ---- namespaces -----------------------------------------------------------------------------

/**
 * The network namespaces of one lab: every name starts with `prefix` + '-'. All mutating calls
 * go through here, so nothing outside the lab's namespaces can be touched.
 */
export class Namespaces {
  constructor(readonly prefix: string) {
    if (!/^strait-[a-z0-9]+$/.test(prefix)) throw new Error(`bad lab prefix ${prefix}`);
  }

  owns(ns: string): boolean {
    return ns.startsWith(`${this.prefix}-`) && /^[a-zA-Z0-9_.-]+$/.test(ns) && ns.length <= 200;
  }

  #own(ns: string): void {
    if (!this.owns(ns)) throw new Error(`namespace ${ns} is not part of lab ${this.prefix}`);
  }

  /** The lab's namespaces present now. */
  async list(): Promise<string[]> {
    return (await listNamespaces()).filter((n) => this.owns(n));
  }

  /** Creates NS (replacing a leftover of that name), loopback up, no RAs, no DAD, rp_filter off. */
  async add(ns: string, sysctls: Record<string, string | number> = {}): Promise<void> {
    this.#own(ns);
    if ((await listNamespaces()).includes(ns)) await this.delete(ns);
    await run('ip', ['netns', 'add', ns]);
    await Promise.all([
      this.sysctls(ns, {
        'net.ipv6.conf.all.accept_dad': 0,
        'net.ipv6.conf.default.accept_dad': 0,
        'net.ipv6.conf.all.accept_ra': 0,
        'net.ipv6.conf.default.accept_ra': 0,
        'net.ipv4.conf.all.rp_filter': 0,
        'net.ipv4.conf.default.rp_filter': 0,
        ...sysctls,
      }),
      this.ip(ns, ['link', 'set', 'lo', 'up']),
    ]);
  }

  /** Kills every process inside NS (by pid), then deletes it (its veths go with it). */
  async delete(ns: string): Promise<void> {
    this.#own(ns);
    await killNamespaceProcesses(ns);
    const r = await run('ip', ['netns', 'del', ns], { check: false });
    if (r.code !== 0 && (await listNamespaces()).includes(ns)) throw new Error(`ip netns del ${ns}: ${r.stderr.trim()}`);
  }

  /** `ip -n NS ARGS…`; returns stdout. */
  async ip(ns: string, args: string[]): Promise<string> {
    this.#own(ns);
    return (await run('ip', ['-n', ns, ...args])).stdout;
  }

  /** Several `ip` commands in one process (`ip -n NS -batch -`). */
  async batch(ns: string, lines: string[]): Promise<void> {
    this.#own(ns);
    if (lines.length > 0) await run('ip', ['-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
  }

  /** net.* sysctls inside NS. */
  async sysctls(ns: string, kv: Record<string, string | number>): Promise<void> {
    const args = Object.entries(kv).map(([k, v]) => {
      if (!/^net\.[\w.-]+$/.test(k)) throw new Error(`sysctl ${k}: only net.* keys are per-namespace`);
      return `${k}=${v}`;
    });
    if (args.length > 0) await this.exec(ns, 'sysctl', ['-q', '-w', ...args]);
  }

  /** Runs a command inside NS to completion. */
  exec(ns: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.#own(ns);
    return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  }

  /** Starts a long-running command inside NS, detached (see spawnDetached). */
  spawn(ns: string, cmd: string, args: string[], opts: DetachedOptions): number {
    this.#own(ns);
    // `ip netns exec` execs the command: the pid is the command's own.
    return spawnDetached('ip', ['netns', 'exec', ns, cmd, ...args], opts);
  }
}

/** Names of all network namespaces (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** SIGKILLs every process whose network namespace is NS (`ip netns pids`). */
export async function killNamespaceProcesses(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns], { check: false });
  const pids = r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
  for (const pid of pids) signal(pid, 'SIGKILL');
  return pids;
}

// ---- processes ------------------------------------------------------------------------------

export interface DetachedOptions {
  /** stdout and stderr go here (appended). */
  readonly logPath: string;
  /** The pid is written here at once. */
  readonly pidFile: string;
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * Starts a process in its own session that outlives this one (stdio to a log file) and records
 * its pid; returns the pid.
 */
export function spawnDetached(cmd: string, args: string[], opts: DetachedOptions): number {
  mkdirSync(dirname(opts.logPath), { recursive: true });
  mkdirSync(dirname(opts.pidFile), { recursive: true });
  const fd = openSync(opts.logPath, 'a');
  try {
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true, env: opts.env ?? process.env });
    if (child.pid === undefined) throw new Error(`${describe(cmd, args)}: failed to start`);
    writeFileSync(opts.pidFile, `${child.pid}\n`);
    child.on('error', () => {});
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** The command line of a running process (NUL-separated args joined by ' '), or undefined. */
export function cmdline(pid: number): string | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw === '' ? undefined : raw.split('\0').join(' ').trim(); // '' = zombie or kernel thread
  } catch {
    return undefined;
  }
}

/** The pid in pidFile when that process still runs with `mark` in its command line. */
export function livePid(pidFile: string, mark: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  return cmdline(pid)?.includes(mark) ? pid : undefined;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** SIGTERM to each pid, SIGKILL to those still there after graceMs; resolves when all are gone. */
export async function terminate(pids: readonly number[], graceMs = 3_000): Promise<void> {
  const alive = (pid: number): boolean => cmdline(pid) !== undefined;
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
  for (const pid of pids.filter(alive)) signal(pid, 'SIGKILL');
  const hard = Date.now() + 5_000;
  while (pids.some(alive) && Date.now() < hard) await sleep(20);
}

/**
 * Processes of a crashed lab that no pid file names (a crash between spawn and pid file):
 * programs the lab starts (etcd, kube-*, node) whose command line names `stateDir`.
 */
export function strayProcesses(stateDir: string): number[] {
  const out: number[] = [];
  const ours = new Set(['etcd', 'kube-apiserver', 'kube-controller-manager', 'node']);
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!ours.has(basename(argv[0] ?? ''))) continue;
    if (argv.some((a) => a.includes(`${stateDir}/`) || a === stateDir)) out.push(pid);
  }
  return out;
}

/** Waits until `path` exists or the deadline passes. */
export async function waitForFile(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}
