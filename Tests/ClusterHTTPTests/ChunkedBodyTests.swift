import ClusterHTTP
import Testing

/// A chunked POST whose body is `chunks` (raw framing after the head, final chunk included).
func chunkedPost(_ chunks: String, path: String = "/c") -> String {
    "POST \(path) HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
}

/// Chunk lines per RFC 9112 §7.1.1: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`.
@Suite struct ChunkLineGrammar {
    static let acceptedLines: [(String, String)] = [
        ("plain size", "3\r\nabc\r\n0\r\n\r\n"),
        ("name only", "3;a\r\nabc\r\n0\r\n\r\n"),
        ("name and token value", "3;a=b\r\nabc\r\n0\r\n\r\n"),
        ("several extensions", "3;a=b;c;d=e\r\nabc\r\n0;x\r\n\r\n"),
        ("quoted-string with a quoted-pair (issue 12)", "3;a=\"x\\\"y\"\r\nabc\r\n0\r\n\r\n"),
        ("quoted-string with space, semicolon and obs-text", "3;a=\"x y;\u{e9}\"\r\nabc\r\n0\r\n\r\n"),
        ("BWS around ; and =", "3 ; a = b ;c\r\nabc\r\n0\r\n\r\n"),
        ("BWS after a quoted value before ;", "3;a=\"q\" ;b\r\nabc\r\n0\r\n\r\n"),
        ("uppercase hex", "A\r\n0123456789\r\n0\r\n\r\n"),
        ("leading zeros do not count as size digits", "000000000000000000003\r\nabc\r\n0000\r\n\r\n"),
    ]

    @Test(arguments: acceptedLines.indices)
    func accepted(_ i: Int) {
        let (name, chunks) = Self.acceptedLines[i]
        let x = both(chunkedPost(chunks))
        #expect(statuses(x.output) == [200], "\(name)")
        #expect(x.output.hasSuffix("body=abc") || x.output.hasSuffix("body=0123456789"), "\(name)")
        #expect(x.outcome == .needInput, "\(name)")
    }

    static let rejectedLines: [(String, String)] = [
        ("`;` without a name (issue 12)", "5;\r\nhello\r\n0\r\n\r\n"),
        ("whitespace without an extension (issue 12)", "5 \r\nhello\r\n0\r\n\r\n"),
        ("a second word after a token value (issue 12)", "5;a=b c\r\nhello\r\n0\r\n\r\n"),
        ("whitespace after a value at the line's end", "5;a=b \r\nhello\r\n0\r\n\r\n"),
        ("whitespace after a name at the line's end", "5;a \r\nhello\r\n0\r\n\r\n"),
        ("`=` without a value", "5;a=\r\nhello\r\n0\r\n\r\n"),
        ("value without a name", "5;=b\r\nhello\r\n0\r\n\r\n"),
        ("name not a token", "5;a@b\r\nhello\r\n0\r\n\r\n"),
        ("extension without `;`", "5 a\r\nhello\r\n0\r\n\r\n"),
        ("unterminated quoted-string", "5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        ("text after a quoted-string", "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n"),
        ("control character in a quoted-string", "5;a=\"\u{1}\"\r\nhello\r\n0\r\n\r\n"),
        ("quoted-pair escaping a control character", "5;a=\"\\\u{1}\"\r\nhello\r\n0\r\n\r\n"),
        ("DEL in a quoted-string", "5;a=\"\u{7f}\"\r\nhello\r\n0\r\n\r\n"),
        ("empty size with an extension", ";a\r\nhello\r\n0\r\n\r\n"),
        ("16 significant digits", "1000000000000000\r\n"),
        ("16 significant digits after zeros", "0001000000000000000\r\n"),
        ("bare LF after an extension", "5;a=b\nhello\r\n0\r\n\r\n"),
        ("whitespace and `;` on the last chunk", "3\r\nabc\r\n0 ;\r\n\r\n"),
    ]

    @Test(arguments: rejectedLines.indices)
    func rejected(_ i: Int) {
        let (name, chunks) = Self.rejectedLines[i]
        let x = both(chunkedPost(chunks))
        #expect(statuses(x.output) == [400], "\(name)")
        #expect(x.output.contains("malformed chunked body"), "\(name)")
        #expect(x.outcome == .close, "\(name)")
    }
}

@Suite struct ChunkSizeDigits {
    @Test func fifteenSignificantDigitsAreASizeNotAnError() {
        // 15 hex digits fit: the size is read, then refused as over the body limit (413, not 400),
        // with or without leading zeros in front.
        for size in ["fffffffffffffff", "0000fffffffffffffff"] {
            #expect(statuses(both(chunkedPost(size + "\r\n")).output) == [413], "\(size)")
        }
    }
}

/// Extensions, whitespace and leading zeros on chunk lines are bounded per request
/// (`HTTPLimits.maxChunkExtensionBytes`), whatever they are split into.
@Suite struct ChunkExtensionBudget {
    static func limits(_ budget: Int) -> HTTPLimits {
        var limits = HTTPLimits()
        limits.maxChunkExtensionBytes = budget
        return limits
    }

