// SPDX-License-Identifier: Apache-2.0
/*
 * strait.c — flat C shim over libbpf 1.1; see strait.h. Each function wraps
 * one libbpf/kernel operation whose arguments do not pass well through FFI
 * (opts structs, va_list callbacks, BTF walking, per-thread setns).
 */
#define _GNU_SOURCE
#include "strait.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h> /* XDP_FLAGS_*, XDP_ATTACHED_* */

/* libbpf 1.1's headers predate tcx (kernel 6.6); the kernel ABI values are stable. */
#define STRAIT_BPF_TCX_INGRESS 46
#define STRAIT_BPF_TCX_EGRESS  47

/* ---- libbpf log capture ---- */

#define LOG_CAP (64 * 1024)
static char log_buf[LOG_CAP];
static size_t log_len;
static int log_max_level;
static int log_echo;

static void log_append(const char *s, size_t n)
{
	if (n >= LOG_CAP) { /* keep only the tail of a huge message */
		s += n - (LOG_CAP - 1);
		n = LOG_CAP - 1;
	}
	if (log_len + n >= LOG_CAP) { /* drop the oldest text, keep the tail */
		size_t drop = log_len + n - (LOG_CAP - 1);
		memmove(log_buf, log_buf + drop, log_len - drop);
		log_len -= drop;
	}
	memcpy(log_buf + log_len, s, n);
	log_len += n;
	log_buf[log_len] = '\0';
}

static int log_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char msg[4096];
	va_list copy;
	int n;

	if ((int)level > log_max_level)
		return 0;
	va_copy(copy, args);
	n = vsnprintf(msg, sizeof(msg), fmt, copy);
	va_end(copy);
	if (n < 0)
		return 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	log_append(msg, (size_t)n);
	if (log_echo)
		fputs(msg, stderr);
	return n;
}

void strait_log_capture(int32_t max_level, int32_t echo)
{
	log_max_level = max_level;
	log_echo = echo;
	libbpf_set_print(log_print);
}

uint32_t strait_log_take(char *buf, uint32_t size)
{
	size_t n = log_len;

	if (!buf || size == 0)
		return 0;
	if (n > size - 1)
		n = size - 1;
	memcpy(buf, log_buf + (log_len - n), n);
	buf[n] = '\0';
	log_len = 0;
	log_buf[0] = '\0';
	return (uint32_t)n;
}

/* ---- BPF_PROG_TEST_RUN ---- */

int strait_prog_test_run(int prog_fd, const void *data, uint32_t size, void *out,
			 uint32_t *out_size, const void *ctx, uint32_t ctx_size,
			 void *ctx_out, uint32_t *ctx_out_size, uint32_t repeat,
			 int32_t *retval, uint32_t *duration_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		.data_in = data,
		.data_size_in = size,
		.data_out = out,
		.data_size_out = out_size ? *out_size : 0,
		.ctx_in = ctx,
		.ctx_size_in = ctx_size,
		.ctx_out = ctx_out,
		.ctx_size_out = ctx_out_size ? *ctx_out_size : 0,
		.repeat = (int)repeat,
	);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	/* The kernel reports the sizes even on -ENOSPC (output truncated). */
	if (out_size)
		*out_size = opts.data_size_out;
	if (ctx_out_size)
		*ctx_out_size = opts.ctx_size_out;
	if (retval)
		*retval = (int32_t)opts.retval;
	if (duration_ns)
		*duration_ns = opts.duration;
	return err < 0 ? err : 0;
}

/* ---- object info ---- */

int strait_map_info(int map_fd, struct strait_map_info *out)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(map_fd, &info, &len);
	if (err < 0)
		return err;
	memset(out, 0, sizeof(*out));
	out->type = info.type;
	out->id = info.id;
	out->key_size = info.key_size;
	out->value_size = info.value_size;
	out->max_entries = info.max_entries;
	out->map_flags = info.map_flags;
	memcpy(out->name, info.name, sizeof(out->name));
	out->name[sizeof(out->name) - 1] = '\0';
	return 0;
}

