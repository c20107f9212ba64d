// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_xdp_bench.c — strait_xdp.c with only the benchmark restore hook
 * (lib/dsr.h dsr_test, lib/xdp.h xdp_bench_restore) compiled in, for
 * bench/xdp.ts: BPF_PROG_TEST_RUN's repeat mode then times the production
 * path of one established packet, plus the undo. Never attached.
 *
 * Two more programs measure that undo on its own, so the bench can say what
 * the production path costs without it. The undo cannot run alone in repeat
 * mode (it removes what an encapsulation added), so:
 *  - strait_xdp_undo: one encapsulation's bpf_xdp_adjust_head() and the
 *    undo, exactly as xdp4_push() and xdp_bench_restore() do them;
 *  - strait_xdp_adjust_pair: the two bpf_xdp_adjust_head() calls alone;
 * undo ≈ (undo − empty) − (pair − empty) / 2 (the two calls cost the same).
 */
#define STRAIT_BENCH_HOOKS 1
#include "strait_xdp.c"

SEC("xdp")
int strait_xdp_undo(struct xdp_md *ctx)
{
	struct ethhdr saved = {};

	XDP_BENCH_SAVE(ctx, saved);
	if (bpf_xdp_adjust_head(ctx, -(int)DSR4_OVERHEAD))
		return XDP_ABORTED;
	XDP_BENCH_RESTORE(ctx, saved, DSR4_OVERHEAD);
	return XDP_TX;
}

SEC("xdp")
int strait_xdp_adjust_pair(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -(int)DSR4_OVERHEAD) || bpf_xdp_adjust_head(ctx, DSR4_OVERHEAD))
		return XDP_ABORTED;
	return XDP_TX;
}
