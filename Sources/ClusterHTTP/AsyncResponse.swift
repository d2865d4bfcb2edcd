/// Responses that are not ready when the handler returns: the handler hands the worker an async
/// closure (`HTTPResponseWriter.respondLater`), the worker runs it as a task on its own loop
/// (`ClusterWorker.LoopExecutor`: the task runs on the worker's thread, between its epoll turns),
/// and writes what it returns when it is done. Meanwhile the connection reads nothing more (its
/// pipelined requests wait, in order) and every other connection of the worker is served.

/// A complete response, owned: what an async handler returns.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String?
    public var headers: [HTTPField]
    public var body: [UInt8]
    /// Close the connection after it.
    public var closeConnection = false
    /// A body written piece by piece instead of `body` (sent chunked, or until close to an
    /// HTTP/1.0 client): the closure writes it through the writer, which waits while the client
    /// is slower than the closure (back-pressure). Not called for HEAD or a status without a body.
    public var stream: ResponseBodyStream? = nil

    public init(status: Int = 200, contentType: String? = "text/plain", headers: [HTTPField] = [], body: [UInt8] = []) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    public init(status: Int = 200, contentType: String? = "text/plain", headers: [HTTPField] = [], body: String) {
        self.init(status: status, contentType: contentType, headers: headers, body: Array(body.utf8))
    }

    /// A streamed answer: `stream` writes the body while it is sent.
    public init(status: Int = 200, contentType: String? = "text/plain", headers: [HTTPField] = [], stream: @escaping ResponseBodyStream) {
        self.init(status: status, contentType: contentType, headers: headers, body: [])
        self.stream = stream
    }
}

/// Writes a streamed body (`HTTPResponse.stream`).
public typealias ResponseBodyStream = @Sendable (ResponseBodyWriter) async throws -> Void

/// Where a streamed body's pieces go: the worker's connection, or a test's buffer.
public protocol ResponseBodySink: AnyObject, Sendable {
    /// Queues `bytes`; returns when the client has taken enough of what was queued before. Throws
    /// `ResponseBodyWriter.ClientGone` once the connection is gone.
    func write(_ bytes: [UInt8]) async throws
}

/// What a streamed body's closure writes to.
public struct ResponseBodyWriter: Sendable {
    /// The connection closed before the body was written: stop producing it.
    public struct ClientGone: Error, Equatable {
        public init() {}
    }

    let sink: any ResponseBodySink

    public init(sink: any ResponseBodySink) { self.sink = sink }

    /// Sends `bytes` (nothing for an empty array); waits while the client lags behind.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await sink.write(bytes)
    }

    public func write(_ text: String) async throws { try await write(Array(text.utf8)) }
}

/// The work of a deferred response: runs on the worker's loop, may `await` anything.
public typealias DeferredResponse = @Sendable () async -> HTTPResponse

extension HTTPResponseWriter {
    /// Answers with what `work` returns once it is done, instead of now. Copy what `work` needs from
    /// the request first (an `HTTPRequest` is valid only during `handle`). The connection waits
    /// for the answer (its later pipelined requests too, in order); the worker serves its other
    /// connections meanwhile. `work` runs on the worker's thread: it needs no locks to share
    /// state with the handler.
    public mutating func respondLater(_ work: @escaping DeferredResponse) {
        precondition(status == 0 && deferred == nil, "a handler must respond once")
        deferred = work
    }

    /// Writes the head of a streamed answer: `Transfer-Encoding: chunked` to an HTTP/1.1 client;
    /// to an HTTP/1.0 one no length, and the connection closes after the body. Returns whether the
    /// body follows (not for HEAD, or a status without a body) and whether it is chunked.
    public mutating func respondStreaming(_ response: HTTPResponse) -> (bodyFollows: Bool, chunked: Bool) {
        precondition(status == 0, "a handler must respond once")
        if response.closeConnection { keepAlive = false }
        status = response.status
        let bodyAllowed = !HTTPStatus.forbidsBody(response.status)
        let chunked = bodyAllowed && versionMinor >= 1
        if bodyAllowed && !chunked { keepAlive = false }
        var headers = response.headers
        if chunked { headers.append(HTTPField("Transfer-Encoding", "chunked")) }
        writeHead(status: response.status, contentType: bodyAllowed ? response.contentType : nil, headers: headers, contentLength: nil)
        writeTrailingHeaders()
        return (bodyAllowed && !isHead, chunked)
    }

    /// Writes an owned response (`respondLater`'s, when it is done).
    public mutating func respond(_ response: HTTPResponse) {
        if response.closeConnection { keepAlive = false }
        if HTTPStatus.forbidsBody(response.status) {
            respond(status: response.status, headers: response.headers)
        } else {
            respond(status: response.status, contentType: response.contentType, headers: response.headers, body: response.body)
        }
    }
}
