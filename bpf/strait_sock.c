// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_sock.c — socket-level load balancing: the cgroup sock_addr
 * programs, attached to the cgroup v2 root (or a subtree) so that every
 * socket of pods and host processes below it is covered. Each program reads
 * its sockaddr, calls lib/sock.h and returns the verdict; the logic lives
 * there.
 *
 * Loaded by src/bpf/socket-lb.ts next to strait_tc.o, adopting the same
 * pinned maps (maps.h defines them all for every object), plus sock_peer
 * (lib/sock.h), shared with strait_sock_destroy.o.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/settings.h"
#include "lib/sock.h"

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx, 1);
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx, 1);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_fwd(ctx, 0);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_fwd(ctx, 0);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_rev(ctx, 1);
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_rev(ctx, 1);
}

SEC("cgroup/getpeername4")
int sock_peername4(struct bpf_sock_addr *ctx)
{
	return sock4_rev(ctx, 0);
}

SEC("cgroup/getpeername6")
int sock_peername6(struct bpf_sock_addr *ctx)
{
	return sock6_rev(ctx, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
