// SPDX-License-Identifier: Apache-2.0
/*
 * northsouth-load.c — load generator and backend of bench/northsouth.ts, in C
 * so that the client and the server cost as little and as evenly as possible
 * and what differs between rows is the node's dataplane. Built by the bench
 * into build/bench/northsouth-load.
 *
 *   northsouth-load client --to ADDR:PORT --count N [--parallel P] [--timeout-ms T]
 *       P processes make N connections in all, each: connect(), send one
 *       line, read the one-line reply, close() (the client closes first, so
 *       TIME_WAIT stays with the client). Every connect and read gives up
 *       after T ms (default 2000): a dataplane that loses packets shows as
 *       failures, never as a hang. Prints one JSON line:
 *       {"ok","failed","errnos":{"<errno>":count,…},"firstReply","elapsedNs","latNs":[…]}
 *       latNs: connect-to-reply time of every successful connection;
 *       firstReply: the first reply line (what the backend saw), "" if none.
 *       errno 115 (EINPROGRESS) is a connect timeout, 11 (EAGAIN) a reply timeout.
 *   northsouth-load server --port PORT [--workers W] [--name NAME]
 *       Dual-stack TCP listener; W processes accept and answer each line with
 *       "NAME ADDR:PORT\n", ADDR:PORT being the peer as the socket saw it
 *       (IPv4-mapped addresses printed as IPv4), and close when the client
 *       does. Prints "ready" when listening.
 */
#define _GNU_SOURCE
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

#define MAX_ERRNO 160
#define REPLY_MAX 128

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "northsouth-load: %s: %s\n", what, strerror(errno));
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

/* One connection: 0 with *lat_ns and the reply in reply[], or an errno. */
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
	/* a blocking connect() honours SO_SNDTIMEO (it then fails with EINPROGRESS) */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeout, sizeof(*timeout));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, sizeof(*timeout));
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

struct shared {
	uint64_t ok;
	uint64_t failed;
	uint64_t errnos[MAX_ERRNO];
	int reply_taken;
	char first_reply[REPLY_MAX];
	uint64_t lat[]; /* count slots */
};

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int client(int argc, char **argv)
{
	struct sockaddr_storage to;
	socklen_t len = 0;
	long count = 1000, parallel = 1, timeout_ms = 2000;
	int have_to = 0;
	struct timeval timeout;
	struct shared *sh;
	uint64_t t0, elapsed;
	size_t size;
	long p, i;
	int first;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--to")) {
			if (parse_addr(v, &to, &len) < 0) {
				fprintf(stderr, "northsouth-load client: bad --to %s\n", v);
				return 2;
			}
			have_to = 1, i++;
		} else if (!strcmp(argv[i], "--count"))
			count = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--parallel"))
			parallel = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--timeout-ms"))
			timeout_ms = strtol(v, NULL, 10), i++;
		else {
			fprintf(stderr, "northsouth-load client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!have_to || count < 1 || parallel < 1 || timeout_ms < 1) {
		fprintf(stderr, "usage: northsouth-load client --to ADDR:PORT --count N [--parallel P] [--timeout-ms T]\n");
		return 2;
	}
	timeout.tv_sec = timeout_ms / 1000;
	timeout.tv_usec = (timeout_ms % 1000) * 1000;
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
				char reply[REPLY_MAX];
				int err = one(&to, len, &timeout, &lat, reply);

				if (err == 0) {
					int zero = 0;

					sh->lat[i] = lat;
					__atomic_add_fetch(&sh->ok, 1, __ATOMIC_RELAXED);
					if (!__atomic_load_n(&sh->reply_taken, __ATOMIC_RELAXED) &&
					    __atomic_compare_exchange_n(&sh->reply_taken, &zero, 1, 0,
									__ATOMIC_RELAXED, __ATOMIC_RELAXED))
						memcpy(sh->first_reply, reply, sizeof(reply));
				} else {
					__atomic_add_fetch(&sh->failed, 1, __ATOMIC_RELAXED);
					__atomic_add_fetch(&sh->errnos[err < MAX_ERRNO ? err : 0], 1,
							   __ATOMIC_RELAXED);
				}
			}
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
	elapsed = now_ns() - t0;

	printf("{\"ok\":%llu,\"failed\":%llu,\"errnos\":{", (unsigned long long)sh->ok,
	       (unsigned long long)sh->failed);
	for (i = 0, first = 1; i < MAX_ERRNO; i++) {
		if (!sh->errnos[i])
			continue;
		printf("%s\"%ld\":%llu", first ? "" : ",", i, (unsigned long long)sh->errnos[i]);
		first = 0;
	}
	printf("},\"firstReply\":");
	json_string(sh->first_reply);
	printf(",\"elapsedNs\":%llu,\"latNs\":[", (unsigned long long)elapsed);
	for (i = 0, p = 0; i < count; i++) {
		if (!sh->lat[i])
			continue;
		printf("%s%llu", p++ ? "," : "", (unsigned long long)sh->lat[i]);
	}
	printf("]}\n");
	return 0;
}

static void serve(int lfd, const char *name)
{
	char buf[256], reply[192], addr[INET6_ADDRSTRLEN];

	for (;;) {
		struct sockaddr_in6 peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		const void *a = &peer.sin6_addr;
		int af = AF_INET6, rlen;
		ssize_t n;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		if (IN6_IS_ADDR_V4MAPPED(&peer.sin6_addr)) {
			a = &peer.sin6_addr.s6_addr[12];
			af = AF_INET;
		}
		if (!inet_ntop(af, a, addr, sizeof(addr)))
			strcpy(addr, "?");
		rlen = snprintf(reply, sizeof(reply), "%s %s:%u\n", name, addr, ntohs(peer.sin6_port));
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			if (memchr(buf, '\n', (size_t)n) && write(fd, reply, (size_t)rlen) < 0)
				break;
		}
		close(fd);
	}
}

static int server(int argc, char **argv)
{
	struct sockaddr_in6 a;
	long port = 0, workers = 4, i;
	const char *name = "backend";
	int lfd, on = 1, off = 0;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--port"))
			port = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--workers"))
			workers = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--name"))
			name = v, i++;
		else {
			fprintf(stderr, "northsouth-load server: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (port <= 0 || port > 65535 || workers < 1 || strlen(name) > 64) {
		fprintf(stderr, "usage: northsouth-load server --port PORT [--workers W] [--name NAME]\n");
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
			serve(lfd, name);
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
	fprintf(stderr, "usage: northsouth-load client|server …\n");
	return 2;
}
