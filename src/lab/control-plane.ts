// A real Kubernetes control plane: etcd + kube-apiserver (+ optionally kube-controller-manager,
// so the real EndpointSlice controller turns Pods into slices), started from the binaries
// lab/build-k8s.sh builds from the official Go modules and caches outside the repo
// (~/.cache/strait/k8s-<version>/bin). Used by the tests (test/lib/control-plane.ts re-exports
// this file) and by `strait lab` (src/lab/lab.ts).
//
//   const cp = await startControlPlane({ controllerManager: true });
//   cp.kubeconfigPath / cp.server / cp.api('POST', '/api/v1/namespaces/default/services', svc)
//   await cp.killApiServer(); …; await cp.startApiServer();   // outage tests (same etcd)
//   const sa = await createAgentServiceAccount(cp);          // least-privilege kubeconfig
//   await cp.stop();
//
// Two ways to own the processes:
//   * tied (default, tests): state in a temp dir (os.tmpdir()/strait-cp-*) that stop() removes;
//     children run under `setpriv --pdeathsig KILL` where available (they die with the test
//     process), are killed by a process 'exit' hook if stop() was never called, and
//     startControlPlane() first removes the leftovers of crashed runs whose owner is gone.
//   * detached ({ dir, detached: true }, the lab): the processes outlive the caller (own session,
//     output to <dir>/<component>.log), their pids are recorded in <dir>/pids and their ports in
//     <dir>/control-plane.json; ControlPlane.attach(dir) reconnects from another process and
//     stop() / killRecordedProcesses(dir) end them (only pids whose command line names <dir>).
//
// Safety: everything listens on 127.0.0.1 only, on free ephemeral ports; the Service CIDRs and
// the advertised address come from the benchmarking ranges (198.18.0.0/15, 2001:2::/48).

import { spawn, spawnSync, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, appendFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { agentClusterRole } from '../k8s/rbac.js';
import { isLabAddress as isBenchmarkingAddress } from './addresses.js';

const execFileP = promisify(execFile);

/** The repository (the directory with package.json above this file: src/lab or dist/src/lab). */
export const REPO_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));
export const BUILD_SCRIPT = join(REPO_ROOT, 'lab', 'build-k8s.sh');

/** Service CIDRs of every test control plane (dual-stack, benchmarking ranges only). */
export const SERVICE_CLUSTER_IP_RANGE = '198.19.0.0/16,2001:2:0:ff::/112';
/** The address the apiserver advertises (the `kubernetes` Service's endpoint); never dialled. */
export const ADVERTISE_ADDRESS = '198.18.0.1';
/** Validity of the generated certificates unless ControlPlaneOptions.certDays says otherwise. */
const DEFAULT_CERT_DAYS = 3;
/** Ports and pids of a detached control plane, in its dir. */
const STATE_FILE = 'control-plane.json';
/** First address of each Service CIDR: the `kubernetes` Service's ClusterIPs. */
const KUBERNETES_SERVICE_IPS = ['198.19.0.1', '2001:2:0:ff::1'];

const DIR_PREFIX = 'strait-cp-';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}
const BINARIES = ['etcd', 'etcdctl', 'kube-apiserver', 'kube-controller-manager', 'kubectl'] as const;

export type Component = 'etcd' | 'kube-apiserver' | 'kube-controller-manager';

// ---- binaries ---------------------------------------------------------------------------------

/** True when lab/build-k8s.sh reports its cached binaries up to date (no build needed). */
export function k8sBinariesCached(): boolean {
  return spawnSync('bash', [BUILD_SCRIPT, '--check'], { stdio: 'ignore' }).status === 0;
}

/**
 * The bin dir of the cached Kubernetes build, building it first when missing (that takes long:
 * give the calling hook a generous timeout when k8sBinariesCached() is false). Build progress goes
 * to `log` (default: stderr). Throws — never skips — when the build fails.
 */
export async function ensureK8sBinaries(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<string> {
  const child = spawn('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  const errLines: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      errLines.push(l);
      log(l);
    }
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  });
  if (code !== 0) {
    throw new Error(`lab/build-k8s.sh failed (exit ${code}):\n${errLines.slice(-40).join('\n')}${partial}`);
  }
  const binDir = stdout.trim().split('\n').pop() ?? '';
  for (const b of BINARIES) {
    if (!existsSync(join(binDir, b))) throw new Error(`lab/build-k8s.sh printed ${binDir}, but ${b} is missing there`);
  }
  return binDir;
}

