import Cluster
import ClusterConfig
import ClusterHTTP
import ClusterSystem
import FoundationEssentials

/// One request as a route sees it: an owned copy, valid as long as you keep it (an async route
/// awaits with it long after the connection's buffer has moved on). Making one copies the head in
/// one piece and the body in another; everything else (parameters, query, headers, cookies) is
/// read from those bytes, and decoded, only when asked for.
public struct Request: Sendable {
    /// The head's bytes; `head`'s and `fields`' spans count from their start.
    @usableFromInline let headBytes: [UInt8]
    @usableFromInline let head: HTTPRequestHead
    @usableFromInline let fields: [HTTPHeaderSpan]
    /// The request body (empty when none), already de-chunked.
    public let body: [UInt8]
    /// The body as it arrives, on a route that streams it (then `body` is empty); nil otherwise.
    public let bodyStream: RequestBodyStream?
    /// The path parameters the matched route named (`:id`, `*`, `**`).
    public let parameters: Parameters
    let client: ClientSource

    /// Where `clientAddress` comes from.
    enum ClientSource: Sendable {
        /// Known when the request was copied (a proxy named it, or it was looked up then).
        case known(IPAddress?)
        /// The connection's peer, asked (`getpeername`) on use: only while the connection's sync
        /// route runs, where the socket is the request's. Async routes get `known`.
        case peer(Int32)
    }

    /// Copies `request`. `parameters` are spans into its path (as the router matched them);
    /// `resolveClient`: look the client up now (a request that outlives `handle`).
    init(_ request: HTTPRequest, parameterNames: [String], parameterSpans: [ByteSpan], resolveClient: Bool) {
        let head = request.head
        let headBytes = Array(UnsafeRawBufferPointer(rebasing: request.rawBytes[0..<head.headLength]))
        self.headBytes = headBytes
        self.head = head
        self.fields = Array(request.headerSpans)
        self.body = request.body.isEmpty ? [] : request.body.array
        self.bodyStream = request.bodyStream
        self.parameters = Parameters(names: parameterNames, spans: parameterSpans, bytes: headBytes)
        if resolveClient {
            client = .known(request.clientAddress)
        } else if let forwarded = request.forwardedClient {
            client = .known(IPAddress(bytes: forwarded.bytes))
        } else if let proxied = request.proxiedClient {
            client = .known(IPAddress(bytes: proxied.address.bytes))
        } else {
            client = .peer(request.socket)
        }
    }

    @inlinable func string(_ span: ByteSpan) -> String {
        String(decoding: headBytes[Int(span.start)..<Int(span.start + span.count)], as: UTF8.self)
    }

    public var method: HTTPMethod { head.method }
    /// The method as sent (useful for `.other`).
    public var methodName: String { string(head.methodSpan) }
    /// The path without the query, still percent-encoded (`parameters` are decoded).
    public var path: String { string(head.path) }
    /// The request target as sent: path and query.
    public var target: String { string(head.target) }
    /// The query's parameters, percent-decoded (`+` is a space) when read.
    public var query: Query { Query(bytes: headBytes, span: head.query) }
    /// The header fields; names match case-insensitively.
    public var headers: Headers { Headers(bytes: headBytes, fields: fields) }
    /// The cookies of the `Cookie` header(s).
    public var cookies: Cookies { Cookies(headers: headers) }
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var versionMinor: UInt8 { head.versionMinor }

    /// The client's address, as `HTTPRequest.clientAddress` gives it: a trusted proxy's
    /// `X-Forwarded-For`, else the connection's PROXY header, else the socket's peer. Nil on a Unix
    /// socket, and in tests without a client (`TestClient(clientAddress:)` sets one).
    public var clientAddress: IPAddress? {
        switch client {
        case .known(let address): return address
        case .peer(let socket): return Socket.peerAddressBytes(socket).flatMap { IPAddress(bytes: $0) }
        }
    }

