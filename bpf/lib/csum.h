/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * csum.h — Internet checksum arithmetic for the headers we build by hand.
 *
 * Rewrites of existing packets use bpf_l3_csum_replace() / bpf_l4_csum_replace()
 * instead (nat.h): only those helpers know the skb's ip_summed state and
 * keep CHECKSUM_PARTIAL and CHECKSUM_COMPLETE packets right.
 *
 * All sums here are 32-bit partial sums as bpf_csum_diff() returns them
 * (csum_partial() over the raw bytes), folded to the 16-bit field at the end.
 */
#ifndef STRAIT_CSUM_H
#define STRAIT_CSUM_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __always_inline __u32 csum_add(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b); /* end-around carry */
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Partial sum of a buffer (stack or map value); @len must be a multiple of 4. */
static __always_inline __u32 csum_buf(const void *buf, __u32 len, __u32 seed)
{
	return (__u32)bpf_csum_diff(NULL, 0, (__be32 *)buf, len, seed);
}

/* Small chunks: the buffer lives on a stack shared with the caller's frame. */
#define CSUM_CHUNK      64
#define CSUM_MAX_CHUNKS 20 /* 1280 bytes: the largest message we checksum */

/*
 * Partial sum of @len packet bytes at @off, added to @seed. The bytes are
 * copied in chunks to a zeroed stack buffer: bpf_csum_diff() wants a
 * multiple of 4, and the zero padding of an odd tail is exactly what the
 * checksum's own padding rule asks for. Chunks start at even offsets, so
 * 16-bit word alignment is kept across them. Returns -1 on a short packet.
 */
static __always_inline int csum_skb(struct __sk_buff *skb, __u32 off, __u32 len,
				    __u32 seed, __u32 *sum)
{
	/* 4 bytes of slack: the verifier sees round_up(n, 4) as up to n + 3. */
	__u8 buf[CSUM_CHUNK + 4] __attribute__((aligned(8)));
	__u32 acc = seed;
	int i;

	for (i = 0; i < CSUM_MAX_CHUNKS && len; i++) {
		__u32 n = len > CSUM_CHUNK ? CSUM_CHUNK : len;
		__s64 s;

		/* Identity for n in [1, CSUM_CHUNK]; spells the bounds out for
		 * the verifier, which wants a non-zero, bounded size. */
		n = ((n - 1) & (CSUM_CHUNK - 1)) + 1;
		__builtin_memset(buf, 0, sizeof(buf));
		if (bpf_skb_load_bytes(skb, off, buf, n))
			return -1;
		s = bpf_csum_diff(NULL, 0, (__be32 *)buf, (n + 3) & ~3U, acc);
		if (s < 0)
			return -1;
		acc = (__u32)s;
		off += n;
		len -= n;
	}
	if (len)
		return -1;
	*sum = acc;
	return 0;
}

#endif /* STRAIT_CSUM_H */