// ---- small helpers ----------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (bound and released; ephemeral range). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0 }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tailFile(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '';
  }
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Removes leftovers of crashed runs: dirs whose owning process is gone, and their processes. */
export function cleanLeftoverControlPlanes(): void {
  const base = tmpdir();
  let entries: string[];
  try {
    entries = readdirSync(base).filter((e) => e.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const dir = join(base, e);
    let owner: number | undefined;
    try {
      owner = (JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as { pid: number }).pid;
    } catch {
      // No owner record: only remove it when it is clearly stale (not one being set up now).
      try {
        if (Date.now() - statSync(dir).mtimeMs < 10 * 60_000) continue;
      } catch {
        continue;
      }
    }
    if (owner !== undefined && pidAlive(owner)) continue;
    killRecordedProcesses(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Pids recorded in <dir>/pids whose process still runs with <dir> in its command line. */
export function recordedProcesses(dir: string): number[] {
  let pids: number[] = [];
  try {
    pids = readFileSync(join(dir, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return pids.filter((pid) => {
    try {
      // Only if it still is one of ours (pids get reused).
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
    } catch {
      return false;
    }
  });
}

/** SIGTERM to every process of recordedProcesses(dir), SIGKILL to those left after graceMs. */
export async function terminateRecordedProcesses(dir: string, graceMs: number): Promise<number[]> {
  const pids = recordedProcesses(dir);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && recordedProcesses(dir).length > 0) await sleep(50);
  killRecordedProcesses(dir);
  return pids;
}

/** SIGKILLs every process of recordedProcesses(dir); returns their pids. */
export function killRecordedProcesses(dir: string): number[] {
  const pids = recordedProcesses(dir);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return pids;
}

// ---- PKI ----------------------------------------------------------------------------------------

async function openssl(cwd: string, args: string[]): Promise<void> {
  try {
    await execFileP('openssl', args, { cwd });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}

async function signedCert(dir: string, name: string, subj: string, ext: string, days: number): Promise<void> {
  await openssl(dir, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', String(days), '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
}

/** CA, apiserver serving cert (127.0.0.1, localhost, the kubernetes Service IPs), admin client
 * cert (O=system:masters) and the service-account signing key pair, in `dir`. */
async function generatePki(dir: string, days: number): Promise<void> {
  await openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.crt', '-days', String(days), '-sha256', '-subj', '/CN=strait-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const sans = ['IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc', ...KUBERNETES_SERVICE_IPS.map((ip) => `IP:${ip}`)];
  await Promise.all([
    signedCert(dir, 'apiserver', '/CN=kube-apiserver',
      `subjectAltName=${sans.join(',')}\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`, days),
    signedCert(dir, 'admin', '/O=system:masters/CN=strait-test-admin',
      'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n', days),
    (async () => {
      await openssl(dir, ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'sa.key']);
      await openssl(dir, ['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
    })(),
  ]);
}

// ---- kubeconfig ---------------------------------------------------------------------------------

export type KubeconfigUser = { token: string } | { certPem: string; keyPem: string };

/** Writes a single-context kubeconfig (JSON, which is valid YAML) with embedded credentials. */
export function writeKubeconfig(path: string, server: string, caPem: string, user: KubeconfigUser, name = 'strait-test'): void {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const userEntry = 'token' in user
    ? { token: user.token }
    : { 'client-certificate-data': b64(user.certPem), 'client-key-data': b64(user.keyPem) };
  const cfg = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server, 'certificate-authority-data': b64(caPem) } }],
    users: [{ name, user: userEntry }],
    contexts: [{ name, context: { cluster: name, user: name } }],
    'current-context': name,
  };
  writeFileSync(path, JSON.stringify(cfg, null, 2), { mode: 0o600 });
}

// ---- processes ----------------------------------------------------------------------------------

class Proc {
  readonly exited: Promise<void>;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  running = true;

  private constructor(readonly name: Component, readonly child: ChildProcess, readonly logPath: string) {
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.running = false;
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
      child.on('error', () => {
        this.running = false;
        resolve();
      });
    });
  }

  /** detached: own session, not killed with this process, does not keep it alive. */
  static start(name: Component, bin: string, args: string[], logPath: string, pidsFile: string, detached = false): Proc {
    const fd = openSync(logPath, 'a');
    appendFileSync(logPath, `\n==== ${new Date().toISOString()} ${bin} ${args.join(' ')}\n`);
    const [cmd, argv] = SETPRIV && !detached ? [SETPRIV, ['--pdeathsig', 'KILL', bin, ...args]] : [bin, args];
    const child = spawn(cmd, argv, { stdio: ['ignore', fd, fd], detached });
    closeSync(fd);
    if (child.pid !== undefined) appendFileSync(pidsFile, `${child.pid}\n`);
    if (detached) child.unref();
    return new Proc(name, child, logPath);
  }

  /** Sends `signal`, waits for the exit; SIGKILL after `graceMs`. */
  async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  describeExit(): string {
    return this.exitSignal ? `killed by ${this.exitSignal}` : `exited with code ${this.exitCode}`;
  }
}

const liveProcs = new Set<Proc>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of liveProcs) if (p.running) p.child.kill('SIGKILL');
    for (const d of liveDirs) if (!process.env.STRAIT_KEEP_CP) rmSync(d, { recursive: true, force: true });
  });
}

