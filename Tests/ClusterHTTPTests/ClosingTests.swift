import ClusterHTTP
import Testing

/// A stopping worker (`closeConnections`) answers every request the client already sent.
@Suite struct Closing {
    static let get = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"

    /// All at once, or in 5-byte pieces (each 28-byte request completes with part of the next buffered).
    @Test(arguments: [0, 5])
    func pipelinedRequestsAreAllAnsweredTheLastCloses(pieceSize: Int) {
        let x = exchange(String(repeating: Self.get, count: 4), pieceSize: pieceSize, closing: true)
        #expect(statuses(x.output) == [200, 200, 200, 200])
        #expect(x.output.components(separatedBy: "Connection: close").count - 1 == 1)
        let last = x.output.range(of: "HTTP/1.1 ", options: .backwards)!
        #expect(x.output[last.lowerBound...].contains("Connection: close"))
        #expect(x.outcome == .close)
    }

    /// Nothing of a next request had arrived when the answer went out: it says close, and the
    /// client retries what it sent after (RFC 9112 §9.3.2); the worker reads and discards it
    /// (lingering close), so no reset.
    @Test func aRequestNotYetArrivedIsNotWaitedFor() {
        let x = exchange(String(repeating: Self.get, count: 2), pieceSize: 28, closing: true)
        #expect(statuses(x.output) == [200])
        #expect(x.output.contains("Connection: close"))
    }

    @Test func aLoneRequestCloses() {
        let x = exchange(Self.get, closing: true)
        #expect(statuses(x.output) == [200])
        #expect(x.output.contains("Connection: close"))
        #expect(x.outcome == .close)
    }

    @Test func aPartlySentNextRequestKeepsTheConnectionForIt() {
        let x = exchange(Self.get + "GET /b HT", closing: true)
        #expect(statuses(x.output) == [200])
        #expect(!x.output.contains("Connection: close"))
        #expect(x.outcome == .needInput)
    }

    /// Over the cap (a hand-over beyond `http.maxConnections`): only the requests that had begun to
    /// arrive by the first answer. A client that goes on pipelining, always with part of a next
    /// request buffered (41-byte pieces of 28-byte requests), no longer keeps the connection: was
    /// all 40 answered (as many as the client sends).
    @Test func overTheCapAClientThatKeepsPipeliningIsCut() {
        let x = exchange(String(repeating: Self.get, count: 40), pieceSize: 41, overCap: true)
        // The first answer went out with 13 bytes of the second request buffered: that one is
        // answered too, with close.
        #expect(statuses(x.output) == [200, 200])
        #expect(x.output.components(separatedBy: "Connection: close").count - 1 == 1)
        let last = x.output.range(of: "HTTP/1.1 ", options: .backwards)!
        #expect(x.output[last.lowerBound...].contains("Connection: close"))
        #expect(x.outcome == .close)
    }

    /// What came with the hand-over (all buffered at the first answer) is all answered.
    @Test func overTheCapWhatHadArrivedIsAllAnswered() {
        let x = exchange(String(repeating: Self.get, count: 4), overCap: true)
        #expect(statuses(x.output) == [200, 200, 200, 200])
        #expect(x.output.components(separatedBy: "Connection: close").count - 1 == 1)
        #expect(x.outcome == .close)
        let lone = exchange(Self.get, overCap: true)
        #expect(statuses(lone.output) == [200])
        #expect(lone.output.contains("Connection: close"))
    }
}
