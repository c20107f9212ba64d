// The `config` map entry the agent writes (src/agent/node-config.ts): node
// addresses (SNAT sources), SNAT and NodePort ranges, uplinks, modes; and the
// --snat-port-range flag.
import { describe, expect, it } from 'vitest';
import { NODE_MODE_SOCKET_LB, nodeConfig } from '../../src/bpf/abi.js';
import { parseAgentFlags } from '../../src/agent/command.js';
import {
  DEFAULT_NODEPORT_RANGE,
  DEFAULT_SNAT_PORT_RANGE,
  nodeConfigValue,
  parsePortRange,
  rangesOverlap,
  sameNodeConfig,
} from '../../src/agent/node-config.js';

const base = {
  uplinkIfindexes: [3],
  socketLb: false,
  snatPorts: DEFAULT_SNAT_PORT_RANGE,
  nodePorts: DEFAULT_NODEPORT_RANGE,
};

describe('nodeConfigValue', () => {
  it('takes the first address of each family as the SNAT source', () => {
    const v = nodeConfigValue({ ...base, addresses: ['2001:2::1', '198.18.0.1', '198.18.0.9', '2001:2::9'] });
    expect(v).toMatchObject({ addr4: '198.18.0.1', addr6: '2001:2::1', snatPortMin: 61000, snatPortMax: 65535, nodeportMin: 30000, nodeportMax: 32767 });
    // It encodes as the C struct does.
    expect(nodeConfig.decode(nodeConfig.encode(v))).toEqual(v);
  });

  it('leaves a family without an address zero (the datapath then does not SNAT it)', () => {
    expect(nodeConfigValue({ ...base, addresses: ['198.18.0.1'] })).toMatchObject({ addr4: '198.18.0.1', addr6: '::' });
    expect(nodeConfigValue({ ...base, addresses: [] })).toMatchObject({ addr4: '0.0.0.0', addr6: '::' });
  });

  it('keeps at most four uplinks, zero-filled', () => {
    expect(nodeConfigValue({ ...base, addresses: [], uplinkIfindexes: [5, 6] }).uplinkIfindex).toEqual([5, 6, 0, 0]);
    expect(nodeConfigValue({ ...base, addresses: [], uplinkIfindexes: [1, 2, 3, 4, 5] }).uplinkIfindex).toEqual([1, 2, 3, 4]);
  });

  it('sets the socket LB mode bit', () => {
    expect(nodeConfigValue({ ...base, addresses: [], socketLb: true }).modes).toBe(NODE_MODE_SOCKET_LB);
    expect(nodeConfigValue({ ...base, addresses: [] }).modes).toBe(0);
  });

  it('compares entries field by field', () => {
    const a = nodeConfigValue({ ...base, addresses: ['198.18.0.1'] });
    expect(sameNodeConfig(a, { ...a, uplinkIfindex: [...a.uplinkIfindex] })).toBe(true);
    expect(sameNodeConfig(a, { ...a, addr4: '198.18.0.2' })).toBe(false);
    expect(sameNodeConfig(a, { ...a, uplinkIfindex: [3, 1, 0, 0] })).toBe(false);
  });
});

describe('port ranges', () => {
  it.each([
    ['61000-65535', { min: 61000, max: 65535 }],
    [' 40000 - 40001 ', { min: 40000, max: 40001 }],
    ['5-5', { min: 5, max: 5 }],
  ])('%j parses', (text, want) => expect(parsePortRange('--x', text)).toEqual(want));

  it.each(['', '61000', '0-10', '10-5', '1-65536', 'a-b', '1-2-3'])('%j is refused with the flag named', (text) => {
    expect(() => parsePortRange('--snat-port-range', text)).toThrow(/--snat-port-range/);
  });

  it('knows when ranges overlap', () => {
    expect(rangesOverlap({ min: 1, max: 10 }, { min: 10, max: 20 })).toBe(true);
    expect(rangesOverlap({ min: 1, max: 9 }, { min: 10, max: 20 })).toBe(false);
  });

  it('the default SNAT range is clear of the NodePort range and of Linux\'s ephemeral ports (32768-60999)', () => {
    expect(rangesOverlap(DEFAULT_SNAT_PORT_RANGE, DEFAULT_NODEPORT_RANGE)).toBe(false);
    expect(rangesOverlap(DEFAULT_SNAT_PORT_RANGE, { min: 32768, max: 60999 })).toBe(false);
  });
});

describe('strait agent --snat-port-range', () => {
  const flags = ['--node-name', 'n1', '--manifests', '/tmp/none'];
  it('defaults to 61000-65535 and takes MIN-MAX', () => {
    const d = parseAgentFlags(flags);
    const c = parseAgentFlags([...flags, '--snat-port-range', '40000-49999']);
    if (d === 'help' || c === 'help') throw new Error('help');
    expect(d.snatPortRange).toEqual({ min: 61000, max: 65535 });
    expect(c.snatPortRange).toEqual({ min: 40000, max: 49999 });
  });
  it('refuses a range that overlaps the NodePorts', () => {
    expect(() => parseAgentFlags([...flags, '--snat-port-range', '32000-40000'])).toThrow(/overlaps the NodePort range/);
  });
});
