/* The floor for an epoll HTTP/1.1 server: what the kernel's side of serving a canned answer costs,
 * with as little user-space work as possible. NOT a server: no HTTP parsing beyond counting
 * "\r\n\r\n" (common.h), every request gets the same 12-byte answer, no bodies, no timeouts.
 *
 *   epoll PORT [WORKERS] [ADDR...]   (ADDR default 127.0.0.1; gcc -O2 -o epoll epoll.c)
 *
 * WORKERS forked processes (default 1), each with its own SO_REUSEPORT listener on every ADDR:PORT
 * and its own level-triggered epoll loop (one read per readiness, so no extra read to see EAGAIN:
 * cheaper than edge-triggered for keep-alive). Per read: count the complete requests (pipelining:
 * many per read, a partial one carried), then one write of all their answers. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

struct conn { struct out out; struct reqscan scan; uint8_t blocked; };
static struct conn *conns;
static int nconns;

static int listener(const char *addr, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1) { perror("socket/address"); exit(1); }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* inherited by accepted sockets */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) { perror("bind/listen"); exit(1); }
    return fd;
}

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    memset(&conns[fd], 0, sizeof conns[fd]);
}

/* Writes what the connection owes; returns -1 if it must be closed. */
static int flush(int ep, int fd) {
    struct conn *c = &conns[fd];
    while (c->out.owed) {
        ssize_t n = write(fd, big + c->out.pos, out_chunk(&c->out));
        if (n < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        out_done(&c->out, (size_t)n);
    }
    uint8_t blocked = c->out.owed != 0;
    if (blocked != c->blocked) {  /* stop reading while the client does not read its answers */
        struct epoll_event ev = { .events = blocked ? EPOLLOUT : EPOLLIN, .data.fd = fd };
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        c->blocked = blocked;
    }
    return 0;
}

static void worker(int port, char **addrs, int naddrs) {
    int ep = epoll_create1(EPOLL_CLOEXEC), nl = naddrs, lfd[16];
    for (int i = 0; i < nl; i++) {
        lfd[i] = listener(addrs[i], port);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, lfd[i], &ev);
    }
    static char buf[65536];
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        refresh_response();
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd, is_listener = 0;
            for (int l = 0; l < nl; l++) is_listener |= fd == lfd[l];
            if (is_listener) {
                for (int k = 0; k < 256; k++) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (c >= nconns) { close(c); continue; }
                    struct epoll_event ev = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->blocked) {
                if (flush(ep, fd) < 0) drop(ep, fd);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                drop(ep, fd);
                continue;
            }
            unsigned reqs = count_requests(&c->scan, buf, (size_t)r);
            if (!reqs) continue;
            c->out.owed += (uint64_t)reqs * resp_len;
            if (flush(ep, fd) < 0) drop(ep, fd);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PORT [WORKERS] [ADDR...]\n", argv[0]); return 64; }
    int port = atoi(argv[1]), workers = argc > 2 ? atoi(argv[2]) : 1;
    char *deflt[] = { "127.0.0.1" };
    char **addrs = argc > 3 ? argv + 3 : deflt;
    int naddrs = argc > 3 ? argc - 3 : 1;
    if (naddrs > 16) naddrs = 16;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    nconns = (int)rl.rlim_cur;
    conns = calloc((size_t)nconns, sizeof *conns);
    signal(SIGPIPE, SIG_IGN);
    refresh_response();
    for (int w = 0; w < workers; w++)
        if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); worker(port, addrs, naddrs); _exit(0); }
    while (wait(NULL) > 0) {}
    return 0;
}
