// SPDX-License-Identifier: Apache-2.0
/*
 * load-common.h — what the C load generators of the benches share
 * (bench/socket-lb-load.c, bench/northsouth-load.c): address parsing, one
 * timed connection, forked workers, the dual-stack line server and the tail
 * of the client's JSON line. Each of them differs only in what it counts and
 * answers, so that both measure the kernel's connection path the same way.
 *
 * The including file defines LOAD_PROG (its name, for error messages) first.
 * Everything here is static: each load generator is one translation unit.
 */
#ifndef STRAIT_BENCH_LOAD_COMMON_H
#define STRAIT_BENCH_LOAD_COMMON_H

#ifndef LOAD_PROG
#error "define LOAD_PROG before including load-common.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The longest reply line one() keeps, with its NUL. */
#define REPLY_MAX 128

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, LOAD_PROG ": %s: %s\n", what, strerror(errno));
	exit(1);
}

/* "ADDR:PORT" or "[ADDR6]:PORT" into *ss and *len; -1 when malformed. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon;
	long port;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		return -1;
	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -1;
		*len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -1;
		*len = sizeof(*a);
	}
	return 0;
}

/*
 * One connection: connect(), send one line, read the one-line reply, close()
 * (the client closes first, so TIME_WAIT stays with the client). 0 with
 * *lat_ns (connect-to-reply) and, when reply is not NULL, the reply line
 * without its newline in reply[REPLY_MAX]; or an errno. timeout NULL: block.
 */
static int one(const struct sockaddr_storage *to, socklen_t len, const struct timeval *timeout,
	       uint64_t *lat_ns, char *reply)
{
	static const char req[] = "x\n";
	char buf[REPLY_MAX];
	size_t got = 0;
	uint64_t t0 = now_ns();
	int fd, on = 1, err = 0;
	ssize_t n;

	fd = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	if (timeout) {
		/* a blocking connect() honours SO_SNDTIMEO (it then fails with EINPROGRESS) */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeout, sizeof(*timeout));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, sizeof(*timeout));
	}
	if (connect(fd, (const struct sockaddr *)to, len) < 0) {
		err = errno;
		goto out;
	}
	if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		err = errno ? errno : EIO;
		goto out;
	}
	for (;;) {
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : ECONNRESET;
			goto out;
		}
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
		if (got == sizeof(buf) - 1) {
			err = EMSGSIZE;
			goto out;
		}
	}
	*lat_ns = now_ns() - t0;
	if (reply) {
		buf[got] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		memcpy(reply, buf, got + 1);
	}
out:
	close(fd);
	return err;
}

/* size bytes shared with the forked workers, zero-filled (anonymous mapping). */
static void *map_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/*
 * Forks n workers, worker k running work(k, arg) then exiting; each dies with
 * us (PR_SET_PDEATHSIG), so a killed bench leaves no load behind.
 */
static void fork_workers(long n, void (*work)(long k, void *arg), void *arg)
{
	long k;

	for (k = 0; k < n; k++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			work(k, arg);
			_exit(0);
		}
	}
}

static void wait_workers(void)
{
	while (wait(NULL) > 0)
		;
}

#define MAX_TARGETS 8

/* A client run: count connections by parallel workers over the targets. */
struct load_client {
	struct sockaddr_storage to[MAX_TARGETS];
	socklen_t len[MAX_TARGETS];
	int targets;
	long count, parallel;
	const struct timeval *timeout; /* NULL: block */
	/* connection i's outcome (err 0: lat_ns and reply are set), in the worker */
	void (*record)(long i, int err, uint64_t lat_ns, const char *reply, void *arg);
	void *arg;
};

/* Worker p makes connections p, p + P, p + 2P, … */
static void client_worker(long p, void *arg)
{
	const struct load_client *c = arg;
	long i;

	for (i = p; i < c->count; i += c->parallel) {
		uint64_t lat = 0;
		char reply[REPLY_MAX];
		/* each worker alternates targets, as the VIP spreads
		 * every worker's connections over the backends */
		long t = (i / c->parallel) % c->targets;
		int err = one(&c->to[t], c->len[t], c->timeout, &lat, reply);

		c->record(i, err, lat, reply, c->arg);
	}
}

/* Runs the client's workers to the end; returns the elapsed ns. */
static uint64_t run_client(const struct load_client *c)
{
	uint64_t t0 = now_ns();

	fork_workers(c->parallel, client_worker, (void *)c);
	wait_workers();
	return now_ns() - t0;
}

/* The client's JSON line from "elapsedNs" on: latNs lists every nonzero slot of lat[count]. */
static void print_elapsed_lat(uint64_t elapsed, const uint64_t *lat, long count)
{
	long i, p;

	printf("\"elapsedNs\":%llu,\"latNs\":[", (unsigned long long)elapsed);
	for (i = 0, p = 0; i < count; i++) {
		if (!lat[i])
			continue;
		printf("%s%llu", p++ ? "," : "", (unsigned long long)lat[i]);
	}
	printf("]}\n");
}

/*
 * Writes the reply line for a connection from peer (IPv4 peers as
 * IPv4-mapped) into reply[size]; returns its length.
 */
typedef int (*reply_fn)(const struct sockaddr_in6 *peer, char *reply, size_t size, const void *arg);

struct serve_args {
	int lfd;
	reply_fn make_reply;
	const void *arg;
};

/* A server worker: accepts forever, answers each line read with the connection's reply. */
static void serve(long k, void *p)
{
	const struct serve_args *s = p;
	char buf[256], reply[192];

	(void)k;
	for (;;) {
		struct sockaddr_in6 peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(s->lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		int rlen;
		ssize_t n;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		rlen = s->make_reply(&peer, reply, sizeof(reply), s->arg);
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			if (memchr(buf, '\n', (size_t)n) && write(fd, reply, (size_t)rlen) < 0)
				break;
		}
		close(fd);
	}
}

/*
 * Dual-stack TCP listener on port; workers processes serve it. Prints "ready"
 * once listening (what the bench waits for), then waits for the workers.
 */
static int run_server(long port, long workers, reply_fn make_reply, const void *arg)
{
	struct sockaddr_in6 a;
	struct serve_args s = { .make_reply = make_reply, .arg = arg };
	int on = 1, off = 0;

	s.lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s.lfd < 0)
		die("socket");
	setsockopt(s.lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	setsockopt(s.lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_port = htons((uint16_t)port);
	a.sin6_addr = in6addr_any;
	if (bind(s.lfd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(s.lfd, 4096) < 0)
		die("listen");
	fork_workers(workers, serve, &s);
	printf("ready\n");
	fflush(stdout);
	wait_workers();
	return 0;
}

/* main(): "client …" or "server …". */
static int load_main(int argc, char **argv, int (*client)(int, char **), int (*server)(int, char **))
{
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc - 2, argv + 2);
	fprintf(stderr, "usage: " LOAD_PROG " client|server …\n");
	return 2;
}

#endif /* STRAIT_BENCH_LOAD_COMMON_H */
