import ClusterHTTP
import Testing

/// Issue 13 item 5: buffers and tables that own their memory, a head parsed once, one Date line.
@Suite struct OwnershipTests {
    /// Two connections share one parser (one per worker). Connection A's head arrives, its body
    /// does not; B's whole request is parsed in between (overwriting the parser's header table);
    /// then A's body arrives. A's handler must still see A's fields: the connection saved them when
    /// its body was left pending (the head is not parsed a second time).
    @Test(arguments: [false, true]) func fieldsSurviveAnotherConnectionsParse(chunked: Bool) {
        let parser = HTTPParser(limits: HTTPLimits())
        var a = HTTPConnectionState(), b = HTTPConnectionState()
        let inA = IOBuffer(), inB = IOBuffer(), out = IOBuffer()
        var counters = HTTPCounters()
        let framing = chunked ? "Transfer-Encoding: chunked" : "Content-Length: 5"
        testDateLine.withUnsafeBytes { date in
            let context = ResponseContext(dateLine: date)
            inA.write(Array("POST /a HTTP/1.1\r\nHost: a.example\r\nX-Extra: 1\r\n\(framing)\r\n\r\n".utf8))
            #expect(a.process(inA, output: out, parser: parser, context: context, handler: EchoHandler(), counters: &counters) == .needInput)
            inB.write(Array("GET /b HTTP/1.1\r\nHost: b.example.org\r\n\r\n".utf8))
            #expect(b.process(inB, output: out, parser: parser, context: context, handler: EchoHandler(), counters: &counters) == .needInput)
            #expect(String(decoding: out.readableArray, as: UTF8.self).hasSuffix("GET /b host=b.example.org body="))
            out.clear()
            inA.write(Array((chunked ? "5\r\nhello\r\n0\r\n\r\n" : "hello").utf8))
            #expect(a.process(inA, output: out, parser: parser, context: context, handler: EchoHandler(), counters: &counters) == .needInput)
            #expect(String(decoding: out.readableArray, as: UTF8.self).hasSuffix("POST /a host=a.example body=hello"))
        }
    }

    /// A body that spans reads, then a second such request with more fields on the same
    /// connection: the saved table grows and holds the second request's fields.
    @Test func savedFieldsFollowTheRequest() {
        var lines = "POST /2 HTTP/1.1\r\n"
        for i in 0..<40 { lines += "X-F\(i): \(i)\r\n" }
        lines += "Host: second\r\nContent-Length: 2\r\n\r\n"
        let text = "POST /1 HTTP/1.1\r\nHost: first\r\nContent-Length: 2\r\n\r\nab" + lines + "cd"
        let r = exchange(text, pieceSize: 7)
        #expect(statuses(r.output) == [200, 200])
        #expect(r.output.contains("POST /1 host=first body=ab"))
        #expect(r.output.contains("POST /2 host=second body=cd"))
    }

    @Test func bufferGivesItsMemoryBackAndIsReusable() {
        let b = IOBuffer(capacity: 100)
        b.write("hello")
        #expect(b.isAllocated && b.readableBytes == 5)
        b.releaseStorage()
        #expect(!b.isAllocated && b.readableBytes == 0 && b.allocatedCapacity == 0)
        b.write("again")
        #expect(b.readableArray == Array("again".utf8))
    }

    @Test func buffersAreFreedWithTheirLastReference() {
        weak var watched: IOBuffer?
        do {
            let b = IOBuffer(capacity: 64)
            b.write("x")
            watched = b
            #expect(watched != nil)
        }
        #expect(watched == nil)
    }

    /// The Date line lives in one buffer for the cache's life: a `ResponseContext` made before a
    /// new second sees the new date, with no copy to keep in step.
    @Test func dateLineIsOneBufferRewrittenInPlace() {
        var cache = DateLineCache()
        let line = cache.line
        #expect(line.count == DateLineCache.length)
        #expect(String(decoding: line, as: UTF8.self) == "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n")
        cache.update(epochSeconds: 784_111_777)
        #expect(cache.line.baseAddress == line.baseAddress)
        #expect(String(decoding: line, as: UTF8.self) == "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n")
        #expect(cache.second == 784_111_777)
    }
}
