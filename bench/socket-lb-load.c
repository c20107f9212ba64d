// SPDX-License-Identifier: Apache-2.0
/*
 * socket-lb-load.c — load generator and echo server of bench/socket-lb.ts, in
 * C so that what is measured is the kernel's connection path, not a
 * runtime's. Built by the bench into build/bench/socket-lb-load.
 *
 *   socket-lb-load client --to ADDR:PORT|[ADDR]:PORT … --count N [--parallel P] [--cgroup DIR]
 *       P processes make N connections in all, each: connect(), send one line,
 *       read the one-line reply, close(); each process goes round the T --to
 *       addresses, one connection each. --cgroup DIR: join that cgroup v2
 *       directory (write our pid to DIR/cgroup.procs) before any socket.
 *       Prints one JSON line: {"ok","failed","firstErrno","elapsedNs","latNs":[…]}
 *       (latNs: every successful connection's connect-to-reply time).
 *   socket-lb-load server --port PORT [--workers W]
 *       Dual-stack TCP listener; W processes accept, answer each line with
 *       "ok\n", and close when the client does. Prints "ready" when listening.
 */
#define _GNU_SOURCE
#define LOAD_PROG "socket-lb-load"
#include <fcntl.h>

#include "load-common.h"

struct shared {
	uint64_t ok;
	uint64_t failed;
	int first_errno;
	uint64_t lat[]; /* count slots */
};

/* In a worker: connection i's outcome into the shared counters. */
static void record(long i, int err, uint64_t lat, const char *reply, void *arg)
{
	struct shared *sh = arg;

	(void)reply;
	if (err == 0) {
		sh->lat[i] = lat;
		__atomic_add_fetch(&sh->ok, 1, __ATOMIC_RELAXED);
	} else {
		int zero = 0;

		__atomic_add_fetch(&sh->failed, 1, __ATOMIC_RELAXED);
		__atomic_compare_exchange_n(&sh->first_errno, &zero, err, 0,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
}

static int client(int argc, char **argv)
{
	struct load_client c = { .count = 1000, .parallel = 1, .record = record };
	const char *cgroup = NULL;
	struct shared *sh;
	uint64_t elapsed;
	long i;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--to")) {
			if (c.targets == MAX_TARGETS || parse_addr(v, &c.to[c.targets], &c.len[c.targets]) < 0) {
				fprintf(stderr, "socket-lb-load client: bad or too many --to: %s\n", v);
				return 2;
			}
			c.targets++, i++;
		}
		else if (!strcmp(argv[i], "--count"))
			c.count = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--parallel"))
			c.parallel = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--cgroup"))
			cgroup = v, i++;
		else {
			fprintf(stderr, "socket-lb-load client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (c.targets == 0 || c.count < 1 || c.parallel < 1) {
		fprintf(stderr, "usage: socket-lb-load client --to ADDR:PORT --count N [--parallel P] [--cgroup DIR]\n");
		return 2;
	}
	if (cgroup) {
		char path[4096], pid[32];
		int fd, n;

		snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			die(path);
		n = snprintf(pid, sizeof(pid), "%d", getpid());
		if (write(fd, pid, (size_t)n) != n)
			die(path);
		close(fd);
	}
	sh = c.arg = map_shared(sizeof(*sh) + (size_t)c.count * sizeof(uint64_t));
	elapsed = run_client(&c);

	printf("{\"ok\":%llu,\"failed\":%llu,\"firstErrno\":%d,",
	       (unsigned long long)sh->ok, (unsigned long long)sh->failed, sh->first_errno);
	print_elapsed_lat(elapsed, sh->lat, c.count);
	return 0;
}

static int reply_ok(const struct sockaddr_in6 *peer, char *reply, size_t size, const void *arg)
{
	(void)peer, (void)arg;
	return snprintf(reply, size, "ok\n");
}

static int server(int argc, char **argv)
{
	long port = 0, workers = 16, i;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--port"))
			port = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--workers"))
			workers = strtol(v, NULL, 10), i++;
		else {
			fprintf(stderr, "socket-lb-load server: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (port <= 0 || port > 65535 || workers < 1) {
		fprintf(stderr, "usage: socket-lb-load server --port PORT [--workers W]\n");
		return 2;
	}
	return run_server(port, workers, reply_ok, NULL);
}

int main(int argc, char **argv)
{
	return load_main(argc, argv, client, server);
}
