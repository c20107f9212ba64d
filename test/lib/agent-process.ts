// Runs the compiled `strait` CLI for tests: the node agent as a child process
// whose JSON log lines can be awaited, and the read-only commands
// (`strait lb list -o json` …) as one-shot calls.
//
// Tests run what users run: dist/src/cli/main.js, built by `make ts` (`make
// test` builds first). assertDistFresh() fails a test file early when the build
// is missing or older than the sources, rather than testing stale code.
//
//   assertDistFresh();
//   const agent = AgentProcess.start(['--manifests', dir, '--bpf-root', root, …]);
//   const sync = await agent.waitForLog((l) => l.msg === 'sync');
//   const lb = await straitJson(['lb', 'list', '--bpf-root', root, '--state-dir', stateDir]);
//   await agent.kill('SIGKILL');
//
// Every agent started here is SIGKILLed when the test process exits, even when
// a test forgot to stop it (killAllAgents() does it earlier, in afterAll).
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository: the nearest directory above this file with a package.json (also when run from dist/). */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

export const REPO_ROOT = findRepoRoot();
export const STRAIT_MAIN = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

/** The Node that runs dist/: the repository's own (package "node") when installed, else this one. */
export function straitNode(): string {
  const local = join(REPO_ROOT, 'node_modules', 'node', 'bin', 'node');
  return existsSync(local) ? local : process.execPath;
}

function newestTs(dir: string, skip: ReadonlySet<string> = new Set()): { path: string; mtimeMs: number } {
  let best = { path: '', mtimeMs: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (skip.has(p)) continue;
    const cand = e.isDirectory() ? newestTs(p) : e.name.endsWith('.ts') ? { path: p, mtimeMs: statSync(p).mtimeMs } : undefined;
    if (cand && cand.mtimeMs > best.mtimeMs) best = cand;
  }
  return best;
}

/**
 * Throws "run make ts" unless dist/src/cli/main.js exists and is not older
 * than src/agent/agent.ts, nor any other source the CLI is built from (src/
 * except src/lab, whose scripts the tests run from source).
 */
export function assertDistFresh(): void {
  if (!existsSync(STRAIT_MAIN)) throw new Error(`${STRAIT_MAIN} is missing: run make ts (make test builds first)`);
  const built = statSync(STRAIT_MAIN).mtimeMs;
  const agentTs = join(REPO_ROOT, 'src', 'agent', 'agent.ts');
  const newest = newestTs(join(REPO_ROOT, 'src'), new Set([join(REPO_ROOT, 'src', 'lab')]));
  for (const src of [{ path: agentTs, mtimeMs: statSync(agentTs).mtimeMs }, newest]) {
    if (src.mtimeMs > built) {
      throw new Error(`${STRAIT_MAIN} is older than ${src.path}: run make ts (make test builds first)`);
    }
  }
}

/** One JSON log line of the agent (`--log-format json`). */
export interface AgentLogLine {
  readonly time: string;
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly [field: string]: unknown;
}

export interface AgentStartOptions {
  /** Run inside this network namespace (`ip netns exec NS …`); default: the test's own. */
  readonly netns?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Name in error messages. */
  readonly label?: string;
}

const live = new Set<AgentProcess>();
let exitHook = false;