int strait_prog_info(int prog_fd, struct strait_prog_info *out)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
	if (err < 0)
		return err;
	memset(out, 0, sizeof(*out));
	out->type = info.type;
	out->id = info.id;
	memcpy(out->name, info.name, sizeof(out->name));
	out->name[sizeof(out->name) - 1] = '\0';
	memcpy(out->tag, info.tag, sizeof(out->tag));
	return 0;
}

/* ---- .rodata variables ---- */

static struct bpf_map *find_rodata_map(struct bpf_object *obj)
{
	struct bpf_map *map;

	/* Internal map names are "<obj prefix>.rodata"; the section name is exact. */
	bpf_object__for_each_map(map, obj) {
		const char *sec;

		if (!bpf_map__is_internal(map))
			continue;
		sec = bpf_map__name(map);
		sec = sec ? strchr(sec, '.') : NULL;
		if (sec && strcmp(sec, ".rodata") == 0)
			return map;
	}
	return NULL;
}

int strait_rodata_set(struct bpf_object *obj, const char *name, const void *data,
		      uint32_t size)
{
	const struct btf_var_secinfo *vsi;
	const struct btf_type *sec;
	struct bpf_map *map;
	struct btf *btf;
	size_t map_size;
	void *initial;
	int sec_id, i;

	if (!obj || !name)
		return -EINVAL;
	btf = bpf_object__btf(obj);
	map = find_rodata_map(obj);
	if (!btf || !map)
		return -ENOENT;
	sec_id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (sec_id < 0)
		return -ENOENT;
	sec = btf__type_by_id(btf, sec_id);
	vsi = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vsi++) {
		const struct btf_type *var = btf__type_by_id(btf, vsi->type);
		const char *var_name = btf__name_by_offset(btf, var->name_off);

		if (!var_name || strcmp(var_name, name) != 0)
			continue;
		if (!data)
			return (int)vsi->size;
		if (vsi->size != size)
			return -EINVAL;
		/* bpf_map__initial_value is const in 1.1 but is the mmap-ed
		 * image libbpf copies into the map at load (as skeletons do). */
		initial = (void *)bpf_map__initial_value(map, &map_size);
		if (!initial || (size_t)vsi->offset + size > map_size)
			return -EINVAL;
		memcpy((char *)initial + vsi->offset, data, size);
		return 0;
	}
	return -ENOENT;
}

/* ---- BTF-typed map ---- */

static __u32 find_type_id(const struct btf *btf, const char *name)
{
	int id;

	if (!btf || !name)
		return 0;
	id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
	if (id < 0)
		id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		id = btf__find_by_name_kind(btf, name, BTF_KIND_INT);
	return id < 0 ? 0 : (__u32)id;
}

int strait_map_create_btf(struct bpf_object *obj, uint32_t map_type, const char *name,
			  const char *key_type, const char *value_type,
			  uint32_t key_size, uint32_t value_size,
			  uint32_t max_entries, uint32_t map_flags)
{
	struct btf *btf = obj ? bpf_object__btf(obj) : NULL;
	int btf_fd = btf ? btf__fd(btf) : -1;
	__u32 key_id = find_type_id(btf, key_type);
	__u32 value_id = find_type_id(btf, value_type);
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = map_flags);
	int fd;

	if (btf_fd >= 0 && key_id && value_id &&
	    btf__resolve_size(btf, key_id) == key_size &&
	    btf__resolve_size(btf, value_id) == value_size) {
		opts.btf_fd = btf_fd;
		opts.btf_key_type_id = key_id;
		opts.btf_value_type_id = value_id;
	}
	fd = bpf_map_create(map_type, name, key_size, value_size, max_entries, &opts);
	if (fd < 0 && opts.btf_fd) { /* retry untyped: BTF is a nicety */
		opts.btf_fd = 0;
		opts.btf_key_type_id = 0;
		opts.btf_value_type_id = 0;
		fd = bpf_map_create(map_type, name, key_size, value_size, max_entries, &opts);
	}
	return fd < 0 ? -errno : fd;
}

