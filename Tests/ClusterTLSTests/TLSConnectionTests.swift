import ClusterConfig
import ClusterTLS
import Foundation
import Glibc
import Testing

/// The non-blocking steps a worker drives (`Connection+TLS.swift`), over a Unix stream socketpair
/// with a client made by the same module: want-read before the peer spoke, want-write when the
/// socket is full and the same bytes again after, a failed handshake, close_notify read as EOF, SNI.
@Suite(.serialized) struct TLSConnectionSteps {
    static let certs = try? Certificates()

    final class Pair {
        let server: TLSConnection
        let client: TLSConnection
        let fds: (Int32, Int32)

        init(_ tls: TLSServer, serverName: String? = "site.test") throws {
            var sv: [Int32] = [-1, -1]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else { throw POSIXError(.EIO) }
            fds = (sv[0], sv[1])
            server = try #require(tls.connection(fd: sv[0]))
            client = try #require(TLSConnection.client(fd: sv[1], serverName: serverName))
        }

        deinit {
            server.free()
            client.free()
            Glibc.close(fds.0)
            Glibc.close(fds.1)
        }

        /// Steps both sides until both handshakes are complete (at most 20 rounds).
        func handshake() -> Bool {
            var serverDone = false, clientDone = false
            for _ in 0..<20 where !(serverDone && clientDone) {
                if !clientDone {
                    switch client.handshake() {
                    case .processed: clientDone = true
                    case .failed: return false
                    default: break
                    }
                }
                if !serverDone {
                    switch server.handshake() {
                    case .processed: serverDone = true
                    case .failed: return false
                    default: break
                    }
                }
            }
            return serverDone && clientDone
        }
    }

    func server(_ names: [(String, String)] = [("site.pem", "site.key")]) throws -> TLSServer {
        let c = try #require(Self.certs)
        return try TLSServer(TLS(pairs: names.map { TLS.Pair(certificate: c.path($0.0), key: c.path($0.1)) }), file: "c.json", keyPath: "listen[0].tls",
                             now: Int64(Date().timeIntervalSince1970), kernelTLSAvailable: false)
    }

    @Test func handshakeWaitsForTheClientThenCompletes() throws {
        let pair = try Pair(try server())
        // Nothing from the client yet: the server waits for readability, it does not fail.
        #expect(pair.server.handshake() == .wantRead)
        #expect(pair.handshake())
        #expect(pair.server.version == "TLSv1.3")
        #expect(pair.client.negotiatedHTTP11 && pair.server.negotiatedHTTP11)
        #expect(!pair.server.resumed)
        #expect(!pair.server.kernelSends)  // a Unix socket has no kernel TLS
    }

    @Test func readsWhatArrivedThenWantsRead() throws {
        let pair = try Pair(try server())
        #expect(pair.handshake())
        var buffer = [UInt8](repeating: 0, count: 16384)
        #expect(buffer.withUnsafeMutableBytes { pair.server.read($0.baseAddress!, $0.count) } == .wantRead)
        let request = Array("GET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { pair.client.write($0.baseAddress!, $0.count) } == .processed(request.count))
        #expect(buffer.withUnsafeMutableBytes { pair.server.read($0.baseAddress!, $0.count) } == .processed(request.count))
        #expect(Array(buffer[..<request.count]) == request)
        #expect(!pair.server.hasPending)
        #expect(buffer.withUnsafeMutableBytes { pair.server.read($0.baseAddress!, $0.count) } == .wantRead)
    }

    @Test func aFullSocketWantsWriteAndTheSameBytesGoOnAfter() throws {
        let pair = try Pair(try server())
        #expect(pair.handshake())
        let body = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var sent = 0, received: [UInt8] = [], sawWantWrite = false
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count < body.count {
            // As the worker does: write until the socket is full, then again from where the last
            // successful write ended once the reader made room.
            writing: while sent < body.count {
                switch body.withUnsafeBytes({ pair.server.write($0.baseAddress! + sent, body.count - sent) }) {
                case .processed(let n): sent += n
                case .wantWrite:
                    sawWantWrite = true
                    break writing
                case let other: Issue.record("write: \(other)"); return
                }
            }
            switch buffer.withUnsafeMutableBytes({ pair.client.read($0.baseAddress!, $0.count) }) {
            case .processed(let n) where n > 0: received += buffer[..<n]
            case .wantRead: break
            case let other: Issue.record("read: \(other)"); return
            }
        }
        #expect(sawWantWrite, "a 4 MiB answer fills a socketpair")
        #expect(received == body)
    }

    @Test func closeNotifyReadsAsEndOfStream() throws {
        let pair = try Pair(try server())
        #expect(pair.handshake())
        pair.server.closeNotify()
        var buffer = [UInt8](repeating: 0, count: 1024)
        #expect(buffer.withUnsafeMutableBytes { pair.client.read($0.baseAddress!, $0.count) } == .processed(0))
        // A bare EOF (the client closes its socket without close_notify) also reads as the end.
        Glibc.shutdown(pair.fds.1, Int32(SHUT_WR))
        #expect(buffer.withUnsafeMutableBytes { pair.server.read($0.baseAddress!, $0.count) } == .processed(0))
    }

    @Test func plainHTTPIsToldApartFromOtherFailures() throws {
        let pair = try Pair(try server())
        let request = Array("GET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { Glibc.write(pair.fds.1, $0.baseAddress!, $0.count) }
        #expect(pair.server.handshake() == .plainHTTP)
        pair.server.closeNotify()  // nothing is sent after a failure (and nothing traps)
        let garbage = try Pair(try server())
        _ = [UInt8](repeating: 0x16, count: 64).withUnsafeBytes { Glibc.write(garbage.fds.1, $0.baseAddress!, $0.count) }
        #expect(garbage.server.handshake() == .failed)
    }

    @Test func sniChoosesTheCertificateThatNamesTheHost() throws {
        let tls = try server([("site.pem", "site.key"), ("other.pem", "other.key")])
        for (name, index) in [("other.test", 1), ("site.test", 0), ("unknown.test", 0)] {
            let pair = try Pair(tls, serverName: name)
            #expect(pair.handshake())
            #expect(pair.client.peerSerial == tls.certificates[index].serial, "\(name)")
        }
        let noName = try Pair(tls, serverName: nil)
        #expect(noName.handshake())
        #expect(noName.client.peerSerial == tls.certificates[0].serial)
    }
}
