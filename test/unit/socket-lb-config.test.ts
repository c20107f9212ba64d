// Socket LB configuration: where the cgroup2 root is found, and what the
// agent flags turn on. Pure: no kernel, no cgroup is touched.
import { describe, expect, it } from 'vitest';
import { parseAgentFlags } from '../../src/agent/command.js';
import { cgroup2Mounts, findCgroup2Root } from '../../src/bpf/socket-lb.js';

const HYBRID = [
  'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
  'tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0',
  'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0',
  'cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0',
].join('\n');
const UNIFIED = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n';

describe('the cgroup v2 root, from /proc/mounts', () => {
  it.each([
    ['hybrid hosts (these machines)', HYBRID, '/sys/fs/cgroup/unified'],
    ['unified hosts (kind nodes)', UNIFIED, '/sys/fs/cgroup'],
    ['no cgroup2 at all', 'proc /proc proc rw 0 0\n', undefined],
    ['octal escapes in the path', 'none /mnt/my\\040cg cgroup2 rw 0 0\n', '/mnt/my cg'],
  ])('%s', (_, mounts, want) => {
    expect(findCgroup2Root(mounts)).toBe(want);
  });

  it('lists every cgroup2 mount, first one first', () => {
    expect(cgroup2Mounts(HYBRID + '\n' + UNIFIED)).toEqual(['/sys/fs/cgroup/unified', '/sys/fs/cgroup']);
  });
});

describe('strait agent socket LB flags', () => {
  const flags = (...extra: string[]) => parseAgentFlags(['--node-name', 'n1', '--log-format', 'json', ...extra]);
  const cgroupOf = (...extra: string[]) => {
    const c = flags(...extra);
    if (c === 'help') throw new Error('help');
    return c.socketLbCgroup;
  };

  it('off by default: never an implicit attach to the machine', () => {
    expect(cgroupOf()).toBeUndefined();
  });
  it('--cgroup PATH turns it on there', () => {
    expect(cgroupOf('--cgroup', '/sys/fs/cgroup/unified/kubepods')).toBe('/sys/fs/cgroup/unified/kubepods');
  });
  it('--socket-lb alone: the cgroup2 root found at run time', () => {
    expect(cgroupOf('--socket-lb')).toBe(findCgroup2Root());
  });
  it('--no-socket-lb wins over --cgroup', () => {
    expect(cgroupOf('--cgroup', '/sys/fs/cgroup/x', '--no-socket-lb')).toBeUndefined();
  });
});