    @Test func exactlyTheBudgetIsAccepted() {
        // ";a=bbbb" is 7 bytes; ten chunks spend 70.
        let chunks = String(repeating: "1;a=bbbb\r\nX\r\n", count: 10) + "0\r\n\r\n"
        #expect(statuses(both(chunkedPost(chunks), limits: Self.limits(70)).output) == [200])
        let over = both(chunkedPost(chunks), limits: Self.limits(69))
        #expect(statuses(over.output) == [400])
        #expect(over.output.contains("chunk extensions too long"))
        #expect(over.outcome == .close)
    }

    @Test func leadingZerosAndWhitespaceCount() {
        // "0001" spends 3, "1 ;a" spends 3, the last chunk "00" spends 1.
        let chunks = "0001\r\nX\r\n1 ;a\r\nY\r\n00\r\n\r\n"
        #expect(statuses(both(chunkedPost(chunks), limits: Self.limits(7)).output) == [200])
        #expect(statuses(both(chunkedPost(chunks), limits: Self.limits(6)).output) == [400])
    }

    @Test func theBudgetIsPerRequest() {
        // Each request stays under the budget; together they are far over it.
        let one = chunkedPost(String(repeating: "1;e=v\r\nX\r\n", count: 20) + "0\r\n\r\n")
        let x = both(String(repeating: one, count: 50), limits: Self.limits(100))
        #expect(statuses(x.output) == Array(repeating: 200, count: 50))
    }

    @Test func theIssueAttackIsRefusedEarly() {
        // Issue 12: chunks `1;aaaa…(4000)\r\nX\r\n` in a loop. With the default budget (4096)
        // the second chunk line is refused, after about 8 KB.
        let attackChunk = "1;" + String(repeating: "a", count: 4000) + "\r\nX\r\n"
        let x = both(chunkedPost(String(repeating: attackChunk, count: 5)))
        #expect(statuses(x.output) == [400])
        #expect(x.output.contains("chunk extensions too long"))
    }
}

/// A connection's input buffer never holds more than `HTTPLimits.maxInputBufferBytes`, because a
/// chunked body's framing is dropped as it is decoded (issue 12: it used to stay until the last
/// chunk, and a worker grew to 1.5 GB while 400 KB of body had been decoded).
@Suite struct InputMemoryBound {
    struct Run {
        var responses: [Int] = []
        var peakCapacity = 0
        var outcome = HTTPConnectionState.Outcome.needInput
        var bytesFed = 0
    }

    /// Feeds `stream` as the worker reads a socket: room for `inputReadReserve` bytes is made and
    /// a read fills all the writable room (the most a read can take), then the state machine runs.
    /// Records the buffer's largest allocation.
    static func feedLikeTheWorker(_ stream: [UInt8], limits: HTTPLimits) -> Run {
        let parser = HTTPParser(limits: limits)
        var state = HTTPConnectionState()
        let input = IOBuffer()
        let output = IOBuffer()
        var counters = HTTPCounters()
        var run = Run()
        var collected: [UInt8] = []
        testDateLine.withUnsafeBytes { date in
            let context = ResponseContext(dateLine: date)
            stream.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count && run.outcome == .needInput {
                    input.reserveWritable(HTTPLimits.inputReadReserve)
                    let n = min(input.writableBytes, bytes.count - offset)
                    input.writePointer.copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
                    input.moveWriterIndex(forwardBy: n)
                    offset += n
                    run.peakCapacity = max(run.peakCapacity, input.allocatedCapacity)
                    repeat {
                        run.outcome = state.process(input, output: output, parser: parser, context: context, handler: EchoHandler(), counters: &counters)
                        collected += output.readableArray
                        output.clear()
                    } while run.outcome == .flushFirst
                    if input.readableBytes == 0 { input.releaseStorage() }
                }
                run.bytesFed = offset
            }
        }
        run.responses = statuses(String(decoding: collected, as: UTF8.self))
        return run
    }

