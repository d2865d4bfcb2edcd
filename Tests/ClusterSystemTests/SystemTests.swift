import ClusterSystem
import Glibc
import Testing

@Suite struct SystemCalls {
    @Test func errorsNameTheCall() {
        do {
            _ = try FileIO.readAll(path: "/nonexistent/clusterd-test")
            Issue.record("must fail")
        } catch {
            #expect(error.call == "open(/nonexistent/clusterd-test)")
            #expect(error.errno == ENOENT)
            #expect(error.description.contains("No such file"))
        }
    }

    @Test func wouldBlockIsAValue() throws {
        let (a, b) = try Sys.socketpair(type: Int32(SOCK_STREAM.rawValue))
        defer { Sys.close(a); Sys.close(b) }
        var byte: UInt8 = 0
        #expect(try Sys.read(a, &byte, 1) == .wouldBlock)
        #expect(try Sys.write(b, [UInt8(7)], 1) == .processed(1))
        #expect(try Sys.read(a, &byte, 1) == .processed(1))
        #expect(byte == 7)
    }

    @Test func reusePortListenersShareAPort() throws {
        let first = try Socket.tcpListener(host: "127.0.0.1", port: 0)
        defer { Sys.close(first) }
        let port = try Socket.localPort(first)
        let second = try Socket.tcpListener(host: "127.0.0.1", port: port)
        defer { Sys.close(second) }
        #expect(try Socket.localPort(second) == port)
        try Socket.steerReusePortGroup(first, active: 1)
    }

    @Test func bindConflictIsATypedError() throws {
        let first = try Socket.tcpListener(host: "127.0.0.1", port: 0, reusePort: false)
        defer { Sys.close(first) }
        let port = try Socket.localPort(first)
        #expect(throws: SystemError.self) { try Socket.tcpListener(host: "127.0.0.1", port: port, reusePort: false) }
    }

    /// The probe that keeps a second daemon out of our reuseport group: any listener on the address
    /// (reuseport or not, exact or wildcard) makes it in use; a closed one does not.
    @Test func addressInUseSeesAnyListener() throws {
        let first = try Socket.tcpListener(host: "127.0.0.1", port: 0)
        let port = try Socket.localPort(first)
        #expect(try Socket.addressInUse(host: "127.0.0.1", port: port))
        Sys.close(first)
        #expect(try !Socket.addressInUse(host: "127.0.0.1", port: port))
        let wildcard = try Socket.tcpListener(host: "0.0.0.0", port: 0, reusePort: false)
        defer { Sys.close(wildcard) }
        let wildPort = try Socket.localPort(wildcard)
        #expect(try Socket.addressInUse(host: "127.0.0.1", port: wildPort), "0.0.0.0 covers 127.0.0.1")
    }

    /// `active: 3, skipping: [1]`: no new connection lands on the middle listener.
    @Test func steeringSkipsAListenerInTheMiddle() throws {
        let first = try Socket.tcpListener(host: "127.0.0.1", port: 0)
        let port = try Socket.localPort(first)
        let group = [first, try Socket.tcpListener(host: "127.0.0.1", port: port), try Socket.tcpListener(host: "127.0.0.1", port: port)]
        defer { group.forEach(Sys.close) }
        try Socket.steerReusePortGroup(first, active: 3, skipping: [1])
        var clients: [Int32] = []
        defer { clients.forEach(Sys.close) }
        for _ in 0..<60 { clients.append(try connect(port: port)) }
        var accepted = [0, 0, 0]
        for (i, fd) in group.enumerated() {
            while case .processed(let conn) = try Sys.accept(fd) {
                accepted[i] += 1
                Sys.close(conn)
            }
        }
        #expect(accepted[1] == 0)
        #expect(accepted[0] + accepted[2] == 60)
        #expect(accepted[0] > 0 && accepted[2] > 0)
        #expect(throws: SystemError.self) { try Socket.steerReusePortGroup(first, active: 2, skipping: [0, 1]) }
    }

    /// A FIFO with no writer is refused at once (the open would block without O_NONBLOCK).
    @Test func readRegularFileRefusesAFIFO() throws {
        let path = "/tmp/clusterd-test-fifo-\(Sys.pid)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        do {
            _ = try FileIO.readRegularFile(path: path, limit: 1024)
            Issue.record("must fail")
        } catch {
            #expect(error.reason == "not a regular file (a FIFO)")
        }
        #expect(throws: SystemError.self) { try FileIO.readRegularFile(path: "/tmp", limit: 1024) }
    }

    /// Other tests in this process open and close descriptors at the same time: the count is
    /// measured until a quiet moment gives an exact answer.
    @Test func descriptorCountFollowsOpenAndClose() throws {
        for _ in 0..<50 {
            let before = try Sys.openDescriptorCount()
            let (a, b) = try Sys.socketpair()
            let during = try Sys.openDescriptorCount()
            Sys.close(a)
            Sys.close(b)
            let after = try Sys.openDescriptorCount()
            if during == before + 2 && after == before {
                #expect(try Sys.descriptorLimit() > during)
                return
            }
            usleep(10_000)
        }
        Issue.record("the open descriptor count never matched")
    }

    /// A call that blocks (here on a pipe nobody writes yet) leaves the caller free; its result
    /// and the ready descriptor come when it returns, also after the caller has let it go.
    @Test func backgroundCallRunsOffTheCallersThread() throws {
        let (r, w) = try Sys.pipe()
        var closedW = false
        defer { if !closedW { Sys.close(w) } }
        try Sys.setNonBlocking(r, false)
        let call = try BackgroundCall.start { () throws(SystemError) -> [UInt8] in
            defer { Sys.close(r) }
            return try FileIO.readAll(fd: r, limit: 16)
        }
        var ready = pollfd(fd: call.readyFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 50) == 0, "still blocked")
        #expect(call.result == nil)
        #expect(try Sys.write(w, [UInt8(42)], 1) == .processed(1))
        Sys.close(w)
        closedW = true
        #expect(poll(&ready, 1, 5000) == 1)
        #expect(try call.result?.get() == [42])

        // Given up on while blocked: the thread keeps it alive and cleans up when it returns.
        let (r2, w2) = try Sys.pipe()
        try Sys.setNonBlocking(r2, false)
        var abandoned: BackgroundCall? = try BackgroundCall.start { () throws(SystemError) -> [UInt8] in
            defer { Sys.close(r2) }
            return try FileIO.readAll(fd: r2, limit: 16)
        }
        #expect(abandoned?.result == nil)
        abandoned = nil
        Sys.close(w2)
        _ = abandoned
    }

    @Test func memfdRoundTrip() throws {
        let fd = try FileIO.memfd(name: "test", bytes: Array("hello".utf8))
        defer { Sys.close(fd) }
        #expect(try FileIO.readAll(fd: fd) == Array("hello".utf8))
    }
}

@Suite struct CPUs {
    /// The affinity mask, not the machine: what `workers: "auto"` counts.
    @Test func allowedCPUsFollowTheAffinityMask() {
        let allowed = Sys.allowedCPUs
        #expect(!allowed.isEmpty)
        #expect(allowed == allowed.sorted())
        #expect(allowed.count <= Sys.onlineCPUs)
    }
}

/// A blocking TCP connection to 127.0.0.1:`port` (completes in the kernel's accept queue).
func connect(port: UInt16) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    if rc != 0 {
        close(fd)
        throw SystemError(call: "connect", errno: errno)
    }
    return fd
}
