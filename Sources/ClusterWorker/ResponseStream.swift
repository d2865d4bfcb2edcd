import ClusterHTTP

/// The body of a streamed answer (`HTTPResponse.stream`) on its way to one connection. Its
/// closure runs as a task on the worker's loop and queues pieces here (`write`); the worker moves
/// them into the connection's output each time it runs deferred work (`HTTPWorker.pumpStreams`)
/// and lets the closure go on once the connection has taken most of what it was given.
///
/// Confined to the worker's thread: the closure's task prefers the worker's executor, so `write`
/// (a non-isolated async function) runs there too; the worker touches it only from its loop.
final class ResponseStream: ResponseBodySink, @unchecked Sendable {
    /// Queued and unsent bytes past which `write` waits.
    static let highWater = 256 * 1024

    let fd: Int32
    let generation: UInt32
    let executor: LoopExecutor
    var chunks: [[UInt8]] = []
    var queuedBytes = 0
    /// The closure waits for the connection to take what it was given.
    var waiter: CheckedContinuation<Void, any Error>? = nil
    /// The connection is gone: `write` throws.
    var gone = false
    /// Set when the closure returned (false) or threw (true).
    var failed: Bool? = nil

    init(fd: Int32, generation: UInt32, executor: LoopExecutor) {
        self.fd = fd
        self.generation = generation
        self.executor = executor
    }

    func write(_ bytes: [UInt8]) async throws {
        guard executor.isOnLoop else {
            // From a task that does not run on the worker (a detached one): go there first; the
            // stream is the loop's alone.
            return try await withTaskExecutorPreference(executor) { try await self.write(bytes) }
        }
        if gone { throw ResponseBodyWriter.ClientGone() }
        chunks.append(bytes)
        queuedBytes += bytes.count
        executor.markPending()
        if queuedBytes >= Self.highWater {
            try await withCheckedThrowingContinuation { waiter = $0 }
        }
    }

    /// The connection closed: the closure's next (or pending) `write` throws.
    func abandon() {
        gone = true
        chunks = []
        waiter?.resume(throwing: ResponseBodyWriter.ClientGone())
        waiter = nil
    }

    /// Lets a waiting closure go on.
    func release() {
        waiter?.resume()
        waiter = nil
    }
}
