// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_sock_destroy.c — an iter/udp program that destroys connected UDP
 * sockets translated by socket LB to a backend that has gone, with the
 * bpf_sock_destroy() kfunc (6.5) — found through their sock_peer storage
 * (lib/sock.h), written at connect(): the socket gets ECONNABORTED and is
 * disconnected, so its owner (a DNS client, say) reconnects through the
 * frontend and lands on a live backend (cilium#27300).
 *
 * Not attached: the agent creates an iterator after a sync that deleted
 * backends, once per network namespace (an iterator walks the namespace of
 * the process that creates it), reads it to the end — the program runs once
 * per UDP socket meanwhile — and closes it. The output is the cookie (__u64)
 * of every socket destroyed.
 *
 * A separate object from strait_sock.o: a kernel without the kfunc fails
 * only this load, and socket LB works on without it.
 *
 * The kernel types below are the few members used, relocated by CO-RE
 * against the running kernel's BTF (libbpf finds members inside anonymous
 * unions by name), so no vmlinux.h is needed next to the uapi headers.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/settings.h"
#include "lib/sock.h"

#define AF_INET  2
#define AF_INET6 10

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

SEC("iter/udp")
int sock_destroy_udp(struct bpf_iter__udp *ctx)
{
	/* udp_sock starts with its sock_common (inet_sock -> sock). */
	struct sock_common *sk = (struct sock_common *)ctx->udp_sk;
	union strait_addr daddr = {};
	struct sock_peer *st;
	__u8 family;
	__be16 dport;
	__u64 cookie;

	if (!sk)
		return 0;
	dport = sk->skc_dport;
	if (dport == 0)
		return 0; /* not connected */
	st = bpf_sk_storage_get(&sock_peer, sk, 0, 0);
	if (!st)
		return 0; /* never translated at connect() */
	if (sk->skc_family == AF_INET) {
		family = 4;
		daddr.v4 = sk->skc_daddr;
	} else if (sk->skc_family == AF_INET6) {
		daddr.w[0] = sk->skc_v6_daddr.in6_u.u6_addr32[0];
		daddr.w[1] = sk->skc_v6_daddr.in6_u.u6_addr32[1];
		daddr.w[2] = sk->skc_v6_daddr.in6_u.u6_addr32[2];
		daddr.w[3] = sk->skc_v6_daddr.in6_u.u6_addr32[3];
		family = 6;
		if (ip6_is_v4mapped(&daddr)) {
			family = 4;
			daddr.v4 = daddr.w[3];
		}
	} else {
		return 0;
	}
	if (!sock_peer_backend_gone(st, family, &daddr, dport))
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	if (bpf_sock_destroy(sk) == 0)
		bpf_seq_write(ctx->meta->seq, &cookie, sizeof(cookie));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
