import ClusterSystem
import Glibc

/// A kernel in memory under the worker loop: sockets are byte queues, listeners queues of
/// connections, epoll is level-triggered readiness computed from them, and time moves only when a
/// test moves it (`advance`).
final class FakeKernel: Kernel {
    struct Socket {
        /// What the client sent that the worker has not read.
        var inbound: [UInt8] = []
        /// The client closed its side (EOF after `inbound`).
        var clientClosed = false
        /// The next read fails with ECONNRESET.
        var reset = false
        /// What the worker wrote.
        var outbound: [UInt8] = []
        /// Bytes the socket takes before a write would block.
        var sendRoom = Int.max
        /// The worker shut its write side (FIN sent).
        var shutWrite = false
        var closed = false
        var noDelay = false
        var reads = 0
    }

    // Clock
    /// How long the next `epoll_wait` that finds events "slept" before they came (the clock moves
    /// by this much before they are handed out).
    var sleepBeforeEvents: Int64 = 0
    var nanoseconds: UInt64 = 5_000_000_000_000
    var wall: Int64 = 1_750_000_000

    var sockets: [Int32: Socket] = [:]
    /// Listener fd → connections waiting to be accepted.
    var backlog: [Int32: [Int32]] = [:]
    /// Errors the next accept4 calls fail with, in order.
    var acceptErrors: [Int32] = []
    var acceptCalls = 0
    var nextFD: Int32 = 100
    /// Registrations: fd → (interest, user data).
    var interest: [Int32: (events: UInt32, data: UInt64)] = [:]

    /// The master's end of the channel: messages the worker sent, descriptors it handed off, and
    /// what the master sends it.
    var channelFD: Int32 = 50
    var sentMessages: [String] = []
    var handedOff: [(fd: Int32, bytes: [UInt8])] = []
    var channelFull = false
    var toWorker: [(bytes: [UInt8], fd: Int32)] = []
    var masterGone = false

    // MARK: - Test side

    func advance(milliseconds: Int64) { nanoseconds += UInt64(milliseconds) * 1_000_000 }

    func makeListener() -> Int32 {
        let fd = nextFD
        nextFD += 1
        backlog[fd] = []
        return fd
    }

    /// A client connects to `listener` (and sends `bytes` with its handshake).
    @discardableResult
    func connect(_ listener: Int32, sending text: String = "") -> Int32 {
        let fd = nextFD
        nextFD += 1
        sockets[fd] = Socket(inbound: Array(text.utf8))
        backlog[listener, default: []].append(fd)
        return fd
    }

    func send(_ fd: Int32, _ text: String) { sockets[fd]!.inbound += Array(text.utf8) }

    /// What the worker wrote to `fd` so far, taken.
    func received(_ fd: Int32) -> String {
        defer { sockets[fd]!.outbound = [] }
        return String(decoding: sockets[fd]!.outbound, as: UTF8.self)
    }

    func isClosed(_ fd: Int32) -> Bool { sockets[fd]!.closed }

    // MARK: - Kernel

    func monotonicNanoseconds() -> UInt64 { nanoseconds }
    func wallSeconds() -> Int64 { wall + Int64((nanoseconds - 5_000_000_000_000) / 1_000_000_000) }

    func accept(_ listener: Int32) throws(SystemError) -> IOResult<Int32> {
        acceptCalls += 1
        if !acceptErrors.isEmpty { throw SystemError(call: "accept4", errno: acceptErrors.removeFirst()) }
        guard var queue = backlog[listener], !queue.isEmpty else { return .wouldBlock }
        let fd = queue.removeFirst()
        backlog[listener] = queue
        return .processed(fd)
    }

