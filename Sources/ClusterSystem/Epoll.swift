#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// epoll(7), named after the kernel's API. The 64-bit user data is the caller's: the event loop
/// packs a registration id with the fd so a stale event for a reused fd can be dropped.
public struct Epoll: ~Copyable {
    public let fd: Int32
    @usableFromInline let events: UnsafeMutablePointer<epoll_event>
    public let capacity: Int

    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    public static let hangup = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLRDHUP.rawValue)
    public static let error = UInt32(EPOLLERR.rawValue)
    /// EPOLLEXCLUSIVE: of the epoll sets that wait on one shared socket, only one is woken per event.
    public static let exclusive = UInt32(1) << 28

    public init(capacity: Int = 512) throws(SystemError) {
        fd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit {
        events.deallocate()
        Sys.close(fd)
    }

    public func add(_ target: Int32, events mask: UInt32, data: UInt64) throws(SystemError) {
        var ev = epoll_event(events: mask, data: epoll_data_t(u64: data))
        _ = try syscall("epoll_ctl(ADD)") { epoll_ctl(fd, EPOLL_CTL_ADD, target, &ev) }
    }

    public func modify(_ target: Int32, events mask: UInt32, data: UInt64) throws(SystemError) {
        var ev = epoll_event(events: mask, data: epoll_data_t(u64: data))
        _ = try syscall("epoll_ctl(MOD)") { epoll_ctl(fd, EPOLL_CTL_MOD, target, &ev) }
    }

    public func remove(_ target: Int32) {
        var ev = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, target, &ev)
    }

    /// epoll_wait(2); `timeoutMilliseconds` -1 blocks. Calls `body(events, data)` for each event.
    @inlinable
    public func wait(timeoutMilliseconds: Int32, _ body: (UInt32, UInt64) -> Void) throws(SystemError) -> Int {
        let n = Int(try syscall("epoll_wait") { epoll_wait(fd, events, Int32(capacity), timeoutMilliseconds) })
        for i in 0..<n {
            let ev = events[i]
            body(ev.events, ev.data.u64)
        }
        return n
    }
}

extension Epoll {
    /// The 64-bit user data clusterd's loops register: a kind in the top byte, a 24-bit
    /// registration generation (an event for a descriptor that was closed and whose number was
    /// reused is recognised as stale by it), the descriptor in the low 32 bits. One encoding for
    /// every loop.
    public struct Token: Equatable, Sendable {
        public static let generationMask: UInt32 = 0xFF_FFFF
        public var kind: UInt8
        /// Only the low 24 bits are kept.
        public var generation: UInt32
        public var fd: Int32

        @inlinable
        public init(kind: UInt8, generation: UInt32 = 0, fd: Int32) {
            self.kind = kind
            self.generation = generation & Self.generationMask
            self.fd = fd
        }

        @inlinable
        public init(data: UInt64) {
            kind = UInt8(truncatingIfNeeded: data >> 56)
            generation = UInt32(truncatingIfNeeded: data >> 32) & Self.generationMask
            fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
        }

        @inlinable
        public var data: UInt64 {
            UInt64(kind) << 56 | UInt64(generation & Self.generationMask) << 32 | UInt64(UInt32(bitPattern: fd))
        }
    }
}
