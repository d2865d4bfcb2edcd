import ClusterHTTP
import Testing

/// A handler that answers everything itself, OPTIONS included, so that a 200 with `Allow` can only
/// come from the engine.
struct GreedyHandler: HTTPHandler {
    var allowedMethods: StaticString { "GET, HEAD, OPTIONS" }
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        response.respond(status: 418, body: "handler saw \(request.method) \(request.path.string)")
    }
}

func exchange<H: HTTPHandler>(_ text: String, handler: H) -> String {
    let parser = HTTPParser(limits: HTTPLimits())
    var state = HTTPConnectionState()
    let input = IOBuffer()
    let output = IOBuffer()
    var counters = HTTPCounters()
    input.write(Array(text.utf8))
    testDateLine.withUnsafeBytes { date in
        _ = state.process(input, output: output, parser: parser, context: ResponseContext(dateLine: date), handler: handler, counters: &counters)
    }
    return String(decoding: output.readableArray, as: UTF8.self)
}

@Suite struct ProtocolCorners {
    @Test func absoluteFormWithEmptyPathIsSlash() {
        // Issue 12 item 16: served as `/`, not redirected.
        let x = both("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
        #expect(statuses(x.output) == [200])
        #expect(x.output.hasSuffix("GET / host=example.com body="))
        let query = both("GET http://example.com?a=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        #expect(query.output.hasSuffix("GET /?a=1 host=example.com body="))
        let port = both("HEAD http://example.com:8080 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        #expect(statuses(port.output) == [200])
    }

    @Test func optionsAsteriskIsAnsweredByTheEngine() {
        // Issue 12 item 17: whatever the handler would have said.
        let out = exchange("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", handler: GreedyHandler())
        #expect(out == "HTTP/1.1 200 OK\r\nServer: clusterd\r\nAllow: GET, HEAD, OPTIONS\r\nContent-Length: 0\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n")
        // The absolute form of the same request (RFC 9112 §3.2.4).
        #expect(exchange("OPTIONS http://a HTTP/1.1\r\nHost: a\r\n\r\n", handler: GreedyHandler()) == out)
        // OPTIONS on a resource is the handler's.
        #expect(exchange("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", handler: GreedyHandler()).contains("418"))
        #expect(exchange("OPTIONS http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", handler: GreedyHandler()).contains("handler saw OPTIONS /"))
        // The default list, and keep-alive as usual (a pipelined request after it is answered).
        let x = both("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(statuses(x.output) == [200, 200])
        #expect(x.output.contains("Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\nContent-Length: 0\r\n"))
        #expect(x.output.hasSuffix("GET /n host=a body="))
        let http10 = both("OPTIONS * HTTP/1.0\r\n\r\n")
        #expect(http10.output.contains("Content-Length: 0\r\n") && http10.output.contains("Connection: close\r\n"))
    }

    @Test func emptyHostIsAllowedInHTTP10Only() {
        #expect(statuses(both("GET / HTTP/1.0\r\nHost:\r\n\r\n").output) == [200])
        let x = both("GET / HTTP/1.1\r\nHost:\r\n\r\n")
        #expect(statuses(x.output) == [400])
        #expect(x.output.contains("empty Host header"))
    }
}

@Suite struct HTTPDateForms {
    static func parse(_ text: String, now: Int64 = 1_700_000_000) -> Int64? {
        Array(text.utf8).withUnsafeBytes { HTTPDate.parse($0, now: now) }
    }

    @Test func theThreeFormsOfRFC9110() {
        // RFC 9110 §5.6.7's example, in each form.
        #expect(Self.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777)
        #expect(Self.parse("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777)
        #expect(Self.parse("Sun Nov  6 08:49:37 1994") == 784111777)
        #expect(Self.parse("Tuesday, 29-Feb-00 00:00:00 GMT") == 951782400)
        #expect(Self.parse("Tue Feb 29 00:00:00 2000") == 951782400)
        #expect(Self.parse("Thu Dec 31 23:59:59 2099") == 4102444799)
    }

    @Test func twoDigitYearsMoreThanFiftyYearsAheadAreThePast() {
        // now = 2023: "94" is 1994 (2094 is over 50 years ahead), "74" 1974, "70" 2070, "30" 2030.
        #expect(Self.parse("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777)
        #expect(Self.parse("Tuesday, 01-Jan-74 00:00:00 GMT") == 126230400)
        #expect(Self.parse("Wednesday, 01-Jan-70 00:00:00 GMT") == 3155760000)
        #expect(Self.parse("Tuesday, 01-Jan-30 00:00:00 GMT") == 1893456000)
        // now = 2099: "70" is 2070, "30" is 2030 (2130 would be the future century).
        #expect(Self.parse("Wednesday, 01-Jan-70 00:00:00 GMT", now: 4102444799) == 3155760000)
        #expect(Self.parse("Tuesday, 01-Jan-30 00:00:00 GMT", now: 4102444799) == 1893456000)
    }

    @Test func malformedDatesAreNil() {
        for text in [
            "", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT", "Sunday 06-Nov-94 08:49:37 GMT", "Sundae, 06-Nov-94 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT", "Sunday, 06 Nov 94 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 UTC",
            "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94", "Sun Nov 06 08-49-37 1994", "Sun Nov  x 08:49:37 1994",
        ] {
            #expect(Self.parse(text) == nil, "\(text)")
        }
    }
}

@Suite struct IfRange {
    static let modified: Int64 = 784111777  // Sun, 06 Nov 1994 08:49:37 GMT
    static let etag = "\"2ebc3e61-e\""

    static func allows(_ value: String, now: Int64 = 1_700_000_000) -> Bool {
        Array(value.utf8).withUnsafeBytes { HTTPDate.ifRangeAllows($0, etag: etag, lastModified: modified, now: now) }
    }

    @Test func aDateMustMatchExactly() {
        // Issue 12 item 19: a later date used to count as a match.
        #expect(Self.allows("Sun, 06 Nov 1994 08:49:37 GMT"))
        #expect(!Self.allows("Sun, 06 Nov 1994 08:49:38 GMT"))
        #expect(!Self.allows("Mon, 07 Nov 1994 08:49:37 GMT"))
        #expect(!Self.allows("Sun, 06 Nov 1994 08:49:36 GMT"))
    }

    @Test func obsoleteDateFormsMatchToo() {
        #expect(Self.allows("Sunday, 06-Nov-94 08:49:37 GMT"))
        #expect(Self.allows("Sun Nov  6 08:49:37 1994"))
        #expect(!Self.allows("Sun Nov  6 08:49:38 1994"))
    }

    @Test func aDateWithinTheModificationSecondIsWeak() {
        // RFC 9110 §8.8.2.2: the file may change again within the same second.
        #expect(!Self.allows("Sun, 06 Nov 1994 08:49:37 GMT", now: Self.modified))
        #expect(Self.allows("Sun, 06 Nov 1994 08:49:37 GMT", now: Self.modified + 1))
    }

    @Test func entityTagsCompareStrongly() {
        #expect(Self.allows(Self.etag))
        #expect(!Self.allows("W/" + Self.etag))
        #expect(!Self.allows("\"other\""))
        #expect(!Self.allows("garbage"))
        #expect(!Self.allows(""))
    }
}
