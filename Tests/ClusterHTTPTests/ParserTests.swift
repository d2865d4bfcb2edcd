import ClusterHTTP
import Foundation
import Testing

/// Every request is fed whole and one byte at a time; both must give the same bytes out.
func both(_ text: String, limits: HTTPLimits = HTTPLimits()) -> Exchange {
    let whole = exchange(text, limits: limits)
    let bytewise = exchange(text, pieceSize: 1, limits: limits)
    #expect(whole.output == bytewise.output, "split reads changed the result for \(text.debugDescription)")
    #expect(whole.outcome == bytewise.outcome)
    return whole
}

@Suite struct RequestParsing {
    @Test func simpleGet() {
        let x = both("GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        #expect(x.output.contains("HTTP/1.1 200 OK\r\n"))
        #expect(x.output.hasSuffix("GET /hello?x=1 host=example.com body="))
        #expect(x.outcome == .needInput)
        #expect(x.state.phase == .idle)
    }

    @Test func pipelinedRequestsAnsweredInOrder() {
        let req = (1...5).map { "GET /r\($0) HTTP/1.1\r\nHost: h\r\n\r\n" }.joined()
        let x = both(req)
        #expect(statuses(x.output) == [200, 200, 200, 200, 200])
        let order = (1...5).map { x.output.range(of: "GET /r\($0) ")!.lowerBound }
        #expect(order == order.sorted())
        #expect(x.counters.requests == 5)
    }

    @Test func http10ClosesUnlessKeepAlive() {
        let close = both("GET / HTTP/1.0\r\n\r\n")
        #expect(close.outcome == .close)
        #expect(close.output.contains("Connection: close\r\n"))
        let keep = both("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(keep.outcome == .needInput)
        #expect(keep.output.contains("Connection: keep-alive\r\n"))
    }

    @Test func connectionClose() {
        let x = both("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(x.outcome == .close)
        #expect(statuses(x.output) == [200])
        #expect(!x.output.contains("/never"))
    }

    @Test func headOmitsBodyButKeepsLength() {
        let x = both("HEAD /abc HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(x.output.contains("Content-Length: 22\r\n"))
        #expect(x.output.hasSuffix("\r\n\r\n"))
    }

    @Test func contentLengthBody() {
        let x = both("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
        #expect(x.output.hasSuffix("POST /p host=a body=hello world"))
    }

    @Test func chunkedBody() {
        let x = both("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(x.output.contains("POST /c host=a body=hello world"))
        #expect(x.output.contains("GET /next host=a"))
        #expect(statuses(x.output) == [200, 200])
    }

    @Test func expectContinueBeforeBody() {
        let x = exchange("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        #expect(x.output == "HTTP/1.1 100 Continue\r\n\r\n")
        #expect(x.state.phase == .body)
        let full = exchange("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
        #expect(!full.output.contains("100 Continue"), "no 100 when the body is already here")
        #expect(full.output.hasSuffix("body=abc"))
    }

    @Test func leadingEmptyLinesIgnored() {
        let x = both("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(statuses(x.output) == [200])
    }

    @Test func handlerThatDoesNotRespondGets500() {
        let x = both("GET /silent HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(statuses(x.output) == [500])
        #expect(x.outcome == .close)
    }

    @Test func absoluteFormTarget() {
        let x = both("GET http://example.com/a/b?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
        #expect(x.output.contains("GET /a/b?q host=example.com"))
    }

    @Test func optionsAsterisk() {
        let x = both("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(statuses(x.output) == [200])
    }

    @Test func maxKeepAliveRequests() {
        var limits = HTTPLimits()
        limits.maxKeepAliveRequests = 2
        let x = both(String(repeating: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", count: 3), limits: limits)
        #expect(statuses(x.output) == [200, 200])
        #expect(x.outcome == .close)
    }

    @Test func pipelinedOutputIsBounded() {
        var limits = HTTPLimits()
        limits.maxPendingOutput = 300
        let parser = HTTPParser(limits: limits)
        var state = HTTPConnectionState()
        let input = IOBuffer()
        let output = IOBuffer()
        var counters = HTTPCounters()
        input.write(Array(String(repeating: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", count: 10).utf8))
        let outcome = testDateLine.withUnsafeBytes { date in
            state.process(input, output: output, parser: parser, context: ResponseContext(dateLine: date), handler: EchoHandler(), counters: &counters)
        }
        #expect(outcome == .flushFirst)
        #expect(counters.requests < 10)
        #expect(input.readableBytes > 0)
    }
}

/// Requests that must be refused, with the status RFC 9112/9110 call for.
@Suite struct RejectedRequests {
    static let cases: [(String, String, Int)] = [
        ("bare LF line ending (RFC 9112 §2.2)", "GET / HTTP/1.1\nHost: a\n\n", 400),
        ("bare CR in field value (§2.2)", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("whitespace before colon (§5.1)", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("obs-fold (§5.2)", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        ("NUL in field value (RFC 9110 §5.5)", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),
        ("control character in field value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\n\r\n", 400),
        ("invalid field name", "GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", 400),
        ("empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400),
        ("missing Host in HTTP/1.1 (§3.2)", "GET / HTTP/1.1\r\n\r\n", 400),
        ("duplicate Host (§3.2)", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("invalid Host", "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),
        ("empty Host in HTTP/1.1 (issue 12; RFC 9110 §4.2.1, 9112 §3.3)", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        ("empty Host with whitespace", "GET / HTTP/1.1\r\nHost: \t \r\n\r\n", 400),
        ("empty Host with OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n", 400),
        ("space in target (§3.2)", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("relative target", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("lowercase version (§2.3)", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("malformed version", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        ("HTTP/2.0 on HTTP/1 framing (RFC 9110 §15.6.6)", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("HTTP/0.9 style", "GET /\r\n\r\n", 400),
        ("CL and TE together (§6.3)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("duplicate Content-Length (§6.3)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        ("Content-Length list (§6.3)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
        ("signed Content-Length (§8.6)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
        ("negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("overflowing Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("TE whose final coding is not chunked (§6.3)", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("TE identity only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
        ("chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("unknown coding before chunked (RFC 9112 §6.1)", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("TE in HTTP/1.0 (§6.1)", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("bad chunk size (§7.1)", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("chunk size with leading space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
        ("chunk data not followed by CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400),
        ("chunk size line with bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
        ("bad chunk extension", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n0\r\n\r\n", 400),
        ("malformed trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n", 400),
        ("unsupported expectation (RFC 9110 §10.1.1)", "GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417),
        ("CONNECT (not a proxy)", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501),
        ("invalid method token", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("body larger than the limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
    ]

    @Test(arguments: cases.indices)
    func rejected(_ i: Int) {
        let (name, request, status) = Self.cases[i]
        let x = both(request)
        #expect(statuses(x.output) == [status], "\(name)")
        #expect(x.outcome == .close, "\(name): connection must close")
        #expect(x.output.contains("Connection: close\r\n"), "\(name)")
    }

    @Test func headerLimits() {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 1024
        limits.maxHeaderCount = 5
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "a", count: 2000))\r\n\r\n"
        #expect(statuses(both(big, limits: limits).output) == [431])
        let many = "GET / HTTP/1.1\r\nHost: a\r\n" + (1...6).map { "X\($0): v\r\n" }.joined() + "\r\n"
        #expect(statuses(both(many, limits: limits).output) == [431])
        let incomplete = exchange("GET / HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "a", count: 2000))", limits: limits)
        #expect(statuses(incomplete.output) == [431], "an unfinished head past the limit is refused at once")
        let longLine = exchange("GET /\(String(repeating: "a", count: 9000)) HTTP/1.1\r\n", limits: HTTPLimits())
        #expect(statuses(longLine.output) == [414])
    }

    @Test func chunkedBodyLimit() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 4
        let x = both("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", limits: limits)
        #expect(statuses(x.output) == [413])
    }
}

@Suite struct ResponseEncoding {
    @Test func preparedResponse() {
        let prepared = PreparedResponse(status: 201, contentType: "application/json", headers: [HTTPField("X-A", "1")], body: "{}")
        #expect(String(decoding: prepared.head, as: UTF8.self) == "HTTP/1.1 201 Created\r\nServer: clusterd\r\nContent-Type: application/json\r\nX-A: 1\r\nContent-Length: 2\r\n")
        let noBody = PreparedResponse(status: 204, body: "ignored")
        #expect(!String(decoding: noBody.head, as: UTF8.self).contains("Content-Length"))
        #expect(noBody.body.isEmpty)
    }

    @Test func fullResponseBytes() {
        let x = exchange("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(x.output == "HTTP/1.1 200 OK\r\nServer: clusterd\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nGET /x host=h body=")
    }

    @Test func errorResponseBytes() {
        let x = exchange("GET / HTTP/1.1\r\n\r\n")
        #expect(x.output == "HTTP/1.1 400 Bad Request\r\nServer: clusterd\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nConnection: close\r\n\r\nmissing Host header\n")
    }

    @Test func dates() {
        #expect(String(decoding: HTTPDate.format(epochSeconds: 784111777), as: UTF8.self) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(String(decoding: HTTPDate.format(epochSeconds: 0), as: UTF8.self) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(String(decoding: HTTPDate.format(epochSeconds: 951782400), as: UTF8.self) == "Tue, 29 Feb 2000 00:00:00 GMT")
        #expect(String(decoding: HTTPDate.format(epochSeconds: 4102444799), as: UTF8.self) == "Thu, 31 Dec 2099 23:59:59 GMT")
    }

    @Test func decimalWriter() {
        let b = IOBuffer()
        for v in [0, 7, 10, 12345, Int.max] { b.writeDecimal(v); b.write(",") }
        #expect(String(decoding: b.readableArray, as: UTF8.self) == "0,7,10,12345,\(Int.max),")
    }
}

/// Any split of a valid pipelined stream into reads gives the same responses.
@Suite struct SplitProperty {
    @Test func randomSplits() {
        let stream = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nHEAD /d HTTP/1.1\r\nHost: a\r\n\r\n"
        let expected = exchange(stream).output
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let size = Int.random(in: 1...40, using: &rng)
            #expect(exchange(stream, pieceSize: size).output == expected)
        }
    }
}

@Suite struct DateParsing {
    @Test func roundTrip() {
        for t: Int64 in [0, 784111777, 951782400, 1_700_000_000, 4102444799] {
            let text = HTTPDate.format(epochSeconds: t)
            #expect(text.withUnsafeBytes { HTTPDate.parse($0, now: 1_700_000_000) } == t)
        }
        #expect(Array("Sun, 06 Nov 1994 08:49:37 XXX".utf8).withUnsafeBytes { HTTPDate.parse($0, now: 1_700_000_000) } == nil)
    }
}

/// Echoes the header named at run time by the request's path (`/X-Custom` → `x-custom`'s value).
struct NamedHeaderHandler: HTTPHandler {
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        let name = String(request.path.string.dropFirst())
        response.respond(status: 200, body: "value=\(request.header(named: name)?.string ?? "none")")
    }
}

@Suite struct RuntimeHeaderLookup {
    func lookup(_ path: String, _ headers: String) -> String {
        let bytes = Array("GET /\(path) HTTP/1.1\r\nHost: h\r\n\(headers)\r\n".utf8)
        let fed = bytes.withUnsafeBytes { HTTPFuzzDriver.feed($0, piece: bytes.count, limits: HTTPLimits(), handler: NamedHeaderHandler(), closing: false, overCap: false) }
        return String(decoding: fed.output, as: UTF8.self)
    }

    @Test func matchesWhateverTheCaseOfEitherName() {
        #expect(lookup("X-Custom", "x-cUSTOM: one\r\n").hasSuffix("value=one"))
        #expect(lookup("x-custom", "X-CUSTOM: two\r\n").hasSuffix("value=two"))
    }

    @Test func aNameOfTheSameLengthOrAPrefixDoesNotMatch() {
        #expect(lookup("X-Custom", "X-Customs: a\r\nX-Cust0m: b\r\n").hasSuffix("value=none"))
        #expect(lookup("X-Cust", "X-Custom: c\r\n").hasSuffix("value=none"))
    }
}
