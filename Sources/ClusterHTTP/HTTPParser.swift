/// A byte range inside a request's bytes, relative to the start of its head.
public struct ByteSpan: Equatable, Sendable {
    public var start: Int32
    public var count: Int32
    @inlinable public init(start: Int, count: Int) {
        self.start = Int32(truncatingIfNeeded: start)
        self.count = Int32(truncatingIfNeeded: count)
    }
    public static let empty = ByteSpan(start: 0, count: 0)
}

/// One header field: name and value (value trimmed of surrounding whitespace).
public struct HTTPHeaderSpan: Sendable {
    public var name: ByteSpan
    public var value: ByteSpan
}

/// What the parser learned from a request head. Spans point into the head's bytes; the header
/// fields are in the parser's table until the next parse.
public struct HTTPRequestHead: Sendable {
    public var method: HTTPMethod = .GET
    public var methodSpan: ByteSpan = .empty
    public var target: ByteSpan = .empty
    /// The path part of the target (no query); empty for `*` and `OPTIONS http://host` (the server
    /// as a whole, answered by the engine).
    public var path: ByteSpan = .empty
    /// The query (after `?`, without it); empty if none.
    public var query: ByteSpan = .empty
    public var versionMinor: UInt8 = 1
    public var headerCount: Int = 0
    /// Bytes of the head including the final CRLFCRLF.
    public var headLength: Int = 0
    /// Content-Length, or -1 when absent.
    public var contentLength: Int = -1
    public var isChunked = false
    public var connectionClose = false
    public var connectionKeepAlive = false
    public var expectContinue = false

    public init() {}

    /// Whether the connection may stay open after this request (RFC 9112 §9.3).
    @inlinable
    public var wantsKeepAlive: Bool {
        if connectionClose { return false }
        return versionMinor >= 1 || connectionKeepAlive
    }

    @inlinable
    public var hasBody: Bool { isChunked || contentLength > 0 }
}

/// The header fields of one connection's request whose body arrives over several reads: by the
/// time the body is complete, other connections' heads have overwritten the parser's shared table.
/// Allocated at a connection's first such request and reused for its next ones (grown to the most
/// fields seen), freed with the connection's state.
final class SavedHeaders {
    private(set) var spans = UnsafeMutableBufferPointer<HTTPHeaderSpan>(start: nil, count: 0)
    private(set) var count = 0

    deinit { spans.deallocate() }

    func save(_ fields: UnsafeBufferPointer<HTTPHeaderSpan>) {
        if fields.count > spans.count {
            spans.deallocate()
            spans = .allocate(capacity: max(fields.count, 16))
        }
        if fields.count > 0 { _ = UnsafeMutableBufferPointer(rebasing: spans[0..<fields.count]).initialize(fromContentsOf: fields) }
        count = fields.count
    }

    var fields: UnsafeBufferPointer<HTTPHeaderSpan> { UnsafeBufferPointer(rebasing: spans[0..<count]) }
}

/// Progress of the search for the end of a head, kept across reads so that a head arriving one byte
/// at a time is scanned once, not once per byte.
public struct HeadScanState: Sendable, Equatable {
    public var scanned: Int = 0
    public var firstLineEnd: Int = -1
    public init() {}
}

public enum HeadParseResult {
    case complete(HTTPRequestHead)
    case incomplete
    case failed(HTTPError)
}

/// The zero-copy HTTP/1.1 request-head parser (RFC 9112), in the shape of picohttpparser: it reads
/// the caller's bytes, records offsets, and reports complete / incomplete / error. It allocates
/// nothing after init. One parser per worker; its header table is overwritten by each parse (a
/// connection whose body spans reads keeps its own copy: `SavedHeaders`). It owns the table and
/// frees it in `deinit`.
public final class HTTPParser {
    public let limits: HTTPLimits
    @usableFromInline let table: UnsafeMutableBufferPointer<HTTPHeaderSpan>