    func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        guard var s = sockets[fd], !s.closed else { preconditionFailure("read on closed fd \(fd)") }
        defer { sockets[fd] = s }
        s.reads += 1
        if s.reset { throw SystemError(call: "read", errno: ECONNRESET) }
        if s.inbound.isEmpty { return s.clientClosed ? .processed(0) : .wouldBlock }
        let n = min(count, s.inbound.count)
        s.inbound.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: n) }
        s.inbound.removeFirst(n)
        return .processed(n)
    }

    func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, more: Bool) throws(SystemError) -> IOResult<Int> {
        guard var s = sockets[fd], !s.closed, !s.shutWrite else { preconditionFailure("write on closed fd \(fd)") }
        defer { sockets[fd] = s }
        if s.reset { throw SystemError(call: "write", errno: EPIPE) }
        let n = min(count, s.sendRoom)
        if n == 0 { return .wouldBlock }
        if s.sendRoom != .max { s.sendRoom -= n }
        s.outbound += UnsafeRawBufferPointer(start: buffer, count: n)
        return .processed(n)
    }

    func sendfile(_ fd: Int32, _ file: Int32, offset: inout Int, count: Int) throws(SystemError) -> IOResult<Int> {
        throw SystemError(call: "sendfile", errno: ENOSYS)
    }

    func readFile(_ file: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, offset: Int) throws(SystemError) -> Int {
        throw SystemError(call: "pread", errno: ENOSYS)
    }

    func close(_ fd: Int32) {
        interest[fd] = nil
        if sockets[fd] != nil {
            precondition(!sockets[fd]!.closed, "double close of \(fd)")
            sockets[fd]!.closed = true
        }
    }

    func shutdownWrite(_ fd: Int32) { sockets[fd]!.shutWrite = true }
    func setNonBlocking(_ fd: Int32) throws(SystemError) {}
    func setNoDelay(_ fd: Int32) { sockets[fd]?.noDelay = true }
    func setQuickAck(_ fd: Int32, _ on: Bool) {}
    func peerAddress(_ fd: Int32) -> String { "127.0.0.1" }
    /// Every client is 127.0.0.1 unless `peers` says otherwise.
    var peers: [Int32: SocketEndpoint] = [:]
    /// Every socket's own address is 0.0.0.0:8080 (a listener) or 127.0.0.1:8080 (a connection)
    /// unless `locals` says otherwise.
    var locals: [Int32: SocketEndpoint] = [:]
    func makeWakeup() throws(SystemError) -> EventFd? { nil }
    /// Unix sockets' paths (a listener's and its connections'); none unless a test sets them.
    var paths: [Int32: String] = [:]
    func localPath(_ fd: Int32) -> String? { paths[fd] }
    func peerEndpoint(_ fd: Int32) -> SocketEndpoint? { peers[fd] ?? SocketEndpoint(isIPv6: false, high: 0, low: 0x7F00_0001, port: 40000) }
    func localEndpoint(_ fd: Int32) -> SocketEndpoint? {
        if paths[fd] != nil { return nil }
        return locals[fd] ?? SocketEndpoint(isIPv6: false, high: 0, low: backlog[fd] != nil ? 0 : 0x7F00_0001, port: 8080)
    }

    func sendMessage(_ socket: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        sentMessages.append(String(decoding: bytes, as: UTF8.self))
        return true
    }

    func sendDescriptor(_ socket: Int32, _ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        if channelFull { return .wouldBlock }
        handedOff.append((fd, Array(bytes)))
        return .processed(bytes.count)
    }

    func receiveDescriptor(_ socket: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<(count: Int, fd: Int32)> {
        if toWorker.isEmpty { return masterGone ? .processed((0, -1)) : .wouldBlock }
        let (bytes, fd) = toWorker.removeFirst()
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return .processed((bytes.count, fd))
    }

    func epollAdd(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        precondition(interest[fd] == nil, "epoll_ctl(ADD) of registered fd \(fd)")
        interest[fd] = (events, data)
    }

    func epollModify(_ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        guard interest[fd] != nil else { throw SystemError(call: "epoll_ctl(MOD)", errno: ENOENT) }
        interest[fd] = (events, data)
    }

    func epollRemove(_ fd: Int32) { interest[fd] = nil }

    /// What `fd` is ready for now, as epoll would report it.
    func readiness(_ fd: Int32) -> UInt32 {
        if fd == channelFD { return toWorker.isEmpty && !masterGone ? 0 : Epoll.readable }
        if let queue = backlog[fd] { return queue.isEmpty && acceptErrors.isEmpty ? 0 : Epoll.readable }
        guard let s = sockets[fd], !s.closed else { return 0 }
        var ready: UInt32 = 0
        if !s.inbound.isEmpty || s.clientClosed || s.reset { ready |= Epoll.readable }
        if s.clientClosed { ready |= Epoll.hangup }
        if s.sendRoom > 0 { ready |= Epoll.writable }
        return ready
    }

    func epollWait(timeoutMilliseconds: Int32, _ body: (UInt32, UInt64) -> Void) throws(SystemError) -> Int {
        var events: [(UInt32, UInt64)] = []
        for (fd, registration) in interest.sorted(by: { $0.key < $1.key }) {
            let ready = readiness(fd) & (registration.events | Epoll.hangup | Epoll.error)
            if ready != 0 { events.append((ready, registration.data)) }
        }
        // With nothing ready it returns at once: time moves only when the test moves it.
        if events.isEmpty { return 0 }
        advance(milliseconds: sleepBeforeEvents)
        sleepBeforeEvents = 0
        for (ready, data) in events { body(ready, data) }
        return events.count
    }

    func yieldCPU() {}
}
