import ClusterControl
import ClusterJSON
import ClusterMaster
import Testing

/// The control socket's protocol alone: bytes in, requests with ids out, replies in, bytes out.
@Suite struct ControlServerProtocol {
    func server() -> ControlServer {
        var s = ControlServer(path: "/tmp/x.sock", group: nil)
        s.opened(7, now: 0)
        return s
    }

    func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func linesBecomeRequestsWithIdsAndRepliesGoOutInOrder() {
        var s = server()
        s.received(Array("{\"v\":1,\"cmd\":\"status\"}\r\n{\"v\":1,\"cmd\":\"scale\",\"workers\":16}\n{\"v\":1,".utf8), from: 7)
        #expect(s.nextRequest(from: 7, now: 1) == .request(1, .status))
        #expect(s.nextRequest(from: 7, now: 1) == .request(2, .scale(.absolute(16), wait: false)))
        #expect(s.nextRequest(from: 7, now: 1) == nil, "the third line is not complete")
        #expect(s.reply(2, ControlResponse.ok(["workers": 16]), now: 2) == 7)
        #expect(s.reply(1, ControlResponse.ok(), now: 2) == 7)
        #expect(s.reply(1, ControlResponse.ok(), now: 2) == nil, "answered once")
        #expect(text(s.output(of: 7)) == "{\"ok\":true,\"workers\":16}\n{\"ok\":true}\n")
        #expect(s.interest(of: 7) == (read: true, write: true))
        s.sent(10, to: 7, now: 3)
        #expect(text(s.output(of: 7)) == ",\"workers\":16}\n{\"ok\":true}\n")
    }

    @Test func aBadLineIsAnsweredHereAndTheClientStays() {
        var s = server()
        s.received(Array("nonsense\n".utf8), from: 7)
        #expect(s.nextRequest(from: 7, now: 0) == .answered)
        #expect(text(s.output(of: 7)).hasPrefix("{\"ok\":false,\"error\":\"malformed request"))
        #expect(!s.isDone(7))
    }

    @Test func aTooLongLineIsRefusedAndTheClientClosedAfterTheAnswer() {
        var s = server()
        s.received([UInt8](repeating: 0x41, count: ControlRequest.maxLineBytes + 1), from: 7)
        #expect(s.nextRequest(from: 7, now: 0) == .answered)
        #expect(text(s.output(of: 7)).contains("request too long"))
        #expect(s.interest(of: 7).read == false, "not read from again")
        #expect(s.nextRequest(from: 7, now: 0) == nil)
        s.sent(s.output(of: 7).count, to: 7, now: 1)
        #expect(s.isDone(7))
    }

    @Test func linesWaitWhileRepliesPileUp() {
        var s = server()
        s.received(Array(String(repeating: "{\"v\":1,\"cmd\":\"workers\"}\n", count: 3).utf8), from: 7)
        guard case .request(let id, _) = s.nextRequest(from: 7, now: 0) else {
            Issue.record("no request")
            return
        }
        s.reply(id, .object(["ok": true, "pad": .string(String(repeating: "x", count: ControlServer.maxPendingReplyBytes))]), now: 0)
        #expect(s.nextRequest(from: 7, now: 0) == nil, "held back: its replies are over the cap")
        #expect(s.interest(of: 7) == (read: false, write: true))
        s.sent(s.output(of: 7).count, to: 7, now: 1)
        #expect(s.nextRequest(from: 7, now: 1) == .request(2, .workers))
    }

    @Test func stalledAndIdleClientsExpire() {
        var s = server()
        s.opened(8, now: 0)
        s.received(Array("{\"v\":1,\"cmd\":\"status\"}\n".utf8), from: 8)
        guard case .request(let id, _) = s.nextRequest(from: 8, now: 0) else {
            Issue.record("no request")
            return
        }
        s.reply(id, ControlResponse.ok(), now: 0)
        #expect(s.expired(now: ControlServer.replyStallTimeout).isEmpty)
        let stalled = s.expired(now: ControlServer.replyStallTimeout + 1)
        #expect(stalled.map(\.client) == [8] && stalled[0].reason?.contains("made no progress") == true)
        #expect(s.expired(now: ControlServer.idleTimeout + 1).map(\.client) == [7, 8])
        s.closed(8)
        #expect(!s.has(8) && s.clientCount == 1)
    }

    @Test func acceptFailuresAreLoggedAtMostOncePerInterval() {
        var s = server()
        #expect(s.acceptFailed("control socket: EMFILE", now: 0) == "control socket: EMFILE")
        #expect(s.acceptFailed("control socket: EMFILE", now: 100) == nil)
        #expect(s.acceptFailed("control socket: EMFILE", now: 200) == nil)
        #expect(s.acceptFailed("control socket: EMFILE", now: ControlServer.acceptLogInterval) == "control socket: EMFILE (2 more since the last report)")
    }
}