/* ---- network namespaces ---- */

struct netns_guard {
	int orig_fd; /* -1: not switched */
};

static int netns_enter(const char *netns_path, struct netns_guard *g)
{
	int target;

	g->orig_fd = -1;
	if (!netns_path || !*netns_path)
		return 0;
	/* setns switches only this thread: remember this thread's namespace. */
	g->orig_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (g->orig_fd < 0)
		return -errno;
	target = open(netns_path, O_RDONLY | O_CLOEXEC);
	if (target < 0) {
		int err = -errno;

		close(g->orig_fd);
		g->orig_fd = -1;
		return err;
	}
	if (setns(target, CLONE_NEWNET) < 0) {
		int err = -errno;

		close(target);
		close(g->orig_fd);
		g->orig_fd = -1;
		return err;
	}
	close(target);
	return 0;
}

static void netns_leave(struct netns_guard *g)
{
	if (g->orig_fd < 0)
		return;
	if (setns(g->orig_fd, CLONE_NEWNET) < 0) {
		/* The JS thread would go on in a foreign namespace. */
		fprintf(stderr, "strait: cannot return to the original netns: %s\n",
			strerror(errno));
		abort();
	}
	close(g->orig_fd);
	g->orig_fd = -1;
}

/*
 * Enters netns_path and resolves ifname there: its ifindex (> 0) with *g to
 * leave by, or -errno with the namespace already left.
 */
static int netns_enter_ifindex(const char *netns_path, const char *ifname, struct netns_guard *g)
{
	int err, ifindex;

	err = netns_enter(netns_path, g);
	if (err)
		return err;
	ifindex = (int)if_nametoindex(ifname);
	if (!ifindex) {
		err = -errno;
		netns_leave(g);
		return err;
	}
	return ifindex;
}

int strait_ifindex(const char *netns_path, const char *ifname)
{
	struct netns_guard g;
	int ifindex;

	if (!ifname)
		return -EINVAL;
	ifindex = netns_enter_ifindex(netns_path, ifname, &g);
	if (ifindex > 0)
		netns_leave(&g);
	return ifindex;
}

/* ---- links pinned by path (tcx, XDP) ---- */

/*
 * A link pinned at pin_path by an earlier run gets prog_fd, swapped in
 * atomically: 1. No pin, or a pin whose link cannot take it (its device went
 * away, -ENOLINK, or it is another kind of link), which is then removed so a
 * fresh link can be pinned there: 0. Otherwise -errno.
 */
