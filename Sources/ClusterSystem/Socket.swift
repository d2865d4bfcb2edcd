#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// TCP and Unix socket set-up. Every descriptor is created CLOEXEC and NONBLOCK.
public enum Socket {
    /// The accept queue a listener asks for (listen(2); the kernel caps it at net.core.somaxconn).
    public static let listenBacklog: Int32 = 4096

    /// A TCP listener bound to `host:port` with SO_REUSEADDR and SO_REUSEPORT (so that every worker
    /// slot gets its own listener in the port's reuseport group). `host` is a numeric IPv4 or IPv6
    /// address; IPv6 listeners are IPV6_V6ONLY so `0.0.0.0` and `[::]` can share a port.
    public static func tcpListener(host: String, port: UInt16, backlog: Int32 = listenBacklog, reusePort: Bool = true, deferAccept: Bool = false) throws(SystemError) -> Int32 {
        let fd = try boundTCPSocket(host: host, port: port, reusePort: reusePort)
        do throws(SystemError) {
            if deferAccept {
                // Woken (and accept4 returns) only once the client has sent data; a client that
                // sends nothing is accepted after about a second anyway.
                try Sys.setsockopt(fd, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, Int32(1), call: "setsockopt(TCP_DEFER_ACCEPT)")
            }
            try Sys.listen(fd, backlog: backlog)
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// Whether a listener of another socket (another process, or one of ours) holds `host:port`
    /// or an address overlapping it (a wildcard of the same family): a socket WITHOUT SO_REUSEPORT
    /// is bound there and closed at once. SO_REUSEADDR on the probe keeps TIME_WAIT and
    /// bound-but-not-listening sockets from counting; a listening socket, reuseport or not, makes the
    /// bind fail with EADDRINUSE, which this returns as `true`. Any other failure is thrown.
    public static func addressInUse(host: String, port: UInt16) throws(SystemError) -> Bool {
        do throws(SystemError) {
            Sys.close(try boundTCPSocket(host: host, port: port, reusePort: false))
            return false
        } catch where error.code == .addressInUse {
            return true
        }
    }

    /// The one IPv4/IPv6 bind: a non-blocking TCP socket with SO_REUSEADDR (and SO_REUSEPORT when
    /// asked) bound to the numeric address `host:port`. IPv6 sockets are made IPV6_V6ONLY first, so
    /// `0.0.0.0` and `[::]` can share a port.
    private static func boundTCPSocket(host: String, port: UInt16, reusePort: Bool) throws(SystemError) -> Int32 {
        var address = sockaddr_storage()
        let length = try fillInternetAddress(&address, host: host, port: port)
        let family = Int32(address.ss_family)
        let fd = try Sys.socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        do throws(SystemError) {
            try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, Int32(1), call: "setsockopt(SO_REUSEADDR)")
            if reusePort {
                try Sys.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, Int32(1), call: "setsockopt(SO_REUSEPORT)")
            }
            if family == AF_INET6 {
                try Sys.setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(1), call: "setsockopt(IPV6_V6ONLY)")
            }
            _ = try withUnsafePointer(to: &address) { (p) throws(SystemError) -> Int32 in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> Int32 in
                    try syscall("bind") { Glibc.bind(fd, sa, length) }
                }
            }
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// Writes the numeric IPv4 or IPv6 address `host` (a `:` means IPv6) and `port` into `storage`
    /// as a sockaddr_in or sockaddr_in6 (inet_pton(3)); returns its length.
    private static func fillInternetAddress(_ storage: inout sockaddr_storage, host: String, port: UInt16) throws(SystemError) -> socklen_t {
        let isIPv6 = host.contains(":")
        let parsed = withUnsafeMutablePointer(to: &storage) { p -> Bool in
            if isIPv6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    return inet_pton(AF_INET6, host, &sin6.pointee.sin6_addr) == 1
                }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                return inet_pton(AF_INET, host, &sin.pointee.sin_addr) == 1
            }
        }
        guard parsed else { throw SystemError(call: "inet_pton(\(host))", .invalidArgument) }
        return socklen_t(isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    /// Takes the lock that daemons hold on `port` while they check that nothing listens there and
    /// open their first listener: an abstract Unix socket named `clusterd-tcp-port-PORT`, which
    /// only one socket in a network namespace can be bound to, and which goes when its socket is
    /// closed (or its process dies). Abstract names live in the network namespace, exactly where
    /// TCP ports do. Returns nil while another socket holds it.
    public static func lockPort(_ port: UInt16) throws(SystemError) -> Int32? {
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue))
        do throws(SystemError) {
            _ = try withUnixAddress(Array("clusterd-tcp-port-\(port)".utf8), abstract: true) { (sa, length) throws(SystemError) -> Int32 in
                try syscall("bind(clusterd-tcp-port)") { Glibc.bind(fd, sa, length) }
            }
            return fd
        } catch {
            Sys.close(fd)
            if error.code == .addressInUse { return nil }
            throw error
        }
    }

    /// The port a bound socket actually got (for port 0).
    public static func localPort(_ fd: Int32) throws(SystemError) -> UInt16 {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (p) throws(SystemError) -> Int32 in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> Int32 in
                try syscall("getsockname") { Glibc.getsockname(fd, sa, &len) }
            }
        }
        if Int32(storage.ss_family) == AF_INET6 {
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
        }
        return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
    }

    /// The path a listening Unix socket is bound to (getsockname); nil for any other socket.
    public static func unixPath(_ fd: Int32) -> String? {
        var addr = sockaddr_un()
        var len = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &len) }
        }
        guard rc == 0, Int32(addr.sun_family) == AF_UNIX, Int(len) > MemoryLayout<sa_family_t>.size else { return nil }
        let pathBytes = Int(len) - MemoryLayout<sa_family_t>.size
        return withUnsafeBytes(of: &addr.sun_path) { raw -> String? in
            let bytes = raw.prefix(pathBytes).prefix { $0 != 0 }
            guard !bytes.isEmpty, raw.first != 0 else { return nil }  // unnamed or abstract
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The peer's address as text ("127.0.0.1" / "::1"), for logs; "-" when it has no IP peer.
    public static func peerAddress(_ fd: Int32) -> String {
        withAddress(fd) { family, bytes, _ in
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            _ = inet_ntop(family, bytes.baseAddress, &text, socklen_t(text.count))
            return String(cString: text)
        } ?? "-"
    }

    /// The peer's address as bytes in network order (4 for IPv4, 16 for IPv6; getpeername(2)), or
    /// nil when the socket has no IP peer (a Unix socket, not connected).
    public static func peerAddressBytes(_ fd: Int32) -> [UInt8]? {
        withAddress(fd) { _, bytes, _ in Array(bytes) }
    }

    /// The peer's IP address and port (getpeername(2)), without allocating; nil when the socket has
    /// no IP peer (a Unix socket, not connected).
    public static func peerEndpoint(_ fd: Int32) -> SocketEndpoint? {
        withAddress(fd, peer: true) { family, bytes, port in SocketEndpoint(family: family, bytes: bytes, port: port) }
    }

    /// The socket's own IP address and port (getsockname(2)); nil when it is not an IP socket.
    public static func localEndpoint(_ fd: Int32) -> SocketEndpoint? {
        withAddress(fd, peer: false) { family, bytes, port in SocketEndpoint(family: family, bytes: bytes, port: port) }
    }

    /// getpeername(2) (`peer`) or getsockname(2): `body` gets the family, the address bytes
    /// (sin_addr or sin6_addr) and the port; nil when the socket has no IP address there.
    private static func withAddress<R>(_ fd: Int32, peer: Bool = true, _ body: (Int32, UnsafeRawBufferPointer, UInt16) -> R) -> R? {
        guard fd >= 0 else { return nil }
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? Glibc.getpeername(fd, $0, &len) : Glibc.getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET6:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                withUnsafeBytes(of: sin6.pointee.sin6_addr) { body(AF_INET6, $0, UInt16(bigEndian: sin6.pointee.sin6_port)) }
            } }
        case AF_INET:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                withUnsafeBytes(of: sin.pointee.sin_addr) { body(AF_INET, $0, UInt16(bigEndian: sin.pointee.sin_port)) }
            } }
        default:
            return nil
        }
    }

    /// Set TCP_NODELAY on an accepted connection.
    @inlinable
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = Glibc.setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Turn TCP quick-ACK mode on or off on a connection (TCP_QUICKACK; not a lasting setting: the
    /// kernel switches modes by itself later). Off, the ACK of the next data the connection
    /// receives is delayed and rides on the answer; turning it back on sends a held ACK at once.
    @inlinable
    public static func setQuickAck(_ fd: Int32, _ on: Bool) {
        var value: Int32 = on ? 1 : 0
        _ = Glibc.setsockopt(fd, Int32(IPPROTO_TCP), TCP_QUICKACK, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Restrict the reuseport group that `fd` belongs to so that new connections go only to the
    /// listeners at indices 0..<active other than those in `skipping` (SO_ATTACH_REUSEPORT_CBPF):
    /// `ld rand; mod #(active - skipping.count)`, then for each skipped index h, ascending,
    /// `if a >= h { a += 1 }`, `ret a` — the k-th pick maps to the k-th index not skipped.
    public static func steerReusePortGroup(_ fd: Int32, active: Int, skipping: [Int] = [], byCPU: Bool = false) throws(SystemError) {
        let holes = skipping.filter { $0 >= 0 && $0 < active }.sorted()
        guard active > holes.count, let count = UInt32(exactly: active), holes.count <= 2000 else {
            throw SystemError(call: "setsockopt(SO_ATTACH_REUSEPORT_CBPF): \(active) listeners skipping \(holes.count)", errno: EINVAL)
        }
        let table = holes.map { UInt32(truncatingIfNeeded: $0) }
        _ = try table.withUnsafeBufferPointer { (p) throws(SystemError) -> Int32 in
            try syscall("setsockopt(SO_ATTACH_REUSEPORT_CBPF)") {
                ccluster_attach_reuseport_cbpf(fd, count, p.baseAddress, UInt32(table.count), byCPU ? 1 : 0)
            }
        }
    }

    /// A listener stops taking new connections without leaving LISTEN: SYNs are dropped (a socket
    /// filter, `ccluster_drop_syn`), handshakes already under way complete, and what is queued can
    /// still be accepted. A client whose SYN was dropped retries it (1 s later), and is refused
    /// once the listener is shut down.
    public static func dropNewConnections(_ fd: Int32) throws(SystemError) {
        _ = try syscall("setsockopt(SO_ATTACH_FILTER)") { ccluster_drop_syn(fd) }
    }

    /// A sockaddr_un for `name`: a path (NUL-terminated, the whole structure's length), or with
    /// `abstract` a name in the abstract namespace (a leading NUL, no file; the length counts the
    /// name's bytes exactly).
    private static func withUnixAddress<R>(_ name: [UInt8], abstract: Bool = false, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemError) -> R) throws(SystemError) -> R {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard name.count < capacity else {
            throw SystemError(call: "unix socket \(abstract ? "name" : "path") \(String(decoding: name, as: UTF8.self))", .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw[0] = 0  // the abstract namespace's mark, or overwritten by the path
            UnsafeMutableRawBufferPointer(rebasing: raw[(abstract ? 1 : 0)...]).copyBytes(from: name)
            if !abstract { raw[name.count] = 0 }
        }
        let length = abstract ? MemoryLayout<sa_family_t>.size + 1 + name.count : MemoryLayout<sockaddr_un>.size
        return try withUnsafePointer(to: &addr) { (p) throws(SystemError) -> R in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> R in
                try body(sa, socklen_t(length))
            }
        }
    }

    /// A Unix stream listener at `path` with file mode `mode` (and group `group`, when given): the
    /// socket file is replaced if stale (nothing accepts on it: left by a crash), refused with
    /// EADDRINUSE if a live server answers on it. The mode is set by the umask around bind(2) (a
    /// Unix socket's file cannot be fchmod'ed) and again by chmod(2), the group by chown(2), both
    /// before listen(2): no client connects while the file is still more open than asked.
    public static func unixListener(path: String, mode: mode_t, group: gid_t? = nil, backlog: Int32 = 128) throws(SystemError) -> Int32 {
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        do throws(SystemError) {
            if let problem = unixSocketPathProblem(path) {
                throw SystemError(call: "bind(\(path))", errno: EEXIST, detail: problem)
            }
            if Glibc.access(path, F_OK) == 0 {
                // A live server answers on it; a stale file from a crash does not.
                if try unixSocketAnswers(path: path) {
                    throw SystemError(call: "bind(\(path))", errno: EADDRINUSE, detail: "address already in use: another server is listening there (a connection to it is accepted)")
                }
                try Sys.unlink(path)
            }
            let oldMask = umask(0o777 & ~mode)
            defer { umask(oldMask) }
            _ = try withUnixAddress(Array(path.utf8)) { (sa, len) throws(SystemError) -> Int32 in
                try syscall(named: "bind(\(path))") { Glibc.bind(fd, sa, len) }
            }
            do throws(SystemError) {
                try Sys.chmod(path, mode)
                if let group { try FileIO.changeGroup(path, to: group) }
                try Sys.listen(fd, backlog: backlog)
            } catch {
                try? Sys.unlink(path)  // ours, just made: not left behind refusing connections
                throw error
            }
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// Whether a server accepts connections on the Unix socket at `path`: a non-blocking connect(2)
    /// succeeds, or finds its queue full (EAGAIN). A socket nobody listens on refuses
    /// (ECONNREFUSED): false. Anything else (no permission, no such file) is thrown.
    public static func unixSocketAnswers(path: String) throws(SystemError) -> Bool {
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        defer { Sys.close(fd) }
        do throws(SystemError) {
            _ = try withUnixAddress(Array(path.utf8)) { (sa, len) throws(SystemError) -> Int32 in
                try syscall(named: "connect(\(path))") { Glibc.connect(fd, sa, len) }
            }
            return true
        } catch where error.errno == EAGAIN {
            return true
        } catch where error.errno == ECONNREFUSED {
            return false
        }
    }

    /// Why a Unix socket may not be created at `path`, or nil: nothing is there, or a socket (a
    /// stale one from a crash is replaced). Anything else (a regular file, a directory, a symlink,
    /// a FIFO) is someone's data and is never deleted to make room.
    public static func unixSocketPathProblem(_ path: String) -> String? {
        do {
            guard let type = try FileIO.fileType(atPath: path), type != .socket else { return nil }
            return "\(path) exists and is \(type), not a socket; refusing to replace it (remove it or choose another path)"
        } catch {
            return "cannot inspect \(path): \(error.reason)"
        }
    }

    /// A blocking connection to a Unix stream socket.
    public static func unixConnect(path: String) throws(SystemError) -> Int32 {
        let fd = try Sys.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue))
        do throws(SystemError) {
            _ = try withUnixAddress(Array(path.utf8)) { (sa, len) throws(SystemError) -> Int32 in
                try syscall(named: "connect(\(path))") { Glibc.connect(fd, sa, len) }
            }
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// SO_RCVTIMEO: a blocking read on `fd` gives up after `seconds` (and `Sys.read` then returns
    /// `.wouldBlock`, the kernel's EAGAIN).
    public static func setReceiveTimeout(_ fd: Int32, seconds: Int) throws(SystemError) {
        try Sys.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeval(tv_sec: seconds, tv_usec: 0), call: "setsockopt(SO_RCVTIMEO)")
    }

    /// SO_PEERCRED of a connected Unix socket.
    public static func peerCredentials(_ fd: Int32) throws(SystemError) -> (pid: pid_t, uid: uid_t, gid: gid_t) {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        _ = try syscall("getsockopt(SO_PEERCRED)") { ccluster_peer_credentials(fd, &pid, &uid, &gid) }
        return (pid, uid, gid)
    }

    /// SO_PEERGROUPS of a connected Unix socket: the peer's supplementary groups when it connected
    /// (Linux 4.13+). The kernel says how much room it needs (ERANGE with the length set), so the
    /// buffer grows to that, at most 65536 groups (NGROUPS_MAX).
    public static func peerGroups(_ fd: Int32) throws(SystemError) -> [gid_t] {
        let peerGroupsOption: Int32 = 59  // SO_PEERGROUPS (asm-generic/socket.h)
        var capacity = 64
        while true {
            var groups = [gid_t](repeating: 0, count: capacity)
            var length = socklen_t(capacity * MemoryLayout<gid_t>.size)
            let rc = groups.withUnsafeMutableBytes { Glibc.getsockopt(fd, SOL_SOCKET, peerGroupsOption, $0.baseAddress, &length) }
            if rc == 0 { return Array(groups.prefix(Int(length) / MemoryLayout<gid_t>.size)) }
            let err = ccluster_errno()
            if err == EINTR { continue }
            let needed = Int(length) / MemoryLayout<gid_t>.size
            if err == ERANGE && needed > capacity && needed <= 65536 {
                capacity = needed
                continue
            }
            precondition(err != EBADF && err != EFAULT, "getsockopt(SO_PEERGROUPS): a descriptor or pointer bug")
            throw SystemError(call: "getsockopt(SO_PEERGROUPS)", errno: err)
        }
    }

    /// Send `bytes` and one descriptor over a Unix socket (SCM_RIGHTS).
    public static func sendDescriptor(_ socket: Int32, _ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("sendmsg(SCM_RIGHTS)") { ccluster_send_fd(socket, fd, bytes.baseAddress, bytes.count) }
    }

    /// Receive bytes and at most one descriptor from a Unix socket.
    public static func receiveDescriptor(_ socket: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<(count: Int, fd: Int32)> {
        var fd: Int32 = -1
        switch try nonBlockingSyscall("recvmsg", { ccluster_recv_fd(socket, &fd, buffer.baseAddress, buffer.count) }) {
        case .processed(let n): return .processed((n, fd))
        case .wouldBlock: return .wouldBlock
        }
    }
}

/// An IP address and port as the kernel reports them, kept without allocating: the address's bytes
/// big-endian in two halves (an IPv4 address in `low`'s low 32 bits), as `ProxyAddress` keeps them.
public struct SocketEndpoint: Hashable, Sendable {
    public var isIPv6: Bool
    public var high: UInt64
    public var low: UInt64
    public var port: UInt16

    public init(isIPv6: Bool, high: UInt64, low: UInt64, port: UInt16) {
        self.isIPv6 = isIPv6
        self.high = high
        self.low = low
        self.port = port
    }

    init(family: Int32, bytes: UnsafeRawBufferPointer, port: UInt16) {
        var high: UInt64 = 0, low: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if bytes.count == 16 && i < 8 { high = high << 8 | UInt64(b) } else { low = low << 8 | UInt64(b) }
        }
        self.init(isIPv6: family == AF_INET6, high: high, low: low, port: port)
    }

    /// Whether this (a listener's bound address) takes connections to `other`: the same port and
    /// family, and the same address unless this one is the wildcard.
    public func accepts(_ other: SocketEndpoint) -> Bool {
        port == other.port && isIPv6 == other.isIPv6 && ((high == 0 && low == 0) || (high == other.high && low == other.low))
    }
}