// ---- HTTP ---------------------------------------------------------------------------------------

export interface ApiResponse {
  readonly status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly body: any;
}

export interface RequestOptions {
  /** Bearer token instead of the admin client certificate. */
  readonly token?: string;
  /** Default application/json; e.g. application/merge-patch+json for PATCH. */
  readonly contentType?: string;
  readonly timeoutMs?: number;
}

export class ApiError extends Error {
  constructor(readonly method: string, readonly path: string, readonly status: number, readonly body: unknown) {
    super(`${method} ${path}: HTTP ${status}: ${typeof body === 'object' && body && 'message' in body ? String((body as { message: unknown }).message) : JSON.stringify(body)}`);
  }
}

// ---- the control plane ------------------------------------------------------------------------

export interface ControlPlaneOptions {
  /** Also start kube-controller-manager (EndpointSlice + ServiceAccount controllers). */
  readonly controllerManager?: boolean;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** Bin dir of the Kubernetes build (default: ensureK8sBinaries()). */
  readonly binDir?: string;
  /** Keep the state in this dir (created if missing) instead of a fresh temp dir. */
  readonly dir?: string;
  /** The processes outlive the caller (own session, no death signal, no exit hook): the lab. */
  readonly detached?: boolean;
  /** --advertise-address of the apiserver (default ADVERTISE_ADDRESS); must be a lab address. */
  readonly advertiseAddress?: string;
  /** Validity of the generated certificates, days (default 3). */
  readonly certDays?: number;
}

/** What <dir>/control-plane.json records for ControlPlane.attach(). */
interface ControlPlaneState {
  readonly binDir: string;
  readonly apiserverPort: number;
  readonly etcdClientPort: number;
  readonly etcdPeerPort: number;
  readonly advertiseAddress: string;
  readonly detached: boolean;
}

export interface ControlPlaneTimings {
  pkiMs: number;
  etcdMs: number;
  /** Time from spawn to /readyz = 200, one entry per apiserver start. */
  apiserverMs: number[];
  controllerManagerMs?: number;
}

export class ControlPlane {
  readonly timings: ControlPlaneTimings = { pkiMs: 0, etcdMs: 0, apiserverMs: [] };
  readonly server: string;
  readonly kubeconfigPath: string;
  readonly caPath: string;
  readonly etcdUrl: string;
  #ca: string;
  #cert: string;
  #key: string;
  #etcd?: Proc;
  #apiserver?: Proc;
  #kcm?: Proc;
  #stopped = false;
  readonly #log: (line: string) => void;

  private constructor(
    readonly dir: string,
    readonly binDir: string,
    readonly apiserverPort: number,
    readonly etcdClientPort: number,
    readonly etcdPeerPort: number,
    log: (line: string) => void,
    readonly detached = false,
    readonly advertiseAddress = ADVERTISE_ADDRESS,
  ) {
    this.server = `https://127.0.0.1:${apiserverPort}`;
    this.etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
    this.kubeconfigPath = join(dir, 'admin.kubeconfig');
    this.caPath = join(dir, 'ca.crt');
    this.#ca = '';
    this.#cert = '';
    this.#key = '';
    this.#log = log;
  }

