/// A response header field given by the handler.
public struct HTTPField: Sendable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// A response encoded once (at start-up or config load) and served many times: status line, fixed
/// headers and Content-Length are pre-rendered; the writer adds Date and Connection per request.
public struct PreparedResponse: Sendable {
    public let status: Int
    /// "HTTP/1.1 200 OK\r\nServer: clusterd\r\nContent-Type: ...\r\nContent-Length: N\r\n" (the
    /// `Server` value is `ServerName.current` when it is made)
    public let head: [UInt8]
    public let body: [UInt8]

    public init(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: [UInt8]) {
        self.status = status
        let h = IOBuffer(capacity: 256)
        let bodyAllowed = !HTTPStatus.forbidsBody(status)
        HTTPResponseWriter.writeHead(h, status: status, contentType: bodyAllowed ? contentType : nil, headers: headers, contentLength: bodyAllowed ? body.count : nil)
        head = h.readableArray
        self.body = bodyAllowed ? body : []
    }

    public init(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: String) {
        self.init(status: status, contentType: contentType, headers: headers, body: Array(body.utf8))
    }

    /// A head announcing `fileLength` body bytes that come from a file (`respond(_:file:)`); with
    /// `fileLength` nil, a head without Content-Length (`respondPartial`).
    public init(status: Int, contentType: String?, headers: [HTTPField] = [], fileLength: Int?) {
        self.status = status
        let h = IOBuffer(capacity: 256)
        HTTPResponseWriter.writeHead(h, status: status, contentType: contentType, headers: headers, contentLength: fileLength)
        head = h.readableArray
        body = []
    }
}

/// A response body that is a region of an open file, sent with sendfile(2) by the worker. The
/// writer takes ownership of the descriptor: the worker closes it once sent (or at once for HEAD),
/// unless the body has a `shared` owner.
public struct FileBody: Sendable, Equatable {
    public var fd: Int32
    public var offset: Int
    public var count: Int
    /// The owner of a descriptor that many responses send from (an open-file cache's entry): the
    /// worker never closes `fd` then; the owner closes it once the last response holding it is done
    /// (sendfile takes its own offset, so sharing one open file is safe).
    public var shared: (any SharedFile)?

    public init(fd: Int32, offset: Int, count: Int) {
        self.fd = fd
        self.offset = offset
        self.count = count
        self.shared = nil
    }

    public init(shared: any SharedFile, offset: Int, count: Int) {
        self.fd = shared.fd
        self.offset = offset
        self.count = count
        self.shared = shared
    }

    /// Whether the worker closes `fd` when the body is sent or abandoned.
    @inlinable public var ownsDescriptor: Bool { shared == nil }

    public static func == (a: FileBody, b: FileBody) -> Bool {
        a.fd == b.fd && a.offset == b.offset && a.count == b.count && a.shared === b.shared
    }
}

/// An open file kept by its owner (a cache) and lent to responses: closed when the last reference
/// goes, never by the worker that sends from it.
public protocol SharedFile: AnyObject, Sendable {
    var fd: Int32 { get }
}

/// Per-request facts the connection gives the writer.
public struct ResponseContext {
    /// The cached `Date: ...\r\n` line.
    public var dateLine: UnsafeRawBufferPointer
    /// Set while the worker stops: a response closes its connection unless more of what the client
    /// sent (pipelined requests) is buffered behind it.
    public var closeConnections: Bool
    /// The connection's socket, handed to the handler as `HTTPRequest.socket`; -1 when none.
    public var socket: Int32
    /// With `closeConnections`: answer only the requests that had begun to arrive when the first
    /// answer under it went out (a connection a worker adopted beyond its connection cap), the last
    /// with `Connection: close`, however much the client pipelines after. Without it a stopping
    /// worker also answers what arrives while it answers (its drain timeout bounds that).
    public var answerOnlyWhatHasArrived: Bool
    /// The client's address from the connection's PROXY protocol header, handed to the handler as
    /// `HTTPRequest.proxiedClient`; nil when the connection had none.
    public var proxiedClient: ProxyEndpoint? = nil
    /// Set when the connection's nearest hop is a trusted proxy, whose `X-Forwarded-For` is then
    /// believed (`HTTPRequest.forwardedClient`). Points at the worker's own list, which outlives
    /// every request.
    public var forwardingTrust: UnsafePointer<TrustedNetworks>? = nil

