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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "socket-lb-load: %s: %s\n", what, strerror(errno));
	exit(1);
}

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

/* One connection: 0 and *lat_ns, or an errno. */
static int one(const struct sockaddr_storage *to, socklen_t len, uint64_t *lat_ns)
{
	static const char req[] = "x\n";
	char buf[64];
	uint64_t t0 = now_ns();
	int fd, one_ = 1, err = 0;
	ssize_t n;

	fd = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof(one_));
	if (connect(fd, (const struct sockaddr *)to, len) < 0) {
		err = errno;
		goto out;
	}
	if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		err = errno ? errno : EIO;
		goto out;
	}
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : ECONNRESET;
			goto out;
		}
		if (memchr(buf, '\n', (size_t)n))
			break;
	}
	*lat_ns = now_ns() - t0;
out:
	close(fd);
	return err;
}

struct shared {
	uint64_t ok;
	uint64_t failed;
	int first_errno;
	uint64_t lat[]; /* count slots */
};

#define MAX_TARGETS 8

static int client(int argc, char **argv)
{
	struct sockaddr_storage to[MAX_TARGETS];
	socklen_t len[MAX_TARGETS];
	const char *cgroup = NULL;
	long count = 1000, parallel = 1;
	int targets = 0;
	struct shared *sh;
	uint64_t t0, elapsed;
	size_t size;
	long p, i;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--to")) {
			if (targets == MAX_TARGETS || parse_addr(v, &to[targets], &len[targets]) < 0) {
				fprintf(stderr, "socket-lb-load client: bad or too many --to: %s\n", v);
				return 2;
			}
			targets++, i++;
		}
		else if (!strcmp(argv[i], "--count"))
			count = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--parallel"))
			parallel = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--cgroup"))
			cgroup = v, i++;
		else {
			fprintf(stderr, "socket-lb-load client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (targets == 0 || count < 1 || parallel < 1) {
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
	size = sizeof(*sh) + (size_t)count * sizeof(uint64_t);
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	memset(sh, 0, sizeof(*sh));

	t0 = now_ns();
	for (p = 0; p < parallel; p++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			/* worker p makes connections p, p + P, p + 2P, … */
			for (i = p; i < count; i += parallel) {
				uint64_t lat = 0;
				/* each worker alternates targets, as the VIP spreads
				 * every worker's connections over the backends */
				long t = (i / parallel) % targets;
				int err = one(&to[t], len[t], &lat);

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
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
	elapsed = now_ns() - t0;

	printf("{\"ok\":%llu,\"failed\":%llu,\"firstErrno\":%d,\"elapsedNs\":%llu,\"latNs\":[",
	       (unsigned long long)sh->ok, (unsigned long long)sh->failed, sh->first_errno,
	       (unsigned long long)elapsed);
	for (i = 0, p = 0; i < count; i++) {
		if (!sh->lat[i])
			continue;
		printf("%s%llu", p++ ? "," : "", (unsigned long long)sh->lat[i]);
	}
	printf("]}\n");
	return 0;
}

static void serve(int lfd)
{
	static const char reply[] = "ok\n";
	char buf[256];

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		ssize_t n;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			if (memchr(buf, '\n', (size_t)n) && write(fd, reply, sizeof(reply) - 1) < 0)
				break;
		}
		close(fd);
	}
}

static int server(int argc, char **argv)
{
	struct sockaddr_in6 a;
	long port = 0, workers = 16, i;
	int lfd, on = 1, off = 0;

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
	lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_port = htons((uint16_t)port);
	a.sin6_addr = in6addr_any;
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(lfd, 4096) < 0)
		die("listen");
	for (i = 0; i < workers; i++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			serve(lfd);
			_exit(0);
		}
	}
	printf("ready\n");
	fflush(stdout);
	while (wait(NULL) > 0)
		;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "server"))
		return server(argc - 2, argv + 2);
	fprintf(stderr, "usage: socket-lb-load client|server …\n");
	return 2;
}
