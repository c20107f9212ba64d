// The kube-proxy twin nodes' pure parts: mode lists, kube-proxy's command line, the metrics
// parser, and the loopback relay's refusal of anything but loopback TCP and absolute Unix
// sockets (its only safety guarantee) — plus one real relay between a Unix socket and a
// loopback TCP echo server. Addresses: 127.0.0.1 only; lab node 198.18.0.3 / 2001:2::3
// (data only).
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { kubeProxyArgs, kubeProxySyncs, parseKubeProxyModes, planKubeProxy } from '../../src/lab/kube-proxy.js';
import { parseEndpoint, parseForward, startRelay } from '../../src/lab/netns-relay.js';

describe('kube-proxy twin nodes', () => {
  test('--kube-proxy-mode lists', () => {
    expect(parseKubeProxyModes('nftables')).toEqual(['nftables']);
    expect(parseKubeProxyModes('nftables, iptables')).toEqual(['nftables', 'iptables']);
    expect(() => parseKubeProxyModes('ipvs')).toThrow(/"ipvs" is not one of nftables, iptables/);
    expect(() => parseKubeProxyModes('')).toThrow(/empty/);
  });

  test("kube-proxy's command line: the node's name and addresses, conntrack left alone, loopback metrics", () => {
    const node = { name: 'node3', ns: 'strait-lab-node3', addr4: '198.18.0.3', addr6: '2001:2::3', stateDir: '/run/strait-lab/node3' };
    const args = kubeProxyArgs(node, 'iptables', '/run/strait-lab/cp/kube-proxy.kubeconfig');
    expect(args).toEqual(expect.arrayContaining([
      '--proxy-mode=iptables',
      '--hostname-override=node3',
      '--detect-local-mode=NodeCIDR',
      '--nodeport-addresses=198.18.0.3/32,2001:2::3/128',
      '--conntrack-max-per-core=0',
      '--metrics-bind-address=127.0.0.1:10249',
      '--kubeconfig=/run/strait-lab/cp/kube-proxy.kubeconfig',
    ]));
    const kp = planKubeProxy(node.stateDir, 'nftables', '/cache/bin');
    expect(kp.bin).toBe('/cache/bin/kube-proxy');
    // every file of a twin lives in its node's state dir (lab down removes the dir)
    for (const p of [kp.log, kp.pidFile, kp.apiSocket, kp.metricsSocket, kp.apiRelayPidFile, kp.nodeRelayPidFile]) expect(p.startsWith(`${node.stateDir}/`)).toBe(true);
  });

  test('sync counts per IP family from /metrics', () => {
    const text = [
      '# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram',
      'kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="0.001"} 0',
      'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 3',
      'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"} 2',
      'kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 0.5',
    ].join('\n');
    expect(kubeProxySyncs(text)).toEqual({ ipv4: 3, ipv6: 2, any: 5 });
    expect(kubeProxySyncs('')).toEqual({ ipv4: 0, ipv6: 0, any: 0 });
  });
});

describe('netns relay', () => {
  test('accepts loopback TCP and absolute Unix sockets only', () => {
    expect(parseEndpoint('tcp:127.0.0.1:6443')).toEqual({ host: '127.0.0.1', port: 6443 });
    expect(parseEndpoint('unix:/run/x.sock')).toEqual({ unix: '/run/x.sock' });
    expect(parseForward('unix:/run/a.sock=tcp:127.18.0.1:80')).toEqual({ listen: { unix: '/run/a.sock' }, target: { host: '127.18.0.1', port: 80 } });
    // Refused strings only: parseEndpoint never connects, so 10.0.0.1 here is data, never a packet.
    for (const bad of ['tcp:198.18.0.1:80', 'tcp:10.0.0.1:80', 'tcp:0.0.0.0:80', 'tcp:[::1]:80', 'tcp:127.0.0.1:0', 'tcp:127.0.0.1:70000', 'unix:relative.sock', `unix:/${'x'.repeat(120)}`, 'http://127.0.0.1']) {
      expect(() => parseEndpoint(bad), bad).toThrow();
    }
    expect(() => parseForward('tcp:127.0.0.1:1')).toThrow(/LISTEN=TARGET/);
  });

  test('relays bytes both ways between a Unix socket and a loopback TCP server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strait-relay-'));
    const echo = createServer((c) => c.pipe(c));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const port = (echo.address() as AddressInfo).port;
    const sock = join(dir, 'r.sock');
    const close = await startRelay([parseForward(`unix:${sock}=tcp:127.0.0.1:${port}`)]);
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const c = connect(sock, () => c.end('hello through the relay'));
        let got = '';
        c.setEncoding('utf8').on('data', (d: string) => (got += d)).on('end', () => resolve(got)).on('error', reject);
      });
      expect(reply).toBe('hello through the relay');
    } finally {
      await close();
      echo.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
