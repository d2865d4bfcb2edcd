import ClusterHTTP
import ClusterSystem
import Testing
@testable import ClusterWorker

/// A `proxyProtocol` listener in the loop: the header first, from trusted peers only, the client it
/// names kept for the whole connection and carried along when the connection is handed on.
@Suite struct ProxyProtocolWorkerTests {
    static let loopback = TrustedNetworks([([127, 0, 0, 0], 8)])

    /// A worker whose one listener expects PROXY headers from 127.0.0.0/8 (the fake's peers).
    func proxyHarness(withChannel: Bool = false, trusted: TrustedNetworks = loopback) throws -> LoopHarness {
        try LoopHarness(withChannel: withChannel) {
            $0.proxyProtocol = [true]
            $0.trustedProxies = trusted
        }
    }

    static let v1 = "PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"

    /// The body of the one response in `output`.
    func body(_ output: String) -> String {
        output.components(separatedBy: "\r\n\r\n").dropFirst().first ?? ""
    }

    @Test func theHeaderNamesTheClientForEveryRequestOfTheConnection() throws {
        let h = try proxyHarness()
        let c = try h.client(sending: Self.v1 + get("/client"))
        #expect(body(h.kernel.received(c)) == "203.0.113.7:5555 -")
        h.kernel.send(c, get("/client"))
        try h.turn()
        #expect(body(h.kernel.received(c)) == "203.0.113.7:5555 -")
        #expect(h.stats[.requests] == 2)
    }

    @Test func aHeaderThatComesInPiecesIsWaitedFor() throws {
        let h = try proxyHarness()
        let v2 = ProxyProtocol.encodeV2(source: ProxyEndpoint(address: ProxyAddress.parse("2001:db8::9")!, port: 443))
        let c = h.kernel.connect(h.listener)
        h.kernel.sockets[c]!.inbound = Array(v2[0..<10])
        try h.turn()
        #expect(!h.kernel.isClosed(c) && h.kernel.received(c).isEmpty)
        h.kernel.sockets[c]!.inbound = Array(v2[10...]) + Array(get("/client").utf8)
        try h.turn()
        #expect(body(h.kernel.received(c)) == "2001:db8::9:443 -")
    }

    @Test func aPeerOutsideTrustedProxiesIsClosedUnread() throws {
        let h = try proxyHarness(trusted: TrustedNetworks([([10, 0, 0, 0], 8)]))
        let c = try h.client(sending: Self.v1 + get("/client"))
        #expect(h.kernel.isClosed(c))
        #expect(h.kernel.sockets[c]!.reads == 0 && h.kernel.received(c).isEmpty)
        #expect(h.stats[.proxyUntrusted] == 1 && h.stats[.proxyInvalid] == 0)
        #expect(h.stats[.openConnections] == 0)
    }

    @Test func aConnectionWithoutAHeaderIsClosedWithoutAnAnswer() throws {
        let h = try proxyHarness()
        let c = try h.client(sending: get("/client"))
        #expect(h.kernel.isClosed(c) && h.kernel.received(c).isEmpty)
        #expect(h.stats[.proxyInvalid] == 1 && h.stats[.requests] == 0)
    }

    @Test func noHeaderWithinTheHeaderTimeoutCloses() throws {
        let h = try proxyHarness()
        let c = h.kernel.connect(h.listener)
        try h.turn()
        try h.expectCloses(c, openFor: h.worker.settings.headerTimeout - 100, closedWithin: 400)
        #expect(h.kernel.received(c).isEmpty)
        #expect(h.stats[.proxyInvalid] == 1)
    }

    @Test func aLocalHeaderLeavesTheSocketsPeerAsTheClient() throws {
        let h = try proxyHarness()
        let local = String(decoding: ProxyProtocol.encodeV2(source: nil), as: UTF8.self)
        let c = try h.client(sending: local + get("/client"))
        #expect(body(h.kernel.received(c)) == "- -")
    }

