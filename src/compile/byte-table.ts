// ByteTable: a hash table of fixed-size byte keys to fixed-size byte values,
// held in typed arrays — the encoded entries of one BPF map as compile, diff,
// apply and readCurrent pass them around. No JS object or string per entry:
// 100,000 backends are a few MB outside the JS heap, which the garbage
// collector neither copies nor walks, and an entry goes from compile to the
// kernel's batch buffers as bytes, encoded once.
//
// Open addressing with linear probing over a power-of-two number of slots,
// at most LOAD full; deletion shifts the entries after a removed one back
// (no tombstones). Iteration runs in slot order: deterministic for the same
// sequence of writes, not insertion order.

const LOAD = 0.6;
const MIN_SLOTS = 16;
/** What a table without slots holds (never written: set() grows first). */
const NO_WORDS = new Uint32Array(0);
const NO_BYTES = new Uint8Array(0);
/** The probe tables with keys of up to 8 words share. */
const SHARED_PROBE = new Uint32Array(8);
const SHARED_PROBE_BYTES = new Uint8Array(SHARED_PROBE.buffer);

/** Where a key sits (slot index), or where it would go (-1 - slot) when absent. */
type Probe = number;

export class ByteTable {
  /** Key and value sizes in bytes. */
  readonly keySize: number;
  readonly valueSize: number;
  /** Words (u32) per key: keys are hashed and compared a word at a time (zero-padded). */
  readonly #kw: number;
  #slots: number;
  #mask: number;
  #size = 0;
  #keys: Uint32Array;
  #values: Uint8Array;
  #full: Uint8Array;
  /** A key being looked up, as words. */
  readonly #probe: Uint32Array;
  readonly #probeBytes: Uint8Array;

  constructor(keySize: number, valueSize: number, capacity = 0) {
    this.keySize = keySize;
    this.valueSize = valueSize;
    this.#kw = Math.ceil(keySize / 4);
    // no slots until the first write: an incremental sync makes many tables that stay empty
    this.#slots = capacity > 0 ? slotsFor(capacity) : 0;
    this.#mask = this.#slots - 1;
    this.#keys = capacity > 0 ? new Uint32Array(this.#slots * this.#kw) : NO_WORDS;
    this.#values = capacity > 0 ? new Uint8Array(this.#slots * valueSize) : NO_BYTES;
    this.#full = capacity > 0 ? new Uint8Array(this.#slots) : NO_BYTES;
    // the probe is scratch: tables share one (nothing here runs two lookups at once)
    this.#probe = this.#kw <= SHARED_PROBE.length ? SHARED_PROBE : new Uint32Array(this.#kw);
    this.#probeBytes = this.#probe === SHARED_PROBE ? SHARED_PROBE_BYTES : new Uint8Array(this.#probe.buffer);
  }

  get size(): number {
    return this.#size;
  }

  #frozen = false;

  /** Refuses every write from now on (an empty table shared as a constant). */
  freeze(): void {
    this.#frozen = true;
  }

  #writable(): void {
    if (this.#frozen) throw new Error('ByteTable: frozen (a shared empty table)');
  }

  /** Bytes held outside the JS heap. */
  get byteLength(): number {
    return this.#keys.byteLength + this.#values.byteLength + this.#full.byteLength;
  }

  // ---- keys in: bytes at an offset of a buffer ----

  #load(key: Uint8Array, off: number): void {
    const p = this.#probeBytes;
    const ks = this.keySize;
    if ((ks & 3) !== 0) p.fill(0, ks & ~3, this.#kw * 4); // the last word's padding
    for (let i = 0; i < ks; i++) p[i] = key[off + i] as number;
  }

  #hash(): number {
    return hashWords(this.#probe, 0, this.#kw);
  }

  #sameKey(slot: number): boolean {
    const w = this.#probe;
    const kw = this.#kw;
    const base = slot * kw;
    for (let i = 0; i < kw; i++) if (this.#keys[base + i] !== w[i]) return false;
    return true;
  }