    public init(dateLine: UnsafeRawBufferPointer, closeConnections: Bool = false, socket: Int32 = -1, answerOnlyWhatHasArrived: Bool = false) {
        self.dateLine = dateLine
        self.closeConnections = closeConnections
        self.socket = socket
        self.answerOnlyWhatHasArrived = answerOnlyWhatHasArrived
    }
}

/// Writes one response into the connection's output. A handler calls exactly one `respond`; if it
/// calls none, the client gets a 500.
public struct HTTPResponseWriter: ~Copyable {
    /// The connection's output, borrowed for the one `dispatch` call this writer lives in (which
    /// holds a reference the whole time): unretained, so the hot path does no reference counting.
    @usableFromInline let unretainedOutput: Unmanaged<IOBuffer>
    @inlinable @inline(__always)
    func withOutput<R>(_ body: (IOBuffer) -> R) -> R { unretainedOutput._withUnsafeGuaranteedRef(body) }
    @usableFromInline let dateLine: UnsafeRawBufferPointer
    @usableFromInline let isHead: Bool
    @usableFromInline let versionMinor: UInt8
    /// Whether the connection stays open after this response. A handler may clear it.
    public var keepAlive: Bool
    /// The status written, or 0 while none was.
    public var status: Int = 0
    /// Body bytes written.
    public var bodyBytes: Int = 0
    /// A file body the worker sends after the head.
    public var fileBody: FileBody? = nil
    /// Set by `respondLater`: the answer comes when this is done.
    var deferred: DeferredResponse? = nil

    @usableFromInline
    init(output: IOBuffer, dateLine: UnsafeRawBufferPointer, isHead: Bool, versionMinor: UInt8, keepAlive: Bool) {
        self.unretainedOutput = .passUnretained(output)
        self.dateLine = dateLine
        self.isHead = isHead
        self.versionMinor = versionMinor
        self.keepAlive = keepAlive
    }

    @inlinable public var hasResponded: Bool { status != 0 }
    /// `respondLater` was called.
    public var isDeferred: Bool { deferred != nil }

    /// Ask the server to close the connection after this response.
    public mutating func closeConnection() { keepAlive = false }

    /// Status line, Server, Content-Type (if any), the given fields, Content-Length (if any).
    mutating func writeHead(status: Int, contentType: String?, headers: [HTTPField], contentLength: Int?) {
        withOutput { HTTPResponseWriter.writeHead($0, status: status, contentType: contentType, headers: headers, contentLength: contentLength) }
    }

    static func writeHead(_ out: IOBuffer, status: Int, contentType: String?, headers: [HTTPField], contentLength: Int?) {
        writeStatusLine(out, status)
        ServerName.write(out)
        if let contentType {
            out.write("Content-Type: ")
            out.write(string: contentType)
            out.write("\r\n")
        }
        for field in headers {
            out.write(string: field.name)
            out.write(": ")
            out.write(string: field.value)
            out.write("\r\n")
        }
        if let contentLength {
            out.write("Content-Length: ")
            out.writeDecimal(contentLength)
            out.write("\r\n")
        }
    }

    @inlinable
    mutating func writeTrailingHeaders() {
        withOutput { out in
            out.write(dateLine)
            if !keepAlive {
                out.write("Connection: close\r\n\r\n")
            } else if versionMinor == 0 {
                out.write("Connection: keep-alive\r\n\r\n")
            } else {
                out.write("\r\n")
            }
        }
    }

    /// Writes a pre-rendered response (the fast path: a few memcpys).
    @inlinable
    public mutating func respond(_ prepared: PreparedResponse) {
        precondition(status == 0, "a handler must respond once")
        status = prepared.status
        withOutput { out in prepared.head.withUnsafeBytes { out.write($0) } }
        writeTrailingHeaders()
        if !isHead {
            withOutput { out in prepared.body.withUnsafeBytes { out.write($0) } }
            bodyBytes = prepared.body.count
        }
    }

