#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// The kernel operations an event loop over sockets needs (`HTTPWorker`'s), as one small contract:
/// `LinuxKernel` performs them (through `Sys`, `Socket`, `Epoll` and `Clock`, so EINTR is retried and
/// errors are typed), and a test performs them on a fake with a manual clock.
///
/// The loop is generic over its kernel, not handed an existential (no boxing, no dynamic casts):
/// where it is specialised every call is a direct call into the wrapper; where it is compiled once
/// for any handler (`HTTPWorker` in the daemon, today) a call is one indirect call through the
/// witness table, a few instructions beside the system call's own.
public protocol Kernel: AnyObject {
    // Clock
    /// CLOCK_MONOTONIC, nanoseconds.
    func monotonicNanoseconds() -> UInt64
    /// CLOCK_REALTIME, seconds since the epoch.
    func wallSeconds() -> Int64

    // Sockets
    /// accept4(2), CLOEXEC|NONBLOCK.
    func accept(_ listener: Int32) throws(SystemError) -> IOResult<Int32>
    /// read(2).
    func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int>
    /// write(2); `more`: send(2) with MSG_MORE (the FIN of a close that follows rides along).
    func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, more: Bool) throws(SystemError) -> IOResult<Int>
    /// sendfile(2) from `file` at `offset` (advanced by what was sent).
    func sendfile(_ fd: Int32, _ file: Int32, offset: inout Int, count: Int) throws(SystemError) -> IOResult<Int>
    /// pread(2) from a regular file at `offset` (a file body for a TLS connection the kernel does
    /// not encrypt for: read, then encrypted by OpenSSL).
    func readFile(_ file: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, offset: Int) throws(SystemError) -> Int
    /// close(2), never retried.
    func close(_ fd: Int32)
    /// shutdown(2) of the write side: the peer reads EOF after what was sent.
    func shutdownWrite(_ fd: Int32)
    /// fcntl(F_SETFL, O_NONBLOCK).
    func setNonBlocking(_ fd: Int32) throws(SystemError)
    /// TCP_NODELAY.
    func setNoDelay(_ fd: Int32)
    /// TCP_QUICKACK.
    func setQuickAck(_ fd: Int32, _ on: Bool)
    /// getpeername(2) as text, "-" when unknown.
    func peerAddress(_ fd: Int32) -> String
    /// getpeername(2) without allocating; nil when the peer is not an IP address.
    func peerEndpoint(_ fd: Int32) -> SocketEndpoint?
    /// getsockname(2) without allocating; nil when the socket is not an IP socket.
    func localEndpoint(_ fd: Int32) -> SocketEndpoint?
    /// The path of a Unix socket (getsockname; an accepted connection reports its listener's); nil
    /// for any other socket.
    func localPath(_ fd: Int32) -> String?
    /// send(2) of one datagram on a Unix socket, MSG_DONTWAIT|MSG_NOSIGNAL; false when not sent.
    @discardableResult
    func sendMessage(_ socket: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool
    /// sendmsg(2) with one descriptor (SCM_RIGHTS).
    func sendDescriptor(_ socket: Int32, _ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int>
    /// recvmsg(2) of bytes and at most one descriptor (-1 when none came).
    func receiveDescriptor(_ socket: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<(count: Int, fd: Int32)>

    // epoll
    /// epoll_ctl(EPOLL_CTL_ADD).
    func epollAdd(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError)
    /// epoll_ctl(EPOLL_CTL_MOD).
    func epollModify(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError)
    /// epoll_ctl(EPOLL_CTL_DEL); a descriptor that is not registered is no error.
    func epollRemove(_ fd: Int32)
    /// epoll_wait(2): calls `body(events, data)` for each ready registration; returns how many.
    func epollWait(timeoutMilliseconds: Int32, _ body: (UInt32, UInt64) -> Void) throws(SystemError) -> Int
    /// sched_yield(2).
    func yieldCPU()
    /// An eventfd for waking the loop from other threads; nil where the loop never sleeps on one (a
    /// fake kernel).
    func makeWakeup() throws(SystemError) -> EventFd?
}

extension Kernel {
    /// CLOCK_MONOTONIC, milliseconds.
    @inlinable
    public func monotonicMilliseconds() -> Int64 { Int64(monotonicNanoseconds() / 1_000_000) }
}

/// `Kernel` on Linux: one epoll instance and the real system calls.
public final class LinuxKernel: Kernel {
    @usableFromInline let epoll: Epoll

    public init(epollCapacity: Int = 1024) throws(SystemError) {
        epoll = try Epoll(capacity: epollCapacity)
    }

    @inlinable public func monotonicNanoseconds() -> UInt64 { Clock.monotonicNanoseconds() }
    @inlinable public func wallSeconds() -> Int64 { Clock.wallSeconds() }

    @inlinable
    public func accept(_ listener: Int32) throws(SystemError) -> IOResult<Int32> { try Sys.accept(listener) }

    @inlinable
    public func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        try Sys.read(fd, buffer, count)
    }

    @inlinable
    public func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, more: Bool) throws(SystemError) -> IOResult<Int> {
        more ? try Sys.writeMore(fd, buffer, count) : try Sys.write(fd, buffer, count)
    }

    @inlinable
    public func sendfile(_ fd: Int32, _ file: Int32, offset: inout Int, count: Int) throws(SystemError) -> IOResult<Int> {
        try Sys.sendfile(fd, file, offset: &offset, count: count)
    }

    @inlinable
    public func readFile(_ file: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, offset: Int) throws(SystemError) -> Int {
        try Sys.pread(file, buffer, count, offset: offset)
    }

    @inlinable public func close(_ fd: Int32) { Sys.close(fd) }
    @inlinable public func shutdownWrite(_ fd: Int32) { Sys.shutdown(fd, Int32(SHUT_WR)) }
    @inlinable public func setNonBlocking(_ fd: Int32) throws(SystemError) { try Sys.setNonBlocking(fd) }
    @inlinable public func setNoDelay(_ fd: Int32) { Socket.setNoDelay(fd) }
    @inlinable public func setQuickAck(_ fd: Int32, _ on: Bool) { Socket.setQuickAck(fd, on) }
    public func peerAddress(_ fd: Int32) -> String { Socket.peerAddress(fd) }
    public func peerEndpoint(_ fd: Int32) -> SocketEndpoint? { Socket.peerEndpoint(fd) }
    public func makeWakeup() throws(SystemError) -> EventFd? { try EventFd() }
    public func localEndpoint(_ fd: Int32) -> SocketEndpoint? { Socket.localEndpoint(fd) }
    public func localPath(_ fd: Int32) -> String? { Socket.unixPath(fd) }

    @discardableResult
    public func sendMessage(_ socket: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, case .processed? = try? Sys.send(socket, base, bytes.count) else { return false }
        return true
    }

    public func sendDescriptor(_ socket: Int32, _ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try Socket.sendDescriptor(socket, fd, bytes)
    }

    public func receiveDescriptor(_ socket: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<(count: Int, fd: Int32)> {
        try Socket.receiveDescriptor(socket, buffer)
    }

    public func epollAdd(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        try epoll.add(fd, events: events, data: data)
    }

    public func epollModify(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        try epoll.modify(fd, events: events, data: data)
    }

    public func epollRemove(_ fd: Int32) { epoll.remove(fd) }

    @inlinable
    public func epollWait(timeoutMilliseconds: Int32, _ body: (UInt32, UInt64) -> Void) throws(SystemError) -> Int {
        try epoll.wait(timeoutMilliseconds: timeoutMilliseconds, body)
    }

    @inlinable public func yieldCPU() { Sys.yieldCPU() }
}
