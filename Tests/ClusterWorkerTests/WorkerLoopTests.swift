import ClusterControl
import ClusterHTTP
import ClusterSystem
import Foundation
import Glibc
import Testing
@testable import ClusterWorker

/// The worker loop over a fake kernel and a manual clock: each outcome below is decided by the
/// events and the clock the test sets, never by a sleep.
@Suite struct WorkerLoopTests {
    @Test func servesAndKeepsAlive() throws {
        let h = try LoopHarness()
        let c = try h.client()
        #expect(h.kernel.received(c).hasSuffix("\r\n\r\nhello"))
        h.kernel.send(c, get("/again"))
        try h.turn()
        #expect(h.kernel.received(c).responses == 1)
        #expect(!h.kernel.isClosed(c))
        #expect(h.stats[.requests] == 2)
        #expect(h.stats[.openConnections] == 1)
    }

    @Test func acceptBacksOffOnEMFILEThenResumes() throws {
        let h = try LoopHarness { $0.acceptBackoff = 100 }
        h.kernel.acceptErrors = [EMFILE]
        let c = h.kernel.connect(h.listener, sending: get("/"))
        try h.turn()
        // Out of descriptors: the listener leaves epoll (no busy loop on a queue it cannot take).
        #expect(!h.listenerRegistered)
        #expect(h.kernel.acceptCalls == 1)
        try h.after(milliseconds: 99)
        try h.turn(3)
        #expect(h.kernel.acceptCalls == 1)
        #expect(h.kernel.received(c).isEmpty)
        // The back-off over, the queued connection is taken and answered.
        try h.after(milliseconds: 1)
        #expect(h.listenerRegistered)
        try h.turn()
        #expect(h.kernel.received(c).hasSuffix("hello"))
    }

    @Test func acceptPausesAtConnectionCapAndResumesWhenOneCloses() throws {
        let h = try LoopHarness { $0.maxConnections = 1 }
        let first = try h.client()
        #expect(h.kernel.received(first).responses == 1)
        let second = h.kernel.connect(h.listener, sending: get("/"))
        try h.turn(2)
        #expect(!h.listenerRegistered)
        #expect(h.kernel.received(second).isEmpty)
        h.kernel.sockets[first]!.clientClosed = true
        try h.turn(2)
        #expect(h.kernel.isClosed(first))
        #expect(h.kernel.received(second).responses == 1)
    }

    @Test func backPressureStopsReadingAtTheOutputCap() throws {
        let h = try LoopHarness()
        let c = h.kernel.connect(h.listener)
        h.kernel.sockets[c]!.sendRoom = 1000
        try h.turn()
        // Three pipelined 200 kB answers: the engine stops after the second (over
        // maxPendingOutput), the socket takes 1000 bytes, the worker waits for EPOLLOUT.
        h.kernel.send(c, get("/big") + get("/big") + get("/big"))
        try h.turn()
        #expect(h.kernel.sockets[c]!.outbound.count == 1000)
        #expect(h.kernel.interest[c]!.events == Epoll.writable)
        #expect(h.stats[.requests] == 2)
        // What the client sends now is not read while its answers wait.
        let reads = h.kernel.sockets[c]!.reads
        h.kernel.send(c, get("/"))
        try h.turn(5)
        #expect(h.kernel.sockets[c]!.reads == reads)
        #expect(h.kernel.sockets[c]!.inbound.count == get("/").utf8.count)
        // The client reads: everything is answered, in order, and reading resumes.
        h.kernel.sockets[c]!.sendRoom = .max
        try h.turn(3)
        let out = h.kernel.received(c)
        #expect(out.responses == 4)
        #expect(out.hasSuffix("hello"))
        #expect(h.kernel.interest[c]!.events == Epoll.readable)
        #expect(h.kernel.sockets[c]!.inbound.isEmpty)
    }

    @Test func sendTimeoutDropsAClientThatDoesNotRead() throws {
        let h = try LoopHarness { $0.sendTimeout = 5_000 }
        let c = h.kernel.connect(h.listener, sending: get("/big"))
        h.kernel.sockets[c]!.sendRoom = 1000
        try h.turn()
        try h.expectCloses(c, openFor: 4_999, closedWithin: 300)
    }