    /// Writes a response with a complete body.
    public mutating func respond(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: UnsafeRawBufferPointer) {
        precondition(status == 0 || self.status == 0, "a handler must respond once")
        precondition((100...999).contains(status), "status must be three digits")
        self.status = status
        let bodyAllowed = !HTTPStatus.forbidsBody(status)
        writeHead(status: status, contentType: bodyAllowed ? contentType : nil, headers: headers, contentLength: bodyAllowed ? body.count : nil)
        writeTrailingHeaders()
        if bodyAllowed && !isHead {
            withOutput { $0.write(body) }
            bodyBytes = body.count
        }
    }

    public mutating func respond(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: [UInt8]) {
        body.withUnsafeBytes { respond(status: status, contentType: contentType, headers: headers, body: $0) }
    }

    public mutating func respond(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: String) {
        var body = body
        body.withUTF8 { respond(status: status, contentType: contentType, headers: headers, body: UnsafeRawBufferPointer($0)) }
    }

    public mutating func respond(status: Int, contentType: String? = "text/plain", headers: [HTTPField] = [], body: StaticString) {
        respond(status: status, contentType: contentType, headers: headers, body: UnsafeRawBufferPointer(start: body.utf8Start, count: body.utf8CodeUnitCount))
    }

    /// Writes a head whose body is a region of an open file (sent with sendfile). Takes ownership of
    /// `file.fd` in every case.
    public mutating func respond(status: Int, contentType: String?, headers: [HTTPField] = [], file: FileBody) {
        precondition(self.status == 0, "a handler must respond once")
        self.status = status
        writeHead(status: status, contentType: contentType, headers: headers, contentLength: file.count)
        writeTrailingHeaders()
        var body = file
        if isHead { body.count = 0 }
        fileBody = body
        bodyBytes = body.count
    }

    /// Writes a pre-rendered head (made with `PreparedResponse(status:contentType:headers:fileLength:)`)
    /// whose body is `file`, sent with sendfile. Takes ownership of `file` in every case.
    public mutating func respond(_ prepared: PreparedResponse, file: FileBody) {
        precondition(status == 0, "a handler must respond once")
        status = prepared.status
        withOutput { out in prepared.head.withUnsafeBytes { out.write($0) } }
        writeTrailingHeaders()
        var body = file
        if isHead { body.count = 0 }
        fileBody = body
        bodyBytes = body.count
    }

    /// A 206 answer: `head` (status line and fixed fields, made with `fileLength: nil`), then
    /// `Content-Range: bytes first-last/size` and Content-Length; the part comes from `file` (which
    /// this takes ownership of) or, when `file` is nil, from `body`, the part's own bytes.
    public mutating func respondPartial(_ head: PreparedResponse, first: Int, last: Int, of size: Int, file: FileBody?, body: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        precondition(status == 0, "a handler must respond once")
        status = head.status
        let length = last - first + 1
        withOutput { out in
            head.head.withUnsafeBytes { out.write($0) }
            out.write("Content-Range: bytes ")
            out.writeDecimal(first)
            out.writeByte(UInt8(ascii: "-"))
            out.writeDecimal(last)
            out.writeByte(UInt8(ascii: "/"))
            out.writeDecimal(size)
            out.write("\r\nContent-Length: ")
            out.writeDecimal(length)
            out.write("\r\n")
        }
        writeTrailingHeaders()
        if var file {
            if isHead { file.count = 0 }
            fileBody = file
            bodyBytes = file.count
        } else if !isHead {
            withOutput { $0.write(body) }
            bodyBytes = body.count
        }
    }

    /// Writes a response with no body (304, or 204), with the given headers.
    public mutating func respond(status: Int, headers: [HTTPField]) {
        precondition(self.status == 0, "a handler must respond once")
        self.status = status
        writeHead(status: status, contentType: nil, headers: headers, contentLength: nil)
        writeTrailingHeaders()
    }

