/* The floor for an io_uring HTTP/1.1 server: Bench/floor/epoll.c's behaviour (same answer, same
 * request counting, common.h) through io_uring, raw system calls, no liburing. NOT a server: no
 * HTTP parsing beyond counting "\r\n\r\n", no bodies, no timeouts.
 *
 *   uring PORT [WORKERS] [ADDR...]   (ADDR default 127.0.0.1; gcc -O2 -o uring uring.c)
 *
 * Each worker: its own SO_REUSEPORT listeners and ring (SINGLE_ISSUER + DEFER_TASKRUN when the
 * kernel has them), a sparse table of direct descriptors, multishot accept straight into that table,
 * multishot recv picking from a provided buffer ring (IORING_REGISTER_PBUF_RING), one send per
 * connection in flight (answers owed meanwhile are sent when it completes), and one io_uring_enter
 * per loop turn that submits everything queued and waits for a completion.
 * A connection is closed only once its recv has ended and no send is in flight (an error shuts the
 * socket down first), so a descriptor slot is never reused under a live request.
 * Exit status 2 when io_uring cannot be set up here (disabled, EPERM, ENOSYS). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

enum { T_ACCEPT = 1, T_RECV, T_SEND, T_OTHER };
#define NBUF 1024
#define BUFSZ 4096

static int rfd;
static unsigned *sq_head, *sq_tail, *cq_head, *cq_tail, sq_mask, cq_mask, sq_n, sq_local, pending;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned short br_tail;

struct conn { struct out out; struct reqscan scan; uint32_t inflight; uint8_t recv_done; };
static struct conn *conns;

static int setup(unsigned entries, struct io_uring_params *p, unsigned flags) {
    memset(p, 0, sizeof *p);
    p->flags = flags | IORING_SETUP_CQSIZE;
    p->cq_entries = entries * 4;
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int enter(unsigned wait) {
    __atomic_store_n(sq_tail, sq_local, __ATOMIC_RELEASE);
    int r = (int)syscall(__NR_io_uring_enter, rfd, pending, wait, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
    if (r > 0) pending -= (unsigned)r;
    if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) { perror("io_uring_enter"); exit(1); }
    return r;
}

static struct io_uring_sqe *sqe(uint64_t type, unsigned slot) {
    while (sq_local - __atomic_load_n(sq_head, __ATOMIC_ACQUIRE) >= sq_n) enter(0);
    struct io_uring_sqe *s = &sqes[sq_local++ & sq_mask];
    memset(s, 0, sizeof *s);
    s->user_data = type << 32 | slot;
    pending++;
    return s;
}

static void arm_accept(int lfd, unsigned l) {
    struct io_uring_sqe *s = sqe(T_ACCEPT, l);
    s->opcode = IORING_OP_ACCEPT; s->fd = lfd; s->ioprio = IORING_ACCEPT_MULTISHOT;
    s->file_index = IORING_FILE_INDEX_ALLOC;
}

static void arm_recv(unsigned slot) {
    struct io_uring_sqe *s = sqe(T_RECV, slot);
    s->opcode = IORING_OP_RECV; s->fd = (int)slot; s->flags = IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
    s->ioprio = IORING_RECV_MULTISHOT; s->buf_group = 0;
}

static void send_owed(unsigned slot) {
    struct conn *c = &conns[slot];
    if (c->inflight || !c->out.owed) return;
    struct io_uring_sqe *s = sqe(T_SEND, slot);
    c->inflight = (uint32_t)out_chunk(&c->out);
    s->opcode = IORING_OP_SEND; s->fd = (int)slot; s->flags = IOSQE_FIXED_FILE;
    s->addr = (uint64_t)(uintptr_t)(big + c->out.pos); s->len = c->inflight; s->msg_flags = MSG_NOSIGNAL;
}

static void shut(unsigned slot) {  /* ends the multishot recv (it completes with 0): the close follows */
    struct io_uring_sqe *s = sqe(T_OTHER, slot);
    s->opcode = IORING_OP_SHUTDOWN; s->fd = (int)slot; s->flags = IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
    s->len = SHUT_RDWR;
}

static void close_if_done(unsigned slot) {
    struct conn *c = &conns[slot];
    if (!c->recv_done || c->inflight) return;
    struct io_uring_sqe *s = sqe(T_OTHER, slot);
    s->opcode = IORING_OP_CLOSE; s->file_index = slot + 1; s->flags = IOSQE_CQE_SKIP_SUCCESS;
    memset(c, 0, sizeof *c);
}

static int listener(const char *addr, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1) { perror("socket/address"); exit(1); }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* inherited by accepted sockets */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) { perror("bind/listen"); exit(1); }
    return fd;
}

