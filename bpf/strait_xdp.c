// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_xdp.c — the XDP program of a node's uplink (`strait agent --xdp`):
 * parse, dispatch by family, count what it finished, return its action.
 * The logic lives in lib/xdp.h (and the headers shared with tc: parse.h,
 * lb.h, conntrack.h, dsr.h, all built for xdp_md through lib/ctx.h).
 *
 * Attach natively where the driver has XDP (veth does), generic otherwise.
 * Whatever it does not finish goes on to the tc programs with XDP_PASS,
 * uncounted: tc counts it.
 */
#define STRAIT_XDP 1

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/settings.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/xdp.h"

SEC("xdp")
int strait_xdp(struct xdp_md *ctx)
{
	__u32 bytes = ctx_len(ctx); /* as it arrived: encapsulation grows it */
	struct pkt p = {};
	int act = XDP_PASS;
	int ret;

	ret = parse_packet(ctx, &p);
	if (ret != CONTINUE)
		return XDP_PASS; /* not IP, or malformed: tc judges and counts */
	ret = p.family == PKT_IPV6 ? xdp6_ingress(ctx, &p, &act) : xdp4_ingress(ctx, &p, &act);
	return xdp_exit(ret, act, bytes);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
