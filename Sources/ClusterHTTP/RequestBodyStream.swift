/// A request body handed to the handler while it arrives, for a handler that asks for it
/// (`HTTPHandler.streamsBody`): an upload larger than `maxBodyBytes`, or one the handler passes on
/// as it comes. The handler reads it from a deferred answer's task (`respondLater`):
///
///     for try await piece in stream { ... }
///
/// Back-pressure: once more than `highWater` bytes wait here unread, the worker stops reading the
/// connection until the handler has taken some. The body ends (`nil` from the iterator) when the
/// request's body is complete; it throws when the request is cut short (the client left, a framing
/// error, a timeout).
///
/// Confined to the worker's thread: the engine writes to it from the worker's loop, and the task
/// that reads it runs on the same loop (a deferred answer's task prefers the worker's executor).
public final class RequestBodyStream: AsyncSequence, @unchecked Sendable {
    public typealias Element = [UInt8]

    /// The body was cut short.
    public struct Interrupted: Error, Equatable {
        public var reason: String
        public init(_ reason: String) { self.reason = reason }
    }

    /// Unread bytes past which the connection is no longer read.
    public static let highWater = 256 * 1024

    private var chunks: [[UInt8]] = []
    private var first = 0
    public private(set) var bufferedBytes = 0
    /// Body bytes received so far.
    public private(set) var receivedBytes = 0
    /// The length the request announced (`Content-Length`); nil for a chunked body.
    public let expectedLength: Int?
    private var finished = false
    private var failure: Interrupted? = nil
    private var waiter: CheckedContinuation<[UInt8]?, any Error>? = nil
    /// Called (on the loop) when the reader takes the buffer below `highWater` again.
    public var onSpace: (() -> Void)? = nil
    /// The loop the stream belongs to (the worker's executor, and a test of its thread): a reader
    /// elsewhere (a detached task) is moved there to read. Nil outside a worker.
    public var loop: (executor: any TaskExecutor, isCurrent: @Sendable () -> Bool)? = nil

    public init(expectedLength: Int?) { self.expectedLength = expectedLength }

    /// More unread bytes than `highWater`: stop reading the connection.
    public var isFull: Bool { bufferedBytes >= Self.highWater }
    public var isFinished: Bool { finished || failure != nil }

    // MARK: The engine's side

    func push(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, !isFinished else { return }
        receivedBytes += bytes.count
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: bytes)
        } else {
            chunks.append(bytes)
            bufferedBytes += bytes.count
        }
    }

    func finish() {
        guard !isFinished else { return }
        finished = true
        waiter?.resume(returning: nil)
        waiter = nil
    }

    func fail(_ reason: String) {
        guard !isFinished else { return }
        failure = Interrupted(reason)
        chunks = []
        bufferedBytes = 0
        waiter?.resume(throwing: Interrupted(reason))
        waiter = nil
    }

    // MARK: The handler's side

    /// The next piece, nil at the end of the body.
    public func next() async throws -> [UInt8]? {
        if let loop, !loop.isCurrent() {
            return try await withTaskExecutorPreference(loop.executor) { try await self.next() }
        }
        if first < chunks.count {
            let piece = chunks[first]
            chunks[first] = []  // its bytes go with the reader, not stay here
            first += 1
            if first == chunks.count {
                chunks.removeAll(keepingCapacity: true)
                first = 0
            } else if first >= 64 && first * 2 >= chunks.count {
                chunks.removeFirst(first)
                first = 0
            }
            let wasFull = isFull
            bufferedBytes -= piece.count
            if wasFull && !isFull { onSpace?() }
            return piece
        }
        if let failure { throw failure }
        if finished { return nil }
        return try await withCheckedThrowingContinuation { waiter = $0 }
    }

    /// The whole body, up to `limit` bytes (more throws `Interrupted`).
    public func collect(upTo limit: Int) async throws -> [UInt8] {
        var all: [UInt8] = []
        while let piece = try await next() {
            guard all.count + piece.count <= limit else { throw Interrupted("body over \(limit) bytes") }
            all += piece
        }
        return all
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: RequestBodyStream
        public mutating func next() async throws -> [UInt8]? { try await stream.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}
