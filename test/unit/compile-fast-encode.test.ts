// The fast encoders compile uses for service_slots entries and backends4
// values write exactly the codec's bytes (and are in use: the ABI's layouts
// are the ones they write).
import { describe, expect, it } from 'vitest';

import { lb4Backend, lbSlot, lbSlotKey } from '../../src/bpf/abi.js';
import { FAST_BACKEND4, FAST_SLOTS, writeBackend4Value, writeSlotEntry } from '../../src/compile/entry-table.js';
import { ipv4Value } from '../../src/model/ip.js';

function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const quad = (n: number): string => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

describe('fast encoders', () => {
  it('are in use on this machine (the ABI layouts match)', () => {
    expect(FAST_SLOTS).toBe(true);
    expect(FAST_BACKEND4).toBe(true);
  });

  it('service_slots: the codec\'s bytes', () => {
    const rnd = random(1);
    const key = Buffer.alloc(8);
    const value = Buffer.alloc(4);
    for (let i = 0; i < 2000; i++) {
      const serviceId = Math.floor(rnd() * 2 ** 32);
      const slot = Math.floor(rnd() * 2 ** 32);
      const backendId = Math.floor(rnd() * 2 ** 32);
      expect(writeSlotEntry(serviceId, slot, backendId, key, value)).toBe(true);
      expect(key).toEqual(lbSlotKey.encode({ serviceId, slot }));
      expect(value).toEqual(lbSlot.encode({ backendId }));
    }
    expect(writeSlotEntry(-1, 1, 1, key, value)).toBe(false);
    expect(writeSlotEntry(1, 2 ** 32, 1, key, value)).toBe(false);
  });

  it('backends4 values: the codec\'s bytes', () => {
    const rnd = random(2);
    const value = Buffer.alloc(16);
    for (let i = 0; i < 2000; i++) {
      const v = {
        addr: quad(Math.floor(rnd() * 2 ** 32)),
        nodeAddr: quad(Math.floor(rnd() * 2 ** 32)),
        port: Math.floor(rnd() * 65536),
        proto: Math.floor(rnd() * 256),
        state: Math.floor(rnd() * 256),
        flags: Math.floor(rnd() * 256),
        zone: Math.floor(rnd() * 65536),
      };
      expect(writeBackend4Value(ipv4Value(v.addr), ipv4Value(v.nodeAddr), v.port, v.proto, v.state, v.flags, v.zone, value)).toBe(true);
      expect(value).toEqual(lb4Backend.encode(v));
    }
    expect(writeBackend4Value(1, 1, 65536, 6, 0, 0, 0, value)).toBe(false);
  });
});