static int pinned_link_update(const char *pin_path, int prog_fd)
{
	int link_fd, err;

	link_fd = bpf_obj_get(pin_path);
	if (link_fd < 0)
		return 0;
	err = bpf_link_update(link_fd, prog_fd, NULL);
	close(link_fd);
	if (err == 0)
		return 1;
	if (unlink(pin_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* A new link of prog_fd on ifindex, pinned at pin_path: 0 or -errno. */
static int link_create_pinned(int prog_fd, int ifindex, enum bpf_attach_type type,
			      const struct bpf_link_create_opts *opts, const char *pin_path)
{
	int link_fd, err;

	link_fd = bpf_link_create(prog_fd, ifindex, type, opts);
	if (link_fd < 0)
		return link_fd;
	err = bpf_obj_pin(link_fd, pin_path);
	close(link_fd); /* the pin keeps it; a failed pin detaches here */
	return err < 0 ? err : 0;
}

/* What to attach where, for the attach_* ways below. */
struct attach_req {
	int ifindex;
	int prog_fd;
	const char *pin_path;
	int32_t direction;                /* tc */
	struct strait_tc_attachment *tc;  /* tc: handle, priority, updated */
};

/*
 * tc and XDP each have a preferred way to attach (tcx, native) and a
 * fallback (clsact, generic), and number their modes alike. Auto tries the
 * preferred way, then the fallback, keeping the preferred way's error in
 * *preferred_errno; the preferred mode tries only it; any other mode only the
 * fallback. 0 with *out_mode the way that attached, or the error.
 */
enum { ATTACH_AUTO = 0, ATTACH_PREFERRED = 1, ATTACH_FALLBACK = 2 };
_Static_assert(STRAIT_TC_AUTO == ATTACH_AUTO && STRAIT_XDP_AUTO == ATTACH_AUTO &&
	       STRAIT_TC_TCX == ATTACH_PREFERRED && STRAIT_XDP_NATIVE == ATTACH_PREFERRED &&
	       STRAIT_TC_CLSACT == ATTACH_FALLBACK && STRAIT_XDP_GENERIC == ATTACH_FALLBACK,
	       "tc and XDP attach modes are numbered alike");

static int attach_preferring(int32_t mode, int (*attach)(int32_t way, const struct attach_req *req),
			     const struct attach_req *req, int32_t *out_mode, int32_t *preferred_errno)
{
	int err;

	if (mode == ATTACH_AUTO || mode == ATTACH_PREFERRED) {
		err = attach(ATTACH_PREFERRED, req);
		if (err == 0) {
			*out_mode = ATTACH_PREFERRED;
			return 0;
		}
		if (mode == ATTACH_PREFERRED)
			return err;
		*preferred_errno = -err;
	}
	err = attach(ATTACH_FALLBACK, req);
	if (err == 0)
		*out_mode = ATTACH_FALLBACK;
	return err;
}

/* ---- tc ---- */

static int tcx_attach(int ifindex, int32_t direction, int prog_fd, const char *pin_path,
		      struct strait_tc_attachment *out)
{
	enum bpf_attach_type type = (enum bpf_attach_type)(direction == STRAIT_TC_EGRESS ?
		STRAIT_BPF_TCX_EGRESS : STRAIT_BPF_TCX_INGRESS);
	int err;

	if (!pin_path)
		return -EINVAL;
	err = pinned_link_update(pin_path, prog_fd);
	if (err < 0)
		return err;
	if (err == 1) {
		out->updated = 1;
		return 0;
	}
	return link_create_pinned(prog_fd, ifindex, type, NULL, pin_path);
}

static void tc_hook_init(struct bpf_tc_hook *hook, int ifindex, int32_t direction)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = direction == STRAIT_TC_EGRESS ? BPF_TC_EGRESS : BPF_TC_INGRESS;
}

static int clsact_attach(int ifindex, int32_t direction, int prog_fd,
			 struct strait_tc_attachment *out)
{
	struct bpf_tc_hook hook;
	LIBBPF_OPTS(bpf_tc_opts, opts,
		.prog_fd = prog_fd,
		.flags = BPF_TC_F_REPLACE,
		.handle = STRAIT_TC_HANDLE,
		.priority = STRAIT_TC_PRIORITY,
	);
	int err;

	tc_hook_init(&hook, ifindex, direction);
	err = bpf_tc_hook_create(&hook); /* creates the clsact qdisc */
	if (err < 0 && err != -EEXIST)
		return err;
	err = bpf_tc_attach(&hook, &opts);
	if (err < 0)
		return err;
	out->handle = opts.handle;
	out->priority = opts.priority;
	return 0;
}

static int tc_attach_way(int32_t way, const struct attach_req *r)
{
	if (way == STRAIT_TC_TCX)
		return tcx_attach(r->ifindex, r->direction, r->prog_fd, r->pin_path, r->tc);
	return clsact_attach(r->ifindex, r->direction, r->prog_fd, r->tc);
}

int strait_tc_attach(const char *netns_path, const char *ifname, int32_t direction,
		     int prog_fd, int32_t mode, const char *pin_path,
		     struct strait_tc_attachment *out)
{
	struct attach_req req = { .prog_fd = prog_fd, .pin_path = pin_path,
				  .direction = direction, .tc = out };
	struct netns_guard g;
	int err;

	if (!ifname || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	req.ifindex = netns_enter_ifindex(netns_path, ifname, &g);
	if (req.ifindex < 0)
		return req.ifindex;
	out->ifindex = (uint32_t)req.ifindex;
	err = attach_preferring(mode, tc_attach_way, &req, &out->mode, &out->tcx_errno);
	netns_leave(&g);
	return err;
}

int strait_tc_detach(const char *netns_path, const char *ifname, int32_t direction,
		     int32_t mode, const char *pin_path)
{
	struct bpf_tc_hook hook;
	LIBBPF_OPTS(bpf_tc_opts, opts,
		.handle = STRAIT_TC_HANDLE,
		.priority = STRAIT_TC_PRIORITY,
	);
	struct netns_guard g;
	int err, ifindex;

	if (mode == STRAIT_TC_TCX) {
		/* The pin is the link's only long-lived reference. */
		if (!pin_path)
			return -EINVAL;
		return unlink(pin_path) < 0 ? -errno : 0;
	}
	if (mode != STRAIT_TC_CLSACT || !ifname)
		return -EINVAL;
	ifindex = netns_enter_ifindex(netns_path, ifname, &g);
	if (ifindex < 0)
		return ifindex;
	tc_hook_init(&hook, ifindex, direction);
	err = bpf_tc_detach(&hook, &opts);
	netns_leave(&g);
	return err;
}

/* ---- cgroup attach ---- */

/* Is the link pinned at pin_path a cgroup link of this cgroup and type? */
static int cgroup_link_matches(int link_fd, uint64_t cgroup_id, int32_t attach_type)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(link_fd, &info, &len) < 0)
		return 0; /* not a link */
	return info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgroup_id &&
	       info.cgroup.attach_type == (__u32)attach_type;
}

int strait_cgroup_attach(const char *cgroup_path, int32_t attach_type, int prog_fd,
			 const char *pin_path, struct strait_cgroup_attachment *out)
{
	struct stat st;
	int cg_fd, link_fd, err;

	if (!cgroup_path || !pin_path || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	cg_fd = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0)
		return -errno;
	if (fstat(cg_fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	out->cgroup_id = (uint64_t)st.st_ino;

	link_fd = bpf_obj_get(pin_path);
	if (link_fd >= 0) {
		if (cgroup_link_matches(link_fd, out->cgroup_id, attach_type)) {
			err = bpf_link_update(link_fd, prog_fd, NULL);
			close(link_fd);
			if (err == 0)
				out->updated = 1;
			goto out;
		}
		close(link_fd);
		/* Another cgroup (--cgroup changed) or not a cgroup link. */
		if (unlink(pin_path) < 0 && errno != ENOENT) {
			err = -errno;
			goto out;
		}
		out->replaced = 1;
	}
	link_fd = bpf_link_create(prog_fd, cg_fd, (enum bpf_attach_type)attach_type, NULL);
	if (link_fd < 0) {
		err = link_fd;
		goto out;
	}
	err = bpf_obj_pin(link_fd, pin_path);
	close(link_fd); /* the pin keeps it; a failed pin detaches here */
out:
	close(cg_fd);
	return err < 0 ? err : 0;
}

/* ---- BPF iterators ---- */

int64_t strait_iter_run(int prog_fd, const char *netns_path, void *buf, uint32_t size)
{
	char scratch[4096];
	struct netns_guard g;
	int64_t total = 0;
	int link_fd, iter_fd, err;
	ssize_t n;

	link_fd = bpf_link_create(prog_fd, 0, BPF_TRACE_ITER, NULL);
	if (link_fd < 0)
		return link_fd;
	err = netns_enter(netns_path, &g);
	if (err) {
		close(link_fd);
		return err;
	}
	/* The iterator takes the namespace of the thread creating it. */
	iter_fd = bpf_iter_create(link_fd);
	err = iter_fd < 0 ? iter_fd : 0;
	netns_leave(&g);
	if (err) {
		close(link_fd);
		return err;
	}
	for (;;) {
		n = read(iter_fd, scratch, sizeof(scratch));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			total = -errno;
			break;
		}
		if (n == 0)
			break;
		if (buf && (uint64_t)total < size) {
			size_t take = (size_t)n;

			if ((uint64_t)total + take > size)
				take = size - (size_t)total;
			memcpy((char *)buf + total, scratch, take);
		}
		total += n;
	}
	close(iter_fd);
	close(link_fd);
	return total;
}

/* ---- listening sockets inside a network namespace ---- */

/* A socket belongs to the namespace of the thread that creates it, for good:
 * created here (inside netns_path), it can be handed back to the caller's
 * namespace and served from there (Node: net.Server.listen({ fd })). */
int strait_listen_tcp(const char *netns_path, const char *addr, uint16_t port, int32_t backlog)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	struct netns_guard g;
	socklen_t len;
	int family, fd, err, one = 1, zero = 0;

	memset(&ss, 0, sizeof(ss));
	if (!addr || !*addr) {
		/* Every address: one dual-stack socket, as Node's listen() without a host. */
		family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
	} else if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		family = AF_INET6;
	} else {
		return -EINVAL;
	}
	if (family == AF_INET) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		len = sizeof(*sin);
	} else {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		len = sizeof(*sin6);
	}

	err = netns_enter(netns_path, &g);
	if (err)
		return err;
	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	err = fd < 0 ? -errno : 0;
	netns_leave(&g);
	if (err)
		return err;

	/* As libuv: a restarted agent rebinds while old connections sit in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail;
	if (family == AF_INET6 && (!addr || !*addr) &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		goto fail;
	if (listen(fd, backlog > 0 ? backlog : 511) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

/* ---- XDP ---- */