  /** Writes the key in #probe into `slot`. */
  #storeProbe(slot: number): void {
    const kw = this.#kw;
    for (let i = 0; i < kw; i++) this.#keys[slot * kw + i] = this.#probe[i] as number;
  }

  /** Finds the key in #probe. */
  #find(): Probe {
    if (this.#slots === 0) return -1 - 0; // (absent; set() grows first)
    let s = this.#hash() & this.#mask;
    for (;;) {
      if (this.#full[s] === 0) return -1 - s;
      if (this.#sameKey(s)) return s;
      s = (s + 1) & this.#mask;
    }
  }

  /** The slot of the key at key[off..], or -1. */
  slotOf(key: Uint8Array, off = 0): number {
    this.#load(key, off);
    const p = this.#find();
    return p >= 0 ? p : -1;
  }

  has(key: Uint8Array, off = 0): boolean {
    return this.slotOf(key, off) >= 0;
  }

  /** Writes (or replaces) key → value (bytes at the given offsets). */
  set(key: Uint8Array, keyOff: number, value: Uint8Array, valueOff: number): void {
    this.#writable();
    // room first (growing rehashes through #probe), possibly for a key that is already there
    if (this.#size + 1 > this.#slots * LOAD) this.#grow();
    this.#load(key, keyOff);
    let p = this.#find();
    if (p < 0) {
      const s = -1 - p;
      this.#full[s] = 1;
      this.#storeProbe(s);
      this.#size++;
      p = s;
    }
    copyBytes(value, valueOff, this.#values, p * this.valueSize, this.valueSize);
  }

  /** Deletes the key at key[off..]; false when absent. */
  delete(key: Uint8Array, off = 0): boolean {
    this.#writable();
    this.#load(key, off);
    const p = this.#find();
    if (p < 0) return false;
    this.#removeSlot(p);
    return true;
  }

  /** Backward-shift deletion: the entries after the hole that would be found through it move back. */
  #removeSlot(slot: number): void {
    const kw = this.#kw;
    const vs = this.valueSize;
    let hole = slot;
    let s = (slot + 1) & this.#mask;
    while (this.#full[s] === 1) {
      const home = this.#homeOf(s);
      // s may move into the hole when its home is not in the cyclic range (hole, s]
      if (hole <= s ? home <= hole || home > s : home <= hole && home > s) {
        this.#keys.copyWithin(hole * kw, s * kw, (s + 1) * kw);
        this.#values.copyWithin(hole * vs, s * vs, (s + 1) * vs);
        hole = s;
      }
      s = (s + 1) & this.#mask;
    }
    this.#full[hole] = 0;
    this.#keys.fill(0, hole * kw, (hole + 1) * kw);
    this.#size--;
  }

  #homeOf(slot: number): number {
    return hashWords(this.#keys, slot * this.#kw, this.#kw) & this.#mask;
  }

  /** Room for `capacity` entries without growing (compile sizes its tables from the last ones). */
  reserve(capacity: number): void {
    this.#writable();
    if (capacity <= this.#slots * LOAD) return;
    if (this.#size === 0) {
      // nothing to rehash: the slots it needs, at once
      if (this.#slots > 0) {
        release(this.#keys);
        release(this.#values);
        release(this.#full);
      }
      this.#slots = slotsFor(capacity);
      this.#mask = this.#slots - 1;
      this.#keys = new Uint32Array(this.#slots * this.#kw);
      this.#values = new Uint8Array(this.#slots * this.valueSize);
      this.#full = new Uint8Array(this.#slots);
      return;
    }
    while (capacity > this.#slots * LOAD) this.#grow();
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldValues = this.#values;
    const oldFull = this.#full;
    const oldSlots = this.#slots;
    this.#slots = oldSlots === 0 ? MIN_SLOTS : oldSlots * 2;
    this.#mask = this.#slots - 1;
    this.#keys = new Uint32Array(this.#slots * this.#kw);
    this.#values = new Uint8Array(this.#slots * this.valueSize);
    this.#full = new Uint8Array(this.#slots);
    const kw = this.#kw;
    const vs = this.valueSize;
    const keys = this.#keys;
    const full = this.#full;
    const mask = this.#mask;
    for (let s = 0; s < oldSlots; s++) {
      if (oldFull[s] === 0) continue;
      let t = hashWords(oldKeys, s * kw, kw) & mask;
      while (full[t] === 1) t = (t + 1) & mask;
      full[t] = 1;
      for (let i = 0; i < kw; i++) keys[t * kw + i] = oldKeys[s * kw + i] as number;
      copyBytes(oldValues, s * vs, this.#values, t * vs, vs);
    }
    if (oldSlots > 0) {
      release(oldKeys);
      release(oldValues);
      release(oldFull);
    }
  }

  // ---- slots: what iteration and the callers that found a slot read ----

  /** The number of slots (iterate 0..slotCount-1 with isFull). */
  get slotCount(): number {
    return this.#slots;
  }

  isFull(slot: number): boolean {
    return this.#full[slot] === 1;
  }

  /** The key bytes of a full slot (a view: copy it before the table changes). */
  keyAt(slot: number): Uint8Array {
    return new Uint8Array(this.#keys.buffer, slot * this.#kw * 4, this.keySize);
  }

  /** The value bytes of a full slot (a view: copy it before the table changes). */
  valueAt(slot: number): Uint8Array {
    return this.#values.subarray(slot * this.valueSize, (slot + 1) * this.valueSize);
  }

  /** The value in `slot` read as a little-endian u32 (a value of 4 bytes or more). */
  valueU32(slot: number): number {
    const v = this.#values;
    const o = slot * this.valueSize;
    return ((v[o] as number) | ((v[o + 1] as number) << 8) | ((v[o + 2] as number) << 16) | ((v[o + 3] as number) << 24)) >>> 0;
  }

  /** Byte `i` of the value in `slot`. */
  valueByte(slot: number, i: number): number {
    return this.#values[slot * this.valueSize + i] as number;
  }

  /** Copies the key of `slot` into `out` at `off`. */
  copyKey(slot: number, out: Uint8Array, off: number): void {
    const kw = this.#kw;
    const p = this.#probe;
    for (let i = 0; i < kw; i++) p[i] = this.#keys[slot * kw + i] as number;
    copyBytes(this.#probeBytes, 0, out, off, this.keySize);
  }

  copyValue(slot: number, out: Uint8Array, off: number): void {
    copyBytes(this.#values, slot * this.valueSize, out, off, this.valueSize);
  }

  /** The value in `slot` of this table equals the value in `otherSlot` of `other` (same sizes). */
  sameValue(slot: number, other: ByteTable, otherSlot: number): boolean {
    const vs = this.valueSize;
    const a = this.#values;
    const b = other.#values;
    const ao = slot * vs;
    const bo = otherSlot * vs;
    for (let i = 0; i < vs; i++) if (a[ao + i] !== b[bo + i]) return false;
    return true;
  }

  /** Loads #probe with the key in `slot` of `other` (same key size). */
  #loadFrom(other: ByteTable, slot: number): void {
    const kw = this.#kw;
    const from = other.#keys;
    const p = this.#probe;
    for (let i = 0; i < kw; i++) p[i] = from[slot * kw + i] as number;
  }

  /** Sets key → value taking both from a slot of another table (same sizes). */
  setFrom(other: ByteTable, slot: number): void {
    this.#writable();
    if (this.#size + 1 > this.#slots * LOAD) this.#grow();
    this.#loadFrom(other, slot);
    let p = this.#find();
    if (p < 0) {
      p = -1 - p;
      this.#full[p] = 1;
      this.#storeProbe(p);
      this.#size++;
    }
    copyBytes(other.#values, slot * other.valueSize, this.#values, p * this.valueSize, this.valueSize);
  }

  /** Deletes the key found in a slot of another table; false when absent. */
  deleteFrom(other: ByteTable, slot: number): boolean {
    this.#writable();
    this.#loadFrom(other, slot);
    const p = this.#find();
    if (p < 0) return false;
    this.#removeSlot(p);
    return true;
  }

  /** The slot of the key found in a slot of another table, or -1. */
  slotOfFrom(other: ByteTable, slot: number): number {
    this.#loadFrom(other, slot);
    const p = this.#find();
    return p >= 0 ? p : -1;
  }

  clone(): ByteTable {
    const t = new ByteTable(this.keySize, this.valueSize);
    t.#slots = this.#slots;
    t.#mask = this.#mask;
    t.#size = this.#size;
    t.#keys = this.#slots === 0 ? NO_WORDS : this.#keys.slice();
    t.#values = this.#slots === 0 ? NO_BYTES : this.#values.slice();
    t.#full = this.#slots === 0 ? NO_BYTES : this.#full.slice();
    return t;
  }
}

/**
 * Frees a typed array's memory now rather than when the garbage collector
 * gets to its (by then old) wrapper object: ArrayBuffer.prototype.transfer(0)
 * detaches it. Only for arrays this module allocated and no one else views.
 */
export function release(a: ArrayBufferView): void {
  (a.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer }).transfer?.(0);
}

/** murmur3's 32-bit mix over `n` words of `w` from `at`. */
function hashWords(w: Uint32Array, at: number, n: number): number {
  let h = 0x9747b28c ^ n;
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ (w[at + i] as number), 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
    h = Math.imul(h, 0x1b873593);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Copies n bytes; a loop for the small values entries hold (subarray would allocate a view each time). */
function copyBytes(from: Uint8Array, fromOff: number, to: Uint8Array, toOff: number, n: number): void {
  if (n > 64) {
    to.set(from.subarray(fromOff, fromOff + n), toOff);
    return;
  }
  for (let i = 0; i < n; i++) to[toOff + i] = from[fromOff + i] as number;
}

function slotsFor(capacity: number): number {
  let n = MIN_SLOTS;
  while (n * LOAD < capacity) n *= 2;
  return n;
}
