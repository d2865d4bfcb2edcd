/// What a worker's handler may know of its worker's life: whether the daemon is stopping, so that a
/// health check can tell a load balancer to stop sending before the listeners close (`/healthz`
/// answers 503 `draining`). Set by the worker's loop (`shutdownDelay`'s `stopping`, or a stop's
/// drain); read by the handler on the same thread.
public final class WorkerLifecycle: @unchecked Sendable {
    public internal(set) var isStopping = false

    public init() {}
}
