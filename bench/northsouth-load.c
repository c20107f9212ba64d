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
#define LOAD_PROG "northsouth-load"

#include "load-common.h"

#define MAX_ERRNO 160

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

/* In a worker: connection i's outcome into the shared counters. */
static void record(long i, int err, uint64_t lat, const char *reply, void *arg)
{
	struct shared *sh = arg;

	if (err == 0) {
		int zero = 0;

		sh->lat[i] = lat;
		__atomic_add_fetch(&sh->ok, 1, __ATOMIC_RELAXED);
		if (!__atomic_load_n(&sh->reply_taken, __ATOMIC_RELAXED) &&
		    __atomic_compare_exchange_n(&sh->reply_taken, &zero, 1, 0,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			memcpy(sh->first_reply, reply, REPLY_MAX);
	} else {
		__atomic_add_fetch(&sh->failed, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&sh->errnos[err < MAX_ERRNO ? err : 0], 1, __ATOMIC_RELAXED);
	}
}

static int client(int argc, char **argv)
{
	struct load_client c = { .targets = 1, .count = 1000, .parallel = 1, .record = record };
	struct timeval timeout;
	long timeout_ms = 2000;
	int have_to = 0;
	struct shared *sh;
	uint64_t elapsed;
	long i;
	int first;

	for (i = 0; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";

		if (!strcmp(argv[i], "--to")) {
			if (parse_addr(v, &c.to[0], &c.len[0]) < 0) {
				fprintf(stderr, "northsouth-load client: bad --to %s\n", v);
				return 2;
			}
			have_to = 1, i++;
		} else if (!strcmp(argv[i], "--count"))
			c.count = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--parallel"))
			c.parallel = strtol(v, NULL, 10), i++;
		else if (!strcmp(argv[i], "--timeout-ms"))
			timeout_ms = strtol(v, NULL, 10), i++;
		else {
			fprintf(stderr, "northsouth-load client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!have_to || c.count < 1 || c.parallel < 1 || timeout_ms < 1) {
		fprintf(stderr, "usage: northsouth-load client --to ADDR:PORT --count N [--parallel P] [--timeout-ms T]\n");
		return 2;
	}
	timeout.tv_sec = timeout_ms / 1000;
	timeout.tv_usec = (timeout_ms % 1000) * 1000;
	c.timeout = &timeout;
	sh = c.arg = map_shared(sizeof(*sh) + (size_t)c.count * sizeof(uint64_t));
	elapsed = run_client(&c);

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
	putchar(',');
	print_elapsed_lat(elapsed, sh->lat, c.count);
	return 0;
}

/* "NAME ADDR:PORT\n": the peer as the socket saw it, IPv4-mapped printed as IPv4. */
static int reply_peer(const struct sockaddr_in6 *peer, char *reply, size_t size, const void *name)
{
	char addr[INET6_ADDRSTRLEN];
	const void *a = &peer->sin6_addr;
	int af = AF_INET6;

	if (IN6_IS_ADDR_V4MAPPED(&peer->sin6_addr)) {
		a = &peer->sin6_addr.s6_addr[12];
		af = AF_INET;
	}
	if (!inet_ntop(af, a, addr, sizeof(addr)))
		strcpy(addr, "?");
	return snprintf(reply, size, "%s %s:%u\n", (const char *)name, addr, ntohs(peer->sin6_port));
}

static int server(int argc, char **argv)
{
	long port = 0, workers = 4, i;
	const char *name = "backend";

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
	return run_server(port, workers, reply_peer, name);
}

int main(int argc, char **argv)
{
	return load_main(argc, argv, client, server);
}