static int32_t xdp_mode_of(__u8 attach_mode)
{
	switch (attach_mode) {
	case XDP_ATTACHED_DRV:
		return STRAIT_XDP_NATIVE;
	case XDP_ATTACHED_SKB:
		return STRAIT_XDP_GENERIC;
	default:
		return 0;
	}
}

static int xdp_attach_way(int32_t way, const struct attach_req *r)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts,
		.flags = way == STRAIT_XDP_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);

	return link_create_pinned(r->prog_fd, r->ifindex, BPF_XDP, &opts, r->pin_path);
}

int strait_xdp_attach(const char *netns_path, const char *ifname, int prog_fd, int32_t mode,
		      const char *pin_path, struct strait_xdp_attachment *out)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	struct attach_req req = { .prog_fd = prog_fd, .pin_path = pin_path };
	struct netns_guard g;
	int err;

	if (!ifname || !pin_path || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	req.ifindex = netns_enter_ifindex(netns_path, ifname, &g);
	if (req.ifindex < 0)
		return req.ifindex;
	out->ifindex = (uint32_t)req.ifindex;
	err = pinned_link_update(pin_path, prog_fd);
	if (err == 1) {
		/* the link keeps the mode it was attached in */
		out->updated = 1;
		if (bpf_xdp_query(req.ifindex, 0, &q) == 0)
			out->mode = xdp_mode_of(q.attach_mode);
		err = 0;
	} else if (err == 0) {
		err = attach_preferring(mode, xdp_attach_way, &req, &out->mode, &out->native_errno);
	}
	netns_leave(&g);
	return err;
}

int strait_xdp_query(const char *netns_path, const char *ifname, uint32_t *prog_id,
		     int32_t *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	struct netns_guard g;
	int err, ifindex;

	if (!ifname || !prog_id || !mode)
		return -EINVAL;
	ifindex = netns_enter_ifindex(netns_path, ifname, &g);
	if (ifindex < 0)
		return ifindex;
	err = bpf_xdp_query(ifindex, 0, &q);
	if (err == 0) {
		*prog_id = q.prog_id;
		*mode = xdp_mode_of(q.attach_mode);
	}
	netns_leave(&g);
	return err;
}
