import ClusterHTTP
import ClusterSystem
import Testing
@testable import ClusterWorker

/// `respondLater`: the answer is worked out by a task on the worker's own loop while the worker
/// serves its other connections; the connection's pipelined requests wait their turn.
@Suite struct DeferredAnswerTests {
    @Test func aDeferredAnswerComesInOrderBeforeWhatWasPipelinedBehindIt() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: get("/later") + get("/"))
        try h.turn(2)
        let out = h.kernel.received(c)
        #expect(out.responses == 2)
        let later = try #require(out.range(of: "later")), hello = try #require(out.range(of: "hello"))
        #expect(later.lowerBound < hello.lowerBound)
        #expect(h.stats[.requests] == 2 && h.stats[.status2xx] == 2)
    }

    @Test func otherConnectionsAreServedWhileAnAnswerWaits() throws {
        let h = try LoopHarness()
        let waiting = try h.client(sending: get("/gate") + get("/"))
        let other = try h.client()
        #expect(h.kernel.received(other).responses == 1)
        #expect(h.kernel.received(waiting).isEmpty)
        #expect(h.worker.handler.gate.count == 1)
        // Nothing is read from the waiting connection meanwhile, and it never times out.
        #expect(h.kernel.interest[waiting]?.events == 0)
        try h.after(milliseconds: 120_000)
        #expect(!h.kernel.isClosed(waiting))
        h.worker.handler.gate.open()
        try h.turn(2)
        let out = h.kernel.received(waiting)
        #expect(out.hasPrefix("HTTP/1.1 201") && out.responses == 2)
        #expect(h.kernel.interest[waiting]?.events == Epoll.readable)
    }

    @Test func anAnswerForAClientThatLeftIsDropped() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: get("/gate"))
        h.kernel.sockets[c]!.reset = true
        // A hang-up is all epoll reports while it waits.
        h.worker.dispatch(Epoll.hangup, Token.make(Token.connection, h.worker.table[c].generation, c))
        #expect(h.kernel.isClosed(c))
        #expect(h.stats[.openConnections] == 0)
        h.worker.handler.gate.open()
        try h.turn(2)
        #expect(h.worker.executor.inFlight == 0)
    }

    @Test func aDrainWaitsForTheAnswerThenCloses() throws {
        let h = try LoopHarness(withChannel: true)
        let c = try h.client(sending: get("/gate"))
        h.worker.beginDrain(mode: .handOff, timeout: nil)
        #expect(h.kernel.handedOff.isEmpty, "a connection awaiting its answer is not idle")
        #expect(try h.turn())
        h.worker.handler.gate.open()
        try h.turn(2)
        #expect(h.kernel.received(c).hasPrefix("HTTP/1.1 201"))
        #expect(h.kernel.handedOff.map(\.fd) == [c], "handed off once answered")
    }
}