    public init(limits: HTTPLimits) {
        self.limits = limits
        table = .allocate(capacity: limits.maxHeaderCount + 1)
    }

    deinit { table.deallocate() }

    /// Header field `i` of the last parse.
    @inlinable
    public func header(_ i: Int) -> HTTPHeaderSpan { table[i] }

    /// The first `count` header fields of the last parse.
    @inlinable
    func headers(_ count: Int) -> UnsafeBufferPointer<HTTPHeaderSpan> {
        UnsafeBufferPointer(rebasing: table[0..<count])
    }

    /// Parses the head at the start of `bytes`. `scan` carries the search state between calls for
    /// the same request (reset it for a new request).
    public func parseHead(_ bytes: UnsafeRawBufferPointer, scan: inout HeadScanState) -> HeadParseResult {
        // Every check is made byte by byte, as if the input ended there, so the first error in the
        // stream is the one reported however the bytes were split into reads.
        let end = bytes.count
        let lineLimit = limits.maxRequestLine
        let headLimit = limits.maxHeaderBytes
        var i = scan.scanned
        while i < end {
            if bytes[i] == 0x0A {
                if i == 0 || bytes[i - 1] != 0x0D { return .failed(.bareLF) }
                if scan.firstLineEnd < 0 {
                    scan.firstLineEnd = i
                    if i + 1 > lineLimit { return .failed(.uriTooLong) }
                }
                if i >= 3 && bytes[i - 2] == 0x0A && bytes[i - 3] == 0x0D {
                    if i + 1 > headLimit { return .failed(.headTooLarge) }
                    scan.scanned = i + 1
                    return parseCompleteHead(bytes, headEnd: i + 1, firstLineEnd: scan.firstLineEnd)
                }
            } else if scan.firstLineEnd < 0 && i + 1 > lineLimit {
                return .failed(.uriTooLong)
            }
            if i + 1 > headLimit { return .failed(.headTooLarge) }
            i += 1
        }
        scan.scanned = end
        return .incomplete
    }

    // MARK: - The head, known to be complete and CRLF-terminated

