// --devices names and glob patterns (src/agent/devices.ts): which devices of a node they select.
import { describe, expect, it } from 'vitest';
import { devicePatternRegExp, isDevicePattern, listDevices, selectDevices } from '../../src/agent/devices.js';

describe('--devices patterns', () => {
  it.each([
    ['up0', false],
    ['lxc*', true],
    ['eth?', true],
    ['veth[0-9]', true],
  ])('%s is a pattern: %s', (spec, want) => {
    expect(isDevicePattern(spec)).toBe(want);
  });

  it.each([
    ['lxc*', 'lxc1a2b3c4d', true],
    ['lxc*', 'lxc', true],
    ['lxc*', 'up0', false],
    ['lxc*', 'xlxc0', false],
    ['eth?', 'eth0', true],
    ['eth?', 'eth10', false],
    ['bk[12]', 'bk2', true],
    ['bk[12]', 'bk3', false],
    ['bk[!12]', 'bk3', true],
    ['bk[0-9]', 'bk7', true],
    ['a.b*', 'a.bc', true],
    ['a.b*', 'axbc', false],
    ['x[', 'x[', true],
  ])('%s matches %s: %s', (pattern, name, want) => {
    expect(devicePatternRegExp(pattern).test(name)).toBe(want);
  });

  it('selects literal names and pattern matches, in the order the devices are listed', () => {
    const available = ['lo', 'up0', 'lxc0000aaaa', 'eth0', 'lxc1111bbbb'];
    expect(selectDevices(['up0', 'lxc*'], available)).toEqual(['up0', 'lxc0000aaaa', 'lxc1111bbbb']);
    expect(selectDevices(['lxc*'], ['lo', 'up0'])).toEqual([]);
    expect(selectDevices(['nosuch'], available)).toEqual([]);
  });

  it('lists the devices of its own namespace with their ifindex', async () => {
    const devs = await listDevices(undefined);
    expect(devs.find((d) => d.name === 'lo')?.ifindex).toBe(1);
  });
});