/// Streamed bodies (`HTTPResponse.stream`): chunked, in order with what was pipelined, held back
/// while the client lags, stopped when it leaves.
@Suite struct StreamedAnswerTests {
    @Test func aStreamedBodyIsSentChunkedThenThePipelinedRequests() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: get("/stream") + get("/"))
        try h.turn(4)
        let out = h.kernel.received(c)
        #expect(out.contains("Transfer-Encoding: chunked\r\n"))
        #expect(out.contains("\r\n\r\n6\r\npiece0\r\n6\r\npiece1\r\n6\r\npiece2\r\n0\r\n\r\nHTTP/1.1 200 OK"), "\(out)")
        #expect(out.hasSuffix("hello") && out.responses == 2)
        #expect(h.worker.handler.streamLog.withLock { $0 } == ["wrote 0", "wrote 1", "wrote 2", "done"])
        #expect(h.worker.streams.isEmpty)
    }

    @Test func anHTTP10ClientGetsTheBodyUntilClose() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: "GET /stream HTTP/1.0\r\n\r\n")
        try h.turn(4)
        let out = h.kernel.received(c)
        #expect(!out.contains("chunked") && out.hasSuffix("\r\n\r\npiece0piece1piece2"), "\(out)")
        #expect(h.kernel.isClosed(c) || h.kernel.sockets[c]!.shutWrite)
    }

    @Test func headGetsTheHeadAndTheBodyIsNeverMade() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: "HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        try h.turn(3)
        #expect(h.kernel.received(c).hasSuffix("\r\n\r\n"))
        #expect(h.worker.handler.streamLog.withLock { $0 }.isEmpty)
    }

    @Test func theBodyWaitsWhileTheClientLags() throws {
        let h = try LoopHarness()
        let c = h.kernel.connect(h.listener, sending: get("/bigstream"))
        h.kernel.sockets[c]!.sendRoom = 50_000
        try h.turn(6)
        // Not all 2 MB were made: the closure waits for the client.
        let made = h.worker.handler.streamLog.withLock { $0.count }
        #expect(made < 8, "\(made) pieces made while the client took 50 kB")
        #expect(h.kernel.interest[c]?.events == Epoll.writable)
        h.kernel.sockets[c]!.sendRoom = .max
        try h.turn(40)
        #expect(h.worker.handler.streamLog.withLock { $0.last } == "done")
        let out = h.kernel.received(c)
        #expect(out.hasSuffix("0\r\n\r\n"))
        #expect(out.utf8.filter { $0 == UInt8(ascii: "b") }.count == 2_000_000)
    }

    @Test func aClientThatLeavesStopsTheBody() throws {
        let h = try LoopHarness()
        let c = h.kernel.connect(h.listener, sending: get("/bigstream"))
        h.kernel.sockets[c]!.sendRoom = 50_000
        try h.turn(6)
        h.kernel.sockets[c]!.reset = true
        // A reset: epoll reports an error and a hang-up with what the connection waits for.
        h.worker.dispatch(Epoll.hangup | Epoll.error | Epoll.writable, Token.make(Token.connection, h.worker.table[c].generation, c))
        try h.turn(4)
        #expect(h.kernel.isClosed(c))
        let log = h.worker.handler.streamLog.withLock { $0 }
        #expect(log.last == "ClientGone()" && !log.contains("done"), "\(log)")
        #expect(h.worker.streams.isEmpty)
    }
}

/// Request bodies handed to the handler as they arrive (`HTTPHandler.streamsBody`).
@Suite struct StreamedBodyTests {
    func post(_ path: String, length: Int) -> String {
        "POST \(path) HTTP/1.1\r\nHost: t\r\nContent-Length: \(length)\r\n\r\n"
    }

    @Test func aStreamedBodyMayExceedMaxBodyBytesAndArrivesInPieces() throws {
        let h = try LoopHarness { $0.limits.maxBodyBytes = 1_000 }
        let c = try h.client(sending: post("/upload", length: 5_000) + String(repeating: "x", count: 1_500))
        #expect(h.kernel.received(c).isEmpty)
        h.kernel.send(c, String(repeating: "x", count: 3_500) + get("/"))
        try h.turn(3)
        let out = h.kernel.received(c)
        #expect(out.hasPrefix("HTTP/1.1 200") && out.contains("got 5000") && out.hasSuffix("hello") && out.responses == 2, "\(out)")
        // Not for a handler that does not stream it: 413.
        let d = try h.client(sending: post("/other", length: 5_000))
        #expect(h.kernel.received(d).hasPrefix("HTTP/1.1 413"))
    }

    @Test func aChunkedBodyIsDecodedOnTheWay() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        h.kernel.send(c, "6;x=y\r\n world\r\n0\r\n\r\n")
        try h.turn(3)
        #expect(h.kernel.received(c).contains("got 11"))
        let bad = try h.client(sending: "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        try h.turn(2)
        #expect(h.kernel.received(bad).hasPrefix("HTTP/1.1 400"))
    }

