#define _GNU_SOURCE
#include <sched.h>
#include "CClusterShims.h"
#include <errno.h>
#include <malloc.h>
#include <unistd.h>
#include <string.h>
#include <linux/filter.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <linux/openat2.h>
#include <link.h>
#include <elf.h>

int ccluster_errno(void) { return errno; }

ssize_t ccluster_send_fd(int socket, int fd_to_pass, const void *data, size_t length) {
    struct iovec iov = { .iov_base = (void *)data, .iov_len = length };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd_to_pass >= 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd_to_pass, sizeof(int));
    }
    return sendmsg(socket, &msg, MSG_NOSIGNAL);
}

ssize_t ccluster_recv_fd(int socket, int *received_fd, void *data, size_t length) {
    struct iovec iov = { .iov_base = data, .iov_len = length };
    union { char buf[CMSG_SPACE(sizeof(int) * 4)]; struct cmsghdr align; } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *received_fd = -1;
    ssize_t n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return n;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[4];
            memcpy(fds, CMSG_DATA(cmsg), count * sizeof(int));
            for (size_t i = 0; i < count; i++) {
                if (*received_fd < 0) *received_fd = fds[i];
                else close(fds[i]); // more than we asked for: never leak them
            }
        }
    }
    return n;
}

int ccluster_attach_reuseport_cbpf(int fd, uint32_t active, const uint32_t *skip, uint32_t nskip, int by_cpu) {
    if (nskip > 2000 || nskip >= active) { errno = EINVAL; return -1; }
    struct sock_filter code[3 + 2 * 2000];
    uint32_t n = 0;
    code[n++] = (struct sock_filter){ BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_AD_OFF + (by_cpu ? SKF_AD_CPU : SKF_AD_RANDOM)) };
    code[n++] = (struct sock_filter){ BPF_ALU | BPF_MOD | BPF_K, 0, 0, active - nskip };
    for (uint32_t i = 0; i < nskip; i++) {
        // a >= skip[i] ? a += 1 : (nothing). Ascending skips map the k-th pick to the k-th index kept.
        code[n++] = (struct sock_filter){ BPF_JMP | BPF_JGE | BPF_K, 0, 1, skip[i] };
        code[n++] = (struct sock_filter){ BPF_ALU | BPF_ADD | BPF_K, 0, 0, 1 };
    }
    code[n++] = (struct sock_filter){ BPF_RET | BPF_A, 0, 0, 0 };
    struct sock_fprog prog = { .len = (unsigned short)n, .filter = code };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

int ccluster_drop_syn(int fd) {
    // ldb [13] (TCP flags: the filter sees the segment from its TCP header); jset #SYN; ret #0
    // (drop); ret #-1 (keep). ACKs that complete handshakes under way still pass.
    struct sock_filter code[] = {
        { BPF_LD | BPF_B | BPF_ABS, 0, 0, 13 },
        { BPF_JMP | BPF_JSET | BPF_K, 0, 1, 0x02 },
        { BPF_RET | BPF_K, 0, 0, 0 },
        { BPF_RET | BPF_K, 0, 0, 0xFFFFFFFFu },
    };
    struct sock_fprog prog = { .len = 4, .filter = code };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

int ccluster_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    if (rc == 0) { *pid = cred.pid; *uid = cred.uid; *gid = cred.gid; }
    return rc;
}

int ccluster_accept4(int fd, int flags) { return accept4(fd, NULL, NULL, flags); }
int ccluster_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
int ccluster_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }
int ccluster_set_parent_death_signal(int signal) { return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0); }
int ccluster_malloc_trim(void) { return malloc_trim(0); }
/* Where openat2 is missing (kernels before 5.6, or a tool that does not know it, such as
 * valgrind 3.19): `path` (relative, normalised: no "..") is opened one component at a time with
 * O_NOFOLLOW, so no symlink is followed at all (ELOOP, answered 403): stricter than
 * RESOLVE_BENEATH, which follows symlinks that stay beneath, and never looser. */
static int open_beneath_without_symlinks(int dirfd, const char *path, int flags) {
    char part[256];
    int dir = dirfd;
    const char *p = path;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n >= sizeof(part)) { errno = ENAMETOOLONG; break; }
        memcpy(part, p, n);
        part[n] = 0;
        if (strcmp(part, "..") == 0) { errno = EXDEV; break; }
        int fd;
        if (slash) {
            fd = openat(dir, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 && errno == ENOTDIR) errno = ELOOP; /* a symlink opened with O_PATH|O_NOFOLLOW, or a file */
        } else {
            fd = openat(dir, part, flags | O_NOFOLLOW);
        }
        if (dir != dirfd) { int saved = errno; close(dir); errno = saved; }
        if (fd < 0 || !slash) return fd;
        dir = fd;
        p = slash + 1;
    }
    if (dir != dirfd) { int saved = errno; close(dir); errno = saved; }
    return -1;
}

int ccluster_openat2(int dirfd, const char *path, int flags, int beneath) {
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (unsigned long long)flags;
    how.resolve = beneath ? (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) : RESOLVE_NO_MAGICLINKS;
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    if (fd >= 0 || errno != ENOSYS) return fd;
    if (!beneath) return openat(dirfd, path, flags);
    return open_beneath_without_symlinks(dirfd, path, flags);
}

int ccluster_allowed_cpus(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) < 0) return -1;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < max; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[n++] = cpu;
    }
    return n;
}

int ccluster_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

struct build_id_search { unsigned char *out; size_t cap; size_t length; };

static int find_build_id(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct build_id_search *search = data;
    // The first object is the program itself; its notes are mapped at dlpi_addr + p_vaddr.
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        size_t left = ph->p_memsz;
        while (left >= sizeof(ElfW(Nhdr))) {
            const ElfW(Nhdr) *note = (const ElfW(Nhdr) *)p;
            size_t name = (note->n_namesz + 3) & ~(size_t)3, desc = (note->n_descsz + 3) & ~(size_t)3;
            size_t total = sizeof(ElfW(Nhdr)) + name + desc;
            if (total > left) break;
            if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && memcmp(p + sizeof(ElfW(Nhdr)), "GNU", 4) == 0) {
                size_t n = note->n_descsz < search->cap ? note->n_descsz : search->cap;
                memcpy(search->out, p + sizeof(ElfW(Nhdr)) + name, n);
                search->length = n;
                return 1;
            }
            p += total;
            left -= total;
        }
    }
    return 1;  // only the first object (the program) is searched
}

size_t ccluster_build_id(unsigned char *out, size_t cap) {
    struct build_id_search search = { out, cap, 0 };
    dl_iterate_phdr(find_build_id, &search);
    return search.length;
}

int ccluster_set_process_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

int ccluster_capability_in_bounding_set(int cap) { return prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0); }

long ccluster_getrandom(void *buffer, size_t count, unsigned int flags) { return getrandom(buffer, count, flags); }