  static async start(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
    const log = opts.log ?? (() => {});
    const detached = opts.detached ?? false;
    if (!detached) {
      installExitHook();
      cleanLeftoverControlPlanes();
    }
    const advertise = opts.advertiseAddress ?? ADVERTISE_ADDRESS;
    if (!isBenchmarkingAddress(advertise)) throw new Error(`advertiseAddress ${advertise} is outside 198.18.0.0/15 and 2001:2::/48`);
    const binDir = opts.binDir ?? (await ensureK8sBinaries(opts.log));
    let dir: string;
    if (opts.dir !== undefined) {
      mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
      dir = opts.dir;
    } else {
      dir = mkdtempSync(join(tmpdir(), DIR_PREFIX));
    }
    if (!detached) liveDirs.add(dir);
    writeFileSync(join(dir, 'owner.json'), JSON.stringify({ pid: process.pid, started: new Date().toISOString() }));
    const [a, c, p] = [await freePort(), await freePort(), await freePort()];
    const cp = new ControlPlane(dir, binDir, a, c, p, log, detached, advertise);
    try {
      let t = performance.now();
      await generatePki(dir, opts.certDays ?? DEFAULT_CERT_DAYS);
      cp.#loadCredentials();
      writeKubeconfig(cp.kubeconfigPath, cp.server, cp.#ca, { certPem: cp.#cert, keyPem: cp.#key }, 'strait-admin');
      const state: ControlPlaneState = { binDir, apiserverPort: a, etcdClientPort: c, etcdPeerPort: p, advertiseAddress: advertise, detached };
      writeFileSync(join(dir, STATE_FILE), JSON.stringify(state, null, 2));
      cp.timings.pkiMs = Math.round(performance.now() - t);

      t = performance.now();
      await cp.#startEtcd();
      cp.timings.etcdMs = Math.round(performance.now() - t);
      log(`etcd ready on ${cp.etcdUrl} in ${cp.timings.etcdMs} ms`);

      await cp.startApiServer();
      if (opts.controllerManager) await cp.startControllerManager();
      return cp;
    } catch (e) {
      const logs = (['etcd', 'kube-apiserver', 'kube-controller-manager'] as const)
        .map((n) => `--- ${n} log tail ---\n${cp.logTail(n, 25)}`).join('\n');
      await cp.stop();
      throw new Error(`control plane did not start: ${(e as Error).message}\n${logs}`);
    }
  }

  /**
   * Reconnects to a control plane started with { dir, detached: true } by another process: the
   * API, kubectl and etcdctl work; stop() ends its processes (SIGTERM, then SIGKILL) and removes
   * the dir. Throws when <dir> holds no control plane.
   */
  static attach(dir: string, opts: { log?: (line: string) => void } = {}): ControlPlane {
    let state: ControlPlaneState;
    try {
      state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as ControlPlaneState;
    } catch (e) {
      throw new Error(`no control plane in ${dir}: ${(e as Error).message}`);
    }
    const cp = new ControlPlane(dir, state.binDir, state.apiserverPort, state.etcdClientPort, state.etcdPeerPort,
      opts.log ?? (() => {}), state.detached, state.advertiseAddress);
    cp.#loadCredentials();
    return cp;
  }

  #loadCredentials(): void {
    this.#ca = readFileSync(join(this.dir, 'ca.crt'), 'utf8');
    this.#cert = readFileSync(join(this.dir, 'admin.crt'), 'utf8');
    this.#key = readFileSync(join(this.dir, 'admin.key'), 'utf8');
  }

  get apiServerRunning(): boolean {
    return this.#apiserver?.running ?? false;
  }

  /** Pids of this control plane's processes that still run (from <dir>/pids). */
  runningPids(): number[] {
    return recordedProcesses(this.dir);
  }

  logPath(c: Component): string {
    return join(this.dir, `${c}.log`);
  }

  logTail(c: Component, lines = 30): string {
    return tailFile(this.logPath(c), lines);
  }

