// A throw-away cgroup v2 directory for tests and benches that attach socket-LB
// programs: created under the machine's cgroup2 mount (found in /proc/mounts,
// never hard-coded) as <mount>/<prefix><pid>, so the programs only ever see the
// sockets of processes the test put there (clients join with
// `echo-client --cgroup <reachablePath>`). Never the mount itself: attaching there would
// translate every socket of the machine.
//
// Safety: the name must start with 'strait-test-'; create() first removes
// leftovers of crashed runs with the same prefix whose pid is gone (killing
// what is still inside them — only processes a test put there); destroy()
// kills what is left inside and removes the directory, and a process 'exit'
// hook does the same if destroy() was never called.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { findCgroup2Root } from '../../src/bpf/socket-lb.js';

const PREFIX_RE = /^strait-test-[a-z0-9-]+-$/;

function pidsIn(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e: unknown) {
    return e instanceof Error && 'code' in e && e.code === 'EPERM';
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Kills every process inside dir (a test cgroup), then removes it; retries while they exit. */
function removeCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const pid of pidsIn(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    try {
      rmdirSync(dir);
      return;
    } catch (e: unknown) {
      if (e instanceof Error && 'code' in e && e.code === 'ENOENT') return;
      if (!(e instanceof Error && 'code' in e && e.code === 'EBUSY')) throw e;
    }
    sleepSync(100);
  }
  throw new Error(`cgroup ${dir} still busy: ${pidsIn(dir).join(' ')}`);
}

const live = new Set<TestCgroup>();
let hooked = false;

export class TestCgroup {
  /** Absolute path of the directory. */
  readonly path: string;
  private removed = false;

  private constructor(path: string) {
    this.path = path;
    live.add(this);
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const cg of live) cg.destroy();
      });
    }
  }

  /** `<cgroup2 mount>/<prefix><this pid>`; prefix like 'strait-test-sock-'. */
  static create(prefix: string): TestCgroup {
    if (!PREFIX_RE.test(prefix)) throw new Error(`cgroup prefix ${prefix} must match ${PREFIX_RE}`);
    const root = findCgroup2Root();
    if (root === undefined) throw new Error('no cgroup2 mount in /proc/mounts');
    for (const name of readdirSync(root)) {
      const m = name.startsWith(prefix) ? /^(\d+)$/.exec(name.slice(prefix.length)) : null;
      if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) removeCgroup(join(root, name));
    }
    const path = join(root, `${prefix}${process.pid}`);
    if (path === root) throw new Error('refusing the cgroup2 root');
    removeCgroup(path);
    mkdirSync(path);
    return new TestCgroup(path);
  }

  /**
   * The directory as any process of the machine reaches it, whatever its
   * mount namespace: `ip netns exec` remounts /sys, so a client inside a lab
   * namespace cannot see <mount>/… — it goes through this process's root
   * (/proc/<pid>/root/…) instead. Valid while this process lives.
   */
  get reachablePath(): string {
    return `/proc/${process.pid}/root${this.path}`;
  }

  /** Processes inside now. */
  pids(): number[] {
    return pidsIn(this.path);
  }

  /** Kills what is inside and removes the directory (idempotent). */
  destroy(): void {
    if (this.removed) return;
    this.removed = true;
    live.delete(this);
    removeCgroup(this.path);
  }
}