    @Test func lingeringCloseAfterConnectionCloseWithUnreadInput() throws {
        let h = try LoopHarness { $0.lingerTimeout = 2_000 }
        // A pipelined request behind a `Connection: close` one: closing at once would reset.
        let c = try h.client(sending: get("/", close: true) + "GET /late HTTP/1.1\r\nHo")
        #expect(h.kernel.received(c).responses == 1)
        #expect(h.kernel.sockets[c]!.shutWrite)
        #expect(!h.kernel.isClosed(c))
        // Input is read and dropped, the connection stays until the client closes.
        h.kernel.send(c, "st: x\r\n\r\n")
        try h.turn()
        #expect(h.kernel.sockets[c]!.inbound.isEmpty)
        #expect(h.kernel.received(c).isEmpty)
        #expect(!h.kernel.isClosed(c))
        h.kernel.sockets[c]!.clientClosed = true
        try h.turn()
        #expect(h.kernel.isClosed(c))
    }

    @Test func lingeringCloseEndsAtLingerTimeout() throws {
        let h = try LoopHarness { $0.lingerTimeout = 2_000 }
        let c = try h.client(sending: get("/", close: true) + "GET /x")
        #expect(h.kernel.sockets[c]!.shutWrite)
        try h.after(milliseconds: 1_900)
        #expect(!h.kernel.isClosed(c))
        try h.after(milliseconds: 400)
        #expect(h.kernel.isClosed(c))
    }