    static var smallLimits: HTTPLimits {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 1024
        limits.maxBodyBytes = 128 * 1024
        return limits
    }

    @Test func formula() {
        var limits = HTTPLimits()
        #expect(limits.maxInputBufferBytes == 2 * (16384 + 1_048_576 + 16384))
        limits.maxHeaderBytes = 1024
        limits.maxBodyBytes = 1024
        #expect(limits.maxInputBufferBytes == HTTPLimits.scratchReadBytes)
    }

    @Test func hundredThousandExtensionLadenChunksInOneRequest() {
        // The issue's attack with the extension budget lifted, so that only the buffer handling is
        // tested: 100,000 chunks of one byte, each with 39 bytes of extension (4.4 MB of framing
        // around 100 KB of body).
        var limits = Self.smallLimits
        limits.maxChunkExtensionBytes = .max
        let chunk = "1;" + String(repeating: "a", count: 38) + "\r\nX\r\n"
        let stream = Array(chunkedPost(String(repeating: chunk, count: 100_000) + "0\r\n\r\n").utf8)
        let run = Self.feedLikeTheWorker(stream, limits: limits)
        #expect(run.responses == [200])
        #expect(run.peakCapacity <= limits.maxInputBufferBytes, "peak \(run.peakCapacity) > bound \(limits.maxInputBufferBytes)")
    }

    @Test func hundredThousandChunksOverPipelinedRequests() {
        // 100,000 extension-laden chunks (`1;e=v`), 1,000 per request, 100 requests pipelined on
        // one connection, each within the extension budget.
        let limits = Self.smallLimits
        let one = chunkedPost(String(repeating: "1;e=v\r\nX\r\n", count: 1000) + "0\r\n\r\n")
        let stream = Array(String(repeating: one, count: 100).utf8)
        let run = Self.feedLikeTheWorker(stream, limits: limits)
        #expect(run.responses == Array(repeating: 200, count: 100))
        #expect(run.peakCapacity <= limits.maxInputBufferBytes, "peak \(run.peakCapacity) > bound \(limits.maxInputBufferBytes)")
    }

    @Test func plainOneByteChunksUpToTheBodyLimit() {
        // No extensions at all: `1\r\nX\r\n` is still 6 bytes of input per body byte.
        let limits = Self.smallLimits
        let stream = Array(chunkedPost(String(repeating: "1\r\nX\r\n", count: limits.maxBodyBytes) + "0\r\n\r\n").utf8)
        let run = Self.feedLikeTheWorker(stream, limits: limits)
        #expect(run.responses == [200])
        #expect(run.peakCapacity <= limits.maxInputBufferBytes, "peak \(run.peakCapacity) > bound \(limits.maxInputBufferBytes)")
    }

    @Test func bodyOverTheLimitIsRefusedWithinTheBound() {
        let limits = Self.smallLimits
        let stream = Array(chunkedPost(String(repeating: "1\r\nX\r\n", count: limits.maxBodyBytes + 10) + "0\r\n\r\n").utf8)
        let run = Self.feedLikeTheWorker(stream, limits: limits)
        #expect(run.responses == [413])
        #expect(run.peakCapacity <= limits.maxInputBufferBytes)
    }

    @Test func contentLengthBodyAndSlowHeadStayWithinTheBound() {
        let limits = Self.smallLimits
        let body = String(repeating: "b", count: limits.maxBodyBytes)
        let stream = Array(("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body).utf8)
        let run = Self.feedLikeTheWorker(stream, limits: limits)
        #expect(run.responses == [200])
        #expect(run.peakCapacity <= limits.maxInputBufferBytes)
    }

    @Test func decodedBodyIsIntactAfterCompaction() {
        // Framing is dropped between reads; the body the handler sees must still be exact.
        let pieces = (0..<300).map { i in String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: i % 7 + 1) }
        let chunks = pieces.map { String($0.utf8.count, radix: 16) + ";n=\"\(pieces.count)\"\r\n" + $0 + "\r\n" }.joined() + "0\r\nT: 1\r\n\r\n"
        for size in [1, 3, 17, 64, 1000] {
            let x = exchange(chunkedPost(chunks), pieceSize: size)
            #expect(x.output.hasSuffix("body=" + pieces.joined()), "pieces of \(size)")
        }
    }
}
