/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * settings.h — load-time configuration as `const volatile` .rodata
 * (libbpf-bootstrap style): the agent writes `settings` into the object's
 * .rodata before load, the verifier then sees constants. The defaults below
 * are what an object loaded without an agent (bpftool, tests) runs with.
 */
#ifndef STRAIT_SETTINGS_H
#define STRAIT_SETTINGS_H

#include "abi.h"

#define NSEC_PER_SEC 1000000000ULL

const volatile struct lb_settings settings = {
	/* nf_conntrack's SYN_SENT is 120s; a minute is plenty for a handshake
	 * through a load balancer and frees half-open entries sooner. */
	.ct_tcp_syn_ns = 60 * NSEC_PER_SEC,
	/* 6h, shorter than nf_conntrack's 5 days: idle long-lived flows are
	 * picked up again loosely (same backend while slots are unchanged). */
	.ct_tcp_established_ns = 21600 * NSEC_PER_SEC,
	.ct_tcp_closing_ns = 10 * NSEC_PER_SEC,
	.ct_udp_ns = 60 * NSEC_PER_SEC,
	.ct_icmp_ns = 30 * NSEC_PER_SEC,
	.frag_ns = 2 * NSEC_PER_SEC,
	.hash_seed = 0, /* random per node, set by the agent */
	.icmp_rate = 100,
	.icmp_burst = 200,
};

#endif /* STRAIT_SETTINGS_H */
