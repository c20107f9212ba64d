// ByteTable, the encoded entry tables of compile/diff/apply: random sets and
// deletes (with colliding, wrapping probe runs: few distinct keys over many
// growths and shrinks) against a Map of the same keys, for key sizes that are
// and are not whole words.
import { describe, expect, it } from 'vitest';

import { ByteTable } from '../../src/compile/byte-table.js';

/** mulberry32: the same operations for the same seed. */
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

function contents(t: ByteTable): Map<string, string> {
  const out = new Map<string, string>();
  for (let s = 0; s < t.slotCount; s++) {
    if (t.isFull(s)) out.set(Buffer.from(t.keyAt(s)).toString('hex'), Buffer.from(t.valueAt(s)).toString('hex'));
  }
  return out;
}

describe('ByteTable', () => {
  it.each([
    { keySize: 4, valueSize: 16, keys: 300 },
    { keySize: 8, valueSize: 4, keys: 50 },
    { keySize: 7, valueSize: 3, keys: 2000 },
    { keySize: 20, valueSize: 20, keys: 1000 },
  ])('random sets and deletes match a Map (key $keySize bytes, value $valueSize, $keys distinct keys)', ({ keySize, valueSize, keys }) => {
    const rnd = random(keySize * 1000 + keys);
    const t = new ByteTable(keySize, valueSize);
    const ref = new Map<string, string>();
    const key = Buffer.alloc(keySize);
    const value = Buffer.alloc(valueSize);
    for (let op = 0; op < 20_000; op++) {
      key.fill(0);
      key.writeUInt32LE(Math.floor(rnd() * keys), 0);
      const hex = key.toString('hex');
      if (rnd() < 0.4) {
        expect(t.delete(key, 0)).toBe(ref.delete(hex));
      } else {
        for (let i = 0; i < valueSize; i++) value[i] = Math.floor(rnd() * 256);
        t.set(key, 0, value, 0);
        ref.set(hex, value.toString('hex'));
      }
      expect(t.size).toBe(ref.size);
      if (op % 997 === 0) expect(contents(t)).toEqual(ref);
    }
    expect(contents(t)).toEqual(ref);
    for (const hex of ref.keys()) expect(t.has(Buffer.from(hex, 'hex'), 0)).toBe(true);
    const copy = t.clone();
    t.delete(Buffer.from([...ref.keys()][0] ?? '00'.repeat(keySize), 'hex'), 0);
    expect(contents(copy)).toEqual(ref);
  });

  it('compares values and copies entries between tables by slot', () => {
    const a = new ByteTable(4, 2);
    const b = new ByteTable(4, 2);
    const k = Buffer.from([1, 0, 0, 0]);
    a.set(k, 0, Buffer.from([7, 7]), 0);
    b.setFrom(a, a.slotOf(k));
    expect(b.sameValue(b.slotOf(k), a, a.slotOf(k))).toBe(true);
    b.set(k, 0, Buffer.from([7, 8]), 0);
    expect(b.sameValue(b.slotOf(k), a, a.slotOf(k))).toBe(false);
    expect(b.deleteFrom(a, a.slotOf(k))).toBe(true);
    expect(b.size).toBe(0);
  });
});
