// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * empty_xdp.c — an XDP program that does nothing: the BPF_PROG_TEST_RUN floor
 * the XDP benchmark compares against.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int empty_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