    func parseCompleteHead(_ b: UnsafeRawBufferPointer, headEnd: Int, firstLineEnd: Int) -> HeadParseResult {
        var head = HTTPRequestHead()
        head.headLength = headEnd
        // request-line = method SP request-target SP HTTP-version CRLF
        let lineEnd = firstLineEnd - 1  // index of CR
        var i = 0
        while i < lineEnd && isTchar(b[i]) { i += 1 }
        if i == 0 || i >= lineEnd || b[i] != 0x20 { return .failed(i == 0 ? .badMethod : (i < lineEnd && b[i] != 0x20 ? .badMethod : .badRequestLine)) }
        head.methodSpan = ByteSpan(start: 0, count: i)
        head.method = Self.method(b, i)
        i += 1
        let targetStart = i
        var queryStart = -1
        while i < lineEnd && b[i] != 0x20 {
            let c = b[i]
            if c <= 0x20 || c >= 0x7F || c == UInt8(ascii: "#") { return .failed(.badTarget) }
            if c == UInt8(ascii: "?") && queryStart < 0 { queryStart = i }
            i += 1
        }
        let targetEnd = i
        if targetEnd == targetStart || i >= lineEnd { return .failed(.badRequestLine) }
        head.target = ByteSpan(start: targetStart, count: targetEnd - targetStart)
        let pathEnd = queryStart >= 0 ? queryStart : targetEnd
        if queryStart >= 0 { head.query = ByteSpan(start: queryStart + 1, count: targetEnd - queryStart - 1) }
        if b[targetStart] == UInt8(ascii: "/") {
            head.path = ByteSpan(start: targetStart, count: pathEnd - targetStart)
        } else if b[targetStart] == UInt8(ascii: "*") && targetEnd - targetStart == 1 {
            guard head.method == .OPTIONS else { return .failed(.badTarget) }
            head.path = ByteSpan(start: targetStart, count: 0)
        } else if head.method == .CONNECT {
            return .failed(.methodNotImplemented)
        } else if let (authority, authorityEnd) = Self.absoluteFormAuthority(b, targetStart, pathEnd) {
            if authorityEnd < pathEnd {
                head.path = ByteSpan(start: authorityEnd, count: pathEnd - authorityEnd)
            } else if head.method == .OPTIONS && queryStart < 0 {
                // `OPTIONS http://host`: the server as a whole, as `OPTIONS *` (RFC 9112 §3.2.4).
                head.path = ByteSpan(start: targetStart, count: 0)
            } else {
                // `http://host` (or `http://host?q`): an empty path is `/` (RFC 9110 §4.2.3). The
                // second slash of `://` is such a `/`, so the path still lies in the request's bytes.
                head.path = ByteSpan(start: authority - 1, count: 1)
            }
        } else {
            return .failed(.badTarget)
        }
        if head.method == .CONNECT { return .failed(.methodNotImplemented) }
        i += 1  // SP
        // HTTP-version = "HTTP/" DIGIT "." DIGIT
        guard lineEnd - i == 8, b[i] == 0x48, b[i + 1] == 0x54, b[i + 2] == 0x54, b[i + 3] == 0x50, b[i + 4] == 0x2F,
            isDigit(b[i + 5]), b[i + 6] == 0x2E, isDigit(b[i + 7])
        else { return .failed(.badVersion) }
        guard b[i + 5] == 0x31 else { return .failed(.unsupportedVersion) }
        head.versionMinor = b[i + 7] - 0x30

        // field-line = field-name ":" OWS field-value OWS CRLF
        var line = firstLineEnd + 1
        var hostCount = 0
        var hostValue = ByteSpan.empty
        var transferEncoding = false
        var count = 0
        while line < headEnd - 2 {
            let first = b[line]
            if first == 0x20 || first == 0x09 { return .failed(.obsFold) }
            var j = line
            while isTchar(b[j]) { j += 1 }
            let nameEnd = j
            if b[j] != UInt8(ascii: ":") {
                if j > line && (b[j] == 0x20 || b[j] == 0x09) { return .failed(.spaceBeforeColon) }
                return .failed(.badFieldName)
            }
            if nameEnd == line { return .failed(.badFieldName) }
            j += 1
            while b[j] == 0x20 || b[j] == 0x09 { j += 1 }
            let valueStart = j
            var valueEnd = j
            while true {
                let c = b[j]
                if c == 0x0D {
                    if b[j + 1] != 0x0A { return .failed(.bareCR) }
                    break
                }
                if c == 0x09 || c == 0x20 {
                } else if c < 0x20 || c == 0x7F {
                    return .failed(.badFieldValue)
                } else {
                    valueEnd = j + 1
                }
                j += 1
            }
            if count == limits.maxHeaderCount { return .failed(.tooManyHeaders) }
            let name = ByteSpan(start: line, count: nameEnd - line)
            let value = ByteSpan(start: valueStart, count: valueEnd - valueStart)
            table[count] = HTTPHeaderSpan(name: name, value: value)
            count += 1

            // Headers that decide framing and connection handling.
            switch nameEnd - line {
            case 4 where Self.equalsLower(b, name, "host"):
                hostCount += 1
                hostValue = value
            case 6 where Self.equalsLower(b, name, "expect"):
                if Self.equalsLower(b, value, "100-continue") { head.expectContinue = true } else { return .failed(.expectationFailed) }
            case 10 where Self.equalsLower(b, name, "connection"):
                Self.forEachListElement(b, value) { element in
                    if Self.equalsLower(b, element, "close") { head.connectionClose = true }
                    else if Self.equalsLower(b, element, "keep-alive") { head.connectionKeepAlive = true }
                }
            case 14 where Self.equalsLower(b, name, "content-length"):
                if head.contentLength >= 0 { return .failed(.duplicateContentLength) }
                guard value.count > 0, value.count <= 18 else { return .failed(.badContentLength) }
                var n = 0
                for k in Int(value.start)..<Int(value.start + value.count) {
                    let d = b[k]
                    guard isDigit(d) else { return .failed(.badContentLength) }
                    n = n * 10 + Int(d - 0x30)
                }
                head.contentLength = n
            case 17 where Self.equalsLower(b, name, "transfer-encoding"):
                transferEncoding = true
                var failure: HTTPError? = nil
                var sawAny = false
                Self.forEachListElement(b, value) { element in
                    guard failure == nil else { return }
                    sawAny = true
                    if head.isChunked {
                        // Anything after chunked (including a second chunked) is not allowed.
                        failure = .transferEncodingNotChunked
                    } else if Self.equalsLower(b, element, "chunked") {
                        head.isChunked = true
                    } else if Self.isToken(b, element) {
                        failure = .unknownTransferCoding
                    } else {
                        failure = .transferEncodingNotChunked
                    }
                }
                if !sawAny { return .failed(.transferEncodingNotChunked) }
                if let failure {
                    // The final coding decides: not chunked is 400, chunked preceded by codings we
                    // cannot decode is 501.
                    return .failed(failure)
                }
            default: break
            }
            line = j + 2
        }
        head.headerCount = count

        if transferEncoding {
            if head.versionMinor == 0 { return .failed(.transferEncodingInHTTP10) }
            if head.contentLength >= 0 { return .failed(.contentLengthAndTransferEncoding) }
            if !head.isChunked { return .failed(.transferEncodingNotChunked) }
        }
        if hostCount > 1 { return .failed(.duplicateHost) }
        if head.versionMinor >= 1 && hostCount == 0 { return .failed(.missingHost) }
        // An http(s) URI never has an empty host (RFC 9110 §4.2.1), and RFC 9112 §3.3 lets a server
        // refuse a request whose target would then have no authority: an empty Host is refused in
        // HTTP/1.1, which requires Host; HTTP/1.0, where Host is optional, may send it empty.
        if hostCount == 1 && hostValue.count == 0 && head.versionMinor >= 1 { return .failed(.emptyHost) }
        if hostCount == 1 && !Self.isValidHost(b, hostValue) { return .failed(.badHost) }
        // (A Content-Length over `maxBodyBytes` is refused by `HTTPConnectionState`, unless the
        // handler streams that body.)
        return .complete(head)
    }

