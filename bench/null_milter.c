/*
 * The floor under issue 24's ratio: a milter that reads every command Postfix sends and
 * answers "continue" to each one that waits for an answer, nothing else. It negotiates
 * what markgate negotiates (protocol 6, the same actions, no unknown commands, the same
 * SMFIP_NR_* flags where Postfix offers them, headers with their leading space), so
 * Postfix runs the same milter protocol, round trips and all; what Postfix + this costs
 * against Postfix alone is Postfix's own side of the protocol, which no milter can take
 * away. One thread, epoll, no allocation per command: its own CPU is close to nothing.
 *
 * Built and run by `MILTER_FLOOR=1 bench/milter.sh` (gcc -O2); never shipped.
 *
 *   null_milter PORT          (listens on 127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1 << 16)
#define MAX_FD 4096

/* Protocol flags (libmilter's mfdef.h). */
#define SMFIP_NR_HDR 0x80u
#define SMFIP_NOUNKNOWN 0x100u
#define SMFIP_NR_CONN 0x1000u
#define SMFIP_NR_HELO 0x2000u
#define SMFIP_NR_EOH 0x40000u
#define SMFIP_NR_BODY 0x80000u
#define SMFIP_HDR_LEADSPC 0x100000u
#define NO_REPLY (SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY)
/* Actions markgate asks for: add and change headers, quarantine. */
#define ACTIONS (0x01u | 0x10u | 0x20u)

struct conn {
	unsigned char *buf;
	size_t len;
	uint32_t protocol;
};

static struct conn conns[MAX_FD];

static void put32(unsigned char *p, uint32_t v)
{
	uint32_t n = htonl(v);
	memcpy(p, &n, 4);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t n;
	memcpy(&n, p, 4);
	return ntohl(n);
}

static void drop(int epfd, int fd)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
	free(conns[fd].buf);
	conns[fd].buf = NULL;
	conns[fd].len = 0;
}

/* Whether a command waits for an answer, given what was negotiated. */
static int answered(char cmd, uint32_t protocol)
{
	switch (cmd) {
	case 'M': case 'R': case 'T': case 'E':
		return 1;
	case 'C':
		return !(protocol & SMFIP_NR_CONN);
	case 'H':
		return !(protocol & SMFIP_NR_HELO);
	case 'L':
		return !(protocol & SMFIP_NR_HDR);
	case 'N':
		return !(protocol & SMFIP_NR_EOH);
	case 'B':
		return !(protocol & SMFIP_NR_BODY);
	default: /* D macros, A abort, U unknown (negotiated away), Q, K */
		return 0;
	}
}

/* Answers every whole command in the buffer with one write; 0 to close. */
static int serve(int fd)
{
	struct conn *c = &conns[fd];
	unsigned char out[4096];
	size_t o = 0, at = 0;
	while (c->len - at >= 4) {
		uint32_t len = get32(c->buf + at);
		if (len == 0 || len > MAX_FRAME)
			return 0;
		if (c->len - at < 4 + (size_t)len)
			break;
		unsigned char *cmd = c->buf + at + 4;
		at += 4 + len;
		if (o + 64 > sizeof out)
			return 0;
		if (cmd[0] == 'O') {
			if (len < 13)
				return 0;
			c->protocol = SMFIP_NOUNKNOWN | SMFIP_HDR_LEADSPC | (get32(cmd + 9) & NO_REPLY);
			put32(out + o, 13);
			out[o + 4] = 'O';
			put32(out + o + 5, 6);
			put32(out + o + 9, ACTIONS);
			put32(out + o + 13, c->protocol);
			o += 17;
		} else if (cmd[0] == 'Q') {
			if (o && write(fd, out, o) != (ssize_t)o)
				return 0;
			return 0;
		} else if (answered((char)cmd[0], c->protocol)) {
			put32(out + o, 1);
			out[o + 4] = 'c';
			o += 5;
		}
	}
	memmove(c->buf, c->buf + at, c->len - at);
	c->len -= at;
	if (o && write(fd, out, o) != (ssize_t)o)
		return 0;
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: null_milter PORT\n");
		return 2;
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 512)) {
		perror("null_milter: bind");
		return 1;
	}
	int epfd = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
	epoll_ctl(epfd, EPOLL_CTL_ADD, ls, &ev);
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(epfd, evs, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == ls) {
				int s = accept(ls, NULL, NULL);
				if (s < 0)
					continue;
				if (s >= MAX_FD) {
					close(s);
					continue;
				}
				setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
				conns[s].buf = malloc(MAX_FRAME + 8);
				conns[s].len = 0;
				conns[s].protocol = 0;
				struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
				epoll_ctl(epfd, EPOLL_CTL_ADD, s, &e);
				continue;
			}
			struct conn *c = &conns[fd];
			ssize_t r = read(fd, c->buf + c->len, MAX_FRAME + 8 - c->len);
			if (r <= 0) {
				drop(epfd, fd);
				continue;
			}
			c->len += (size_t)r;
			if (!serve(fd))
				drop(epfd, fd);
		}
	}
}