    @Test func aHandedOffConnectionTakesItsClientAlong() throws {
        let h = try proxyHarness(withChannel: true)
        let c = try h.client(sending: Self.v1 + get("/client"))
        _ = h.kernel.received(c)
        h.worker.beginDrain(mode: .handOff, timeout: nil)
        #expect(h.kernel.handedOff.map(\.fd) == [c])
        let message = h.kernel.handedOff[0].bytes
        #expect(message.starts(with: Array("connp".utf8)))
        // The worker that adopts it answers for the same client, on a listener that is no
        // `proxyProtocol` one of its own (the header came with the connection).
        let other = try LoopHarness(withChannel: true) { $0.trustedProxies = Self.loopback }
        let fd: Int32 = 77
        other.kernel.sockets[fd] = FakeKernel.Socket(inbound: Array(get("/client").utf8))
        other.kernel.toWorker = [(message, fd)]
        try other.turn(2)
        #expect(body(other.kernel.received(fd)) == "203.0.113.7:5555 -")
        #expect(other.stats[.proxyInvalid] == 0)
    }

    @Test func aConnectionTheMasterTookFromAProxyListenersQueueStillSendsItsHeader() throws {
        let h = try proxyHarness(withChannel: true)
        let fd: Int32 = 77
        h.kernel.sockets[fd] = FakeKernel.Socket(inbound: Array((Self.v1 + get("/client")).utf8))
        h.kernel.toWorker = [(Array("conn ".utf8), fd)]
        try h.turn(2)
        #expect(body(h.kernel.received(fd)) == "203.0.113.7:5555 -")
        // One whose address is another listener's is not expected to send one.
        let plain: Int32 = 78
        h.kernel.locals[plain] = SocketEndpoint(isIPv6: false, high: 0, low: 0x7F00_0001, port: 9999)
        h.kernel.sockets[plain] = FakeKernel.Socket(inbound: Array(get("/client").utf8))
        h.kernel.toWorker = [(Array("conn ".utf8), plain)]
        try h.turn(2)
        #expect(body(h.kernel.received(plain)) == "- -")
    }

    @Test func xForwardedForIsBelievedOnlyFromATrustedPeer() throws {
        let trusting = try LoopHarness { $0.trustedProxies = TrustedNetworks([([127, 0, 0, 0], 8), ([10, 0, 0, 0], 8)]) }
        let request = "GET /client HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.9, 10.1.1.1\r\n\r\n"
        let c = try trusting.client(sending: request)
        #expect(body(trusting.kernel.received(c)) == "- 198.51.100.9")
        let other = try LoopHarness { $0.trustedProxies = TrustedNetworks([([10, 0, 0, 0], 8)]) }
        let d = try other.client(sending: request)
        #expect(body(other.kernel.received(d)) == "- -")
        let none = try LoopHarness()
        let e = try none.client(sending: request)
        #expect(body(none.kernel.received(e)) == "- -")
    }

    /// A stop does not wait for a balancer's connection that has sent nothing yet: like an idle
    /// keep-alive one, it is closed gracefully after `drainIdleGrace`; a reload hands it on
    /// unread, and the adopting worker still expects its header.
    @Test func aConnectionThatSentNothingYetDoesNotHoldAStop() throws {
        let h = try proxyHarness(withChannel: true)
        let c = h.kernel.connect(h.listener)
        try h.turn()
        h.worker.beginDrain(mode: .close, timeout: nil)
        try h.after(milliseconds: h.worker.settings.drainIdleGrace + 300)
        #expect(h.kernel.sockets[c]!.shutWrite)
        h.kernel.sockets[c]!.clientClosed = true
        try h.turn()
        #expect(try h.turn() == false)

        let r = try proxyHarness(withChannel: true)
        let d = r.kernel.connect(r.listener)
        try r.turn()
        r.worker.beginDrain(mode: .handOff, timeout: nil)
        #expect(r.kernel.handedOff.map(\.fd) == [d])
        #expect(String(decoding: r.kernel.handedOff[0].bytes, as: UTF8.self) == "conn ")
    }
}
