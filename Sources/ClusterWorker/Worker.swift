import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterTLS
import Logging

/// The kinds of the worker's epoll registrations (`Epoll.Token.kind`).
enum Token {
    static let listener: UInt8 = 1
    static let connection: UInt8 = 2
    static let channel: UInt8 = 3
    static let signal: UInt8 = 4
    static let wakeup: UInt8 = 5

    @inline(__always) static func make(_ kind: UInt8, _ generation: UInt32, _ fd: Int32) -> UInt64 {
        Epoll.Token(kind: kind, generation: generation, fd: fd).data
    }
}

/// One worker process: a single-threaded epoll loop over the SO_REUSEPORT listeners it inherited
/// from the master, the connections it accepts, its channel to the master and a signalfd.
///
/// The loop (`run`, `turn`) waits for events and hands each to its owner: a listener's to
/// `acceptConnections` (Accepting.swift), a connection's to that connection's own step
/// (`Connection.readable` / `writable`, run in place in the `ConnectionTable`), whose returned
/// `ConnectionAction` the loop then performs (`perform`); the channel's and the signalfd's to
/// Handoff.swift and Draining.swift; then it expires deadlines (`expireTimers`, Draining.swift).
///
/// Generic over its `Kernel`: `LinuxKernel` in the daemon, a fake with a manual clock in the tests
/// (Tests/ClusterWorkerTests), with no existential on the path of a request. The state the
/// connection steps share (`WorkerIO`) is deliberately not generic: this class is compiled once for
/// any handler, and there a generic struct would cost a metadata lookup at every use.
public final class HTTPWorker<Handler: HTTPHandler, K: Kernel> {
    enum RunState { case running, draining, stopping }

    /// How a draining worker treats its keep-alive connections.
    public enum DrainMode: Sendable {
        /// Close them (the daemon stops).
        case close
        /// Hand them to a live worker through the master (reload, scale-down).
        case handOff
    }

    let kernel: K
    let handler: Handler
    let settings: WorkerSettings
    let listeners: [Int32]
    /// The listeners whose connections begin with a PROXY header (`proxyProtocol`), and the
    /// addresses they are bound to (an adopted connection is matched to its listener by its own).
    let proxyListeners: [Int32]
    let proxyListenerAddresses: [SocketEndpoint]
    /// ...and the paths of those that are Unix sockets.
    let proxyListenerPaths: [String]
    /// Listeners every worker shares (Unix sockets: no SO_REUSEPORT), registered EPOLLEXCLUSIVE so
    /// that a connection wakes one worker, not all.
    let sharedListeners: [Int32]
    /// The TLS listeners and their certificates (`listen[].tls`), loaded before the worker changed
    /// user; empty when every listener is plain HTTP.
    let tlsListeners: [(fd: Int32, server: TLSServer)]
    /// Shared with the handler (`/healthz` reads it).
    public let lifecycle: WorkerLifecycle
    let channel: Int32?
    /// The master that started this worker (its parent when it has a channel), or nil when running
    /// alone. While it lives, the worker's stop is the master's to decide (`signalReadable`).
    let masterPID: ProcessID?
    // The loop's state below is only ever touched by the worker's own thread (the loop, and the
    // deferred answers' tasks, which run on it between turns), in short accesses that never
    // overlap: like IOBuffer's indices it opts out of run-time exclusivity checks
    // (`@exclusivity(unchecked)`), which otherwise cost ~1,000 instructions per request, a fifth of
    // the keep-alive path (Docs/benchmarks.md).

    /// The shared buffers, the HTTP engine, the clock and counters the connection steps use.
    @exclusivity(unchecked) var io: WorkerIO
    @exclusivity(unchecked) var table: ConnectionTable

