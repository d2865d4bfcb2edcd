/// A view of bytes inside a request (a path, a header value, the body). Valid only while the handler
/// runs: copy what you keep (`string`, `array`).
public struct HTTPBytes: Equatable, CustomStringConvertible {
    public let buffer: UnsafeRawBufferPointer

    @inlinable public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    @inlinable public var count: Int { buffer.count }
    @inlinable public var isEmpty: Bool { buffer.count == 0 }

    /// A copy as a String (allocates; invalid UTF-8 is repaired).
    public var string: String { String(decoding: buffer, as: UTF8.self) }
    /// A copy as bytes (allocates).
    public var array: [UInt8] { Array(buffer) }
    public var description: String { string }

    @inlinable
    public static func == (a: HTTPBytes, b: HTTPBytes) -> Bool {
        a.count == b.count && (a.count == 0 || memcmpBytes(a.buffer.baseAddress!, b.buffer.baseAddress!, a.count))
    }

    /// Byte-wise equality with a literal, without allocating.
    @inlinable
    public static func == (a: HTTPBytes, b: StaticString) -> Bool {
        a.count == b.utf8CodeUnitCount && (a.count == 0 || memcmpBytes(a.buffer.baseAddress!, UnsafeRawPointer(b.utf8Start), a.count))
    }

    /// Lets a `switch` match paths against literals: `case "/": ...`.
    @inlinable
    public static func ~= (pattern: StaticString, value: HTTPBytes) -> Bool {
        value == pattern
    }

    /// Byte-wise equality with prepared bytes.
    @inlinable
    public func equals(_ bytes: UnsafeRawBufferPointer) -> Bool {
        count == bytes.count && (count == 0 || memcmpBytes(buffer.baseAddress!, bytes.baseAddress!, count))
    }

    @inlinable
    public func hasPrefix(_ bytes: UnsafeRawBufferPointer) -> Bool {
        count >= bytes.count && (bytes.count == 0 || memcmpBytes(buffer.baseAddress!, bytes.baseAddress!, bytes.count))
    }

    /// Integer value of an all-digit field, or nil.
    public var intValue: Int? {
        guard count > 0, count <= 18 else { return nil }
        var n = 0
        for c in buffer {
            guard isDigit(c) else { return nil }
            n = n * 10 + Int(c - 0x30)
        }
        return n
    }
}

@inlinable @inline(__always)
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

/// One request as the handler sees it. It borrows the connection's read buffer: nothing is copied
/// or allocated to build it, and it is valid only during the handler call.
public struct HTTPRequest {
    public let head: HTTPRequestHead
    @usableFromInline let base: UnsafeRawBufferPointer
    /// The head's header fields (the parser's table, or the connection's saved copy).
    @usableFromInline let fields: UnsafeBufferPointer<HTTPHeaderSpan>
    @usableFromInline let bodySpan: ByteSpan
    /// The connection's socket descriptor, for asking the kernel about the connection
    /// (`getpeername`, `getsockname`); -1 where there is none (tests, the fuzzer). It belongs to
    /// the worker: never read, write or close it.
    public let socket: Int32
    /// The client as a trusted balancer named it in the connection's PROXY protocol header (on a
    /// `proxyProtocol` listener); nil when the connection came without one: then the client is the
    /// socket's peer (`getpeername` on `socket`). `Cluster`'s `clientAddress` puts these together.
    public let proxiedClient: ProxyEndpoint?
    /// Set when the nearest hop (the PROXY header's client, else the socket's peer) is in
    /// `trustedProxies`: its `X-Forwarded-For` is believed.
    @usableFromInline let forwardingTrust: UnsafePointer<TrustedNetworks>?
    /// The body as it arrives, for a handler whose `streamsBody` said so (then `body` is empty);
    /// nil otherwise.
    public let bodyStream: RequestBodyStream?