    static func method(_ b: UnsafeRawBufferPointer, _ n: Int) -> HTTPMethod {
        switch n {
        case 3:
            if b[0] == 0x47 && b[1] == 0x45 && b[2] == 0x54 { return .GET }
            if b[0] == 0x50 && b[1] == 0x55 && b[2] == 0x54 { return .PUT }
        case 4:
            if b[0] == 0x50 && b[1] == 0x4F && b[2] == 0x53 && b[3] == 0x54 { return .POST }
            if b[0] == 0x48 && b[1] == 0x45 && b[2] == 0x41 && b[3] == 0x44 { return .HEAD }
        case 5:
            if equals(b, 0, "PATCH") { return .PATCH }
            if equals(b, 0, "TRACE") { return .TRACE }
        case 6:
            if equals(b, 0, "DELETE") { return .DELETE }
        case 7:
            if equals(b, 0, "OPTIONS") { return .OPTIONS }
            if equals(b, 0, "CONNECT") { return .CONNECT }
        default: break
        }
        return .other
    }

    static func equals(_ b: UnsafeRawBufferPointer, _ start: Int, _ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard start + n <= b.count else { return false }
        for k in 0..<n where b[start + k] != s.utf8Start[k] { return false }
        return true
    }

    /// Case-insensitive comparison of a span with a lowercase ASCII literal.
    @inlinable
    public static func equalsLower(_ b: UnsafeRawBufferPointer, _ span: ByteSpan, _ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard Int(span.count) == n else { return false }
        let p = s.utf8Start
        let start = Int(span.start)
        for k in 0..<n {
            var c = b[start + k]
            if c >= 0x41 && c <= 0x5A { c |= 0x20 }
            if c != p[k] { return false }
        }
        return true
    }