    @exclusivity(unchecked) var state = RunState.running
    var drainMode = DrainMode.close
    @exclusivity(unchecked) var drainDeadline: Int64? = nil
    var acceptingRegistered = false
    /// The master shut the listeners down (a stop): accept4 says EINVAL; never register them again.
    var listenersShut = false
    @exclusivity(unchecked) var acceptResumeAt: Int64? = nil
    /// While retiring, accept until this time (a handshake that raced the BPF steering completes).
    @exclusivity(unchecked) var acceptUntil: Int64? = nil
    /// Connections waiting for room on the channel to be handed off.
    @exclusivity(unchecked) var handoffQueue: [Int32] = []
    var channelBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ConnectionHandoff.maxMessageBytes, alignment: 8)
    var signals: SignalFd?
    @exclusivity(unchecked) var nextSweep: Int64 = 0
    /// Gives back clean file pages and free heap pages after `releaseMemoryAfterIdle` without an
    /// event (`MemoryRelease`).
    @exclusivity(unchecked) var idleRelease: MemoryRelease.IdleSchedule
    /// How the optimistic read at accept has been doing, -8...8: each read that found the request
    /// already there counts up, each that found nothing counts down. Below zero the read is skipped
    /// (epoll says when the request arrives), except every 16th connection, which probes.
    @exclusivity(unchecked) var optimisticRead = AdaptiveChoice(gain: 1, loss: 1, bound: 8, probeEvery: 16)
    /// Polls briefly before sleeping while that pays (`BusyPollPolicy`).
    @exclusivity(unchecked) var busyPoll: BusyPollPolicy
    @exclusivity(unchecked) var lastTurnBusy = false
    /// Runs the tasks of deferred answers (`respondLater`) on this thread, between turns.
    let executor: LoopExecutor
    /// Wakes the loop when another thread queues a job on `executor`.
    let wakeup: EventFd?
    /// Inside `runDeferred` (a deferred answer that defers the next pipelined one waits for the
    /// next round instead of nesting).
    @exclusivity(unchecked) var runningDeferred = false
    /// Streamed answers being sent, by connection.
    @exclusivity(unchecked) var streams: [Int32: ResponseStream] = [:]
    /// Connections not read while their handler catches up with a streamed body (fd: generation).
    @exclusivity(unchecked) var bodiesWaiting: [Int32: UInt32] = [:]

    var stats: StatsSlot { io.stats }
    var logger: Logger { io.logger }

    /// - Parameters:
    ///   - listeners: listening sockets (non-blocking), borrowed: the caller owns them and keeps
    ///     them open while the worker runs (`Cluster.runWorker`); the worker never closes them.
    ///   - channel: socketpair end to the master, or nil when running alone; borrowed likewise.
    ///   - lifecycle: what the handler may read of this worker's life (give it the same object).
    ///   - tls: for each listener, in the same order, its TLS (nil: plain HTTP); may be shorter.
    public init(handler: Handler, settings: WorkerSettings, listeners: [Int32], channel: Int32?, stats: StatsSlot, logger: Logger, kernel: K,
                lifecycle: WorkerLifecycle = WorkerLifecycle(), tls: [TLSServer?] = []) {
        self.kernel = kernel
        self.lifecycle = lifecycle
        self.handler = handler
        self.settings = settings
        self.listeners = listeners
        proxyListeners = listeners.indices.filter { $0 < settings.proxyProtocol.count && settings.proxyProtocol[$0] }.map { listeners[$0] }
        proxyListenerAddresses = proxyListeners.compactMap { kernel.localEndpoint($0) }
        proxyListenerPaths = proxyListeners.compactMap { kernel.localEndpoint($0) == nil ? kernel.localPath($0) : nil }
        sharedListeners = listeners.filter { kernel.localEndpoint($0) == nil }
        tlsListeners = listeners.indices.compactMap { i in i < tls.count ? tls[i].map { (listeners[i], $0) } : nil }
        if !tlsListeners.isEmpty { stats[.tlsRecordLayer] = tlsListeners.contains { $0.server.kernelTLS } ? 2 : 1 }
        self.channel = channel
        masterPID = channel == nil ? nil : Sys.parentPID
        self.idleRelease = MemoryRelease.IdleSchedule(after: settings.releaseMemoryAfterIdle)
        self.busyPoll = BusyPollPolicy(windowMicroseconds: settings.busyPollMicroseconds)
        io = WorkerIO(settings: settings, stats: stats, logger: logger)
        table = ConnectionTable(capacity: 1024)
        let wakeup: EventFd?
        do { wakeup = try kernel.makeWakeup() } catch {
            // Deferred answers still run, at the latest a loop timeout (500 ms) after they wake.
            logger.error("cannot make the loop's wake-up eventfd (\(error)); deferred answers may wait for the next turn")
            wakeup = nil
        }
        self.wakeup = wakeup
        executor = LoopExecutor(wake: wakeup)
    }

    deinit {
        for fd in 0..<table.endIndex where table[fd].isOpen { _ = table[fd].close(&io, kernel) }
        channelBuffer.deallocate()
    }

    /// The signals a worker reads from its signalfd. Block them (`Signals.block`) before starting
    /// any thread in the worker process, or that thread may take one and the default action
    /// (termination) kills the worker instead of draining it.
    public static var signals: [Int32] {
        [SignalNumber.terminate, SignalNumber.interrupt, SignalNumber.quit, SignalNumber.user1, SignalNumber.hangup]
    }

    /// Runs until drained or stopped. Returns the process exit code.
    public func run() throws(SystemError) -> Int32 {
        let signals = try SignalFd(signals: Self.signals)
        self.signals = signals
        try kernel.epollAdd(signals.fd, events: Epoll.readable, data: Token.make(Token.signal, 0, signals.fd))
        try start()
        // What start-up mapped goes now, not only after the first quiet spell: a worker that starts
        // under load may never see one. The first quiet turn releases again (lazily bound symbols,
        // the loop's first turns).
        do { try idleRelease.releaseNow() } catch {
            logger.warning("cannot release idle memory (\(error)); not trying again")
        }
        while try turn() {}
        io.flushCounters()
        return 0
    }

    /// Registers the channel and the listeners and tells the master this worker is ready.
    func start() throws(SystemError) {
        if let channel {
            try kernel.epollAdd(channel, events: Epoll.readable, data: Token.make(Token.channel, 0, channel))
        }
        if let wakeup {
            try kernel.epollAdd(wakeup.fd, events: Epoll.readable, data: Token.make(Token.wakeup, 0, wakeup.fd))
        }
        io.tick(kernel)
        stats[.pid] = UInt64(Sys.pid)
        stats[.startedAtMilliseconds] = UInt64(io.now)
        try registerListeners()
        stats[.state] = WorkerState.ready.rawValue
        send(.ready)
    }

    /// One turn of the loop (nginx's `ngx_process_events_and_timers`): wait for events and handle
    /// them, then the deadlines. False when the worker is done: stopped, or drained.
    func turn() throws(SystemError) -> Bool {
        if state == .stopping { return false }
        if state == .draining && table.openCount == 0 {
            // A connection the master passed on just before may still wait in the channel.
            channelReadable()
            if table.openCount == 0 { return false }
        }
        var events = 0
        if lastTurnBusy && busyPoll.shouldPoll() {
            events = try pollBriefly()
        }
        if events == 0 {
            events = try waitForEvents(timeoutMilliseconds: executor.hasWork ? 0 : state == .running ? 500 : 100)
        }
        if executor.hasWork { runDeferred() }
        lastTurnBusy = events > 0
        if events == 0 { io.tick(kernel) }  // (else read as the events came)
        do { try idleRelease.turn(now: io.now, busy: events > 0) } catch {
            logger.warning("cannot release idle memory (\(error)); not trying again")
        }
        expireTimers()
        io.flushCounters()
        return true
    }

    /// Polls epoll without sleeping for up to the busy-poll window, yielding the CPU between polls
    /// to anything else runnable on it. Returns the events handled (0: the window ran out).
    func pollBriefly() throws(SystemError) -> Int {
        // Under load the next event is usually there already: no clock read for that.
        var events = try waitForEvents(timeoutMilliseconds: 0)
        if events == 0 {
            let until = kernel.monotonicNanoseconds() &+ busyPoll.windowNanoseconds
            repeat {
                // Where the CPU is shared (more runnable threads than CPUs: the client's, other
                // workers'), they run first; the poll goes on after them.
                kernel.yieldCPU()
                events = try waitForEvents(timeoutMilliseconds: 0)
            } while events == 0 && kernel.monotonicNanoseconds() < until
        }
        busyPoll.record(foundEvent: events > 0)
        stats.add(events > 0 ? .busyPollHits : .busyPollMisses, 1)
        return events
    }

    // MARK: - Events

    /// epoll_wait, handing each event to `dispatch`. The clock is read when events come, before the
    /// first is handled (as nginx updates its time right after epoll_wait): the worker may have
    /// slept up to the timeout, and a deadline set from the time before the sleep (`drainIdleGrace`
    /// from a `drain` message, a header timeout from a first byte) would come that much early.
    @inline(__always)
    func waitForEvents(timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        var clockRead = false
        return try kernel.epollWait(timeoutMilliseconds: timeoutMilliseconds) { events, data in
            if !clockRead {
                self.io.tick(self.kernel)
                clockRead = true
            }
            self.dispatch(events, data)
        }
    }

    /// Hands one epoll event to its owner.
    @inline(__always)
    func dispatch(_ events: UInt32, _ data: UInt64) {
        let token = Epoll.Token(data: data)
        let fd = token.fd
        switch token.kind {
        case Token.connection:
            // A stale event for a closed (maybe reused) fd is dropped.
            guard table.isCurrent(fd, generation: token.generation) else { return }
            if events & Epoll.writable != 0 {
                perform(table[fd].writable(&io, kernel, handler), on: fd)
                // A streamed body that waited for this connection to drain may go on.
                if !streams.isEmpty && streams[fd] != nil { executor.markPending() }
                guard table.isOpen(fd) else { return }
            }
            if events & (Epoll.readable | Epoll.hangup | Epoll.error) != 0 {
                perform(table[fd].readable(&io, kernel, handler), on: fd)
            }
        case Token.listener:
            // One connection per readiness report, as nginx does without multi_accept: epoll is
            // level-triggered, so more queued ones are reported on the next turn, and the accept4
            // that would find the queue empty (measured: 0.7 per connection, ~2 µs of CPU per
            // connection with Connection: close) is never made.
            acceptConnections(fd, limit: 1)
        case Token.channel:
            channelReadable()
        case Token.signal:
            signalReadable()
        case Token.wakeup:
            wakeup?.drain()
        default:
            break
        }
    }

    /// Does what a connection step asked for.
    @inline(__always)
    func perform(_ action: ConnectionAction, on fd: Int32) {
        switch action {
        case .none, .nothingRead: break
        case .idle: if state == .draining && drainMode == .handOff { handOffIfIdle(fd) }
        case .closeGracefully: closeIdleGracefully(fd)
        case .closed:
            connectionClosed()
            // A streamed answer's task may wait on this connection: let it learn it is gone.
            if !streams.isEmpty && streams[fd] != nil { executor.markPending() }
        case .suspended: startDeferred(fd)
        case .bodyFull: pauseBody(fd)
        }
    }

    /// A handler deferred its answer on `fd`: runs its work as a task on this loop, and stops
    /// reading the connection until the answer is written (`runDeferred`).
    func startDeferred(_ fd: Int32) {
        guard table.isOpen(fd) else { return }
        let generation = table[fd].generation
        if let work = table[fd].http.deferredWork {
            table[fd].http.deferredWork = nil
            // A body streamed to the handler: when it takes enough, reading resumes (`runDeferred`).
            if let body = table[fd].http.requestBodyStream {
                body.onSpace = { [executor] in executor.markPending() }
                body.loop = (executor, { [executor] in executor.isOnLoop })
            }
            executor.start(work, fd: fd, generation: generation)
            // Its first steps run now: an answer that needs no waiting is written in this same
            // turn, without touching epoll. (Not from inside that: pipelined deferred requests
            // would nest.)
            if !runningDeferred { runDeferred() }
        }
        // (Also when a streamed body has just ended and its answer is still to come.)
        guard table.isCurrent(fd, generation: generation), table[fd].http.phase == .awaiting else { return }
        // It waits: read nothing more from it until it is answered (a hang-up is still reported).
        if table[fd].registered && !table[fd].writeBlocked && !table[fd].readingPaused {
            try? kernel.epollModify(fd, events: 0, data: Token.make(Token.connection, generation, fd))
            table[fd].readingPaused = true
        }
    }

    /// Runs the jobs of deferred answers that are due, and writes the answers that are done to their
    /// connections (one whose client went away meanwhile is dropped).
    func runDeferred() {
        runningDeferred = true
        defer { runningDeferred = false }
        executor.runJobs { done in
            guard table.isCurrent(done.fd, generation: done.generation), table[done.fd].http.awaitsAnswer else { return }
            let fd = done.fd
            if let body = done.response.stream {
                startStream(fd, done.response, body)
            } else {
                perform(table[fd].resume(.answer(done.response), &io, kernel, handler), on: fd)
                resumeReading(fd)
            }
        }
        if !streams.isEmpty { pumpStreams() }
        if !bodiesWaiting.isEmpty { resumeBodies() }
    }

    /// A body streamed to its handler holds more unread bytes than `RequestBodyStream.highWater`:
    /// stop reading the connection (no timeout meanwhile: the server is the slow one) until the
    /// handler takes some (`resumeBodies`).
    func pauseBody(_ fd: Int32) {
        bodiesWaiting[fd] = table[fd].generation
        table[fd].deadline = .max
        if table[fd].registered && !table[fd].writeBlocked && !table[fd].readingPaused {
            try? kernel.epollModify(fd, events: 0, data: Token.make(Token.connection, table[fd].generation, fd))
            table[fd].readingPaused = true
        }
    }

    /// Reads the bodies whose handlers have made room again: what is buffered first, then the socket.
    func resumeBodies() {
        for (fd, generation) in bodiesWaiting {
            guard table.isCurrent(fd, generation: generation), table[fd].http.requestBodyStream != nil else {
                bodiesWaiting[fd] = nil
                continue
            }
            guard !table[fd].http.requestBodyIsFull else { continue }
            bodiesWaiting[fd] = nil
            perform(table[fd].serve(&io, kernel, handler, fromScratch: false), on: fd)
            guard table.isCurrent(fd, generation: generation), table[fd].readingPaused, !table[fd].writeBlocked,
                  table[fd].http.phase == .body, !table[fd].http.requestBodyIsFull else { continue }
            try? kernel.epollModify(fd, events: Epoll.readable, data: Token.make(Token.connection, generation, fd))
            table[fd].readingPaused = false
        }
    }

    /// After a deferred answer is written: reading the connection again (its next requests).
    func resumeReading(_ fd: Int32) {
        if table.isOpen(fd) && table[fd].readingPaused && table[fd].http.phase != .awaiting && !table[fd].writeBlocked {
            try? kernel.epollModify(fd, events: Epoll.readable, data: Token.make(Token.connection, table[fd].generation, fd))
            table[fd].readingPaused = false
        }
    }

    /// A deferred answer with a streamed body: writes its head and runs its body's closure.
    func startStream(_ fd: Int32, _ response: HTTPResponse, _ body: @escaping ResponseBodyStream) {
        let context = table[fd].responseContext(io)
        let bodyFollows = table[fd].http.beginStream(with: response, input: table[fd].input, output: io.scratchOut, context: context)
        guard table[fd].flush(&io, kernel) else { return connectionClosed() }
        guard bodyFollows else {
            perform(table[fd].resume(.streamEnd(failed: false), &io, kernel, handler), on: fd)
            return resumeReading(fd)
        }
        let stream = ResponseStream(fd: fd, generation: table[fd].generation, executor: executor)
        streams[fd]?.abandon()  // a closed connection's, not pumped yet since
        streams[fd] = stream
        executor.startStream(stream, body)
    }

    /// Moves what the streamed bodies wrote into their connections, ends the finished ones, and
    /// lets a closure that waited go on once its connection has taken most of what it was given.
    func pumpStreams() {
        for (fd, stream) in streams {
            guard table.isCurrent(fd, generation: stream.generation), table[fd].http.phase == .awaiting else {
                stream.abandon()
                streams[fd] = nil
                continue
            }
            // Pieces move into the connection only while it takes them: while it is blocked they
            // stay queued, so the closure's `write` waits (`highWater`) instead of growing the output.
            if !stream.chunks.isEmpty && !table[fd].writeBlocked {
                for chunk in stream.chunks { table[fd].http.writeChunk(chunk, output: io.scratchOut) }
                stream.chunks = []
                stream.queuedBytes = 0
                guard table[fd].flush(&io, kernel) else {
                    stream.abandon()
                    streams[fd] = nil
                    connectionClosed()
                    continue
                }
            }
            if let failed = stream.failed, stream.chunks.isEmpty {
                streams[fd] = nil
                perform(table[fd].resume(.streamEnd(failed: failed), &io, kernel, handler), on: fd)
                resumeReading(fd)
            } else if stream.failed == nil && !table[fd].writeBlocked && table[fd].output.readableBytes < ResponseStream.highWater {
                stream.release()
            }
        }
    }

    /// Book-keeping after a connection closed: its slot is free, and accepting may resume.
    func connectionClosed() {
        table.closed()
        // Published at once (one store to our own cache line), not at the end of the loop's turn:
        // if this process dies, the master counts exactly what it took down (`openConnections`).
        stats[.openConnections] = UInt64(table.openCount)
        if !acceptingRegistered { resumeAcceptingIfPossible() }
    }
}

extension HTTPWorker where K == LinuxKernel {
    /// A worker on the real kernel.
    public convenience init(handler: Handler, settings: WorkerSettings, listeners: [Int32], channel: Int32?, stats: StatsSlot, logger: Logger,
                            lifecycle: WorkerLifecycle = WorkerLifecycle(), tls: [TLSServer?] = []) throws(SystemError) {
        self.init(handler: handler, settings: settings, listeners: listeners, channel: channel, stats: stats, logger: logger,
                  kernel: try LinuxKernel(epollCapacity: 1024), lifecycle: lifecycle, tls: tls)
    }
}