    @inlinable
    init(head: HTTPRequestHead, base: UnsafeRawBufferPointer, fields: UnsafeBufferPointer<HTTPHeaderSpan>, body: ByteSpan, socket: Int32 = -1,
         proxiedClient: ProxyEndpoint? = nil, forwardingTrust: UnsafePointer<TrustedNetworks>? = nil, bodyStream: RequestBodyStream? = nil) {
        assert(fields.count == head.headerCount)
        self.head = head
        self.base = base
        self.fields = fields
        self.bodySpan = body
        self.socket = socket
        self.proxiedClient = proxiedClient
        self.forwardingTrust = forwardingTrust
        self.bodyStream = bodyStream
    }

    /// The client named by `X-Forwarded-For` (or `Forwarded: for=`) when the request's nearest hop
    /// is a trusted proxy (`ForwardedHeaders.client`); nil otherwise, or when the header names none.
    public var forwardedClient: ProxyAddress? {
        guard let forwardingTrust else { return nil }
        return ForwardedHeaders.client(of: self, trusted: forwardingTrust.pointee)
    }

    @inlinable func bytes(_ span: ByteSpan) -> HTTPBytes {
        HTTPBytes(UnsafeRawBufferPointer(rebasing: base[Int(span.start)..<Int(span.start + span.count)]))
    }

    @inlinable public var method: HTTPMethod { head.method }
    /// The method as sent (useful for `.other`).
    @inlinable public var methodBytes: HTTPBytes { bytes(head.methodSpan) }
    /// The request target as sent.
    @inlinable public var target: HTTPBytes { bytes(head.target) }
    /// The path, without the query, still percent-encoded. For an absolute-form target with an
    /// empty path (`http://host`), `/`.
    @inlinable public var path: HTTPBytes { bytes(head.path) }
    /// The query string after `?` (empty when none).
    @inlinable public var query: HTTPBytes { bytes(head.query) }
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    @inlinable public var versionMinor: UInt8 { head.versionMinor }
    /// The request body (empty when none), already de-chunked.
    @inlinable public var body: HTTPBytes { bytes(bodySpan) }
    @inlinable public var headerCount: Int { head.headerCount }

    /// The request's bytes as they were received (the head, then the de-chunked body), which the
    /// spans of `head`, `headerSpans` and `bodyByteSpan` count from: what a copy of the whole
    /// request (`ClusterApp`'s `Request`) takes in one piece.
    @inlinable public var rawBytes: UnsafeRawBufferPointer { base }
    /// The header fields as spans into `rawBytes`.
    @inlinable public var headerSpans: UnsafeBufferPointer<HTTPHeaderSpan> { fields }
    /// Where `body` lies in `rawBytes`.
    @inlinable public var bodyByteSpan: ByteSpan { bodySpan }

    /// Header `i` as (name, value).
    @inlinable
    public func header(at i: Int) -> (name: HTTPBytes, value: HTTPBytes) {
        precondition(i >= 0 && i < head.headerCount)
        let h = fields[i]
        return (bytes(h.name), bytes(h.value))
    }

    /// The first header with this name (`name` in lowercase), compared case-insensitively.
    @inlinable
    public func header(_ name: StaticString) -> HTTPBytes? {
        for i in 0..<head.headerCount {
            let h = fields[i]
            if HTTPParser.equalsLower(base, h.name, name) { return bytes(h.value) }
        }
        return nil
    }

    /// Header lookup by a runtime name (allocates nothing; case-insensitive).
    public func header(named name: String) -> HTTPBytes? {
        // Header names are ASCII tokens: both sides folded byte by byte (no lowercased copy).
        let wanted = name.utf8
        for i in 0..<head.headerCount {
            let h = fields[i]
            guard Int(h.name.count) == wanted.count else { continue }
            var same = true
            var k = Int(h.name.start)
            for w in wanted {
                var c = base[k]
                if c >= 0x41 && c <= 0x5A { c |= 0x20 }
                if c != (w >= 0x41 && w <= 0x5A ? w | 0x20 : w) { same = false; break }
                k += 1
            }
            if same { return bytes(h.value) }
        }
        return nil
    }
}