    /// The engine's answer to `OPTIONS *`: 200, `Allow`, an empty body.
    mutating func respondToServerOptions(allow: StaticString) {
        precondition(status == 0, "a handler must respond once")
        status = 200
        withOutput { out in
            HTTPResponseWriter.writeStatusLine(out, 200)
            ServerName.write(out)
            out.write("Allow: ")
            out.write(allow)
            out.write("\r\nContent-Length: 0\r\n")
        }
        writeTrailingHeaders()
    }

    static func writeStatusLine(_ out: IOBuffer, _ status: Int) {
        out.write("HTTP/1.1 ")
        out.writeDecimal(status)
        out.writeByte(0x20)
        out.write(HTTPStatus.reasonPhrase(status))
        out.write("\r\n")
    }

    /// The response the engine sends for a request it refuses, always closing the connection.
    static func writeError(_ out: IOBuffer, _ error: HTTPError, dateLine: UnsafeRawBufferPointer) {
        writeStatusLine(out, error.status)
        ServerName.write(out)
        out.write("Content-Type: text/plain\r\nContent-Length: ")
        out.writeDecimal(error.reason.utf8.count + 1)
        out.write("\r\n")
        out.write(dateLine)
        out.write("Connection: close\r\n\r\n")
        out.write(string: error.reason)
        out.writeByte(0x0A)
    }
}

/// What a user writes: request in, response out. The worker is generic over the handler type, so
/// calls are direct.
public protocol HTTPHandler {
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter)
    /// The methods this server answers, for the `Allow` field of the engine's own answer to
    /// `OPTIONS *` (RFC 9110 §9.3.7): that request concerns the server, not a resource, and is
    /// never passed to `handle`.
    var allowedMethods: StaticString { get }
    /// Asked when a request's head is complete and a body follows: true to be called at once, with
    /// the body to come as `request.bodyStream` (read it from `respondLater`'s task), instead of
    /// once the whole body is in. `http.maxBodyBytes` does not apply to such a body: the handler
    /// bounds it. Default: false.
    func streamsBody(_ request: HTTPRequest) -> Bool
}

extension HTTPHandler {
    public func streamsBody(_ request: HTTPRequest) -> Bool { false }

    /// The methods the engine knows by name, but TRACE (a handler that answers it says so) and
    /// CONNECT (refused with 501).
    public var allowedMethods: StaticString { "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH" }
}

/// Sees every answered request (the access log). The worker is generic over it too, so the default
/// `NoObserver` costs nothing.
public protocol HTTPObserver {
    mutating func completed(_ request: HTTPRequest, status: Int, bodyBytes: Int)
    /// A request the engine refused (malformed, over a limit, timed out) before a handler saw it.
    mutating func rejected(_ error: HTTPError)
}

public struct NoObserver: HTTPObserver {
    @inlinable public init() {}
    @inlinable public mutating func completed(_ request: HTTPRequest, status: Int, bodyBytes: Int) {}
    @inlinable public mutating func rejected(_ error: HTTPError) {}
}

/// The `Server` header every response carries: `clusterd`, or the application's name
/// (`Cluster.main(app:)`). Set once at start, before any response is rendered or written.
public enum ServerName {
    nonisolated(unsafe) private static var line: [UInt8] = Array("Server: clusterd\r\n".utf8)

    /// The name now.
    public static var current: String { String(decoding: line.dropFirst(8).dropLast(2), as: UTF8.self) }

    /// Sets the name: a token of visible ASCII without separators (RFC 9110 product), at most 64
    /// bytes. False (and nothing changes) for anything else.
    @discardableResult
    public static func set(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy({ isTchar($0) || $0 == UInt8(ascii: "/") }) else { return false }
        line = Array("Server: ".utf8) + bytes + [0x0D, 0x0A]
        return true
    }

    @inline(__always)
    static func write(_ out: IOBuffer) {
        line.withUnsafeBytes { out.write($0) }
    }
}
