import ClusterSystem
import Glibc
import Testing

/// What the modules outside the kernel door get from it instead of Glibc: named errnos, the one
/// IPv4/IPv6 bind, peer addresses, the blocking client's deadline, the log open.
@Suite struct KernelDoor {
    @Test func errnosHaveNames() {
        do {
            _ = try FileIO.readAll(path: "/nonexistent/clusterd-test")
            Issue.record("must fail")
        } catch {
            #expect(error.code == .noSuchFileOrDirectory)
            #expect(error.code.rawValue == ENOENT)
            #expect(error.code != .notDirectory)
            #expect(Errno.permissionDenied.rawValue == EACCES && Errno.connectionRefused.rawValue == ECONNREFUSED)
            #expect(SystemError(call: "write", .noSpace).errno == ENOSPC)
        }
    }

    @Test func ipv4AndIPv6BindTheSameWay() throws {
        for host in ["127.0.0.1", "::1"] {
            let first = try Socket.tcpListener(host: host, port: 0, reusePort: false)
            defer { Sys.close(first) }
            let port = try Socket.localPort(first)
            #expect(port != 0)
            #expect(try Socket.addressInUse(host: host, port: port), "\(host)")
            #expect(throws: SystemError.self) { try Socket.tcpListener(host: host, port: port, reusePort: false) }
        }
        // IPv6 listeners are v6-only: [::] and 0.0.0.0 share a port.
        let v6 = try Socket.tcpListener(host: "::", port: 0, reusePort: false)
        defer { Sys.close(v6) }
        let port = try Socket.localPort(v6)
        #expect(try !Socket.addressInUse(host: "0.0.0.0", port: port))
        let v4 = try Socket.tcpListener(host: "0.0.0.0", port: port, reusePort: false)
        Sys.close(v4)
    }

    @Test func aHostThatIsNotANumericAddressIsRefused() {
        for host in ["localhost", "1.2.3", "::g"] {
            do {
                Sys.close(try Socket.tcpListener(host: host, port: 0))
                Issue.record("\(host) must be refused")
            } catch {
                #expect(error.call == "inet_pton(\(host))")
                #expect(error.code == .invalidArgument)
            }
        }
    }

    @Test func peerAddressOfIPAndUnixSockets() throws {
        for (host, family) in [("127.0.0.1", AF_INET), ("::1", AF_INET6)] {
            let listener = try Socket.tcpListener(host: host, port: 0, reusePort: false)
            defer { Sys.close(listener) }
            let client = try blockingConnect(host: host, family: family, port: try Socket.localPort(listener))
            defer { Sys.close(client) }
            #expect(Socket.peerAddress(client) == host)
            #expect(Socket.peerAddressBytes(client)?.count == (family == AF_INET ? 4 : 16))
        }
        let (a, b) = try Sys.socketpair(type: Int32(SOCK_STREAM.rawValue))
        defer { Sys.close(a); Sys.close(b) }
        #expect(Socket.peerAddress(a) == "-")
        #expect(Socket.peerAddressBytes(a) == nil)
    }

    @Test func unixSocketNamesAreBounded() throws {
        let long = "/tmp/" + String(repeating: "x", count: 200)
        do {
            Sys.close(try Socket.unixConnect(path: long))
            Issue.record("must fail")
        } catch {
            #expect(error.code == .fileNameTooLong)
            #expect(error.call.hasPrefix("unix socket path /tmp/xxx"))
        }
        // The port lock's abstract name: one holder, gone with its socket.
        let port = UInt16(truncatingIfNeeded: 1 + Int(Sys.pid) % 60000)  // another test process: another name
        let lock = try #require(try Socket.lockPort(port))
        #expect(try Socket.lockPort(port) == nil)
        Sys.close(lock)
        let again = try #require(try Socket.lockPort(port))
        Sys.close(again)
    }

    @Test func receiveTimeoutEndsABlockingRead() throws {
        let (a, b) = try Sys.socketpair(type: Int32(SOCK_STREAM.rawValue), nonBlocking: false)
        defer { Sys.close(a); Sys.close(b) }
        try Socket.setReceiveTimeout(a, seconds: 1)
        let started = Clock.monotonicMilliseconds()
        var byte: UInt8 = 0
        #expect(try Sys.read(a, &byte, 1) == .wouldBlock)
        #expect(Clock.monotonicMilliseconds() - started >= 900)
    }

