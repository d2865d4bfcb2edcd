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
