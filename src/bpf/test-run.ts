// BPF_PROG_TEST_RUN: run a loaded program on a crafted packet.
import { BpfError } from './errors.js';
import { loadNative, type Native } from './native.js';

export interface ProgTestRunOptions {
  /** The packet, from the Ethernet header on (tc and XDP). */
  data: Buffer;
  /** A context (struct __sk_buff for tc: see skbContext). */
  ctx?: Buffer;
  /** Runs; durationNs is the mean per run. Default 1. */
  repeat?: number;
  /** Room for the output packet; default data.length + 4096 (programs may grow it). */
  dataOutSize?: number;
}

export interface ProgTestRunResult {
  /** The program's return value (a tc verdict, TCX_NEXT = -1, …). */
  retval: number;
  /** The packet as the program left it. */
  data: Buffer;
  /** Mean nanoseconds per run, as the kernel measured. */
  durationNs: number;
  /** The context after the run, when one was passed. */
  ctx?: Buffer;
}

export function progTestRun(
  prog: { fd: number } | number,
  opts: ProgTestRunOptions,
  native: Native = loadNative(),
): ProgTestRunResult {
  const fd = typeof prog === 'number' ? prog : prog.fd;
  const outCap = opts.dataOutSize ?? opts.data.length + 4096;
  const out = Buffer.alloc(outCap);
  const outSize = Buffer.alloc(4);
  outSize.writeUInt32LE(outCap, 0);
  const ctxOut = opts.ctx ? Buffer.alloc(opts.ctx.length) : null;
  const ctxOutSize = Buffer.alloc(4);
  ctxOutSize.writeUInt32LE(ctxOut?.length ?? 0, 0);
  const retval = Buffer.alloc(4);
  const duration = Buffer.alloc(4);
  const ret = native.strait_prog_test_run(
    fd,
    opts.data,
    opts.data.length,
    out,
    outSize,
    opts.ctx ?? null,
    opts.ctx?.length ?? 0,
    ctxOut,
    ctxOutSize,
    opts.repeat ?? 1,
    retval,
    duration,
  );
  if (ret < 0) {
    const needed = outSize.readUInt32LE(0);
    throw new BpfError(
      `BPF_PROG_TEST_RUN prog fd ${fd}`,
      -ret,
      needed > outCap ? `output of ${needed} bytes exceeds dataOutSize ${outCap}` : undefined,
    );
  }
  const result: ProgTestRunResult = {
    retval: retval.readInt32LE(0),
    data: out.subarray(0, outSize.readUInt32LE(0)),
    durationNs: duration.readUInt32LE(0),
  };
  if (ctxOut) result.ctx = ctxOut.subarray(0, ctxOutSize.readUInt32LE(0));
  return result;
}

/** sizeof(struct __sk_buff) and the offsets BPF_PROG_TEST_RUN lets tc set. */
export const SK_BUFF_SIZE = 192;
const SKB_MARK = 8;
const SKB_PRIORITY = 32;
const SKB_INGRESS_IFINDEX = 36;
const SKB_IFINDEX = 40;
const SKB_CB = 48; // __u32 cb[5]

export interface SkbContextOptions {
  /** skb->dev: must exist in the caller's network namespace (> 1), else ENODEV. */
  ifindex?: number;
  /** skb->skb_iif */
  ingressIfindex?: number;
  mark?: number;
  priority?: number;
  /** Up to 5 words of skb->cb. */
  cb?: readonly number[];
}

/**
 * A struct __sk_buff for BPF_PROG_TEST_RUN of a tc program. The kernel
 * rejects (EINVAL) a context with anything non-zero outside mark, priority,
 * ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and
 * hwtstamp; this builds only the first five.
 */
export function skbContext(opts: SkbContextOptions = {}): Buffer {
  const b = Buffer.alloc(SK_BUFF_SIZE);
  b.writeUInt32LE(opts.mark ?? 0, SKB_MARK);
  b.writeUInt32LE(opts.priority ?? 0, SKB_PRIORITY);
  b.writeUInt32LE(opts.ingressIfindex ?? 0, SKB_INGRESS_IFINDEX);
  b.writeUInt32LE(opts.ifindex ?? 0, SKB_IFINDEX);
  const cb = opts.cb ?? [];
  if (cb.length > 5) throw new RangeError('skb cb holds 5 words');
  cb.forEach((w, i) => b.writeUInt32LE(w, SKB_CB + 4 * i));
  return b;
}
