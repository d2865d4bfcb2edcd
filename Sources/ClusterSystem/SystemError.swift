#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// A failed system call: the call's name and errno, with a reason a person can read.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let call: String
    public let errno: Int32
    /// What went wrong, where strerror(errno) would not say it (e.g. "not a regular file").
    public let detail: String?

    public init(call: String, errno: Int32, detail: String? = nil) {
        self.call = call
        self.errno = errno
        self.detail = detail
    }

    public var reason: String { detail ?? String(cString: strerror(errno)) }
    public var description: String { "\(call): \(reason) (errno \(errno))" }
}

/// The result of a non-blocking call: either it did something, or it would block. Would-block is
/// not an error (the same shape as NIO's `IOResult`).
public enum IOResult<Value> {
    case processed(Value)
    case wouldBlock
}

extension IOResult: Equatable where Value: Equatable {}

/// The one door to the kernel: runs `body`, retries on EINTR, traps on EBADF/EFAULT (those are our
/// bugs, never the outside world's), and throws `SystemError` naming `call` on any other failure.
/// Inlinable, like the wrappers over it: a generic called across modules without its body runs
/// unspecialised (witness-table calls for `>=` on every read and write).
@inlinable
@inline(__always)
func syscall<T: FixedWidthInteger>(_ call: StaticString, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = ccluster_errno()
        if err == EINTR { continue }
        precondition(err != EBADF && err != EFAULT, "\(call) failed with \(err == EBADF ? "EBADF" : "EFAULT"): a descriptor or pointer bug")
        throw SystemError(call: "\(call)", errno: err)
    }
}

/// Like `syscall`, but EAGAIN/EWOULDBLOCK come back as `.wouldBlock`.
@inlinable
@inline(__always)
func nonBlockingSyscall<T: FixedWidthInteger>(_ call: StaticString, _ body: () -> T) throws(SystemError) -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let err = ccluster_errno()
        if err == EINTR { continue }
        if err == EAGAIN || err == EWOULDBLOCK { return .wouldBlock }
        precondition(err != EBADF && err != EFAULT, "\(call) failed with \(err == EBADF ? "EBADF" : "EFAULT"): a descriptor or pointer bug")
        throw SystemError(call: "\(call)", errno: err)
    }
}

/// `syscall` for calls whose name carries runtime detail (a path); not for hot paths.
@usableFromInline
func syscall<T: FixedWidthInteger>(named call: String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = ccluster_errno()
        if err == EINTR { continue }
        precondition(err != EBADF && err != EFAULT, "\(call) failed with a descriptor or pointer bug")
        throw SystemError(call: call, errno: err)
    }
}
