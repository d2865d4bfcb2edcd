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