  #spawn(c: Component, args: string[]): Proc {
    const p = Proc.start(c, join(this.binDir, c), args, this.logPath(c), join(this.dir, 'pids'), this.detached);
    if (!this.detached) {
      liveProcs.add(p);
      void p.exited.then(() => liveProcs.delete(p));
    }
    return p;
  }

  async #startEtcd(): Promise<void> {
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    this.#etcd = this.#spawn('etcd', [
      '--name=strait-test',
      `--data-dir=${join(this.dir, 'etcd-data')}`,
      `--listen-client-urls=${this.etcdUrl}`,
      `--advertise-client-urls=${this.etcdUrl}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=strait-test=${peer}`,
      '--initial-cluster-state=new',
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ]);
    await this.#waitFor('etcd', this.#etcd, 30_000, async () => {
      const r = await plainGet(`${this.etcdUrl}/health`);
      return r.status === 200 && /"health":\s*"true"/.test(r.text);
    });
  }

  apiServerArgs(): string[] {
    const d = this.dir;
    return [
      `--etcd-servers=${this.etcdUrl}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${this.apiserverPort}`,
      `--advertise-address=${this.advertiseAddress}`,
      `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
      `--cert-dir=${join(d, 'apiserver-certs')}`,
      `--tls-cert-file=${join(d, 'apiserver.crt')}`,
      `--tls-private-key-file=${join(d, 'apiserver.key')}`,
      `--client-ca-file=${join(d, 'ca.crt')}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${join(d, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(d, 'sa.key')}`,
      '--authorization-mode=RBAC',
      '--profiling=false',
    ];
  }

  /** Starts kube-apiserver (again, after killApiServer()) and waits for /readyz; returns the ms it took. */
  async startApiServer(timeoutMs = 90_000): Promise<number> {
    if (this.#apiserver?.running) throw new Error('kube-apiserver is already running');
    const t = performance.now();
    this.#apiserver = this.#spawn('kube-apiserver', this.apiServerArgs());
    await this.#waitFor('kube-apiserver', this.#apiserver, timeoutMs, async () => {
      const r = await this.request('GET', '/readyz', undefined, { timeoutMs: 2_000 });
      return r.status === 200;
    });
    const ms = Math.round(performance.now() - t);
    this.timings.apiserverMs.push(ms);
    this.#log(`kube-apiserver ready on ${this.server} in ${ms} ms`);
    return ms;
  }

  /** Kills kube-apiserver (SIGKILL by default: an outage, not a graceful shutdown); etcd stays. */
  async killApiServer(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.#apiserver?.kill(signal);
  }

  /** Starts kube-controller-manager with only the controllers the lab needs. */
  async startControllerManager(timeoutMs = 60_000): Promise<void> {
    if (this.#kcm?.running) return;
    const t = performance.now();
    this.#kcm = this.#spawn('kube-controller-manager', [
      `--kubeconfig=${this.kubeconfigPath}`,
      '--controllers=endpointslice-controller,endpointslice-mirroring-controller,serviceaccount-controller',
      '--use-service-account-credentials=false',
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      '--secure-port=0',
      '--profiling=false',
    ]);
    // The ServiceAccount controller creating default/default proves the controllers run (and pods
    // can be admitted: the ServiceAccount admission plugin needs that account).
    await this.#waitFor('kube-controller-manager', this.#kcm, timeoutMs, async () => {
      const r = await this.request('GET', '/api/v1/namespaces/default/serviceaccounts/default', undefined, { timeoutMs: 2_000 });
      return r.status === 200;
    });
    this.timings.controllerManagerMs = Math.round(performance.now() - t);
    this.#log(`kube-controller-manager running in ${this.timings.controllerManagerMs} ms`);
  }

  async stopControllerManager(): Promise<void> {
    await this.#kcm?.kill('SIGTERM', 5_000);
  }

  /** Stops everything and removes the dir (set STRAIT_KEEP_CP=1 to keep it for debugging). */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#kcm?.kill('SIGTERM', 5_000);
    await this.#apiserver?.kill('SIGTERM', 5_000);
    await this.#etcd?.kill('SIGTERM', 5_000);
    // Processes this object did not start (attach()) or that outlived their Proc.
    await terminateRecordedProcesses(this.dir, 5_000);
    if (process.env.STRAIT_KEEP_CP) {
      this.#log(`keeping ${this.dir} (STRAIT_KEEP_CP)`);
    } else {
      rmSync(this.dir, { recursive: true, force: true });
    }
    liveDirs.delete(this.dir);
  }

  async #waitFor(what: Component, proc: Proc, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!proc.running) throw new Error(`${what} ${proc.describeExit()} before it was ready:\n${this.logTail(what, 30)}`);
      try {
        if (await ready()) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms:\n${this.logTail(what, 30)}`);
      await sleep(100);
    }
  }

  /** One HTTPS request to the apiserver as the admin (system:masters) or with `opts.token`. */
  request(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<ApiResponse> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const headers: Record<string, string> = { Accept: 'application/json' };
      if (payload !== undefined) {
        headers['Content-Type'] = opts.contentType ?? 'application/json';
        headers['Content-Length'] = String(Buffer.byteLength(payload));
      }
      if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
      const req = httpsRequest({
        host: '127.0.0.1',
        port: this.apiserverPort,
        method,
        path,
        headers,
        ca: this.#ca,
        ...(opts.token ? {} : { cert: this.#cert, key: this.#key }),
        agent: false,
        timeout: opts.timeoutMs ?? 15_000,
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* plain text (e.g. /readyz) */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** request(), throwing ApiError unless the status is 2xx. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async api(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<any> {
    const r = await this.request(method, path, body, opts);
    if (r.status < 200 || r.status > 299) throw new ApiError(method, path, r.status, r.body);
    return r.body;
  }

  /** JSON merge patch. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  patch(path: string, patch: unknown, opts: RequestOptions = {}): Promise<any> {
    return this.api('PATCH', path, patch, { contentType: 'application/merge-patch+json', ...opts });
  }

  /** Runs the cached kubectl against this control plane (admin kubeconfig unless given). */
  async kubectl(args: string[], kubeconfig = this.kubeconfigPath): Promise<string> {
    const { stdout } = await execFileP(join(this.binDir, 'kubectl'), [`--kubeconfig=${kubeconfig}`, ...args]);
    return stdout;
  }

  /** Runs the cached etcdctl against this control plane's etcd (e.g. to change state behind the
   * apiserver's back while it is down: ['del', '/registry/services/specs/NS/NAME']). */
  async etcdctl(args: string[]): Promise<string> {
    const { stdout } = await execFileP(join(this.binDir, 'etcdctl'), [`--endpoints=${this.etcdUrl}`, ...args]);
    return stdout;
  }

  get caPem(): string {
    return this.#ca;
  }
}

function plainGet(url: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { timeout: 2_000, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

export function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  return ControlPlane.start(opts);
}

// ---- least-privilege agent credentials --------------------------------------------------------

export interface AgentCredentials {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly clusterRole: string;
  readonly token: string;
  /** A kubeconfig that authenticates as the service account with `token`. */
  readonly kubeconfigPath: string;
}

async function createIgnoringConflict(cp: ControlPlane, path: string, obj: unknown): Promise<void> {
  const r = await cp.request('POST', path, obj);
  if (r.status === 409) return;
  if (r.status < 200 || r.status > 299) throw new ApiError('POST', path, r.status, r.body);
}

/**
 * The agent's identity with least privilege: a ServiceAccount, the ClusterRole of
 * src/k8s/rbac.ts (list/watch Services, EndpointSlices, Nodes) bound to it, and a kubeconfig with a
 * token from the TokenRequest API.
 */
export async function createAgentServiceAccount(
  cp: ControlPlane,
  opts: { namespace?: string; name?: string; expirationSeconds?: number } = {},
): Promise<AgentCredentials> {
  const namespace = opts.namespace ?? 'strait-system';
  const name = opts.name ?? 'strait-agent';
  await createIgnoringConflict(cp, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  await createIgnoringConflict(cp, `/api/v1/namespaces/${namespace}/serviceaccounts`, {
    apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace },
  });
  await createIgnoringConflict(cp, '/apis/rbac.authorization.k8s.io/v1/clusterroles', agentClusterRole(name));
  await createIgnoringConflict(cp, '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
    subjects: [{ kind: 'ServiceAccount', name, namespace }],
  });
  const tr = await cp.api('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: opts.expirationSeconds ?? 3600 },
  });
  const token = String(tr.status?.token ?? '');
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  const kubeconfigPath = join(cp.dir, `${namespace}-${name}.kubeconfig`);
  writeKubeconfig(kubeconfigPath, cp.server, cp.caPem, { token }, name);
  return { namespace, serviceAccount: name, clusterRole: name, token, kubeconfigPath };
}
