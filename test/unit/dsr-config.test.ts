// `strait agent --dsr / --xdp` without a kernel: the flags, the node modes in
// the `config` entry, which frontends compile sets LB_F_DSR on (north-south,
// not externalTrafficPolicy: Local, every endpoint on the frontend's port),
// and what `strait lb list` says about the others.
//
// Address plan: fixtures of compile-fixtures.ts (node-a 198.18.0.1, pods
// 198.18.16.0/20, LB / external IPs 198.19.100.0/24, 2001:2:0:30::/64).
import { describe, expect, it } from 'vitest';
import {
  LB_F_DSR,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
  LB_SCOPE_EXTERNAL,
  NODE_MODE_DSR,
  NODE_MODE_SOCKET_LB,
  NODE_MODE_XDP,
  type LbService,
} from '../../src/bpf/abi.js';
import { AGENT_USAGE, parseAgentFlags } from '../../src/agent/command.js';
import { DEFAULT_NODEPORT_RANGE, DEFAULT_SNAT_PORT_RANGE, nodeConfigValue } from '../../src/agent/node-config.js';
import { lbList } from '../../src/cli/inspect.js';
import { CompiledServices } from '../../src/compile/compile.js';
import { IdRegistry } from '../../src/compile/ids.js';
import type { EndpointSlice, Service } from '../../src/model/index.js';
import { ep, lbStatus, local, model, slice, svc } from './compile-fixtures.js';

describe('strait agent --dsr / --xdp flags', () => {
  const flags = (...extra: string[]) => {
    const c = parseAgentFlags(['--node-name', 'n1', '--log-format', 'json', ...extra]);
    if (c === 'help') throw new Error('help');
    return c;
  };

  it('both off by default', () => {
    expect(flags()).toMatchObject({ dsr: false, xdp: undefined });
  });

  it.each([
    [['--dsr'], { dsr: true, xdp: undefined }],
    [['--xdp'], { dsr: false, xdp: 'auto' }],
    [['--xdp', '--xdp-mode', 'generic'], { xdp: 'generic' }],
    [['--xdp', '--xdp-mode', 'native', '--dsr'], { dsr: true, xdp: 'native' }],
    [['--xdp-mode', 'native'], { xdp: undefined }],
  ] as const)('%j', (args, want) => {
    expect(flags(...args)).toMatchObject(want);
  });

  it('an unknown XDP mode is a clear error', () => {
    expect(() => flags('--xdp', '--xdp-mode', 'offload')).toThrow('--xdp-mode: want auto, native or generic, got offload');
  });

  it('--help documents them', () => {
    expect(AGENT_USAGE).toMatch(/--dsr +direct server return/);
    expect(AGENT_USAGE).toMatch(/--xdp +XDP on the uplinks/);
    expect(AGENT_USAGE).toMatch(/--xdp-mode auto\|native\|generic/);
  });
});

describe('the config entry carries the modes', () => {
  const base = { addresses: ['198.18.0.1'], uplinkIfindexes: [3], snatPorts: DEFAULT_SNAT_PORT_RANGE, nodePorts: DEFAULT_NODEPORT_RANGE };
  it.each([
    [{ socketLb: false }, 0],
    [{ socketLb: false, dsr: true }, NODE_MODE_DSR],
    [{ socketLb: false, xdp: true }, NODE_MODE_XDP],
    [{ socketLb: true, dsr: true, xdp: true }, NODE_MODE_SOCKET_LB | NODE_MODE_DSR | NODE_MODE_XDP],
  ])('%j → modes %i', (input, modes) => {
    expect(nodeConfigValue({ ...base, ...input }).modes).toBe(modes);
  });
});

// LB 198.19.100.1:80 → pods :80 (DSR can keep the port); LB .2:80 → pods :8080 (it cannot);
// LB .3:80 externalTrafficPolicy: Local; NodePort 30090 → pods :30090.
function cluster(): { services: Service[]; slices: EndpointSlice[] } {
  const http = (targetPort: number) => ({ name: 'http', port: 80, protocol: 'TCP' as const, targetPort });
  return {
    services: [
      svc('same-port', { type: 'LoadBalancer', clusterIPs: ['198.19.0.1', '2001:2:0:20::1'], ports: [{ ...http(80), nodePort: 30080 }] }, lbStatus('198.19.100.1', '2001:2:0:30::1')),
      svc('other-port', { type: 'LoadBalancer', clusterIP: '198.19.0.2', ports: [{ ...http(8080), nodePort: 30081 }] }, lbStatus('198.19.100.2')),
      svc('local', { type: 'LoadBalancer', clusterIP: '198.19.0.3', ports: [{ ...http(80), nodePort: 30082 }], externalTrafficPolicy: 'Local', healthCheckNodePort: 30999 }, lbStatus('198.19.100.3')),
      svc('node-port', { type: 'NodePort', clusterIP: '198.19.0.4', ports: [{ name: 'http', port: 30090, protocol: 'TCP', targetPort: 30090, nodePort: 30090 }] }),
    ],
    slices: [
      slice('same-port', 'same-port-v4', 'IPv4', [['http', 80]], [ep('198.18.17.1'), local('198.18.16.1')]),
      slice('same-port', 'same-port-v6', 'IPv6', [['http', 80]], [ep('2001:2:0:10::2')]),
      slice('other-port', 'other-port-v4', 'IPv4', [['http', 8080]], [ep('198.18.17.2')]),
      slice('local', 'local-v4', 'IPv4', [['http', 80]], [local('198.18.16.3'), ep('198.18.17.3')]),
      slice('node-port', 'node-port-v4', 'IPv4', [['http', 30090]], [ep('198.18.17.4')]),
    ],
  };
}