    /// The body decoded from JSON. A body that does not decode throws `HTTPError` 400 with what is
    /// wrong and where (`"invalid JSON body: missing key 'title'"`), which the router answers as it
    /// is.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch let error as DecodingError {
            throw HTTPError(400, "invalid JSON body: \(Self.describe(error))")
        }
    }

    /// A DecodingError in words a client can act on: where and what, no Swift type dump.
    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            var text = ""
            for key in codingPath + (last.map { [$0] } ?? []) {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text.isEmpty ? "the top level" : "'\(text)'"
        }
        func kind(_ type: Any.Type) -> String {
            switch type {
            case is String.Type: return "a string"
            case is Bool.Type: return "a boolean"
            case is any BinaryInteger.Type: return "an integer"
            case is any BinaryFloatingPoint.Type: return "a number"
            case is any Sequence.Type: return "an array"
            default: return "an object"
            }
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing key \(path(context.codingPath, key))"
        case .typeMismatch(let type, let context): return "\(path(context.codingPath)) must be \(kind(type))"
        case .valueNotFound(let type, let context): return "\(path(context.codingPath)) must be \(kind(type)), not null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "invalid value at \(path(context.codingPath))"
        @unknown default: return "cannot be decoded"
        }
    }
}

/// A route's path parameters: `:name` segments by name, `*` segments as `"*"`, and what `**`
/// matched as `catchAll`; percent-decoded when read.
public struct Parameters: Sendable {
    let names: [String]
    let spans: [ByteSpan]
    let bytes: [UInt8]

    /// The value of `:name`, percent-decoded; nil when the route has no such parameter.
    public subscript(_ name: String) -> String? {
        guard let i = names.firstIndex(of: name), i < spans.count else { return nil }
        return PercentDecoding.decode(bytes, spans[i], plusAsSpace: false)
    }

    /// The value of `:name`, or `HTTPError` 400 when there is none.
    public func require(_ name: String) throws -> String {
        guard let value = self[name] else { throw HTTPError(400, "missing parameter '\(name)'") }
        return value
    }

    /// The value of `:name` converted (`Int`, `UUID`…), or `HTTPError` 400 when it does not convert:
    /// `/todos/abc` for `/todos/:id` as an `Int` is a bad request, not a server error.
    public func require<T: LosslessStringConvertible>(_ name: String, as type: T.Type) throws -> T {
        let text = try require(name)
        guard let value = T(text) else { throw HTTPError(400, "parameter '\(name)' is not a valid \(T.self)") }
        return value
    }

    /// What a `**` route matched (the rest of the path, without its leading `/`), percent-decoded.
    public var catchAll: String? { self["**"] }
}

/// The query string's `name=value` pairs, split at `&` and decoded as forms are (`%XX`, and `+` as
/// a space: WHATWG's `application/x-www-form-urlencoded`). A malformed escape (`%zz`, `%4`) is
/// kept as it is, and bytes that are not UTF-8 become U+FFFD: nothing a client sends makes reading
/// the query fail.
public struct Query: Sendable, Sequence {
    let bytes: [UInt8]
    let span: ByteSpan

    /// The first value of `name` (`""` for `?flag` and `?flag=`), or nil.
    public subscript(_ name: String) -> String? {
        var found: String? = nil
        forEachPair { key, value in
            guard keyMatches(key, name) else { return true }
            found = PercentDecoding.decode(bytes, value, plusAsSpace: true)
            return false
        }
        return found
    }

    /// Every value of `name`, in order (`?tag=a&tag=b`).
    public func all(_ name: String) -> [String] {
        var values: [String] = []
        forEachPair { key, value in
            if keyMatches(key, name) { values.append(PercentDecoding.decode(bytes, value, plusAsSpace: true)) }
            return true
        }
        return values
    }

    /// The value of `name` converted (`Int`, `Bool`…); nil when absent, `HTTPError` 400 when it
    /// does not convert.
    public func get<T: LosslessStringConvertible>(_ name: String, as type: T.Type) throws -> T? {
        guard let text = self[name] else { return nil }
        guard let value = T(text) else { throw HTTPError(400, "query parameter '\(name)' is not a valid \(T.self)") }
        return value
    }

