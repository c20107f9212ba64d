// --devices: names and glob patterns (e.g. `up0,lxc*`) of the devices the tc
// programs attach to. Patterns are re-resolved on every sync and on a short
// rescan timer, so a device that appears later (a pod's veth) is attached
// without waiting for a Service change; a device that vanished is forgotten
// (its link pin removed). Literal names must exist at start, as before.
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** How often the agent looks for new devices matching a pattern (when --devices has one). */
export const DEVICE_RESCAN_MS = 1000;

/** True for a pattern with glob characters (`*`, `?`, `[...]`). */
export function isDevicePattern(spec: string): boolean {
  return /[*?[]/.test(spec);
}

/** A shell-style glob (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) as an anchored RegExp. */
export function devicePatternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The devices of `available` that `specs` (names or patterns) select, in the order found. */
export function selectDevices(specs: readonly string[], available: readonly string[]): string[] {
  const res = specs.map((s) => (isDevicePattern(s) ? devicePatternRegExp(s) : s));
  return available.filter((name) => res.some((r) => (typeof r === 'string' ? r === name : r.test(name))));
}

export interface Device {
  readonly name: string;
  readonly ifindex: number;
}

/**
 * The devices of a network namespace (a /run/netns name or path, or the
 * agent's own when undefined). Another namespace is listed with `ip`.
 */
export async function listDevices(netns: string | undefined): Promise<Device[]> {
  if (netns === undefined || netns === '') {
    const out: Device[] = [];
    for (const name of readdirSync('/sys/class/net')) {
      try {
        out.push({ name, ifindex: Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8')) });
      } catch {
        /* gone meanwhile */
      }
    }
    return out;
  }
  const named = /^\/run\/netns\/([^/]+)$/.exec(netns)?.[1] ?? (netns.includes('/') ? undefined : netns);
  const [cmd, args] = named !== undefined
    ? ['ip', ['-n', named, '-j', 'link', 'show']]
    : ['nsenter', [`--net=${netns}`, 'ip', '-j', 'link', 'show']];
  const { stdout } = await execFileP(cmd, args as string[], { timeout: 10_000 });
  return (JSON.parse(stdout) as Array<{ ifname: string; ifindex: number }>).map((l) => ({ name: l.ifname, ifindex: l.ifindex }));
}
