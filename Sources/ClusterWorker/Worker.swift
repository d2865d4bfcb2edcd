#if canImport(Glibc)
import Glibc
#endif
import ClusterControl
import ClusterHTTP
import ClusterSystem
import Logging

/// epoll user data: kind in the top byte, a 24-bit registration generation, the fd in the low 32 bits.
enum Token {
    static let listener: UInt64 = 1
    static let connection: UInt64 = 2
    static let channel: UInt64 = 3
    static let signal: UInt64 = 4

    @inline(__always) static func make(_ kind: UInt64, _ generation: UInt32, _ fd: Int32) -> UInt64 {
        kind << 56 | UInt64(generation & 0xFF_FFFF) << 32 | UInt64(UInt32(bitPattern: fd))
    }
}


/// One worker process: a single-threaded epoll loop over the SO_REUSEPORT listeners it inherited
/// from the master, the connections it accepts, its channel to the master and a signalfd.
public final class HTTPWorker<Handler: HTTPHandler> {
    enum RunState { case running, draining, stopping }

    /// How a draining worker treats its keep-alive connections.
    public enum DrainMode: Sendable {
        /// Close them (the daemon stops).
        case close
        /// Hand them to a live worker through the master (reload, scale-down).
        case handOff
    }

    let epoll: Epoll
    let handler: Handler
    let parser: HTTPParser
    let settings: WorkerSettings
    let listeners: [Int32]
    let channel: Int32?
    let stats: StatsSlot
    var logger: Logger

