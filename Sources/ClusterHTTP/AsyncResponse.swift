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

    public init(status: Int = 200, contentType: String? = "text/plain", headers: [HTTPField] = [], body: [UInt8] = []) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    public init(status: Int = 200, contentType: String? = "text/plain", headers: [HTTPField] = [], body: String) {
        self.init(status: status, contentType: contentType, headers: headers, body: Array(body.utf8))
    }
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
