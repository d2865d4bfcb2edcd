import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterTLS

/// The channel to the master: its messages, connections handed over to this worker (`adopt`) and
/// this worker's idle connections handed off to a live one (`handOffIfIdle`).
extension HTTPWorker {
    func send(_ message: WorkerToMaster) {
        guard let channel else { return }
        // A notice: if the channel is full or gone, the master learns it otherwise (exit, heartbeat).
        _ = message.encoded.withUnsafeBytes { kernel.sendMessage(channel, $0) }
    }

    func channelReadable() {
        guard let channel else { return }
        while true {
            let received: IOResult<(count: Int, fd: Int32)>
            do { received = try kernel.receiveDescriptor(channel, channelBuffer) } catch {
                logger.error("master channel: \(error)")
                return
            }
            guard case .processed(let (n, passed)) = received else { return }
            if n == 0 && passed < 0 {
                // The master is gone: finish what is in flight and leave.
                logger.warning("master channel closed; draining")
                kernel.epollRemove(channel)
                beginDrain(mode: .close, timeout: 10_000)
                return
            }
            let message = UnsafeRawBufferPointer(rebasing: channelBuffer[0..<n])
            if passed >= 0 {
                if let kind = ConnectionHandoff.kind(message) {
                    // Counted on arrival: one the master sent that never got here died with us.
                    stats.add(.connectionsAdopted, 1)
                    adopt(passed, pending: UnsafeRawBufferPointer(rebasing: message[ConnectionHandoff.prefix.count...]), proxied: kind == .proxied)
                } else {
                    kernel.close(passed)
                }
                continue
            }
            switch MasterToWorker.decode(message) {
            case .drain: beginDrain(mode: .close, timeout: nil)
            case .replace: beginDrain(mode: .handOff, timeout: nil)
            case .retire: beginDrain(mode: .handOff, timeout: nil, acceptGrace: 300)
            case .reopenLogs: io.accessLog?.reopen()
            case .stopping: announceStop()
            case .ticketKeys(let keys): TLSServer.installTicketKeys(keys)
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
    ///
    /// `proxied`: `pending` begins with the PROXY v2 header the other worker wrote for the client it
    /// had read from the balancer (`ConnectionHandoff.proxiedPrefix`). Any other connection that
    /// arrived on a `proxyProtocol` listener (its own address tells which) comes from the master,
    /// taken from a listener's queue unread: its header is still to come, from a trusted peer.
    func adopt(_ fd: Int32, pending: UnsafeRawBufferPointer, proxied: Bool = false) {
        do { try kernel.setNonBlocking(fd) } catch {
            kernel.close(fd)
            return
        }
        var pending = pending
        var header: ProxyHeader? = nil
        if proxied {
            guard case .header(let h, let consumed) = ProxyProtocol.parse(pending) else {
                logger.error("a handed-over connection's PROXY header does not parse; closing it")
                kernel.close(fd)
                return
            }
            header = h
            pending = UnsafeRawBufferPointer(rebasing: pending[consumed...])
        }
        // One the master took unread from a TLS listener's queue (a dead worker's slot, a listener
        // closing): its handshake is still to come. (A worker never hands a TLS connection over.)
        let tls = header == nil && !tlsListeners.isEmpty ? tlsServer(arrivedOn: fd) : nil
        if tls != nil && pending.count > 0 {
            logger.error("a handed-over connection to a TLS listener came with bytes already read; closing it")
            kernel.close(fd)
            return
        }
        let overCap = table.openCount >= settings.maxConnections
        opened(fd, handedOver: true, tls: tls)
        guard table.isOpen(fd) else { return }
        kernel.setNoDelay(fd)
        table[fd].noDelay = true
        table[fd].deadline = io.now + (settings.limits.keepAlive && tls == nil ? settings.keepAliveTimeout : settings.headerTimeout)
        if let header {
            table[fd].takeProxied(header, &io, kernel)
        } else if !proxyListeners.isEmpty && arrivedOnProxyListener(fd) {
            guard admit(fd, expectingProxyHeader: true) else { return }
            table[fd].peer = nil
            table[fd].deadline = io.now + settings.headerTimeout
        } else if io.trust != nil {
            guard admit(fd, expectingProxyHeader: false) else { return }
        }
        if state == .draining && drainMode == .close {
            // Adopted after the drain began: like the idle connections `beginDrain` found, it is
            // closed gracefully after `drainIdleGrace` if nothing arrives, not kept until the
            // keep-alive timeout (which would hold the drain until its deadline).
            table[fd].deadline = min(table[fd].deadline, io.now + settings.drainIdleGrace)
        }
        if overCap {
            table[fd].closeAfterResponse = true
            // (While stopping every connection closes after its answer anyway.)
            if !io.closeConnections { stats.add(.handoffsClosedAtCap, 1) }
        }
        if pending.count > 0 {
            perform(table[fd].serveHandedOver(pending, &io, kernel, handler), on: fd)
        } else if state == .draining && drainMode == .handOff {
            handOffIfIdle(fd)
        }
        guard table.isOpen(fd) else { return }
        let idle = table[fd].isIdle
        register(fd)
        if overCap && idle && table.isOpen(fd) { closeIdleGracefully(fd) }
    }

    /// The TLS listener `fd` was accepted on (by its own address), if any.
    func tlsServer(arrivedOn fd: Int32) -> TLSServer? {
        if let local = kernel.localEndpoint(fd) {
            return tlsListeners.first { kernel.localEndpoint($0.fd)?.accepts(local) == true }?.server
        }
        if let path = kernel.localPath(fd) { return tlsListeners.first { kernel.localPath($0.fd) == path }?.server }
        return nil
    }

    /// Whether `fd` was accepted on one of this worker's `proxyProtocol` listeners: its own address
    /// is theirs (an IP listener's, or a Unix socket's path).
    func arrivedOnProxyListener(_ fd: Int32) -> Bool {
        if let local = kernel.localEndpoint(fd) { return proxyListenerAddresses.contains { $0.accepts(local) } }
        if let path = kernel.localPath(fd) { return proxyListenerPaths.contains(path) }
        return false
    }

    /// Moves an idle keep-alive connection to the master, which passes it to a live worker. The
    /// socket (with whatever the kernel still buffers) travels as SCM_RIGHTS; bytes this worker
    /// already read travel in the message. The client notices nothing.
    func handOffIfIdle(_ fd: Int32) {
        if table.isOpen(fd), table[fd].tls != nil {
            // OpenSSL's session state does not travel: an idle TLS connection is closed
            // gracefully instead, as when the daemon stops: a request that arrives within
            // `drainIdleGrace` is answered with `Connection: close`, then close_notify and FIN.
            if !table[fd].closeAfterResponse {
                table[fd].closeAfterResponse = true
                table[fd].deadline = min(table[fd].deadline, io.now + settings.drainIdleGrace)
            }
            return
        }
        guard let channel, table.isOpen(fd), table[fd].canHandOff else { return }
        var message = ConnectionHandoff.prefix
        if table[fd].proxied {
            message = ConnectionHandoff.proxiedPrefix + ProxyProtocol.encodeV2(source: table[fd].proxiedClient)
        }
        message += table[fd].input.readableView
        let sent: IOResult<Int>
        do {
            sent = try message.withUnsafeBytes { (p) throws(SystemError) -> IOResult<Int> in try kernel.sendDescriptor(channel, fd, p) }
        } catch {
            logger.warning("handing off a connection: \(error); closing it")
            perform(table[fd].close(&io, kernel), on: fd)
            return
        }
        switch sent {
        case .processed:
            stats.add(.connectionsHandedOff, 1)
            // The socket lives on in flight and then in the other worker: leave our epoll set.
            if table[fd].registered { kernel.epollRemove(fd) }
            perform(table[fd].close(&io, kernel), on: fd)
        case .wouldBlock:
            // The channel is full: try again on the next turn of the loop.
            if !handoffQueue.contains(fd) { handoffQueue.append(fd) }
        }
    }

    func flushHandoffs() {
        let queued = handoffQueue
        handoffQueue = []
        for fd in queued { handOffIfIdle(fd) }
    }
}

extension Connection {
    /// A connection handed over with `pending`, the bytes the other worker had read: serves them.
    mutating func serveHandedOver<H: HTTPHandler, K: Kernel>(_ pending: UnsafeRawBufferPointer, _ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        input.write(pending)
        if awaitingProxyHeader { return takeProxyHeader(&io, kernel, handler) }
        requestStart = kernel.monotonicNanoseconds()
        return serve(&io, kernel, handler, fromScratch: false)
    }

    /// Between requests with nothing to send and at most `ConnectionHandoff.maxPendingBytes` read
    /// ahead: may move to another worker.
    var canHandOff: Bool {
        tls == nil && !(awaitingProxyHeader && input.readableBytes > 0) && !http.isMidRequest && !hasPendingOutput && !lingering && !closeWhenFlushed
            && input.readableBytes <= ConnectionHandoff.maxPendingBytes
    }
}