static void worker(int port, char **addrs, int naddrs, unsigned nfiles) {
    struct io_uring_params p;
    rfd = setup(2048, &p, IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (rfd < 0) rfd = setup(2048, &p, 0);
    if (rfd < 0) { perror("io_uring_setup"); exit(2); }
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) sq_sz = cq_sz = sq_sz > cq_sz ? sq_sz : cq_sz;
    char *sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQ_RING);
    char *cq = (p.features & IORING_FEAT_SINGLE_MMAP) ? sq
             : mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_CQ_RING);
    sqes = mmap(NULL, p.sq_entries * sizeof *sqes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) { perror("mmap ring"); exit(1); }
    sq_head = (unsigned *)(sq + p.sq_off.head); sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask); sq_n = p.sq_entries;
    unsigned *array = (unsigned *)(sq + p.sq_off.array);
    for (unsigned i = 0; i < sq_n; i++) array[i] = i;  /* identity: sqe i is slot i */
    sq_local = *sq_tail;
    cq_head = (unsigned *)(cq + p.cq_off.head); cq_tail = (unsigned *)(cq + p.cq_off.tail);
    cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

    struct io_uring_rsrc_register files = { .nr = nfiles, .flags = IORING_RSRC_REGISTER_SPARSE };
    if (syscall(__NR_io_uring_register, rfd, IORING_REGISTER_FILES2, &files, sizeof files) < 0) { perror("register files"); exit(1); }
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = NBUF, .bgid = 0 };
    if (br == MAP_FAILED || !bufs || syscall(__NR_io_uring_register, rfd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) { perror("register buffer ring"); exit(1); }
    for (unsigned i = 0; i < NBUF; i++)
        br->bufs[i] = (struct io_uring_buf){ .addr = (uint64_t)(uintptr_t)(bufs + (size_t)i * BUFSZ), .len = BUFSZ, .bid = (uint16_t)i };
    br_tail = NBUF;
    __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
    conns = calloc(nfiles, sizeof *conns);

    int lfd[16];
    for (int l = 0; l < naddrs; l++) { lfd[l] = listener(addrs[l], port); arm_accept(lfd[l], (unsigned)l); }
    for (;;) {
        enter(1);
        refresh_response();
        unsigned head = *cq_head;
        while (head != __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
            struct io_uring_cqe *e = &cqes[head++ & cq_mask];
            unsigned type = (unsigned)(e->user_data >> 32), slot = (unsigned)e->user_data;
            int res = e->res, more = e->flags & IORING_CQE_F_MORE;
            if (type == T_ACCEPT) {
                if (res >= 0 && (unsigned)res < nfiles) { memset(&conns[res], 0, sizeof conns[res]); arm_recv((unsigned)res); }
                if (!more) arm_accept(lfd[slot], slot);
            } else if (type == T_RECV) {
                struct conn *c = &conns[slot];
                if (res > 0) {
                    unsigned bid = e->flags >> IORING_CQE_BUFFER_SHIFT;
                    unsigned reqs = count_requests(&c->scan, bufs + (size_t)bid * BUFSZ, (size_t)res);
                    br->bufs[br_tail++ & (NBUF - 1)] = (struct io_uring_buf){
                        .addr = (uint64_t)(uintptr_t)(bufs + (size_t)bid * BUFSZ), .len = BUFSZ, .bid = (uint16_t)bid };
                    c->out.owed += (uint64_t)reqs * resp_len;
                    send_owed(slot);
                }
                if (!more) {
                    if (res > 0 || res == -ENOBUFS) arm_recv(slot);
                    else { c->recv_done = 1; c->out.owed = 0; close_if_done(slot); }
                }
            } else if (type == T_SEND) {
                struct conn *c = &conns[slot];
                c->inflight = 0;
                if (res > 0) out_done(&c->out, (size_t)res);
                if (res < 0 && !c->recv_done) { c->out.owed = 0; shut(slot); }
                send_owed(slot);
                close_if_done(slot);
            }
        }
        __atomic_store_n(cq_head, head, __ATOMIC_RELEASE);
        __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PORT [WORKERS] [ADDR...]\n", argv[0]); return 64; }
    int port = atoi(argv[1]), workers = argc > 2 ? atoi(argv[2]) : 1;
    char *deflt[] = { "127.0.0.1" };
    char **addrs = argc > 3 ? argv + 3 : deflt;
    int naddrs = argc > 3 ? (argc - 3 > 16 ? 16 : argc - 3) : 1;
    struct io_uring_params p;
    int probe = setup(8, &p, 0);
    if (probe < 0) {
        int err = errno;
        fprintf(stderr, "uring: io_uring_setup failed: %s (%s); see /proc/sys/kernel/io_uring_disabled and any seccomp policy\n",
                strerror(err), err == EPERM ? "io_uring is disabled for this process" : err == ENOSYS ? "no io_uring in this kernel" : "cannot set up a ring");
        return 2;
    }
    close(probe);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    unsigned nfiles = rl.rlim_cur > 65536 ? 65536 : (unsigned)rl.rlim_cur - 64;
    signal(SIGPIPE, SIG_IGN);
    refresh_response();
    for (int w = 0; w < workers; w++)
        if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); worker(port, addrs, naddrs, nfiles); _exit(0); }
    while (wait(NULL) > 0) {}
    return 0;
}
