// Hairpin on the per-packet path (bpf/lib/uplink.h lb_hairpin): a pod whose
// packet to a ClusterIP selects the pod itself is SNATed to the node's
// address and a port of the SNAT range (lib/snat.h) and redirected back
// toward it (the FIB, mocked); its reply to node:port is reversed into
// ClusterIP -> pod and redirected too. Another client of the same Service is
// DNATed only, as before; a node without SNAT configuration DNATs only.
//
// Address plan (IPv4 / IPv6):
//   pod P       198.18.1.5              2001:2::2:5         the only backend, :8080 TCP, :5353 UDP
//   client C    198.18.0.10             2001:2::1:10        another pod
//   ClusterIP   198.19.0.30             2001:2:0:ff::30     :80 TCP, :53 UDP
//   node        198.18.2.1              2001:2::3:1         config addr4/addr6, SNAT 61000-61999 (or the pod's own port)
import { beforeEach, describe, expect, it } from 'vitest';
import { CT_DIR_REPLY, CT_DIR_SERVICE, CT_F_SNAT, LB_F_REJECT_NO_ENDPOINTS, SNAT_DIR_IN, SNAT_DIR_OUT } from '../../src/bpf/abi.js';
import {
  BpfHarness,
  CASES,
  TARGET_PORT,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  VIP_PORT,
  countedOnce,
  expectChecksumsOk,
  flowFrame,
  planOf,
  useHarness,
  type Family,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { NODE, SNAT_MAX, SNAT_MIN, lastFibLookup, resetNorthSouth, setNodeConfig } from '../lib/north-south.js';
import { addService, protoNumber } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-hairpin';

const harness = useHarness(ROOT, installServices);
const dp = () => harness().dp;

const podOf = (f: Family) => planOf(f).backend(5);
const vipOf = (f: Family) => planOf(f).vip(30);
const otherClient = (f: Family) => planOf(f).client(10);

/** The file's Services, written once. */
function installServices(h: BpfHarness): void {
  for (const [f, proto] of CASES) {
    const id = f * 100 + (proto === 'tcp' ? 30 : 70);
    addService(h.dp, {
      id,
      vip: vipOf(f),
      port: VIP_PORT[proto],
      proto,
      backends: [{ id: id + 1, addr: podOf(f), port: TARGET_PORT[proto] }],
      flags: LB_F_REJECT_NO_ENDPOINTS,
    });
  }
}

beforeEach(() => resetNorthSouth(harness()));

function ctLookup(f: Family, key: { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }) {
  return f === 4 ? dp().maps.ct4.lookup(key) : dp().maps.ct6.lookup(key);
}
function snatLookup(f: Family, key: { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }) {
  return f === 4 ? dp().maps.snat4.lookup(key) : dp().maps.snat6.lookup(key);
}

/** The pod's packet to its own Service from port `sport`. */
const fromPod = (f: Family, proto: L4Proto, sport: number, payload = 'ping') =>
  flowFrame(f, proto, { src: podOf(f), dst: vipOf(f), sport, dport: VIP_PORT[proto], payload });

describe('hairpin: a pod reaching itself through its Service', () => {
  it.each(CASES)('IPv%i %s: forward SNATed to node:port, redirected; reply reversed to ClusterIP -> pod, redirected', (f, proto) => {
    const cport = 45000;
    const fwd = fromPod(f, proto, cport);
    const r = harness().ingress(fwd);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('hairpin_snat', 'ingress', fwd));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(NODE[f]);
    expect(out.ip.dst).toBe(podOf(f));
    expect(out.l4.dport).toBe(TARGET_PORT[proto]);
    // The pod's own port where the translated tuple is unique (as masquerade), else one of the range.
    const sport = out.l4.sport;
    expect(sport === cport || (sport >= SNAT_MIN && sport <= SNAT_MAX), `SNAT port ${sport}`).toBe(true);
    expect(lastFibLookup(dp(), f).dst).toBe(podOf(f));

    // State: the flow is a SNAT flow, with both snat entries.
    const p = protoNumber(proto);
    const skey = { saddr: podOf(f), daddr: vipOf(f), sport: cport, dport: VIP_PORT[proto], proto: p, dir: CT_DIR_SERVICE };
    expect(ctLookup(f, skey)!.flags & CT_F_SNAT).toBe(CT_F_SNAT);
    const ikey = { saddr: podOf(f), daddr: NODE[f], sport: TARGET_PORT[proto], dport: sport, proto: p, dir: SNAT_DIR_IN };
    expect(snatLookup(f, ikey)).toMatchObject({ addr: podOf(f), port: cport });
    expect(snatLookup(f, { ...skey, dir: SNAT_DIR_OUT })).toMatchObject({ addr: NODE[f], port: sport });
    expect(ctLookup(f, { ...ikey, dir: CT_DIR_REPLY })).toBeDefined();

    // The pod's reply to node:port enters the same veth: ClusterIP -> pod again.
    const reply = flowFrame(f, proto, {
      src: podOf(f),
      dst: NODE[f],
      sport: TARGET_PORT[proto],
      dport: sport,
      payload: 'pong',
      ...(proto === 'tcp' ? { flags: { syn: true, ack: true } } : {}),
    });
    const rr = harness().ingress(reply);
    expect(rr.retval).toBe(TC_ACT_REDIRECT);
    expect(rr.counted).toEqual(countedOnce('snat_revnat', 'ingress', reply));
    const back = expectChecksumsOk(rr.data);
    expect(back.ip.src).toBe(vipOf(f));
    expect(back.l4.sport).toBe(VIP_PORT[proto]);
    expect(back.ip.dst).toBe(podOf(f));
    expect(back.l4.dport).toBe(cport);

    // The flow's next packet keeps its port.
    const next = fromPod(f, proto, cport, 'more');
    const again = harness().ingress(proto === 'tcp' ? flowFrame(f, proto, { src: podOf(f), dst: vipOf(f), sport: cport, dport: VIP_PORT[proto], payload: 'more', flags: { ack: true } }) : next);
    expect(again.retval).toBe(TC_ACT_REDIRECT);
    expect(expectChecksumsOk(again.data).l4.sport).toBe(sport);
  });

  it.each(CASES)('IPv%i %s: another client of the same Service is DNATed only', (f, proto) => {
    const frame = flowFrame(f, proto, { src: otherClient(f), dst: vipOf(f), sport: 45001, dport: VIP_PORT[proto], payload: 'hi' });
    const r = harness().ingress(frame);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', frame));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(otherClient(f));
    expect(out.ip.dst).toBe(podOf(f));
  });

  it.each(CASES)('IPv%i %s: without a SNAT range in config the pod is DNATed only (as before)', (f, proto) => {
    setNodeConfig(dp(), { snatMin: 0, snatMax: 0 });
    const frame = fromPod(f, proto, 45002);
    const r = harness().ingress(frame);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', frame));
    expect(expectChecksumsOk(r.data).ip.src).toBe(podOf(f));
  });
});