    @Test func closesAtOnceWhenNothingIsLeftUnread() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: get("/", close: true))
        #expect(h.kernel.received(c).contains("Connection: close"))
        #expect(h.kernel.isClosed(c))
    }

    @Test func headerTimeoutAnswers408() throws {
        let h = try LoopHarness { $0.headerTimeout = 10_000 }
        let c = try h.client(sending: "GET / HTTP/1.1\r\nHo")
        try h.expectAnswer("HTTP/1.1 408", to: c, silentFor: 9_900, answeredWithin: 400)
        #expect(h.kernel.isClosed(c) || h.kernel.sockets[c]!.shutWrite)
        #expect(h.stats[.status4xx] == 1)
    }

    @Test func headerTimeoutCountsFromTheFirstByteNotTheLast() throws {
        // A slowloris client trickling its head in does not push the deadline forward.
        let h = try LoopHarness { $0.headerTimeout = 10_000 }
        let c = try h.client(sending: "GET / HTTP/1.1\r\n")
        for _ in 0..<9 {
            h.kernel.advance(milliseconds: 1_000)
            h.kernel.send(c, "X-A: b\r\n")
            try h.turn()
        }
        try h.after(milliseconds: 1_300)
        #expect(h.kernel.received(c).hasPrefix("HTTP/1.1 408"))
    }

    @Test func bodyTimeoutAnswers408() throws {
        let h = try LoopHarness { $0.bodyTimeout = 30_000 }
        let c = try h.client(sending: "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        try h.expectAnswer("HTTP/1.1 408", to: c, silentFor: 29_800, answeredWithin: 500)
    }

    @Test func idleKeepAliveConnectionClosesAtKeepAliveTimeout() throws {
        let h = try LoopHarness { $0.keepAliveTimeout = 75_000 }
        let c = try h.client()
        try h.expectCloses(c, openFor: 74_800, closedWithin: 500)
    }

    @Test func staleEventForAReusedDescriptorIsDropped() throws {
        let h = try LoopHarness()
        let c = try h.client()
        let token = h.kernel.interest[c]!.data
        h.kernel.sockets[c]!.clientClosed = true
        try h.turn()
        #expect(h.kernel.isClosed(c))
        // The same fd number comes back for a new connection: an event with the old token must
        // not reach it.
        h.kernel.sockets[c] = FakeKernel.Socket(inbound: Array(get("/").utf8))
        h.kernel.backlog[h.listener]!.append(c)
        try h.turn()
        #expect(h.kernel.interest[c]!.data != token)
    }

    // MARK: - Hand-off and drain

    @Test func stoppingKeepsServingWithConnectionCloseAndTellsTheHandler() throws {
        let h = try LoopHarness(withChannel: true)
        let before = try h.client()
        #expect(!h.kernel.received(before).contains("Connection: close"))
        #expect(!h.worker.lifecycle.isStopping)
        // shutdownDelay: the master's `stopping`, then the worker still accepts and answers.
        h.kernel.toWorker = [(Array("stopping".utf8), -1)]
        try h.turn()
        #expect(h.worker.lifecycle.isStopping && h.worker.state == .running)
        let during = try h.client()
        let answer = h.kernel.received(during)
        #expect(answer.responses == 1 && answer.contains("Connection: close"))
        #expect(h.kernel.isClosed(during) || h.kernel.interest[during] != nil)
        #expect(h.kernel.sentMessages == ["ready"], "not draining yet")
    }

    @Test func drainHandsIdleConnectionsOff() throws {
        let h = try LoopHarness(withChannel: true)
        #expect(h.kernel.sentMessages == ["ready"])
        let idle = try h.client()
        _ = h.kernel.received(idle)
        // One in the middle of a request is handed off only once it has been answered.
        let busy = try h.client(sending: "GET / HTTP/1.1\r\nHo")
        h.worker.beginDrain(mode: .handOff, timeout: nil)
        #expect(h.kernel.sentMessages == ["ready", "draining"])
        #expect(h.kernel.handedOff.map(\.fd) == [idle])
        #expect(String(decoding: h.kernel.handedOff[0].bytes, as: UTF8.self) == "conn ")
        #expect(h.kernel.isClosed(idle))
        #expect(h.kernel.interest[idle] == nil)
        #expect(!h.kernel.isClosed(busy))
        h.kernel.send(busy, "st: t\r\n\r\n")
        try h.turn()
        #expect(h.kernel.received(busy).responses == 1)
        #expect(h.kernel.handedOff.map(\.fd) == [idle, busy])
        #expect(h.stats[.connectionsHandedOff] == 2)
        // Nothing left: the worker is done.
        #expect(try h.turn() == false)
    }

    @Test func handOffWaitsForRoomOnTheChannel() throws {
        let h = try LoopHarness(withChannel: true)
        let c = try h.client()
        h.kernel.channelFull = true
        h.worker.beginDrain(mode: .handOff, timeout: nil)
        #expect(h.kernel.handedOff.isEmpty)
        #expect(!h.kernel.isClosed(c))
        h.kernel.channelFull = false
        try h.turn()
        #expect(h.kernel.handedOff.map(\.fd) == [c])
        #expect(h.kernel.isClosed(c))
    }

    @Test func adoptedConnectionIsServedWithTheBytesThatCameWithIt() throws {
        let h = try LoopHarness(withChannel: true)
        let fd: Int32 = 77
        h.kernel.sockets[fd] = FakeKernel.Socket(inbound: Array("st: t\r\n\r\n".utf8))
        h.kernel.toWorker = [(Array("conn GET /moved HTTP/1.1\r\nHo".utf8), fd)]
        try h.turn(2)
        #expect(h.kernel.received(fd).responses == 1)
        #expect(h.stats[.connectionsAdopted] == 1)
        #expect(h.kernel.interest[fd]?.events == Epoll.readable)
    }

    @Test func connectionAdoptedDuringAStopGetsTheIdleGraceNotKeepAlive() throws {
        let h = try LoopHarness(withChannel: true) { $0.drainIdleGrace = 1_000 }
        h.worker.beginDrain(mode: .close, timeout: nil)
        // The master passes on what was queued at the stop: nothing arrives on it.
        let fd: Int32 = 77
        h.kernel.sockets[fd] = FakeKernel.Socket()
        h.kernel.toWorker = [(Array("conn ".utf8), fd)]
        try h.turn()
        #expect(!h.kernel.isClosed(fd))
        try h.after(milliseconds: 1_300)
        #expect(h.kernel.sockets[fd]!.shutWrite)
        h.kernel.sockets[fd]!.clientClosed = true
        try h.turn()
        #expect(try h.turn() == false)
    }

    @Test func stopAnswersPipelinedRequestsThenCloses() throws {
        let h = try LoopHarness()
        let c = try h.client()
        _ = h.kernel.received(c)
        h.worker.beginDrain(mode: .close, timeout: nil)
        // Three requests in one segment during the stop: all answered, the last says close.
        h.kernel.send(c, get("/1") + get("/2") + get("/3"))
        try h.turn()
        let out = h.kernel.received(c)
        #expect(out.responses == 3)
        #expect(out.components(separatedBy: "Connection: close").count - 1 == 1)
        #expect(h.kernel.isClosed(c))
        #expect(try h.turn() == false)
    }

    @Test func stopClosesIdleConnectionsGracefullyAfterDrainIdleGrace() throws {
        let h = try LoopHarness {
            $0.drainIdleGrace = 1_000
            $0.lingerTimeout = 2_000
        }
        let quiet = try h.client()
        let late = try h.client()
        _ = h.kernel.received(quiet)
        _ = h.kernel.received(late)
        h.worker.beginDrain(mode: .close, timeout: nil)
        #expect(!h.listenerRegistered)
        // Within the grace a request is still answered, with Connection: close.
        try h.after(milliseconds: 500)
        h.kernel.send(late, get("/"))
        try h.turn()
        #expect(h.kernel.received(late).contains("Connection: close"))
        #expect(h.kernel.isClosed(late))
        // After it, the idle one gets a FIN first (no reset), and lingers until the client closes.
        try h.after(milliseconds: 400)
        #expect(!h.kernel.sockets[quiet]!.shutWrite)
        try h.after(milliseconds: 400)
        #expect(h.kernel.sockets[quiet]!.shutWrite)
        #expect(!h.kernel.isClosed(quiet))
        #expect(h.kernel.received(quiet).isEmpty)
        h.kernel.sockets[quiet]!.clientClosed = true
        try h.turn()
        #expect(h.kernel.isClosed(quiet))
        #expect(try h.turn() == false)
    }

    @Test func drainIdleGraceCountsFromTheDrainMessageNotFromBeforeTheSleep() throws {
        let h = try LoopHarness(withChannel: true) { $0.drainIdleGrace = 1_000 }
        let c = try h.client()
        _ = h.kernel.received(c)
        // The worker slept 400 ms in epoll_wait before the master's `drain` came.
        h.kernel.toWorker = [(Array("drain".utf8), -1)]
        h.kernel.sleepBeforeEvents = 400
        try h.turn()
        #expect(h.worker.state == .draining)
        try h.after(milliseconds: 900)
        #expect(!h.kernel.sockets[c]!.shutWrite)
        try h.after(milliseconds: 300)
        #expect(h.kernel.sockets[c]!.shutWrite)
    }

    @Test func stopDuringAHandOffDrainClosesGracefullyInstead() throws {
        let h = try LoopHarness(withChannel: true) { $0.drainIdleGrace = 1_000 }
        let c = try h.client()
        _ = h.kernel.received(c)
        h.kernel.channelFull = true
        h.worker.beginDrain(mode: .handOff, timeout: nil)
        h.worker.beginDrain(mode: .close, timeout: nil)
        h.kernel.channelFull = false
        try h.after(milliseconds: 1_300)
        #expect(h.kernel.handedOff.isEmpty)
        #expect(h.kernel.sockets[c]!.shutWrite)
    }

    @Test func drainTimeoutClosesBusyConnections() throws {
        let h = try LoopHarness()
        let c = try h.client(sending: "GET / HTTP/1.1\r\nHo")
        h.worker.beginDrain(mode: .close, timeout: 3_000)
        try h.after(milliseconds: 2_900)
        #expect(!h.kernel.isClosed(c))
        try h.after(milliseconds: 200)
        #expect(h.kernel.isClosed(c))
        #expect(h.stats[.connectionsClosedOnDrain] == 1)
        #expect(try h.turn() == false)
    }

    @Test func masterGoneDrains() throws {
        let h = try LoopHarness(withChannel: true)
        let c = try h.client(sending: "GET / HTTP/1.1\r\nHo")
        h.kernel.masterGone = true
        try h.turn()
        #expect(h.worker.state == .draining)
        h.kernel.send(c, "st: t\r\n\r\n")
        try h.turn()
        #expect(h.kernel.received(c).contains("Connection: close"))
        #expect(try h.turn() == false)
    }
}
