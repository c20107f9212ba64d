/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * metrics.h — the return convention of every datapath step, and the one
 * place where a packet's outcome is counted and turned into a tc action.
 *
 * Return convention (Katran's FURTHER_PROCESSING, Cilium's DROP_*):
 *   ret < 0          drop; -ret is the DROP_* reason (enum metric_reason)
 *   ret == CONTINUE  this step is done, the caller goes on
 *   ret >= 0         final outcome: a REASON_* below 32, which also fixes the
 *                    tc action (see reason_action()); the reason *is* the
 *                    verdict, so a step cannot return an action without
 *                    saying why
 * The program entry point calls strait_exit() exactly once, so every packet
 * is counted exactly once, under exactly one reason, in packets and bytes.
 */
#ifndef STRAIT_METRICS_H
#define STRAIT_METRICS_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "maps.h"

/* Outside the metric_reason range on purpose: if a CONTINUE ever leaked to
 * strait_exit() it is counted as REASON_UNSPEC (a visible bug) and passed. */
#define CONTINUE 0x7f

/* "Not ours": TC_ACT_UNSPEC (-1) is also TCX_NEXT, so the same value lets
 * the next tcx program run, and means "default action" (pass) under clsact. */
#define STRAIT_ACT_PASS TC_ACT_UNSPEC

/* The reasons are only ever used as integers, so clang would leave the enum
 * out of BTF; this read-only variable keeps `enum metric_reason` in every
 * object, where the agent's codec test and bpftool can read the names. */
const volatile enum metric_reason strait_metric_reason_btf = REASON_UNSPEC;

static __always_inline void metrics_count(__u32 reason, __u32 dir, __u32 bytes)
{
	__u32 idx = METRICS_INDEX(reason, dir);
	struct metrics_value *m;

	m = bpf_map_lookup_elem(&metrics, &idx);
	if (!m)
		return;
	/* Per-CPU slot: plain adds, no atomics needed. */
	m->packets++;
	m->bytes += bytes;
}

/* The tc action that goes with an outcome reason. */
static __always_inline int reason_action(struct __sk_buff *skb, __u32 reason)
{
	switch (reason) {
	case REASON_SERVICE_DNAT:
	case REASON_REVNAT:
	case REASON_ICMP_ERROR_XLATE:
	case REASON_FRAG_XLATE:
	case REASON_CT_RACE_JOINED:
		/* Translated: final for this hook (tcx skips later programs). */
		return TC_ACT_OK;
	case REASON_DSR_DECAP:
	case REASON_DSR_REVNAT:
		/* Translated (decapsulated, or the reply's source rewritten):
		 * the stack delivers / routes it. */
		return TC_ACT_OK;
	case REASON_SERVICE_SNAT:
	case REASON_HAIRPIN_SNAT:
	case REASON_SNAT_REVNAT:
	case REASON_SNAT_ICMP_XLATE:
		/* lib/fib.h armed bpf_redirect() / bpf_redirect_neigh() toward
		 * the backend or the client (SNAT, lib/snat.h). */
	case REASON_DSR_ENCAP:
		/* lib/dsr.h called bpf_redirect() / bpf_redirect_neigh() with
		 * the FIB's answer; this is what those return. */
		return TC_ACT_REDIRECT;
	case REASON_FRAG_NEEDED_REPLY:
	case REASON_NO_ENDPOINTS_REPLY:
		/* The packet was rewritten in place into an ICMP error for the
		 * client: send it back out of the device it came in on. Under
		 * BPF_PROG_TEST_RUN this returns TC_ACT_REDIRECT and nothing
		 * moves. */
		return bpf_redirect(skb->ifindex, 0);
	default:
		return STRAIT_ACT_PASS;
	}
}

/*
 * Count the outcome of one packet and return its tc action. @bytes is the
 * packet length as it arrived (a reply built in place has another length).
 */
static __always_inline int strait_exit(struct __sk_buff *skb, int ret, __u32 dir,
				       __u32 bytes)
{
	__u32 reason;

	if (ret < 0) {
		reason = -ret;
		if (reason >= METRIC_REASONS)
			reason = REASON_UNSPEC;
		metrics_count(reason, dir, bytes);
		return TC_ACT_SHOT;
	}
	reason = ret;
	if (reason >= METRIC_REASONS)
		reason = REASON_UNSPEC;
	metrics_count(reason, dir, bytes);
	return reason_action(skb, reason);
}

#endif /* STRAIT_METRICS_H */
