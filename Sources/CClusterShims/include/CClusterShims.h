#ifndef CCLUSTER_SHIMS_H
#define CCLUSTER_SHIMS_H
// C helpers for what Swift cannot call directly: CMSG_* macros, the reuseport BPF program, errno
// access. Every name is prefixed `ccluster_`.
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/eventfd.h>
#include <netinet/tcp.h>
#include <signal.h>

/// accept4(2), pipe2(2) and memfd_create(2) need _GNU_SOURCE, which a module header cannot set.
int ccluster_accept4(int fd, int flags);
int ccluster_pipe2(int fds[2], int flags);
int ccluster_memfd_create(const char *name, unsigned int flags);
/// openat2(2) (no glibc wrapper on Debian 12). `beneath`: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
/// so the path can never leave `dirfd` (no "..", absolute paths or symlinks pointing out).
int ccluster_openat2(int dirfd, const char *path, int flags, int beneath);
/// getrandom(2) (<sys/random.h> is not in the Glibc module).
long ccluster_getrandom(void *buffer, size_t count, unsigned int flags);
/// prctl(PR_SET_PDEATHSIG) (prctl is variadic).
int ccluster_set_parent_death_signal(int signal);

/// malloc_trim(0): gives free heap pages back to the kernel (<malloc.h> is not in the Glibc module).
int ccluster_malloc_trim(void);

/// Current thread's errno (the macro is not importable).
int ccluster_errno(void);

/// sendmsg(2) with one SCM_RIGHTS descriptor and an iovec payload.
ssize_t ccluster_send_fd(int socket, int fd_to_pass, const void *data, size_t length);
/// recvmsg(2) that accepts at most one SCM_RIGHTS descriptor (CLOEXEC). *received_fd = -1 if none.
ssize_t ccluster_recv_fd(int socket, int *received_fd, void *data, size_t length);

/// Attach a classic BPF program to a reuseport group (SO_ATTACH_REUSEPORT_CBPF) that sends new
/// connections only to the listeners at indices 0..<active not listed in `skip` (ascending, each
/// < active, at most 2000): `ld rand; mod #(active - nskip)`, then `a >= skip[i] ? a += 1` for each
/// skipped index, `ret a`. With `by_cpu`, `ld cpu` instead of `ld rand`: with one worker pinned per
/// CPU and nothing skipped, a connection is accepted on the CPU whose softirq handled it.
int ccluster_attach_reuseport_cbpf(int fd, uint32_t active, const uint32_t *skip, uint32_t nskip, int by_cpu);
/// Attach the classic BPF socket filter `ldb [13]; jset #0x02; ret #0; ret #-1` to a TCP listener
/// (SO_ATTACH_FILTER): every segment with SYN set is dropped, so no new connection enters its
/// queues, while the final ACKs of handshakes under way still pass and complete.
int ccluster_drop_syn(int fd);
/// The CPUs this process may run on (sched_getaffinity), ascending, at most `max`; -1 on error.
int ccluster_allowed_cpus(int *cpus, int max);
/// sched_setaffinity(0) to one CPU.
int ccluster_pin_to_cpu(int cpu);

/// SO_PEERCRED of a connected Unix socket.
int ccluster_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// The running program's GNU build ID (its NT_GNU_BUILD_ID note, found with dl_iterate_phdr in the
/// loaded image, not the file on disk): copies at most `cap` bytes to `out`, returns the ID's
/// length, 0 when the program has none.
size_t ccluster_build_id(unsigned char *out, size_t cap);
/// prctl(PR_CAPBSET_READ): 1 if capability `cap` is in the bounding set, 0 if not, -1 on error.
int ccluster_capability_in_bounding_set(int cap);
/// prctl(PR_SET_NAME): the name `ps` and `top` show (at most 15 bytes are kept).
int ccluster_set_process_name(const char *name);

#endif
