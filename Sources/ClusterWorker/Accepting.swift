import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterTLS

/// Taking connections in: the listeners' registration, accept with its back-off, and a new
/// connection's first steps.
extension HTTPWorker {
    func registerListeners() throws(SystemError) {
        guard !acceptingRegistered, !listenersShut else { return }
        for fd in listeners {
            let events = sharedListeners.contains(fd) ? Epoll.readable | Epoll.exclusive : Epoll.readable
            try kernel.epollAdd(fd, events: events, data: Token.make(Token.listener, 0, fd))
        }
        acceptingRegistered = true
    }

    func unregisterListeners() {
        guard acceptingRegistered else { return }
        for fd in listeners { kernel.epollRemove(fd) }
        acceptingRegistered = false
    }

    /// Accepts up to `limit` queued connections (all of `acceptBatch` when draining a queue).
    func acceptConnections(_ listener: Int32, limit: Int? = nil) {
        guard state == .running || acceptUntil != nil else { return }
        for _ in 0..<(limit ?? settings.acceptBatch) {
            if table.openCount >= settings.maxConnections {
                // At the cap: leave the rest in the backlog (nothing is refused) until one closes.
                pauseAccepting(until: nil)
                return
            }
            let fd: Int32
            do {
                switch try kernel.accept(listener) {
                case .wouldBlock: return
                case .processed(let newFD): fd = newFD
                }
            } catch {
                switch error.code {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: what is queued stays queued; try again later.
                    logger.warning("accept4: \(error.reason); pausing accept for \(settings.acceptBackoff) ms")
                    pauseAccepting(until: io.now + settings.acceptBackoff)
                    return
                case .invalidArgument:
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
            let tls = tlsListeners.isEmpty ? nil : tlsListeners.first { $0.fd == listener }?.server
            opened(fd, expectingProxyHeader: !proxyListeners.isEmpty && proxyListeners.contains(listener), tls: tls)
        }
    }

    func pauseAccepting(until: Int64?) {
        unregisterListeners()
        acceptResumeAt = until
    }

    func resumeAcceptingIfPossible() {
        guard state == .running, !acceptingRegistered, !listenersShut, table.openCount < settings.maxConnections else { return }
        if let at = acceptResumeAt, io.now < at { return }
        acceptResumeAt = nil
        do { try registerListeners() } catch { logger.error("re-registering listeners: \(error)") }
    }

    /// Takes a new connection into the table; one accepted here (not `handedOver`) is read at once
    /// when that tends to find its request, then registered with epoll.
    func opened(_ fd: Int32, handedOver: Bool = false, expectingProxyHeader: Bool = false, tls: TLSServer? = nil) {
        table.open(fd)
        if let tls {
            // The handshake runs within the header timeout set below, like a request head.
            guard let connection = tls.connection(fd: fd) else {
                logger.error("cannot make a TLS connection (out of memory?); closing it")
                perform(table[fd].close(&io, kernel), on: fd)
                return
            }
            table[fd].tls = connection
            table[fd].tlsHandshaking = true
            // At once, not at keep-alive as for plain HTTP (nginx does the same for TLS): the
            // handshake's last flight (a session ticket) and the first answer are separate writes,
            // and Nagle would hold the answer until the client's delayed ACK of the ticket.
            kernel.setNoDelay(fd)
            table[fd].noDelay = true
        }
        if io.accessLog != nil && !expectingProxyHeader { table[fd].peer = kernel.peerAddress(fd) }
        table[fd].deadline = io.now + settings.headerTimeout
        // Published at once (one store to our own cache line), not at the end of the loop's turn:
        // if this process dies, the master counts exactly what it took down (`openConnections`).
        stats[.openConnections] = UInt64(table.openCount)
        if handedOver { return }  // adopt() serves what came with it, then registers
        stats.add(.accepted, 1)
        if expectingProxyHeader || io.trust != nil {
            guard admit(fd, expectingProxyHeader: expectingProxyHeader) else { return }
        }
        // Often the request is already there when the connection is accepted (a busy worker, a
        // client that sends with its handshake): read it now, and a connection answered and closed
        // here (Connection: close) never costs an epoll_ctl. When it usually is not (the request
        // follows the handshake by a round trip), that read is a wasted syscall: skip it.
        var found = false
        if optimisticRead.shouldTry() {
            let action = table[fd].readable(&io, kernel, handler)
            found = action != .nothingRead
            optimisticRead.record(paid: found)
            perform(action, on: fd)
        }
        if !found {
            // The request is still to come. A new connection is in quick-ACK mode, so the kernel
            // would acknowledge the request on its own at once and the answer would follow in a
            // second packet a few microseconds later, both handled on the client's CPU; turn that
            // off for the first request so the ACK rides on the answer (HAProxy's
            // `tcp-smart-accept` does the same).
            kernel.setQuickAck(fd, false)
            table[fd].ackHeld = true
        }
        register(fd)
    }

    /// Checks a new connection's peer against `trustedProxies`: on a `proxyProtocol` listener one from
    /// anyone else is closed at once, unread (counted as `proxyUntrusted`), and one from a trusted
    /// proxy waits for its header; elsewhere a trusted peer's `X-Forwarded-For` will be believed.
    /// False when the connection was closed.
    func admit(_ fd: Int32, expectingProxyHeader: Bool) -> Bool {
        let trusted = io.isTrusted(kernel.peerEndpoint(fd))
        guard expectingProxyHeader else {
            table[fd].hopTrusted = trusted
            return true
        }
        guard trusted else {
            stats.add(.proxyUntrusted, 1)
            perform(table[fd].close(&io, kernel), on: fd)
            return false
        }
        table[fd].awaitingProxyHeader = true
        return true
    }

    /// Adds a connection to epoll once its first, optimistic read is done (if it is still open).
    func register(_ fd: Int32) {
        guard table.isOpen(fd), !table[fd].registered else { return }
        do {
            try kernel.epollAdd(fd, events: table[fd].writeBlocked || table[fd].tlsWantsWrite ? Epoll.writable : table[fd].readInterest,
                                data: Token.make(Token.connection, table[fd].generation, fd))
            table[fd].registered = true
            table[fd].readingPaused = !table[fd].writeBlocked && table[fd].readInterest == 0
        } catch {
            logger.error("registering connection: \(error)")
            perform(table[fd].close(&io, kernel), on: fd)
        }
    }
}