    @Test func appendingOpenRefusesAFIFOWithoutAReader() throws {
        let path = "/tmp/clusterd-door-fifo-\(Sys.pid)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { try? Sys.unlink(path) }
        do {
            Sys.close(try FileIO.openAppending(path, nonBlocking: true))
            Issue.record("must fail")
        } catch {
            #expect(error.code == .noSuchAddressOrDevice)
        }
        let file = "/tmp/clusterd-door-log-\(Sys.pid)"
        defer { try? Sys.unlink(file) }
        for line in ["a\n", "b\n"] {
            let fd = try FileIO.openAppending(file)
            try FileIO.writeAll(fd: fd, Array(line.utf8))
            Sys.close(fd)
        }
        #expect(try FileIO.readAll(path: file) == Array("a\nb\n".utf8))
    }
}

/// A blocking TCP connection to `host`:`port` (completes in the kernel's accept queue).
private func blockingConnect(host: String, family: Int32, port: UInt16) throws -> Int32 {
    let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var storage = sockaddr_storage()
    let length: Int
    if family == AF_INET6 {
        length = MemoryLayout<sockaddr_in6>.size
        withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
            $0.pointee.sin6_family = sa_family_t(AF_INET6)
            $0.pointee.sin6_port = port.bigEndian
            _ = inet_pton(AF_INET6, host, &$0.pointee.sin6_addr)
        } }
    } else {
        length = MemoryLayout<sockaddr_in>.size
        withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
            $0.pointee.sin_family = sa_family_t(AF_INET)
            $0.pointee.sin_port = port.bigEndian
            _ = inet_pton(AF_INET, host, &$0.pointee.sin_addr)
        } }
    }
    let rc = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(length)) } }
    if rc != 0 {
        close(fd)
        throw SystemError(call: "connect", errno: errno)
    }
    return fd
}

@Suite struct DescriptorOwnership {
    /// Whether `fd` still names the socket `id`: tests in other suites run in parallel and may be
    /// given a closed descriptor's number at once, so an open number alone proves nothing.
    /// (fstat(2) directly: the door traps on EBADF, a closed descriptor being a bug there.)
    static func isOpen(_ fd: Int32, _ id: FileIO.FileIdentity) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && FileIO.FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) == id
    }

    @Test func closedWhenTheOwnerGoesAndNotBefore() throws {
        let (a, b) = try Sys.socketpair()
        Sys.close(b)
        let idA = try FileIO.info(fd: a).identity
        do {
            let owner = Descriptor(taking: a)
            let fd = owner.rawValue
            #expect(Self.isOpen(fd, idA))
            _ = try FileIO.readAll(path: "/proc/self/stat", limit: 65536)  // other work in the scope
            #expect(Self.isOpen(fd, idA), "open until the end of the owner's scope")
        }
        #expect(!Self.isOpen(a, idA), "closed by the owner's deinit")
    }

    @Test func consumedOwnersCloseAtOnceAndTakenOnesNever() throws {
        let (a, b) = try Sys.socketpair()
        let (idA, idB) = (try FileIO.info(fd: a).identity, try FileIO.info(fd: b).identity)
        let first = Descriptor(taking: a)
        _ = consume first
        #expect(!Self.isOpen(a, idA))
        let second = Descriptor(taking: b)
        let handedOn = second.take()
        #expect(handedOn == b && Self.isOpen(b, idB), "take() hands it on without closing")
        Sys.close(handedOn)
    }

    /// A list hands its descriptors on in order, and closes with it those it did not hand on.
    @Test func aListHandsOnInOrderAndClosesTheRest() throws {
        let (a, b) = try Sys.socketpair()
        let (c, d) = try Sys.socketpair()
        let ids = try [a, b, c, d].map { try FileIO.info(fd: $0).identity }
        do {
            var list = DescriptorList()
            var more = DescriptorList()
            list.append(Descriptor(taking: a))
            more.append(Descriptor(taking: b))
            more.append(Descriptor(taking: c))
            list.append(contentsOf: more)
            list.append(Descriptor(taking: d))
            #expect(list.count == 4)
            let first = list.next()?.take() ?? -1
            #expect(first == a && list.count == 3)
            if first >= 0 { Sys.close(first) }
            if let second = list.next() {
                #expect(second.rawValue == b)
            }
            #expect(!Self.isOpen(b, ids[1]), "closed by the owner it was handed to")
            #expect(Self.isOpen(c, ids[2]) && Self.isOpen(d, ids[3]))
        }
        #expect(!Self.isOpen(c, ids[2]) && !Self.isOpen(d, ids[3]), "closed with the list")
    }

    /// Throwing out of a scope closes what it owned (the error paths that leaked before).
    @Test func anErrorPathClosesToo() throws {
        let (a, b) = try Sys.socketpair()
        Sys.close(b)
        let idA = try FileIO.info(fd: a).identity
        func failing() throws(SystemError) {
            let owner = Descriptor(taking: a)
            _ = try FileIO.readAll(path: "/nonexistent/clusterd-test-\(owner.rawValue)")
        }
        #expect(throws: SystemError.self) { try failing() }
        #expect(!Self.isOpen(a, idA))
    }
}