    /// Calls `body` for each non-empty element of a comma-separated list, trimmed of OWS.
    static func forEachListElement(_ b: UnsafeRawBufferPointer, _ span: ByteSpan, _ body: (ByteSpan) -> Void) {
        var k = Int(span.start)
        let end = Int(span.start + span.count)
        while k < end {
            while k < end && (b[k] == 0x20 || b[k] == 0x09 || b[k] == 0x2C) { k += 1 }
            let s = k
            while k < end && b[k] != 0x2C { k += 1 }
            var e = k
            while e > s && (b[e - 1] == 0x20 || b[e - 1] == 0x09) { e -= 1 }
            if e > s { body(ByteSpan(start: s, count: e - s)) }
        }
    }

    static func isToken(_ b: UnsafeRawBufferPointer, _ span: ByteSpan) -> Bool {
        guard span.count > 0 else { return false }
        for k in Int(span.start)..<Int(span.start + span.count) where !isTchar(b[k]) { return false }
        return true
    }

    /// Host = uri-host [ ":" port ] (RFC 9110 §7.2): reg-name, IPv4 or IP-literal characters only.
    static func isValidHost(_ b: UnsafeRawBufferPointer, _ span: ByteSpan) -> Bool {
        let start = Int(span.start), end = Int(span.start + span.count)
        if start == end { return true }  // (an empty Host is judged by the caller)
        var bracket = false
        for k in start..<end {
            let c = b[k]
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
                UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
                UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"):
                continue
            case UInt8(ascii: "["):
                if k != start { return false }
                bracket = true
            case UInt8(ascii: "]"):
                if !bracket { return false }
            default:
                return false
            }
        }
        return true
    }

    /// For an absolute-form target (`http://host/path`) ending at `end` (its query excluded), where
    /// its authority starts and ends (the path, possibly empty, runs from there to `end`).
    static func absoluteFormAuthority(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> (start: Int, end: Int)? {
        var k = start
        while k < end && (isAlpha(b[k]) || isDigit(b[k]) || b[k] == 0x2B || b[k] == 0x2D || b[k] == 0x2E) { k += 1 }
        guard k > start, k + 3 <= end, b[k] == UInt8(ascii: ":"), b[k + 1] == UInt8(ascii: "/"), b[k + 2] == UInt8(ascii: "/") else { return nil }
        k += 3
        let authority = k
        while k < end && b[k] != UInt8(ascii: "/") { k += 1 }
        guard k > authority else { return nil }
        return (authority, k)
    }
}

@inlinable @inline(__always)
func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }

@inlinable @inline(__always)
func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- 0x61 < 26 }

/// The value of one hexadecimal digit (either case), nil for any other byte: chunk sizes, PROXY v1
/// addresses, percent-escapes.
@inlinable @inline(__always)
public func hexDigitValue(_ c: UInt8) -> UInt8? {
    if isDigit(c) { return c &- 0x30 }
    let lower = c | 0x20
    return lower &- 0x61 < 6 ? lower &- 0x61 &+ 10 : nil
}

/// tchar (RFC 9110 §5.6.2).
@inlinable @inline(__always)
func isTchar(_ c: UInt8) -> Bool {
    // Bit masks for 0x00-0x3F and 0x40-0x7F.
    let low: UInt64 = 0x03FF_6CFA_0000_0000  // ! # $ % & ' * + - . 0-9
    let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE  // A-Z ^ _ ` a-z | ~
    if c < 64 { return (low >> UInt64(c)) & 1 == 1 }
    if c < 128 { return (high >> UInt64(c - 64)) & 1 == 1 }
    return false
}