function compiled(dsr: boolean) {
  const { services, slices } = cluster();
  const c = new CompiledServices({ dsr }).compileAll(model(services, slices), new IdRegistry());
  const byFrontend = new Map<string, LbService>();
  for (const { key, value } of [...c.maps.services4.values(), ...c.maps.services6.values()]) {
    if (key.scope === LB_SCOPE_EXTERNAL) byFrontend.set(`${key.addr}:${key.port}`, value);
  }
  return byFrontend;
}

describe('compile: LB_F_DSR', () => {
  const on = compiled(true);
  const dsr = (fe: string) => ((on.get(fe)?.flags ?? 0) & LB_F_DSR) !== 0;

  it.each([
    ['LoadBalancer IPv4, endpoints on the frontend port', '198.19.100.1:80', true],
    ['LoadBalancer IPv6, same', '2001:2:0:30::1:80', true],
    ['its NodePort: 30080 → pods :80 cannot be kept', '198.18.0.1:30080', false],
    ['its ClusterIP: east-west, never DSR', '198.19.0.1:80', false],
    ['LoadBalancer whose targetPort is 8080', '198.19.100.2:80', false],
    ['externalTrafficPolicy: Local (only local endpoints)', '198.19.100.3:80', false],
    ['a NodePort whose pods listen on the node port', '198.18.0.1:30090', true],
  ])('%s: %s → %s', (_name, fe, want) => {
    expect(on.has(fe), `frontend ${fe} compiled`).toBe(true);
    expect(dsr(fe)).toBe(want);
  });

  it('without --dsr no frontend has it', () => {
    for (const [fe, value] of compiled(false)) expect(value.flags & LB_F_DSR, fe).toBe(0);
  });

  it('the other flags do not change with --dsr', () => {
    const off = compiled(false);
    for (const [fe, value] of on) expect(value.flags & ~LB_F_DSR, fe).toBe(off.get(fe)?.flags);
    expect(on.get('198.19.100.1:80')?.kind).toBe(LB_KIND_LOAD_BALANCER);
    expect(on.get('198.18.0.1:30090')?.kind).toBe(LB_KIND_NODE_PORT);
  });
});

describe('strait lb list: dsr, or why not', () => {
  /** Pinned-map stand-ins with what lbList reads. */
  function listed(dsrNode: boolean) {
    const { services, slices } = cluster();
    const c = new CompiledServices({ dsr: dsrNode }).compileAll(model(services, slices), new IdRegistry());
    const table = <K, V>(entries: Iterable<{ key: K; value: V }>, keyOf: (k: K) => string) => {
      const m = new Map<string, { key: K; value: V }>();
      for (const e of entries) m.set(keyOf(e.key), e);
      return {
        lookup: (k: K) => m.get(keyOf(k))?.value,
        entries: function* () {
          for (const e of m.values()) yield [e.key, e.value] as [K, V];
        },
      };
    };
    const maps = {
      services4: table(c.maps.services4.values(), (k) => JSON.stringify(k)),
      services6: table(c.maps.services6.values(), (k) => JSON.stringify(k)),
      serviceSlots: table(c.maps.serviceSlots.values(), (k) => JSON.stringify(k)),
      backends4: table(c.maps.backends4.values(), String),
      backends6: table(c.maps.backends6.values(), String),
      serviceNames: table(c.maps.serviceNames.values(), String),
      config: { lookup: () => ({ modes: dsrNode ? NODE_MODE_DSR : 0 }) },
    };
    const view = lbList(maps as never, undefined);
    return new Map(view.frontends.filter((f) => f.scope === 'external').map((f) => [f.frontend, f]));
  }

  it('with --dsr: dsr where it can, "snat: targetPort≠port" where it cannot', () => {
    const fe = listed(true);
    expect(fe.get('198.19.100.1:80/TCP')).toMatchObject({ remote: 'dsr', remoteWhy: null });
    expect(fe.get('198.19.100.2:80/TCP')).toMatchObject({ remote: 'snat', remoteWhy: 'targetPort≠port' });
    expect(fe.get('198.18.0.1:30080/TCP')).toMatchObject({ remote: 'snat', remoteWhy: 'targetPort≠port' });
    expect(fe.get('198.19.100.3:80/TCP')).toMatchObject({ remote: 'local-only', remoteWhy: null });
    expect(fe.get('198.19.0.1:80/TCP')).toMatchObject({ remote: 'dnat', remoteWhy: null });
  });

  it('without --dsr: plain snat, no reason to give', () => {
    const fe = listed(false);
    expect(fe.get('198.19.100.2:80/TCP')).toMatchObject({ remote: 'snat', remoteWhy: null });
    expect(fe.get('198.19.100.1:80/TCP')).toMatchObject({ remote: 'snat', remoteWhy: null });
  });
});
