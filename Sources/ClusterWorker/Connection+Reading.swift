import ClusterControl
import ClusterHTTP
import ClusterSystem

extension Connection {
    /// EPOLLIN (or a hang-up or error): reads what arrived and serves it.
    mutating func readable<H: HTTPHandler, K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        if lingering { return discardInput(&io, kernel) }
        if writeBlocked {
            // Back-pressure: no new input until the client takes what it was sent. Only errors
            // matter now; they show up on the next write.
            return .none
        }
        if awaitingProxyHeader { return readProxyHeader(&io, kernel, handler) }
        if tlsHandshaking, let tls, let action = continueHandshake(tls, &io, kernel) { return action }
        if readingPaused && http.phase == .awaiting {
            // Nothing is read while a deferred answer is worked out (its interest is none): this
            // is a hang-up or an error. The client is gone; its answer will find no connection.
            return close(&io, kernel)
        }
        let useOwnBuffer = input.readableBytes > 0
        let result: IOResult<Int>
        do {
            if useOwnBuffer {
                input.reserveWritable(HTTPLimits.inputReadReserve)
                result = try receive(kernel, input.writePointer, input.writableBytes)
                if case .processed(let n) = result { input.moveWriterIndex(forwardBy: n) }
                // Docs/security.md's per-connection bound (checked in debug builds: the test suite).
                assert(input.allocatedCapacity <= io.settings.limits.maxInputBufferBytes, "input buffer over HTTPLimits.maxInputBufferBytes")
            } else {
                io.scratchIn.clear()
                result = try receive(kernel, io.scratchIn.writePointer, io.scratchIn.writableBytes)
                if case .processed(let n) = result { io.scratchIn.moveWriterIndex(forwardBy: n) }
            }
        } catch {
            // ECONNRESET and friends: the client is gone.
            return close(&io, kernel)
        }
        switch result {
        case .wouldBlock:
            return .nothingRead
        case .processed(0):
            // EOF. Whatever complete requests came before were answered already.
            if http.isMidRequest || !hasPendingOutput { return close(&io, kernel) }
            closeWhenFlushed = true
            return .none
        case .processed(let n):
            io.stats.add(.bytesIn, UInt64(n))
        }
        if http.phase == .idle { requestStart = kernel.monotonicNanoseconds() }
        return serve(&io, kernel, handler, fromScratch: !useOwnBuffer)
    }

    /// read(2), or SSL_read on a TLS connection (a failed one reads as a reset).
    @inline(__always)
    mutating func receive<K: Kernel>(_ kernel: K, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult<Int> {
        guard let tls else { return try kernel.read(fd, buffer, count) }
        guard let result = tlsReceive(tls, buffer, count) else { throw SystemError(call: "SSL_read", .connectionReset) }
        return result
    }

    /// On a `proxyProtocol` listener, before anything else: reads into the connection's own buffer
    /// until it holds a whole PROXY header (v1 at most 107 bytes, v2 at most 1,040), then serves
    /// what followed it. Anything that cannot be a header, or EOF before one, closes the
    /// connection without an answer (the balancer is misconfigured or this is not a balancer),
    /// counted as `proxyInvalid`.
    mutating func readProxyHeader<H: HTTPHandler, K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        let result: IOResult<Int>
        do {
            input.reserveWritable(HTTPLimits.inputReadReserve)
            result = try kernel.read(fd, input.writePointer, input.writableBytes)
        } catch {
            io.stats.add(.proxyInvalid, 1)
            return close(&io, kernel)
        }
        switch result {
        case .wouldBlock:
            return .nothingRead
        case .processed(0):
            io.stats.add(.proxyInvalid, 1)
            return close(&io, kernel)
        case .processed(let n):
            input.moveWriterIndex(forwardBy: n)
            io.stats.add(.bytesIn, UInt64(n))
        }
        return takeProxyHeader(&io, kernel, handler)
    }

    /// Parses the PROXY header at the start of the input; serves what follows it once it is whole.
    mutating func takeProxyHeader<H: HTTPHandler, K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        switch ProxyProtocol.parse(input.readableView) {
        case .incomplete:
            return .none
        case .invalid:
            io.stats.add(.proxyInvalid, 1)
            return close(&io, kernel)
        case .header(let header, let consumed):
            input.moveReaderIndex(forwardBy: consumed)
            awaitingProxyHeader = false
            takeProxied(header, &io, kernel)
            guard input.readableBytes > 0 else {
                input.releaseStorage()
                updateDeadline(io, phaseBefore: .head)  // between requests now: the keep-alive timeout
                return .idle
            }
            requestStart = kernel.monotonicNanoseconds()
            return serve(&io, kernel, handler, fromScratch: false)
        }
    }

    /// Keeps what a PROXY header says about the client (read here, or carried with a hand-off).
    mutating func takeProxied<K: Kernel>(_ header: ProxyHeader, _ io: inout WorkerIO, _ kernel: K) {
        proxied = true
        proxiedClient = header.command == .proxy ? header.source : nil
        if let client = proxiedClient {
            hopTrusted = io.trust?.pointee.contains(client.address) ?? false
            if io.accessLog != nil { peer = client.address.description }
        } else {
            // LOCAL (the balancer's own health check) or no address: the socket's peer, which
            // was trusted to send the header, is the client.
            hopTrusted = io.trust != nil
            if io.accessLog != nil { peer = kernel.peerAddress(fd) }
        }
    }

    /// Runs the HTTP state machine over the buffered input (the shared scratch buffer when
    /// `fromScratch`) and writes what it produced.
    mutating func serve<H: HTTPHandler, K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ handler: H, fromScratch: Bool) -> ConnectionAction {
        var fromScratch = fromScratch
        var observer = AccessLogObserver(log: io.accessLog, peer: peer, wall: io.wallSecond, forwarded: hopTrusted)
        while true {
            let phaseBefore = http.phase
            let answeredBefore = io.counters.requests
            let context = responseContext(io)
            let outcome: HTTPConnectionState.Outcome
            if fromScratch {
                outcome = http.process(io.scratchIn, output: io.scratchOut, parser: io.parser, context: context, handler: handler, counters: &io.counters, observer: &observer)
                if io.scratchIn.readableBytes > 0 {
                    // A partial request stays with the connection; the scratch buffer is shared.
                    input.write(io.scratchIn.readableView)
                }
                io.scratchIn.clear()
                fromScratch = false
            } else {
                outcome = http.process(input, output: io.scratchOut, parser: io.parser, context: context, handler: handler, counters: &io.counters, observer: &observer)
                if input.readableBytes == 0 { input.releaseStorage() }
            }
            if let action = afterStep(outcome, phaseBefore: phaseBefore, answeredBefore: answeredBefore, &io, kernel) { return action }
        }
    }

    /// Goes on after a deferred answer is done (`HTTPWorker.runDeferred`): writes it (or ends its
    /// streamed body), then serves what the client pipelined behind it.
    mutating func resume<H: HTTPHandler, K: Kernel>(_ resumption: Resumption, _ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        var observer = AccessLogObserver(log: io.accessLog, peer: peer, wall: io.wallSecond, forwarded: hopTrusted)
        let phaseBefore = http.phase
        let answeredBefore = io.counters.requests
        let context = responseContext(io)
        let outcome: HTTPConnectionState.Outcome
        switch resumption {
        case .answer(let response):
            outcome = http.complete(with: response, input, output: io.scratchOut, parser: io.parser, context: context, handler: handler, counters: &io.counters, observer: &observer)
        case .streamEnd(let failed):
            outcome = http.finishStream(failed: failed, input, output: io.scratchOut, parser: io.parser, context: context, handler: handler, counters: &io.counters, observer: &observer)
        }
        if input.readableBytes == 0 { input.releaseStorage() }
        // Counted when it was dispatched: its latency runs from its first byte to now.
        io.recordLatency(answered: 1, since: requestStart, now: kernel.monotonicNanoseconds())
        requestStart = kernel.monotonicNanoseconds()
        if let action = afterStep(outcome, phaseBefore: phaseBefore, answeredBefore: answeredBefore, &io, kernel) { return action }
        return serve(&io, kernel, handler, fromScratch: false)
    }

    /// What the engine needs to answer on this connection.
    @inline(__always)
    func responseContext(_ io: borrowing WorkerIO) -> ResponseContext {
        var context = io.context(socket: fd)
        // One adopted over the connection cap is answered with `Connection: close` too.
        if closeAfterResponse { context.closeConnections = true; context.answerOnlyWhatHasArrived = true }
        if proxied { context.proxiedClient = proxiedClient }
        if hopTrusted, let trust = io.trust { context.forwardingTrust = UnsafePointer(trust) }
        return context
    }

    /// After a step of the HTTP state machine: the deadline, the writes, the latency, and what the
    /// loop does next; nil when the state machine should run again (its output was flushed).
    @inline(__always)
    mutating func afterStep<K: Kernel>(_ outcome: HTTPConnectionState.Outcome, phaseBefore: HTTPConnectionState.Phase, answeredBefore: Int,
                                       _ io: inout WorkerIO, _ kernel: K) -> ConnectionAction? {
        updateDeadline(io, phaseBefore: phaseBefore)
        let open = flush(&io, kernel, closing: outcome == .close)
        // A deferred answer is counted as answered when it is written, not when deferred.
        let answered = io.counters.requests - answeredBefore - (outcome == .suspended ? 1 : 0)
        // From the first byte of the (first) request to its answer handed to the kernel.
        if answered > 0 { io.recordLatency(answered: answered, since: requestStart, now: kernel.monotonicNanoseconds()) }
        guard open else { return .closed }
        switch outcome {
        case .needInput:
            if ackHeld {
                // Answered (the ACK went with it), or a request that came in part: then send
                // its ACK now, as a client that waits for it (Nagle) would otherwise stall.
                if http.isMidRequest { kernel.setQuickAck(fd, true) }
                ackHeld = false
            }
            if !noDelay && http.requestsServed > 0 {
                // Kept alive after its first answer: from now on several writes may be in
                // flight (pipelining), so turn off Nagle. A connection answered once and closed
                // never pays for the setsockopt (nginx sets tcp_nodelay at keep-alive too).
                kernel.setNoDelay(fd)
                noDelay = true
            }
            return .idle
        case .close:
            if hasPendingOutput {
                closeWhenFlushed = true
                return ConnectionAction.none  // (not `.none`: that would be a nil action here)
            }
            return beginClose(&io, kernel)
        case .flushFirst:
            if writeBlocked { return ConnectionAction.none }  // resumed from `writable` once the output drains
            return nil
        case .suspended:
            return .suspended
        case .bodyFull:
            return .bodyFull
        }
    }

    /// Sets the deadline of the phase the connection is in now.
    mutating func updateDeadline(_ io: borrowing WorkerIO, phaseBefore: HTTPConnectionState.Phase) {
        // Fields read in place: a copy of `settings` would retain its strings once per request.
        switch http.phase {
        case .idle:
            deadline = io.now + (io.settings.limits.keepAlive ? io.settings.keepAliveTimeout : io.settings.headerTimeout)
        case .head:
            if phaseBefore != .head { deadline = io.now + io.settings.headerTimeout }
        case .body:
            deadline = io.now + io.settings.bodyTimeout
        case .closing:
            break
        case .awaiting:
            deadline = .max  // as long as the handler takes (the drain timeout still bounds a stop)
        }
    }

    /// While lingering: reads and drops what arrives until EOF.
    mutating func discardInput<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> ConnectionAction {
        while true {
            io.scratchIn.clear()
            let result: IOResult<Int>
            do { result = try kernel.read(fd, io.scratchIn.writePointer, io.scratchIn.writableBytes) } catch {
                return close(&io, kernel)
            }
            switch result {
            case .wouldBlock: return .none
            case .processed(0): return close(&io, kernel)
            case .processed: continue
            }
        }
    }

    /// Shuts the write side (FIN after what was sent) and discards input until EOF or `lingerTimeout`.
    mutating func shutDownAndLinger<K: Kernel>(_ io: borrowing WorkerIO, _ kernel: K) {
        input.releaseStorage()
        tls?.closeNotify()  // TLS: close_notify before the FIN (what arrives after is discarded unread)
        kernel.shutdownWrite(fd)
        lingering = true
        deadline = io.now + io.settings.lingerTimeout
    }

    /// Idle between requests with nothing read, pending or closing: may be shut down gracefully.
    /// (One still to send its PROXY header counts as idle while nothing of it came: a balancer's
    /// connection opened ahead, or one whose request crosses the stop, which it retries elsewhere.)
    var mayShutDownIdle: Bool {
        http.phase == .idle && !hasPendingOutput && !lingering && !closeWhenFlushed && input.readableBytes == 0
    }

    /// Between requests, nothing buffered or pending.
    var isIdle: Bool {
        !http.isMidRequest && !writeBlocked && !lingering && !closeWhenFlushed && input.readableBytes == 0
            && http.phase != .closing
    }
}
