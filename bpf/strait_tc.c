// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_tc.c — the tc programs of a node's uplink: parse, dispatch by
 * family, count the outcome once, return its action. The logic lives in
 * lib/uplink.h and the headers it includes.
 *
 * Attach strait_tc_ingress to the uplink's tcx ingress (or clsact ingress)
 * and strait_tc_egress to its egress. Traffic that is not ours returns
 * TC_ACT_UNSPEC (= TCX_NEXT), translated traffic TC_ACT_OK, drops
 * TC_ACT_SHOT, no-endpoints replies the bpf_redirect() result.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/settings.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/uplink.h"

SEC("tc")
int strait_tc_ingress(struct __sk_buff *skb)
{
	__u32 bytes = skb->len; /* as it arrived: a reply is built in place */
	struct pkt p = {};
	int ret;

	ret = parse_packet(skb, &p);
	if (ret == CONTINUE)
		ret = p.family == PKT_IPV6 ? lb6_ingress(skb, &p) : lb4_ingress(skb, &p);
	return strait_exit(skb, ret, METRIC_DIR_INGRESS, bytes);
}

SEC("tc")
int strait_tc_egress(struct __sk_buff *skb)
{
	__u32 bytes = skb->len;
	struct pkt p = {};
	int ret;

	ret = parse_packet(skb, &p);
	if (ret == CONTINUE)
		ret = p.family == PKT_IPV6 ? lb6_egress(skb, &p) : lb4_egress(skb, &p);
	return strait_exit(skb, ret, METRIC_DIR_EGRESS, bytes);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
