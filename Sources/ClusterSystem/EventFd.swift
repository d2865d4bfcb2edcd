#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// An eventfd(2) that wakes an epoll loop from another thread: `signal` from anywhere, `drain` on
/// the loop when epoll reports it readable.
public final class EventFd: Sendable {
    public let fd: Int32

    public init() throws(SystemError) {
        fd = try syscall("eventfd") { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
    }

    deinit { Sys.close(fd) }

    /// Adds one (never blocks: a counter that is already non-zero wakes the loop as well).
    public func signal() {
        var one: UInt64 = 1
        _ = try? nonBlockingSyscall("write(eventfd)", { Glibc.write(fd, &one, 8) })
    }

    /// Resets the counter.
    public func drain() {
        var value: UInt64 = 0
        _ = try? nonBlockingSyscall("read(eventfd)", { Glibc.read(fd, &value, 8) })
    }
}

/// The thread a loop runs on, to tell whether code runs on it (`isCurrent`).
public struct ThreadIdentity: Sendable {
    private let thread: pthread_t

    /// The calling thread.
    public init() { thread = pthread_self() }

    /// Whether the calling thread is this one.
    public var isCurrent: Bool { pthread_equal(pthread_self(), thread) != 0 }
}
