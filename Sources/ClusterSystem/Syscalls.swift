#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// Thin, typed wrappers over the system calls clusterd uses. Every one goes through `syscall` /
/// `nonBlockingSyscall` (EINTR retried, typed errors); `close` is never retried (Linux releases the
/// descriptor even when close reports EINTR).
public enum Sys {
    @inlinable
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("read") { Glibc.read(fd, buffer, count) }
    }

    @inlinable
    public static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("write") { Glibc.write(fd, buffer, count) }
    }

    /// send(2) with MSG_MORE: the kernel holds the bytes for more to come, so the FIN of a close()
    /// or shutdown() that follows at once leaves in the same segment as the last data.
    @inlinable
    public static func writeMore(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("send") { Glibc.send(fd, buffer, count, Int32(MSG_MORE | MSG_NOSIGNAL)) }
    }

    /// pread(2) of a regular file (a static file's body sent through TLS without kernel TLS).
    @inlinable
    public static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, offset: Int) throws(SystemError) -> Int {
        try syscall("pread") { Glibc.pread(fd, buffer, count, off_t(offset)) }
    }

    /// getrandom(2): `count` bytes from the kernel's CSPRNG (blocks only before it is seeded, at boot).
    public static func randomBytes(_ count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let start = filled
            let result = bytes.withUnsafeMutableBytes { p in
                Result { () throws(SystemError) -> Int in try syscall("getrandom") { ccluster_getrandom(p.baseAddress! + start, count - start, 0) } }
            }
            filled += try result.get()
        }
        return bytes
    }

    /// send(2) that never blocks and never raises SIGPIPE (MSG_DONTWAIT | MSG_NOSIGNAL).
    public static func send(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("send") { Glibc.send(fd, buffer, count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
    }

    /// sendfile(2) from `file` at `offset` to socket `fd`.
    public static func sendfile(_ fd: Int32, _ file: Int32, offset: inout Int, count: Int) throws(SystemError) -> IOResult<Int> {
        var off = off_t(offset)
        let result = try nonBlockingSyscall("sendfile") { Glibc.sendfile(fd, file, &off, count) }
        offset = Int(off)
        return result
    }

    /// sched_yield: let anything else runnable on this CPU go first (it cannot fail on Linux).
    @inlinable
    public static func yieldCPU() {
        _ = sched_yield()
    }

    /// close(2). Never retried.
    public static func close(_ fd: Int32) {
        let rc = Glibc.close(fd)
        if rc < 0 {
            let err = ccluster_errno()
            precondition(err != EBADF, "close(\(fd)): EBADF: double close")
        }
    }

    public static func socket(_ domain: Int32, _ type: Int32, _ proto: Int32 = 0) throws(SystemError) -> Int32 {
        try syscall("socket") { Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), proto) }
    }

    public static func setsockopt<T>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: T, call: StaticString = "setsockopt") throws(SystemError) {
        var value = value
        _ = try syscall(call) { Glibc.setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<T>.size)) }
    }

    public static func listen(_ fd: Int32, backlog: Int32) throws(SystemError) {
        _ = try syscall("listen") { Glibc.listen(fd, backlog) }
    }

    /// accept4(2) with CLOEXEC|NONBLOCK set atomically.
    @inlinable
    public static func accept(_ fd: Int32) throws(SystemError) -> IOResult<Int32> {
        try nonBlockingSyscall("accept4") {
            ccluster_accept4(fd, Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        }
    }

    public static func shutdown(_ fd: Int32, _ how: Int32) {
        _ = Glibc.shutdown(fd, how)
    }

    /// socketpair(2), CLOEXEC; both ends non-blocking when asked.
    public static func socketpair(type: Int32 = Int32(SOCK_SEQPACKET.rawValue), nonBlocking: Bool = true) throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        _ = try fds.withUnsafeMutableBufferPointer { (p) throws(SystemError) -> Int32 in
            try syscall("socketpair") { Glibc.socketpair(AF_UNIX, type | flags, 0, p.baseAddress) }
        }
        return (fds[0], fds[1])
    }

    public static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try fds.withUnsafeMutableBufferPointer { (p) throws(SystemError) -> Int32 in
            try syscall("pipe2") { ccluster_pipe2(p.baseAddress, Int32(O_CLOEXEC | O_NONBLOCK)) }
        }
        return (fds[0], fds[1])
    }

    /// fcntl(F_SETFD) to clear or set FD_CLOEXEC.
    public static func setCloseOnExec(_ fd: Int32, _ on: Bool) throws(SystemError) {
        let flags = try syscall("fcntl(F_GETFD)") { Glibc.fcntl(fd, F_GETFD) }
        let new = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC
        _ = try syscall("fcntl(F_SETFD)") { Glibc.fcntl(fd, F_SETFD, new) }
    }

    public static func setNonBlocking(_ fd: Int32, _ on: Bool = true) throws(SystemError) {
        let flags = try syscall("fcntl(F_GETFL)") { Glibc.fcntl(fd, F_GETFL) }
        let new = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        _ = try syscall("fcntl(F_SETFL)") { Glibc.fcntl(fd, F_SETFL, new) }
    }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws(SystemError) -> Int32 {
        try syscall("open") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }

    public static func unlink(_ path: String) throws(SystemError) {
        _ = try syscall("unlink") { Glibc.unlink(path) }
    }

    public static func chmod(_ path: String, _ mode: mode_t) throws(SystemError) {
        _ = try syscall("chmod") { Glibc.chmod(path, mode) }
    }

    public static func kill(_ pid: pid_t, _ signal: Int32) throws(SystemError) {
        _ = try syscall("kill") { Glibc.kill(pid, signal) }
    }

    public static var pid: pid_t { Glibc.getpid() }
    public static var uid: uid_t { Glibc.getuid() }
    public static var gid: gid_t { Glibc.getgid() }
    /// getppid(2): the parent's pid (1, or a subreaper's, once the parent is gone).
    public static var parentPID: pid_t { Glibc.getppid() }

    /// isatty(3): whether `fd` is a terminal.
    public static func isTerminal(_ fd: Int32) -> Bool { Glibc.isatty(fd) == 1 }

    /// fflush(3) of every stdio output stream (what `print` wrote and has not yet written out).
    public static func flushStandardStreams() { _ = Glibc.fflush(nil) }

    /// exit(3): flushes stdio and ends the process with `code`.
    public static func exit(_ code: Int32) -> Never { Glibc.exit(code) }

    /// The soft limit on open descriptors (getrlimit RLIMIT_NOFILE): every descriptor number the
    /// process gets is below it.
    public static func descriptorLimit() throws(SystemError) -> Int {
        var limit = rlimit()
        _ = try syscall("getrlimit(RLIMIT_NOFILE)") { getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) }
        return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is all ones: Int.max
    }

    /// How many descriptors this process has open (the entries of /proc/self/fd, less the one
    /// reading them).
    public static func openDescriptorCount() throws(SystemError) -> Int {
        guard let dir = opendir("/proc/self/fd") else { throw SystemError(call: "opendir(/proc/self/fd)", errno: ccluster_errno()) }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            if entry.pointee.d_name.0 != 46 { count += 1 }  // not "." or ".."
        }
        return count - 1
    }

    /// Sleeps `milliseconds` (nanosleep; a signal's interruption ends it early).
    public static func sleep(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        _ = nanosleep(&request, nil)
    }

    /// Pins the calling process to one CPU (sched_setaffinity).
    public static func pinToCPU(_ cpu: Int) throws(SystemError) {
        _ = try syscall("sched_setaffinity") { ccluster_pin_to_cpu(Int32(cpu)) }
    }

    /// Number of online CPUs (sysconf(_SC_NPROCESSORS_ONLN)).
    public static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The CPUs this process may run on (sched_getaffinity: taskset, a container's cpuset,
    /// systemd's CPUAffinity=), ascending. Falls back to 0..<onlineCPUs if the call fails.
    public static var allowedCPUs: [Int] {
        let capacity = 4096
        let buffer = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        let n = Int(ccluster_allowed_cpus(buffer, Int32(capacity)))
        guard n > 0 else { return Array(0..<onlineCPUs) }
        return (0..<n).map { Int(buffer[$0]) }
    }

    /// Ask the kernel to send `signal` to this process when its parent dies (prctl PR_SET_PDEATHSIG).
    public static func dieWithParent(signal: Int32 = SIGKILL) {
        _ = ccluster_set_parent_death_signal(signal)
    }

    /// The name `ps -o comm` and `top` show for this process (prctl(PR_SET_NAME); 15 bytes kept).
    public static func setProcessName(_ name: String) {
        _ = ccluster_set_process_name(name)
    }

    public static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