    @Test func theConnectionIsNotReadWhileTheHandlerLagsBehind() throws {
        let h = try LoopHarness()
        let size = 700_000
        let c = try h.client(sending: post("/upload-gated", length: size))
        h.kernel.send(c, String(repeating: "y", count: size))
        try h.turn(60)
        // The worker took what fits (a little over the high-water mark) and stopped reading.
        let unread = h.kernel.sockets[c]!.inbound.count
        #expect(unread > 0 && unread <= size - RequestBodyStream.highWater, "\(unread) bytes left unread")
        #expect(h.kernel.interest[c]?.events == 0)
        try h.after(milliseconds: 120_000)
        #expect(!h.kernel.isClosed(c), "no timeout while the handler is the slow one")
        h.worker.handler.gate.open()
        try h.turn(80)
        #expect(h.kernel.received(c).contains("got \(size)"))
        #expect(h.kernel.sockets[c]!.inbound.isEmpty)
        #expect(h.kernel.interest[c]?.events == Epoll.readable)
    }

    @Test func anAnswerBeforeTheBodyClosesTheConnectionAfterIt() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: post("/upload-refused", length: 10_000) + "partial")
        let out = h.kernel.received(c)
        #expect(out.hasPrefix("HTTP/1.1 413") && out.contains("Connection: close"))
        #expect(h.kernel.isClosed(c) || h.kernel.sockets[c]!.shutWrite)
    }

    @Test func aClientThatLeavesMidBodyFailsTheStream() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: post("/upload", length: 10_000) + "partial")
        h.kernel.sockets[c]!.clientClosed = true
        try h.turn(3)
        #expect(h.kernel.isClosed(c))
        #expect(h.worker.executor.inFlight == 0, "the handler's task ended")
    }
}

/// Found in review: the cases where a deferred or streamed answer met a timeout, a lagging client
/// or a Unix-socket balancer.
@Suite struct DeferredAnswerEdges {
    @Test func aClientThatCatchesUpWhileAnAnswerIsWorkedOutGetsNoTimeout() throws {
        let h = try LoopHarness()
        let c = h.kernel.connect(h.listener)
        h.kernel.sockets[c]!.sendRoom = 1000
        try h.turn()
        // A big answer the socket does not take at once, then one deferred behind it.
        h.kernel.send(c, get("/big") + get("/gate"))
        try h.turn(3)
        h.kernel.sockets[c]!.sendRoom = .max
        try h.turn(3)
        #expect(h.kernel.received(c).responses == 1)
        // Well past sendTimeout: no 408, not closed, the answer still comes.
        try h.after(milliseconds: 60_000)
        #expect(!h.kernel.isClosed(c) && h.kernel.received(c).isEmpty)
        h.worker.handler.gate.open()
        try h.turn(2)
        #expect(h.kernel.received(c).hasPrefix("HTTP/1.1 201"))
    }

    @Test func aProducerThatAwaitsBetweenWritesIsStillHeldBackByASlowClient() throws {
        let h = try LoopHarness()
        let c = h.kernel.connect(h.listener, sending: get("/yieldstream"))
        h.kernel.sockets[c]!.sendRoom = 50_000
        try h.turn(30)
        let made = h.worker.handler.streamLog.withLock { $0.count }
        #expect(made <= 5, "\(made) pieces of 100 kB made while the client took 50 kB")
        #expect(h.worker.table[c].output.readableBytes <= ResponseStream.highWater + 100_000)
        h.kernel.sockets[c]!.sendRoom = .max
        try h.turn(60)
        #expect(h.worker.handler.streamLog.withLock { $0.last } == "done")
        #expect(h.kernel.received(c).hasSuffix("0\r\n\r\n"))
    }

    @Test func aUnixSocketBalancersConnectionHandedOverUnreadStillSendsItsHeader() throws {
        let kernelPath = "/run/clusterd/http.sock"
        let h = try LoopHarness(withChannel: true, listenerPath: kernelPath) {
            $0.proxyProtocol = [true]
            $0.trustedProxies = TrustedNetworks([([127, 0, 0, 0], 8)])
        }
        let fd: Int32 = 77
        h.kernel.paths[fd] = kernelPath
        h.kernel.sockets[fd] = FakeKernel.Socket(inbound: Array(("PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n" + get("/client")).utf8))
        h.kernel.toWorker = [(Array("conn ".utf8), fd)]
        try h.turn(2)
        #expect(h.kernel.received(fd).hasSuffix("203.0.113.7:5555 -"))
    }
}
