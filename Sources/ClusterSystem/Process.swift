#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// Signals, read as data from a signalfd (no Swift code ever runs in a signal handler).
public final class SignalFd {
    public let fd: Int32

    /// Blocks `signals` for the whole process and opens a signalfd for them.
    public init(signals: [Int32]) throws(SystemError) {
        var set = Signals.set(signals)
        try Signals.block(signals)
        fd = try syscall("signalfd") { signalfd(-1, &set, Int32(SFD_CLOEXEC | SFD_NONBLOCK)) }
    }

    deinit { Sys.close(fd) }

    /// The next pending signal, or nil when none is.
    public func next() throws(SystemError) -> Int32? {
        var info = signalfd_siginfo()
        switch try nonBlockingSyscall("read(signalfd)", { Glibc.read(fd, &info, MemoryLayout<signalfd_siginfo>.size) }) {
        case .processed(let n) where n == MemoryLayout<signalfd_siginfo>.size: return Int32(info.ssi_signo)
        default: return nil
        }
    }
}

public enum Signals {
    /// Blocks `signals` for the calling thread and every thread it starts from now on (they inherit
    /// the mask), so that only a signalfd receives them.
    public static func block(_ signals: [Int32]) throws(SystemError) {
        var set = Self.set(signals)
        _ = try syscall("sigprocmask") { sigprocmask(SIG_BLOCK, &set, nil) }
    }

    static func set(_ signals: [Int32]) -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        return set
    }

    /// Ignore SIGPIPE: writes to closed sockets come back as EPIPE instead.
    public static func ignorePipe() {
        signal(SIGPIPE, SIG_IGN)
    }

    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "TERM"
        case SIGINT: return "INT"
        case SIGQUIT: return "QUIT"
        case SIGHUP: return "HUP"
        case SIGKILL: return "KILL"
        case SIGUSR1: return "USR1"
        case SIGUSR2: return "USR2"
        case SIGTTIN: return "TTIN"
        case SIGTTOU: return "TTOU"
        case SIGCHLD: return "CHLD"
        case SIGSEGV: return "SEGV"
        case SIGABRT: return "ABRT"
        case SIGILL: return "ILL"
        case SIGBUS: return "BUS"
        case SIGTRAP: return "TRAP"
        default: return "\(signal)"
        }
    }
}

/// How a child ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// The shell's convention: the exit code, or 128+n for a death by signal n.
    public var code: Int32 {
        switch self {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exited with code \(c)"
        case .signaled(let s): return "killed by SIG\(Signals.name(s))"
        }
    }
}

public enum ProcessControl {
    /// Re-execute `executable` with `arguments` and `environment` via posix_spawn, with `inherit[i]`
    /// placed at descriptor 3+i in the child (every other descriptor is CLOEXEC). The child's signal
    /// mask is emptied and the signals the parent handles are reset to their defaults, so no Swift
    /// code runs between fork and exec. `image`: an open descriptor of the file to execute, when it
    /// is not the one at `executable` (which is then only argv[0]): `openCurrentImage()` runs the
    /// binary this process runs, even after the file at its path was replaced. It is passed as one
    /// more inherited descriptor, at 3 + inherit.count, and executed through /proc/self/fd (the
    /// child should close it). `standardError`: a descriptor the child gets as its fd 2.
    public static func spawn(executable: String, arguments: [String], environment: [String], inherit: [Int32], image: Int32? = nil,
                             standardError: Int32? = nil) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }

        // First move every inherited fd above the target range so that dup2 never clobbers a source.
        var staged: [Int32] = []
        defer { for fd in staged { Sys.close(fd) } }
        for fd in inherit {
            let high = try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, Int32(3 + inherit.count + 16)) }
            staged.append(high)
        }
        for (i, fd) in staged.enumerated() {
            // dup2 onto the target clears CLOEXEC on the copy in the child.
            posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + i))
        }
        // The image after them, open across the exec: a CLOEXEC one would do natively, but valgrind
        // (--trace-children) emulates the exec in a new process that must still find it.
        var imagePath = executable
        if let image {
            let high = try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(image, F_DUPFD_CLOEXEC, Int32(3 + inherit.count + 16)) }
            staged.append(high)
            posix_spawn_file_actions_adddup2(&actions, high, Int32(3 + inherit.count))
            imagePath = "/proc/self/fd/\(3 + inherit.count)"
        }

        if let standardError { posix_spawn_file_actions_adddup2(&actions, standardError, 2) }

        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                posix_spawn(&pid, imagePath, &actions, &attr, a.baseAddress!, e.baseAddress!)
            }
        }
        if rc != 0 { throw SystemError(call: "posix_spawn(\(executable))", errno: rc) }
        return pid
    }

    /// The binary this process runs (its inode, whatever has been installed at its path since), opened
    /// (CLOEXEC) for `spawn(image:)`. Opened rather than exec'd as "/proc/self/exe": under valgrind
    /// that link names valgrind itself, while opening it gives the client's file (valgrind redirects
    /// the open), so `--trace-children` still follows the workers.
    public static func openCurrentImage() throws(SystemError) -> Int32 {
        try syscall("open(/proc/self/exe)") { Glibc.open("/proc/self/exe", O_RDONLY | O_CLOEXEC) }
    }

    /// execve(2): replaces this process's image (same PID, the descriptors without CLOEXEC kept).
    /// Returns only by throwing, when the kernel refused (this process carries on unchanged).
    public static func execute(path: String, arguments: [String], environment: [String]) throws(SystemError) {
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let rc = argv.withUnsafeBufferPointer { a in envp.withUnsafeBufferPointer { e in execve(path, a.baseAddress!, e.baseAddress!) } }
        throw SystemError(call: "execve(\(path))", errno: rc == -1 ? ccluster_errno() : EINVAL)
    }

    /// waitpid(-1, WNOHANG): the next child that ended, or nil.
    public static func reap() throws(SystemError) -> (pid: pid_t, status: ExitStatus)? {
        var status: Int32 = 0
        let pid: pid_t
        do throws(SystemError) {
            pid = try syscall("waitpid") { waitpid(-1, &status, WNOHANG) }
        } catch where error.errno == ECHILD {
            return nil
        }
        if pid == 0 { return nil }
        let low = status & 0x7f
        if low == 0 { return (pid, .exited((status >> 8) & 0xff)) }
        return (pid, .signaled(low))
    }

    /// The path of the running executable (/proc/self/exe resolved).
    public static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n <= 0 { return CommandLine.arguments[0] }
        buffer[n] = 0
        return String(cString: buffer)
    }

    /// The current environment as KEY=VALUE strings.
    public static func currentEnvironment() -> [String] {
        var result: [String] = []
        guard var p = Optional(environ) else { return [] }
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }
}

/// A process id (pid_t), for modules that do not import Glibc.
public typealias ProcessID = Int32

/// Signal numbers by name, for modules that do not import Glibc.
public enum SignalNumber {
    public static let hangup = SIGHUP
    public static let interrupt = SIGINT
    public static let quit = SIGQUIT
    public static let kill = SIGKILL
    public static let terminate = SIGTERM
    public static let user1 = SIGUSR1
    public static let ttin = SIGTTIN
    public static let ttou = SIGTTOU
    public static let child = SIGCHLD
}
