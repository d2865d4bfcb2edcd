import ClusterHTTP
import ClusterSystem
import ClusterTLS

/// One accepted client connection as the worker keeps it. Buffers are allocated only while they
/// hold bytes: an idle keep-alive connection owns no buffer memory at all.
///
/// Its steps (`readable`, `writable`, `timedOut`, `close`, ... in Connection+Reading.swift and
/// Connection+Writing.swift) run in place in the `ConnectionTable` and return a `ConnectionAction`.
struct Connection {
    /// The socket, or -1 for a free table entry.
    var fd: Int32 = -1
    /// Distinguishes this connection from an earlier one on the same fd number (stale epoll events).
    var generation: UInt32 = 0
    var http = HTTPConnectionState()
    /// Bytes read but not yet consumed (partial request), else unallocated.
    let input: IOBuffer
    /// Bytes the socket did not take yet, else unallocated.
    let output: IOBuffer
    /// CLOCK_MONOTONIC ms at which the current phase times out.
    var deadline: Int64 = 0
    /// TCP_NODELAY is set (once the connection is kept alive).
    var noDelay = false
    /// Quick ACK was turned off at accept, so the request's ACK rides on the answer; turned back
    /// on if the first request arrives in pieces (a client waiting for that ACK is not kept waiting).
    var ackHeld = false
    /// Added to epoll (after the optimistic first read).
    var registered = false
    /// Waiting for EPOLLOUT.
    var writeBlocked = false
    /// Registered for nothing but hang-ups (not EPOLLIN) while a deferred answer is worked out.
    var readingPaused = false
    /// Write side shut, discarding input until EOF or the linger deadline.
    var lingering = false
    /// Close as soon as the output is flushed.
    var closeWhenFlushed = false
    /// Adopted over the connection cap: answer what arrives with `Connection: close`, close when idle.
    var closeAfterResponse = false

    /// The peer's address, kept only when there is an access log: the client's from the PROXY
    /// header on a `proxyProtocol` listener.
    var peer: String? = nil
    /// On a `proxyProtocol` listener until its PROXY header has been read: nothing else is read,
    /// answered or handed off before it (`readProxyHeader`).
    var awaitingProxyHeader = false
    /// Its PROXY header was read (a hand-off carries it along, `ConnectionHandoff.proxiedPrefix`).
    var proxied = false
    /// The client the PROXY header named; nil for a LOCAL or address-less header (the balancer's
    /// own connection: the socket's peer is the client).
    var proxiedClient: ProxyEndpoint? = nil
    /// The nearest hop (the PROXY header's client, else the socket's peer) is in `trustedProxies`:
    /// `X-Forwarded-For` is believed.
    var hopTrusted = false
    /// CLOCK_MONOTONIC ns at which the current request's first byte was read.
    var requestStart: UInt64 = 0
    /// On a TLS listener: OpenSSL's connection on this socket (a pointer; freed by `close`). Nil
    /// for plain HTTP, whose steps only test it.
    var tls: TLSConnection? = nil
    /// The TLS handshake is under way (within the header timeout, like a request head).
    var tlsHandshaking = false
    /// The handshake waits for EPOLLOUT (registered writable, not readable).
    var tlsWantsWrite = false

    var isOpen: Bool { fd >= 0 }

    /// An entry of the connection table that was never opened: it has no buffers of its own yet
    /// (all such entries share two that are never written).
    init() {
        input = Self.notOpened
        output = Self.notOpened
    }

    /// Makes this table entry a new connection on `fd`, in place. The entry's buffers (empty since
    /// its last connection closed) are kept, so that accepting a connection on a descriptor number
    /// used before allocates nothing; an entry never opened gets its own.
    mutating func reopen(fd: Int32, generation: UInt32) {
        let input = input === Self.notOpened ? IOBuffer() : input
        let output = output === Self.notOpened ? IOBuffer() : output
        assert(input.isEmpty && output.isEmpty, "a closed entry keeps no bytes")
        self = Connection(input: input, output: output)
        self.fd = fd
        self.generation = generation
    }

    private init(input: IOBuffer, output: IOBuffer) {
        self.input = input
        self.output = output
    }

    /// Never written (an entry is opened through `reopen` before any I/O), read only by the
    /// worker's one thread.
    nonisolated(unsafe) private static let notOpened = IOBuffer()

    /// What epoll should report besides writability: nothing while a deferred answer is worked out
    /// (only a hang-up or an error), else readability.
    var readInterest: UInt32 { http.phase == .awaiting ? 0 : Epoll.readable }

    /// Bytes or a file body still to send.
    var hasPendingOutput: Bool { output.readableBytes > 0 || http.pendingFile != nil }
}

/// How a connection waiting for a deferred answer goes on (`Connection.serve(resuming:)`).
enum Resumption {
    /// The answer, whole.
    case answer(HTTPResponse)
    /// A streamed answer's body is all written (or its closure threw: `failed`).
    case streamEnd(failed: Bool)
}

/// What the loop must do after a connection step.
enum ConnectionAction: Equatable {
    /// Nothing: the connection waits for its next event.
    case none
    /// Nothing was there to read (`readable` only; the optimistic read at accept learns from it).
    case nothingRead
    /// Waiting for its next request: a worker handing its connections off may take it now.
    case idle
    /// An idle connection's time is up and it must not be lost to a race with a request in flight:
    /// close it gracefully (`HTTPWorker.closeIdleGracefully`).
    case closeGracefully
    /// The step closed the socket: the slot is free (`HTTPWorker.connectionClosed`).
    case closed
    /// A handler deferred its answer: the worker runs `http.deferredWork` on its executor
    /// (`HTTPWorker.startDeferred`) and reads nothing more from the connection until it is done.
    case suspended
    /// A body streamed to the handler has more unread than it may: stop reading the connection
    /// (`HTTPWorker.pauseBody`).
    case bodyFull
}