    var connections: [Connection] = []
    var openCount = 0
    var nextGeneration: UInt32 = 1
    var scratchIn = ByteBuffer(capacity: HTTPLimits.scratchReadBytes)
    var scratchOut = ByteBuffer(capacity: 64 * 1024)
    var dateCache = DateLineCache()
    var dateLine: UnsafeMutableRawBufferPointer
    var counters = HTTPCounters()
    var now: Int64 = 0
    var state = RunState.running
    var acceptingRegistered = false
    /// The master shut the listeners down (a stop): accept4 says EINVAL; never register them again.
    var listenersShut = false
    var acceptResumeAt: Int64? = nil
    var signals: SignalFd?
    var drainDeadline: Int64? = nil
    var drainMode = DrainMode.close
    /// While retiring, accept until this time (a handshake that raced the BPF steering completes).
    var acceptUntil: Int64? = nil
    /// Connections waiting for room on the channel to be handed off.
    var handoffQueue: [Int32] = []
    var channelBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ConnectionHandoff.maxMessageBytes, alignment: 8)
    let accessLog: AccessLog?
    var wallSecond: Int64 = 0
    var latencyCounts = [UInt64](repeating: 0, count: 11)
    var latencySum: UInt64 = 0
    /// Gives back clean file pages and free heap pages after `releaseMemoryAfterIdle` without an
    /// event (`MemoryRelease`).
    var idleRelease: MemoryRelease.IdleSchedule
    /// How the optimistic read at accept has been doing, -8...8: each read that found the request
    /// already there counts up, each that found nothing counts down. Below zero the read is skipped
    /// (epoll says when the request arrives), except every 16th connection, which probes.
    var optimisticRead = AdaptiveChoice(gain: 1, loss: 1, bound: 8, probeEvery: 16)
    /// Polls briefly before sleeping while that pays (`BusyPollPolicy`).
    var busyPoll: BusyPollPolicy
    var lastTurnBusy = false

    /// - Parameters:
    ///   - listeners: listening sockets (non-blocking); the worker never closes them.
    ///   - channel: socketpair end to the master, or nil when running alone.
    public init(handler: Handler, settings: WorkerSettings, listeners: [Int32], channel: Int32?, stats: StatsSlot, logger: Logger) throws(SystemError) {
        self.handler = handler
        self.settings = settings
        self.idleRelease = MemoryRelease.IdleSchedule(after: settings.releaseMemoryAfterIdle)
        self.busyPoll = BusyPollPolicy(windowMicroseconds: settings.busyPollMicroseconds)
        self.parser = HTTPParser(limits: settings.limits)
        self.listeners = listeners
        self.channel = channel
        self.stats = stats
        self.logger = logger
        self.epoll = try Epoll(capacity: 1024)
        dateLine = .allocate(byteCount: 64, alignment: 8)
        connections.reserveCapacity(1024)
        accessLog = settings.accessLog.map { AccessLog(path: $0.path, format: $0.format, logger: logger, stats: stats) }
    }

    deinit {
        for i in connections.indices where connections[i].isOpen { closeNow(Int32(i)) }
        scratchIn.release()
        scratchOut.release()
        parser.release()
        dateLine.deallocate()
        channelBuffer.deallocate()
    }

    /// Runs until drained or stopped. Returns the process exit code.
    public func run() throws(SystemError) -> Int32 {
        signals = try SignalFd(signals: [SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP])
        try epoll.add(signals!.fd, events: Epoll.readable, data: Token.make(Token.signal, 0, signals!.fd))
        if let channel {
            try epoll.add(channel, events: Epoll.readable, data: Token.make(Token.channel, 0, channel))
        }
        tick()
        stats[.pid] = UInt64(Sys.pid)
        stats[.startedAtMilliseconds] = UInt64(now)
        try registerListeners()
        stats[.state] = WorkerState.ready.rawValue
        send(.ready)
        // What start-up mapped goes now, not only after the first quiet spell: a worker that starts
        // under load may never see one. The first quiet turn releases again (lazily bound symbols,
        // the loop's first turns).
        do { try idleRelease.releaseNow() } catch {
            logger.warning("cannot release idle memory (\(error)); not trying again")
        }

        while true {
            if state == .stopping { break }
            if state == .draining && openCount == 0 {
                // A connection the master passed on just before may still wait in the channel.
                channelReadable()
                if openCount == 0 { break }
            }
            var events = 0
            if lastTurnBusy && busyPoll.shouldPoll() {
                events = try pollBriefly()
            }
            if events == 0 {
                events = try epoll.wait(timeoutMilliseconds: state == .running ? 500 : 100) { events, data in
                    self.dispatch(events, data)
                }
            }
            lastTurnBusy = events > 0
            tick()
            do { try idleRelease.turn(now: now, busy: events > 0) } catch {
                logger.warning("cannot release idle memory (\(error)); not trying again")
            }
            sweep()
            flushCounters()
        }
        flushCounters()
        return 0
    }

    // MARK: - Clock and stats

    @inline(__always)
    func tick() {
        now = Clock.monotonicMilliseconds()
        let wall = Clock.wallSeconds()
        wallSecond = wall
        if wall != dateCache.second {
            dateCache.update(epochSeconds: wall)
            dateCache.line.withUnsafeBytes { dateLine.copyMemory(from: $0) }
        }
        stats[.heartbeatMilliseconds] = UInt64(now)
    }

    var context: ResponseContext { context(socket: -1) }

    /// What the HTTP engine needs to answer on the connection `socket`.
    @inline(__always)
    func context(socket: Int32) -> ResponseContext {
        ResponseContext(
            dateLine: UnsafeRawBufferPointer(rebasing: dateLine[0..<dateCache.line.count]),
            closeConnections: state == .stopping || (state == .draining && drainMode == .close), socket: socket)
    }

    /// `context` for one connection: one adopted over the connection cap is answered with
    /// `Connection: close` too.
    @inline(__always)
    func context(for c: Connection) -> ResponseContext {
        var context = context(socket: c.fd)
        if c.closeAfterResponse { context.closeConnections = true }
        return context
    }

    /// Polls epoll without sleeping for up to the busy-poll window, yielding the CPU between polls
    /// to anything else runnable on it. Returns the events handled (0: the window ran out).
    func pollBriefly() throws(SystemError) -> Int {
        // Under load the next event is usually there already: no clock read for that.
        var events = try epoll.wait(timeoutMilliseconds: 0) { events, data in self.dispatch(events, data) }
        if events == 0 {
            let until = Clock.monotonicNanoseconds() &+ busyPoll.windowNanoseconds
            repeat {
                // Where the CPU is shared (more runnable threads than CPUs: the client's, other
                // workers'), they run first; the poll goes on after them.
                Sys.yieldCPU()
                events = try epoll.wait(timeoutMilliseconds: 0) { events, data in self.dispatch(events, data) }
            } while events == 0 && Clock.monotonicNanoseconds() < until
        }
        busyPoll.record(foundEvent: events > 0)
        stats.add(events > 0 ? .busyPollHits : .busyPollMisses, 1)
        return events
    }

    func flushCounters() {
        accessLog?.flush()
        if latencySum != 0 || latencyCounts.contains(where: { $0 != 0 }) {
            for i in 0..<11 where latencyCounts[i] != 0 {
                stats.add(StatsSlot.Field(rawValue: StatsSlot.Field.latency0.rawValue + i)!, latencyCounts[i])
                latencyCounts[i] = 0
            }
            stats.add(.latencySumMicros, latencySum)
            latencySum = 0
        }
        if counters.requests != 0 || counters.parseErrors != 0 {
            stats.add(.requests, UInt64(counters.requests))
            stats.add(.status1xx, UInt64(counters.statusClasses.1))
            stats.add(.status2xx, UInt64(counters.statusClasses.2))
            stats.add(.status3xx, UInt64(counters.statusClasses.3))
            stats.add(.status4xx, UInt64(counters.statusClasses.4))
            stats.add(.status5xx, UInt64(counters.statusClasses.5))
            stats.add(.parseErrors, UInt64(counters.parseErrors))
            counters = HTTPCounters()
        }
        // (`openConnections` is published as it changes, by `opened` and `closeNow`.)
    }

    // MARK: - Events

    @inline(__always)
    func dispatch(_ events: UInt32, _ data: UInt64) {
        let kind = data >> 56
        let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
        switch kind {
        case Token.connection:
            let generation = UInt32(truncatingIfNeeded: data >> 32) & 0xFF_FFFF
            guard Int(fd) < connections.count, connections[Int(fd)].fd == fd,
                connections[Int(fd)].generation & 0xFF_FFFF == generation
            else { return }  // a stale event for a closed (maybe reused) fd
            connectionEvent(fd, events)
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
        default:
            break
        }
    }

    func registerListeners() throws(SystemError) {
        guard !acceptingRegistered, !listenersShut else { return }
        for fd in listeners {
            try epoll.add(fd, events: Epoll.readable, data: Token.make(Token.listener, 0, fd))
        }
        acceptingRegistered = true
    }

    func unregisterListeners() {
        guard acceptingRegistered else { return }
        for fd in listeners { epoll.remove(fd) }
        acceptingRegistered = false
    }

    /// Accepts up to `limit` queued connections (all of `acceptBatch` when draining a queue).
    func acceptConnections(_ listener: Int32, limit: Int? = nil) {
        guard state == .running || acceptUntil != nil else { return }
        for _ in 0..<(limit ?? settings.acceptBatch) {
            if openCount >= settings.maxConnections {
                // At the cap: leave the rest in the backlog (nothing is refused) until one closes.
                pauseAccepting(until: nil)
                return
            }
            let fd: Int32
            do {
                switch try Sys.accept(listener) {
                case .wouldBlock: return
                case .processed(let newFD): fd = newFD
                }
            } catch {
                switch error.errno {
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    logger.warning("accept4: \(error.reason); pausing accept for \(settings.acceptBackoff) ms")
                    pauseAccepting(until: now + settings.acceptBackoff)
                    return
                case EINVAL:
                    // Not listening any more: the master shut the listeners (a stop). What they
                    // had queued was passed to us through the channel; `drain` follows there.
                    listenersShut = true
                    unregisterListeners()
                    return
                default:
                    // ECONNABORTED, EPROTO, ...: that client is gone; carry on with the next.
                    continue
                }
            }
            opened(fd)
        }
    }

    func pauseAccepting(until: Int64?) {
        unregisterListeners()
        acceptResumeAt = until
    }

    func resumeAcceptingIfPossible() {
        guard state == .running, !acceptingRegistered, !listenersShut, openCount < settings.maxConnections else { return }
        if let at = acceptResumeAt, now < at { return }
        acceptResumeAt = nil
        do { try registerListeners() } catch { logger.error("re-registering listeners: \(error)") }
    }

    func opened(_ fd: Int32, handedOver: Bool = false) {
        let index = Int(fd)
        if index >= connections.count {
            connections.append(contentsOf: repeatElement(Connection(), count: index - connections.count + 1 + connections.count / 2))
        }
        nextGeneration = nextGeneration &+ 1
        var c = Connection()
        c.fd = fd
        c.generation = nextGeneration & 0xFF_FFFF
        if accessLog != nil { c.peer = Socket.peerAddress(fd) }
        c.deadline = now + settings.headerTimeout
        connections[index] = c
        openCount += 1
        // Published at once (one store to our own cache line), not at the end of the loop's turn:
        // if this process dies, the master counts exactly what it took down (`openConnections`).
        stats[.openConnections] = UInt64(openCount)
        if handedOver { return }  // adopt() serves what came with it, then registers
        stats.add(.accepted, 1)
        // Often the request is already there when the connection is accepted (a busy worker, a
        // client that sends with its handshake): read it now, and a connection answered and closed
        // here (Connection: close) never costs an epoll_ctl. When it usually is not (the request
        // follows the handshake by a round trip), that read is a wasted syscall: skip it.
        var found = false
        if optimisticRead.shouldTry() {
            found = readable(fd)
            optimisticRead.record(paid: found)
        }
        if !found {
            // The request is still to come. A new connection is in quick-ACK mode, so the kernel
            // would acknowledge the request on its own at once and the answer would follow in a
            // second packet a few microseconds later, both handled on the client's CPU; turn that
            // off for the first request so the ACK rides on the answer (HAProxy's
            // `tcp-smart-accept` does the same).
            Socket.setQuickAck(fd, false)
            connections[index].ackHeld = true
        }
        register(fd)
    }

    /// Adds a connection to epoll once its first, optimistic read is done (if it is still open).
    func register(_ fd: Int32) {
        let index = Int(fd)
        guard index < connections.count, connections[index].fd == fd, !connections[index].registered else { return }
        let c = connections[index]
        do {
            try epoll.add(fd, events: c.writeBlocked ? Epoll.writable : Epoll.readable, data: Token.make(Token.connection, c.generation, fd))
            connections[index].registered = true
        } catch {
            logger.error("registering connection: \(error)")
            closeNow(fd)
        }
    }

    func connectionEvent(_ fd: Int32, _ events: UInt32) {
        let index = Int(fd)
        if events & Epoll.writable != 0 {
            writable(fd)
            guard connections[index].fd == fd else { return }
        }
        if events & (Epoll.readable | Epoll.hangup | Epoll.error) != 0 {
            readable(fd)
        }
    }

    // MARK: - Reading and serving

    /// Reads and serves what arrived. False when there was nothing to read.
    @discardableResult
    func readable(_ fd: Int32) -> Bool {
        let index = Int(fd)
        var c = connections[index]
        if c.lingering {
            discardInput(&c)
            connections[index] = c
            if c.fd < 0 { finishClose(fd) }
            return true
        }
        if c.writeBlocked {
            // Back-pressure: no new input until the client takes what it was sent. Only errors
            // matter now; they show up on the next write.
            return true
        }
        let useOwnBuffer = c.input.readableBytes > 0
        let result: IOResult<Int>
        do {
            if useOwnBuffer {
                c.input.reserveWritable(HTTPLimits.inputReadReserve)
                result = try Sys.read(fd, c.input.writePointer, c.input.writableBytes)
                if case .processed(let n) = result { c.input.moveWriterIndex(forwardBy: n) }
                // Docs/security.md's per-connection bound (checked in debug builds: the test suite).
                assert(c.input.allocatedCapacity <= settings.limits.maxInputBufferBytes, "input buffer over HTTPLimits.maxInputBufferBytes")
            } else {
                scratchIn.clear()
                result = try Sys.read(fd, scratchIn.writePointer, scratchIn.writableBytes)
                if case .processed(let n) = result { scratchIn.moveWriterIndex(forwardBy: n) }
            }
        } catch {
            // ECONNRESET and friends: the client is gone.
            connections[index] = c
            closeNow(fd)
            return true
        }
        switch result {
        case .wouldBlock:
            connections[index] = c
            return false
        case .processed(0):
            // EOF. Whatever complete requests came before were answered already.
            connections[index] = c
            if c.http.isMidRequest || !c.hasPendingOutput {
                closeNow(fd)
            } else {
                connections[index].closeWhenFlushed = true
            }
            return true
        case .processed(let n):
            stats.add(.bytesIn, UInt64(n))
        }
        if c.http.phase == .idle { c.requestStart = Clock.monotonicNanoseconds() }
        serve(&c, fd, fromScratch: !useOwnBuffer)
        connections[index] = c
        if c.fd < 0 { finishClose(fd) }
        return true
    }

    /// Runs the HTTP state machine over the buffered input and writes what it produced.
    func serve(_ c: inout Connection, _ fd: Int32, fromScratch: Bool) {
        var fromScratch = fromScratch
        var observer = AccessLogObserver(log: accessLog, peer: c.peer, wall: wallSecond)
        while true {
            let phaseBefore = c.http.phase
            let answeredBefore = counters.requests
            let outcome: HTTPConnectionState.Outcome
            let context = context(for: c)
            if fromScratch {
                outcome = c.http.process(&scratchIn, output: &scratchOut, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
                if scratchIn.readableBytes > 0 {
                    // A partial request stays with the connection; the scratch buffer is shared.
                    c.input.write(scratchIn.readableView)
                }
                scratchIn.clear()
                fromScratch = false
            } else {
                outcome = c.http.process(&c.input, output: &scratchOut, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
                if c.input.readableBytes == 0 { c.input.release() }
            }
            updateDeadline(&c, phaseBefore: phaseBefore)
            flush(&c, fd, closing: outcome == .close)
            let answered = counters.requests - answeredBefore
            if answered > 0 {
                // From the first byte of the (first) request to its answer handed to the kernel.
                let micros = (Clock.monotonicNanoseconds() &- c.requestStart) / 1000
                let bucket = StatsSlot.latencyField(micros: micros).rawValue - StatsSlot.Field.latency0.rawValue
                latencyCounts[bucket] &+= UInt64(answered)
                latencySum &+= micros &* UInt64(answered)
            }
            if c.fd < 0 { return }
            switch outcome {
            case .needInput:
                if c.ackHeld {
                    // Answered (the ACK went with it), or a request that came in part: then send
                    // its ACK now, as a client that waits for it (Nagle) would otherwise stall.
                    if c.http.isMidRequest { Socket.setQuickAck(fd, true) }
                    c.ackHeld = false
                }
                if !c.noDelay && c.http.requestsServed > 0 {
                    // Kept alive after its first answer: from now on several writes may be in
                    // flight (pipelining), so turn off Nagle. A connection answered once and closed
                    // never pays for the setsockopt (nginx sets tcp_nodelay at keep-alive too).
                    Socket.setNoDelay(fd)
                    c.noDelay = true
                }
                if state == .draining && drainMode == .handOff { handOffIfIdle(&c, fd) }
                return
            case .close:
                if c.hasPendingOutput {
                    c.closeWhenFlushed = true
                } else {
                    beginClose(&c, fd)
                }
                return
            case .flushFirst:
                if c.writeBlocked { return }  // resumed from `writable` once the output drains
            }
        }
    }

    func updateDeadline(_ c: inout Connection, phaseBefore: HTTPConnectionState.Phase) {
        switch c.http.phase {
        case .idle:
            c.deadline = now + (settings.limits.keepAlive ? settings.keepAliveTimeout : settings.headerTimeout)
        case .head:
            if phaseBefore != .head { c.deadline = now + settings.headerTimeout }
        case .body:
            c.deadline = now + settings.bodyTimeout
        case .closing:
            break
        }
    }

    /// Writes the scratch output (after anything already pending, then a pending file body) to the
    /// socket; keeps what the socket does not take and waits for EPOLLOUT.
    ///
    /// `closing`: the connection is closed (or shut down for writing) right after this, so the last
    /// bytes go with MSG_MORE and the FIN rides in their segment: one packet and one wake-up of the
    /// client fewer per `Connection: close` response.
    func flush(_ c: inout Connection, _ fd: Int32, closing: Bool = false) {
        var socketFull = c.writeBlocked
        if scratchOut.readableBytes > 0 {
            if c.output.readableBytes == 0 && !socketFull {
                // The common case: straight from the shared buffer, no copy.
                let written = writeSome(fd, scratchOut.readableView, more: closing && c.http.pendingFile == nil)
                guard written >= 0 else {
                    scratchOut.clear()
                    closeNow(fd, &c)
                    return
                }
                if written < scratchOut.readableBytes {
                    c.output.write(UnsafeRawBufferPointer(rebasing: scratchOut.readableView[written...]))
                    socketFull = true
                }
            } else {
                c.output.write(scratchOut.readableView)
            }
            scratchOut.clear()
        }
        if !socketFull { guard writePending(&c, fd) else { return } }
        if c.hasPendingOutput {
            if !c.writeBlocked {
                c.writeBlocked = true
                c.deadline = now + settings.sendTimeout
                if c.registered { try? epoll.modify(fd, events: Epoll.writable, data: Token.make(Token.connection, c.generation, fd)) }
            }
        } else if c.output.isAllocated {
            c.output.release()
        }
    }

    /// Writes the connection's own pending bytes, then its pending file body, as far as the socket
    /// takes them. Returns false when the connection was closed on an error.
    func writePending(_ c: inout Connection, _ fd: Int32) -> Bool {
        if c.output.readableBytes > 0 {
            let written = writeSome(fd, c.output.readableView)
            guard written >= 0 else {
                closeNow(fd, &c)
                return false
            }
            c.output.moveReaderIndex(forwardBy: written)
        }
        if c.output.readableBytes == 0 && c.http.pendingFile != nil { return sendFileSome(&c, fd) }
        return true
    }

    /// sendfile(2) of the pending file body as far as the socket takes it. Returns false when the
    /// connection was closed on an error.
    func sendFileSome(_ c: inout Connection, _ fd: Int32) -> Bool {
        guard var file = c.http.pendingFile else { return true }
        while file.count > 0 {
            let result: IOResult<Int>
            do { result = try Sys.sendfile(fd, file.fd, offset: &file.offset, count: min(file.count, 1 << 30)) } catch {
                closeNow(fd, &c)
                return false
            }
            switch result {
            case .wouldBlock:
                c.http.pendingFile = file
                return true
            case .processed(0):
                // The file shrank under us: the promised length cannot be sent; end the connection.
                logger.warning("static file shrank while being sent; closing the connection")
                closeNow(fd, &c)
                return false
            case .processed(let n):
                file.count -= n
                stats.add(.bytesOut, UInt64(n))
            }
        }
        Sys.close(file.fd)
        c.http.pendingFile = nil
        return true
    }

    /// write(2) as much as the socket takes. -1 when the connection failed.
    @inline(__always)
    func writeSome(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, more: Bool = false) -> Int {
        var offset = 0
        while offset < bytes.count {
            do {
                let pointer = bytes.baseAddress! + offset
                switch try more ? Sys.writeMore(fd, pointer, bytes.count - offset) : Sys.write(fd, pointer, bytes.count - offset) {
                case .wouldBlock: stats.add(.bytesOut, UInt64(offset)); return offset
                case .processed(let n): offset += n
                }
            } catch {
                return -1
            }
        }
        stats.add(.bytesOut, UInt64(offset))
        return offset
    }

    func writable(_ fd: Int32) {
        let index = Int(fd)
        var c = connections[index]
        guard c.writeBlocked else { return }
        guard writePending(&c, fd) else {
            connections[index] = c
            finishClose(fd)
            return
        }
        c.deadline = now + settings.sendTimeout
        if !c.hasPendingOutput {
            c.output.release()
            c.writeBlocked = false
            try? epoll.modify(fd, events: Epoll.readable, data: Token.make(Token.connection, c.generation, fd))
            if c.closeWhenFlushed || c.http.phase == .closing {
                beginClose(&c, fd)
            } else {
                updateDeadline(&c, phaseBefore: c.http.phase)
                if c.input.readableBytes > 0 {
                    // Pipelined requests waited for the output to drain.
                    serve(&c, fd, fromScratch: false)
                } else if state == .draining && drainMode == .handOff {
                    handOffIfIdle(&c, fd)
                }
            }
        }
        connections[index] = c
        if c.fd < 0 { finishClose(fd) }
    }

    // MARK: - Closing

    /// Closes after the response: at once when nothing unread is left, otherwise by shutting the
    /// write side and discarding input for a while (lingering close), so the client reads the
    /// response instead of a reset.
    func beginClose(_ c: inout Connection, _ fd: Int32) {
        // Unread input (pipelined requests after a `Connection: close`, or a refused request's
        // body) would make close() send a reset that can destroy the response in flight: linger.
        // Otherwise close at once, as nginx does (no FIONREAD probe per connection).
        if c.input.readableBytes == 0 && !c.http.isMidRequest {
            closeNow(fd, &c)
            return
        }
        c.input.release()
        Sys.shutdown(fd, Int32(SHUT_WR))
        c.lingering = true
        c.deadline = now + settings.lingerTimeout
    }

    func discardInput(_ c: inout Connection) {
        let fd = c.fd
        while true {
            scratchIn.clear()
            let result: IOResult<Int>
            do { result = try Sys.read(fd, scratchIn.writePointer, scratchIn.writableBytes) } catch {
                closeNow(fd, &c)
                return
            }
            switch result {
            case .wouldBlock: return
            case .processed(0):
                closeNow(fd, &c)
                return
            case .processed: continue
            }
        }
    }

    /// Closes the connection stored in the table.
    func closeNow(_ fd: Int32) {
        var c = connections[Int(fd)]
        closeNow(fd, &c)
        connections[Int(fd)] = c
        finishClose(fd)
    }

    /// Closes `c` (the caller writes it back and calls `finishClose`).
    func closeNow(_ fd: Int32, _ c: inout Connection) {
        guard c.fd >= 0 else { return }
        Sys.close(fd)
        if let file = c.http.pendingFile {
            Sys.close(file.fd)
            c.http.pendingFile = nil
        }
        c.input.release()
        c.output.release()
        c.fd = -1
        openCount -= 1
        stats[.openConnections] = UInt64(openCount)
    }

    /// Book-keeping after a connection closed.
    func finishClose(_ fd: Int32) {
        if !acceptingRegistered { resumeAcceptingIfPossible() }
    }

    // MARK: - Timeouts

    var nextSweep: Int64 = 0

    func sweep() {
        if let at = acceptResumeAt, now >= at { resumeAcceptingIfPossible() }
        if let until = acceptUntil, now >= until {
            for fd in listeners where acceptingRegistered { acceptConnections(fd) }
            acceptUntil = nil
            unregisterListeners()
        }
        if !handoffQueue.isEmpty { flushHandoffs() }
        if state == .draining, let deadline = drainDeadline, now >= deadline {
            logger.warning("drain timeout: closing \(openCount) busy connection(s)")
            stats.add(.connectionsClosedOnDrain, UInt64(openCount))
            for i in connections.indices where connections[i].isOpen { closeNow(Int32(i)) }
            return
        }
        guard now >= nextSweep else { return }
        nextSweep = now + 250
        for i in connections.indices where connections[i].isOpen && connections[i].deadline <= now {
            var c = connections[i]
            let fd = c.fd
            if c.lingering || c.writeBlocked {
                closeNow(fd, &c)
            } else if c.http.isMidRequest {
                let error: HTTPError = c.http.phase == .head ? .headerTimeout : .bodyTimeout
                c.http.abandon(with: error, output: &scratchOut, context: context)
                counters.count(status: error.status)
                accessLog?.appendRejected(error, peer: c.peer, wall: wallSecond)
                flush(&c, fd)
                if c.fd >= 0 {
                    if c.hasPendingOutput { c.closeWhenFlushed = true } else { beginClose(&c, fd) }
                }
            } else if c.closeAfterResponse || (state == .draining && drainMode == .close) {
                connections[i] = c
                closeIdleGracefully(fd)
                continue
            } else {
                closeNow(fd, &c)
            }
            connections[i] = c
            if c.fd < 0 { finishClose(fd) }
        }
    }

    /// Closes an idle keep-alive connection so that no request on it is lost: a request that has
    /// already arrived is read and answered (`Connection: close`); otherwise the write side is shut
    /// (FIN) and the connection lingers, reading and discarding, until the client closes or
    /// `lingerTimeout`: a request that crossed the FIN gets no reset, and the client sees the
    /// connection end before any byte of a response, the case HTTP clients retry (RFC 9112 §9.3.1).
    func closeIdleGracefully(_ fd: Int32) {
        let index = Int(fd)
        readable(fd)
        guard connections[index].fd == fd else {
            finishClose(fd)
            return
        }
        var c = connections[index]
        if c.http.phase == .idle && !c.hasPendingOutput && !c.lingering && !c.closeWhenFlushed && c.input.readableBytes == 0 {
            c.input.release()
            Sys.shutdown(fd, Int32(SHUT_WR))
            c.lingering = true
            c.deadline = now + settings.lingerTimeout
        }
        connections[index] = c
    }

    // MARK: - Master channel and signals

    func send(_ message: WorkerToMaster) {
        guard let channel else { return }
        let bytes = message.encoded
        _ = bytes.withUnsafeBytes { Glibc.send(channel, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
    }

    func channelReadable() {
        guard let channel else { return }
        while true {
            let received: IOResult<(count: Int, fd: Int32)>
            do { received = try Socket.receiveDescriptor(channel, channelBuffer) } catch {
                logger.error("master channel: \(error)")
                return
            }
            guard case .processed(let (n, passed)) = received else { return }
            if n == 0 && passed < 0 {
                // The master is gone: finish what is in flight and leave.
                logger.warning("master channel closed; draining")
                epoll.remove(channel)
                beginDrain(mode: .close, timeout: 10_000)
                return
            }
            let message = UnsafeRawBufferPointer(rebasing: channelBuffer[0..<n])
            if passed >= 0 {
                if ConnectionHandoff.isHandoff(message) {
                    // Counted on arrival: one the master sent that never got here died with us.
                    stats.add(.connectionsAdopted, 1)
                    adopt(passed, pending: UnsafeRawBufferPointer(rebasing: message[ConnectionHandoff.prefix.count...]))
                } else {
                    Sys.close(passed)
                }
                continue
            }
            switch MasterToWorker.decode(message) {
            case .drain: beginDrain(mode: .close, timeout: nil)
            case .replace: beginDrain(mode: .handOff, timeout: nil)
            case .retire: beginDrain(mode: .handOff, timeout: nil, acceptGrace: 300)
            case .reopenLogs: accessLog?.reopen()
            case nil: logger.warning("unknown message from master")
            }
        }
    }

    /// A connection handed over by a retiring worker: serve it as if it had been accepted here, with
    /// the bytes the other worker had already read.
    ///
    /// At `maxConnections` (the master sends to a worker with room while it has one) the connection
    /// is not kept: what came with it, or has arrived on it, is answered with `Connection: close`,
    /// and an idle one is closed gracefully (`closeIdleGracefully`), counted as
    /// `handoffsClosedAtCap`. Over the cap for at most that answer or `lingerTimeout`.
    func adopt(_ fd: Int32, pending: UnsafeRawBufferPointer) {
        do { try Sys.setNonBlocking(fd) } catch {
            Sys.close(fd)
            return
        }
        let overCap = openCount >= settings.maxConnections
        opened(fd, handedOver: true)
        let index = Int(fd)
        guard index < connections.count, connections[index].fd == fd else { return }
        var c = connections[index]
        Socket.setNoDelay(fd)
        c.noDelay = true
        c.deadline = now + (settings.limits.keepAlive ? settings.keepAliveTimeout : settings.headerTimeout)
        if state == .draining && drainMode == .close {
            // Adopted after the drain began: like the idle connections `beginDrain` found, it is
            // closed gracefully after `drainIdleGrace` if nothing arrives, not kept until the
            // keep-alive timeout (which would hold the drain until its deadline).
            c.deadline = min(c.deadline, now + settings.drainIdleGrace)
        }
        if overCap {
            c.closeAfterResponse = true
            // (While stopping every connection closes after its answer anyway.)
            if !context.closeConnections { stats.add(.handoffsClosedAtCap, 1) }
        }
        if pending.count > 0 {
            c.input.write(pending)
            c.requestStart = Clock.monotonicNanoseconds()
            serve(&c, fd, fromScratch: false)
        } else if state == .draining && drainMode == .handOff {
            handOffIfIdle(&c, fd)
        }
        connections[index] = c
        if c.fd < 0 {
            finishClose(fd)
            return
        }
        register(fd)
        if overCap && isIdle(c) { closeIdleGracefully(fd) }
    }

    /// Moves an idle keep-alive connection to the master, which passes it to a live worker. The
    /// socket (with whatever the kernel still buffers) travels as SCM_RIGHTS; bytes this worker
    /// already read travel in the message. The client notices nothing.
    func handOffIfIdle(_ c: inout Connection, _ fd: Int32) {
        guard let channel, c.fd >= 0, !c.http.isMidRequest, !c.hasPendingOutput, !c.lingering, !c.closeWhenFlushed,
            c.input.readableBytes <= ConnectionHandoff.maxPendingBytes
        else { return }
        var message = ConnectionHandoff.prefix
        message += c.input.readableView
        let sent: IOResult<Int>
        do {
            sent = try message.withUnsafeBytes { (p) throws(SystemError) -> IOResult<Int> in try Socket.sendDescriptor(channel, fd, p) }
        } catch {
            logger.warning("handing off a connection: \(error); closing it")
            closeNow(fd, &c)
            return
        }
        switch sent {
        case .processed:
            stats.add(.connectionsHandedOff, 1)
            if c.registered { epoll.remove(fd) }
            closeNow(fd, &c)
        case .wouldBlock:
            // The channel is full: try again on the next turn of the loop.
            if !handoffQueue.contains(fd) { handoffQueue.append(fd) }
        }
    }

    func flushHandoffs() {
        let queued = handoffQueue
        handoffQueue = []
        for fd in queued where Int(fd) < connections.count && connections[Int(fd)].fd == fd {
            var c = connections[Int(fd)]
            handOffIfIdle(&c, fd)
            connections[Int(fd)] = c
            if c.fd < 0 { finishClose(fd) }
        }
    }

    func signalReadable() {
        guard let signals else { return }
        while let signal = try? signals.next() {
            switch signal {
            case SIGTERM: beginDrain(mode: .close, timeout: nil)
            case SIGINT, SIGQUIT: stopNow()
            case SIGUSR1: accessLog?.reopen()
            default: break  // HUP: the master's business
            }
        }
    }

    /// Fast stop (INT/QUIT, which is also what the master sends when a drain times out): whatever
    /// is still open is closed with the process, and counted and logged as such.
    func stopNow() {
        if openCount > 0 {
            logger.warning("stopping with \(openCount) connection(s) still open; they are closed")
            stats.add(.connectionsClosedOnDrain, UInt64(openCount))
            // Counted here: a KILL before the exit must not count them again (the master counts
            // what a dead worker last published as open).
            stats[.openConnections] = 0
        }
        state = .stopping
    }

    /// Stop accepting (after `acceptGrace` ms of taking what is already queued); let in-flight
    /// requests finish; idle keep-alive connections are handed off (`.handOff`) or closed (`.close`).
    /// The loop ends when no connection is left.
    public func beginDrain(mode: DrainMode, timeout: Int64?, acceptGrace: Int64 = 0) {
        if state == .draining && drainMode == .handOff && mode == .close {
            // The daemon stops while this worker hands its connections over (a reload's or
            // scale-down's): nothing takes them now; close them instead, gracefully.
            drainMode = .close
            for i in connections.indices where connections[i].isOpen && isIdle(connections[i]) {
                connections[i].deadline = min(connections[i].deadline, now + settings.drainIdleGrace)
            }
            return
        }
        guard state == .running else { return }
        // Take what is already queued on our listeners first.
        for fd in listeners where acceptingRegistered { acceptConnections(fd) }
        state = .draining
        drainMode = channel == nil ? .close : mode
        if let timeout { drainDeadline = now + timeout }
        if acceptGrace > 0 { acceptUntil = now + acceptGrace } else { unregisterListeners() }
        stats[.state] = WorkerState.draining.rawValue
        send(.draining)
        for i in connections.indices where connections[i].isOpen && isIdle(connections[i]) {
            var c = connections[i]
            let fd = c.fd
            if drainMode == .handOff {
                handOffIfIdle(&c, fd)
            } else {
                // Not closed at once: a client may be sending its next request right now. For
                // `drainIdleGrace` what arrives is answered with `Connection: close`; then the
                // connection is closed gracefully (`closeIdleGracefully`).
                c.deadline = min(c.deadline, now + settings.drainIdleGrace)
            }
            connections[i] = c
            if c.fd < 0 { finishClose(fd) }
        }
    }

    /// Between requests, nothing buffered or pending.
    func isIdle(_ c: Connection) -> Bool {
        !c.http.isMidRequest && !c.writeBlocked && !c.lingering && !c.closeWhenFlushed && c.input.readableBytes == 0
            && c.http.phase != .closing
    }
}