    public var isEmpty: Bool { span.count == 0 }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        var pairs: [(name: String, value: String)] = []
        forEachPair { key, value in
            pairs.append((PercentDecoding.decode(bytes, key, plusAsSpace: true), PercentDecoding.decode(bytes, value, plusAsSpace: true)))
            return true
        }
        return pairs.makeIterator()
    }

    /// Calls `body` with each pair's key and value spans (empty pairs skipped) while it returns true.
    func forEachPair(_ body: (ByteSpan, ByteSpan) -> Bool) {
        let end = Int(span.start + span.count)
        var start = Int(span.start)
        while start < end {
            var stop = start
            while stop < end && bytes[stop] != UInt8(ascii: "&") { stop += 1 }
            if stop > start {
                var equals = start
                while equals < stop && bytes[equals] != UInt8(ascii: "=") { equals += 1 }
                let key = ByteSpan(start: start, count: equals - start)
                let value = equals < stop ? ByteSpan(start: equals + 1, count: stop - equals - 1) : ByteSpan(start: stop, count: 0)
                if !body(key, value) { return }
            }
            start = stop + 1
        }
    }

    /// Whether the (encoded) key is `name`; decodes only keys that hold an escape or a `+`.
    func keyMatches(_ key: ByteSpan, _ name: String) -> Bool {
        let raw = bytes[Int(key.start)..<Int(key.start + key.count)]
        if raw.contains(UInt8(ascii: "%")) || raw.contains(UInt8(ascii: "+")) {
            return PercentDecoding.decode(bytes, key, plusAsSpace: true) == name
        }
        return raw.elementsEqual(name.utf8)
    }
}

/// A request's header fields. Names match case-insensitively; values are as sent (trimmed).
public struct Headers: Sendable, Sequence {
    let bytes: [UInt8]
    let fields: [HTTPHeaderSpan]

    /// The first value of the field `name`, or nil.
    public subscript(_ name: String) -> String? {
        guard let field = fields.first(where: { nameMatches($0.name, name) }) else { return nil }
        return string(field.value)
    }

    /// Every value of the field `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { nameMatches($0.name, name) }.map { string($0.value) }
    }

    public func contains(_ name: String) -> Bool { fields.contains { nameMatches($0.name, name) } }

    public var count: Int { fields.count }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        fields.map { (string($0.name), string($0.value)) }.makeIterator()
    }

    func string(_ span: ByteSpan) -> String {
        String(decoding: bytes[Int(span.start)..<Int(span.start + span.count)], as: UTF8.self)
    }

    func nameMatches(_ span: ByteSpan, _ name: String) -> Bool {
        guard Int(span.count) == name.utf8.count else { return false }
        var i = Int(span.start)
        for w in name.utf8 {
            if asciiLower(bytes[i]) != asciiLower(w) { return false }
            i += 1
        }
        return true
    }
}

@inline(__always) func asciiLower(_ c: UInt8) -> UInt8 { c >= 0x41 && c <= 0x5A ? c | 0x20 : c }

/// Percent-decoding (RFC 3986 §2.1) as WHATWG URLs do it: a `%` not followed by two hex digits
/// stays as it is; the bytes are then read as UTF-8, invalid sequences repaired.
enum PercentDecoding {
    static func decode(_ bytes: [UInt8], _ span: ByteSpan, plusAsSpace: Bool) -> String {
        let raw = bytes[Int(span.start)..<Int(span.start + span.count)]
        guard raw.contains(UInt8(ascii: "%")) || (plusAsSpace && raw.contains(UInt8(ascii: "+"))) else {
            return String(decoding: raw, as: UTF8.self)
        }
        return String(decoding: decodedBytes(raw, plusAsSpace: plusAsSpace), as: UTF8.self)
    }

    static func decodedBytes<C: Collection<UInt8>>(_ raw: C, plusAsSpace: Bool) -> [UInt8] where C.Index == Int {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = raw.startIndex
        while i < raw.endIndex {
            let c = raw[i]
            if c == UInt8(ascii: "%"), i + 2 < raw.endIndex, let high = hexValue(raw[i + 1]), let low = hexValue(raw[i + 2]) {
                out.append(high << 4 | low)
                i += 3
                continue
            }
            out.append(plusAsSpace && c == UInt8(ascii: "+") ? 0x20 : c)
            i += 1
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? { hexDigitValue(c) }
}