/** A running `strait agent`; its stdout is parsed as JSON log lines. */
export class AgentProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly label: string;
  readonly args: readonly string[];
  /** Resolves when the process is gone. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #lines: AgentLogLine[] = [];
  /** stdout lines that are not JSON (should be none) and all of stderr. */
  #other = '';
  #partial = '';
  #status: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly #waiters = new Set<() => void>();

  private constructor(child: ChildProcess, label: string, args: readonly string[]) {
    if (child.pid === undefined) throw new Error(`${label}: failed to start`);
    this.child = child;
    this.pid = child.pid;
    this.label = label;
    this.args = args;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => this.#onStdout(d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      if (this.#other.length < 1 << 20) this.#other += d;
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.#status = { code, signal };
        live.delete(this);
        this.#wake();
        resolve(this.#status);
      });
    });
  }

  /**
   * Starts `strait agent ARGS --log-format json` (the flag is added unless ARGS
   * has one). Does not wait for anything: use waitForLog / waitForSync.
   */
  static start(args: readonly string[], opts: AgentStartOptions = {}): AgentProcess {
    const full = ['agent', ...args, ...(args.includes('--log-format') ? [] : ['--log-format', 'json'])];
    const env = { ...(opts.env ?? process.env) };
    delete env['NODE_OPTIONS']; // the test runner's loader options are not for the agent
    const node = straitNode();
    const [cmd, argv] =
      opts.netns !== undefined ? ['ip', ['netns', 'exec', opts.netns, node, STRAIT_MAIN, ...full]] : [node, [STRAIT_MAIN, ...full]];
    const child = spawn(cmd, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: REPO_ROOT });
    const agent = new AgentProcess(child, opts.label ?? `strait agent${opts.netns ? ` in ${opts.netns}` : ''}`, full);
    live.add(agent);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const a of live) {
          try {
            process.kill(a.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      });
    }
    return agent;
  }

  #onStdout(d: string): void {
    this.#partial += d;
    const parts = this.#partial.split('\n');
    this.#partial = parts.pop() ?? '';
    for (const text of parts) {
      if (text.trim() === '') continue;
      try {
        const v = JSON.parse(text) as AgentLogLine;
        if (typeof v === 'object' && v !== null && typeof v.msg === 'string') {
          this.#lines.push(v);
          continue;
        }
      } catch {
        /* not JSON */
      }
      if (this.#other.length < 1 << 20) this.#other += `${text}\n`;
    }
    if (parts.length > 0) this.#wake();
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Every JSON log line so far (a copy). */
  get lines(): readonly AgentLogLine[] {
    return [...this.#lines];
  }

  /** Number of log lines so far: pass as `from` to wait for a later line only. */
  get mark(): number {
    return this.#lines.length;
  }

  get running(): boolean {
    return this.#status === null;
  }

  /** Non-JSON output (stderr, stray stdout). */
  get otherOutput(): string {
    return this.#other;
  }

  /** The last `n` log lines as text, for failure messages. */
  tail(n = 40): string {
    const lines = this.#lines.slice(-n).map((l) => JSON.stringify(l));
    return [...lines, ...(this.#other.trim() ? [`(stderr) ${this.#other.trim()}`] : [])].join('\n');
  }

  /** Log lines at index ≥ from matching `pred`. */
  find(pred: (l: AgentLogLine) => boolean, from = 0): AgentLogLine[] {
    return this.#lines.slice(from).filter(pred);
  }

  /**
   * The first log line at index ≥ from that matches; rejects when the agent
   * exits first or after timeoutMs (the message carries the log's tail).
   */
  waitForLog(pred: (l: AgentLogLine) => boolean, opts: { from?: number; timeoutMs?: number; what?: string } = {}): Promise<AgentLogLine> {
    const from = opts.from ?? 0;
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const what = opts.what ?? 'a matching log line';
    return new Promise((resolve, reject) => {
      let scanned = from;
      const check = (): void => {
        for (; scanned < this.#lines.length; scanned++) {
          const l = this.#lines[scanned] as AgentLogLine;
          if (pred(l)) return done(null, l);
        }
        if (this.#status !== null) {
          done(new Error(`${this.label} exited (${JSON.stringify(this.#status)}) before ${what}:\n${this.tail()}`));
        }
      };
      const done = (err: Error | null, line?: AgentLogLine): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        if (err) reject(err);
        else resolve(line as AgentLogLine);
      };
      const timer = setTimeout(() => done(new Error(`${this.label}: no ${what} within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** The next `sync` log line (index ≥ from); by default only a successful one (failures = 0). */
  waitForSync(opts: { from?: number; timeoutMs?: number; where?: (l: AgentLogLine) => boolean } = {}): Promise<AgentLogLine> {
    const where = opts.where ?? (() => true);
    return this.waitForLog((l) => l.msg === 'sync' && l['failures'] === 0 && where(l), { ...opts, what: 'sync log line' });
  }

  /** host:port of the metrics or healthz server, from the agent's `listening` log line. */
  async address(server: 'metrics' | 'healthz', timeoutMs = 15_000): Promise<string> {
    const l = await this.waitForLog((x) => x.msg === 'listening' && x['server'] === server, { timeoutMs, what: `listening (${server})` });
    const a = l['address'];
    if (typeof a !== 'string') throw new Error(`${this.label}: listening line without address: ${JSON.stringify(l)}`);
    return a;
  }

  /** Sends `signal` (default SIGTERM; SIGKILL after graceMs) and waits until the process is gone. */
  async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.#status) return this.#status;
    try {
      process.kill(this.pid, signal);
    } catch {
      /* gone */
    }
    const t =
      signal === 'SIGKILL'
        ? undefined
        : setTimeout(() => {
            try {
              process.kill(this.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }, graceMs);
    const s = await this.exited;
    if (t) clearTimeout(t);
    return s;
  }
}

/** SIGKILLs every agent this process started that is still running, and waits for them. */
export async function killAllAgents(): Promise<void> {
  await Promise.all([...live].map((a) => a.kill('SIGKILL')));
}

export interface StraitResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `strait ARGS` (the compiled CLI) to completion. */
export function strait(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<StraitResult> {
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  return new Promise((resolve, reject) => {
    execFile(
      straitNode(),
      [STRAIT_MAIN, ...args],
      { env, cwd: REPO_ROOT, timeout: opts.timeoutMs ?? 20_000, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') {
          reject(new Error(`strait ${args.join(' ')}: ${err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** Runs `strait ARGS -o json`, fails unless it exits 0, and parses its output. */
export async function straitJson<T = unknown>(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<T> {
  const r = await strait([...args, '-o', 'json'], opts);
  if (r.code !== 0) throw new Error(`strait ${args.join(' ')} -o json: exit ${r.code}\n${r.stderr.trim()}`);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`strait ${args.join(' ')} -o json: not JSON:\n${r.stdout.slice(0, 500)}`);
  }
}
