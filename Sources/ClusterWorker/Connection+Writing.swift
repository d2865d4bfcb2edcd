import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterTLS

extension Connection {
    /// EPOLLOUT: writes what is pending; once all is out, reads again (or closes, or serves the
    /// pipelined requests that waited).
    mutating func writable<H: HTTPHandler, K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ handler: H) -> ConnectionAction {
        if tlsWantsWrite { return readable(&io, kernel, handler) }  // a TLS handshake waited for room
        guard writeBlocked else { return .none }
        guard writePending(&io, kernel) else { return .closed }
        deadline = io.now + io.settings.sendTimeout
        if hasPendingOutput { return .none }
        output.releaseStorage()
        writeBlocked = false
        try? kernel.epollModify(fd, events: readInterest, data: Token.make(Token.connection, generation, fd))
        readingPaused = readInterest == 0
        if closeWhenFlushed || http.phase == .closing { return beginClose(&io, kernel) }
        if http.phase == .awaiting {
            // Its answer (or the rest of a streamed one) resumes it; no timeout meanwhile.
            deadline = .max
            return .none
        }
        updateDeadline(io, phaseBefore: http.phase)
        // Pipelined requests waited for the output to drain.
        if input.readableBytes > 0 { return serve(&io, kernel, handler, fromScratch: false) }
        return .idle
    }

    /// Writes the scratch output (after anything already pending, then a pending file body) to the
    /// socket; keeps what the socket does not take and waits for EPOLLOUT. False when the
    /// connection was closed on an error.
    ///
    /// `closing`: the connection is closed (or shut down for writing) right after this, so the last
    /// bytes go with MSG_MORE and the FIN rides in their segment: one packet and one wake-up of the
    /// client fewer per `Connection: close` response.
    mutating func flush<K: Kernel>(_ io: inout WorkerIO, _ kernel: K, closing: Bool = false) -> Bool {
        var socketFull = writeBlocked
        if io.scratchOut.readableBytes > 0 {
            if output.readableBytes == 0 && !socketFull {
                // The common case: straight from the shared buffer, no copy.
                // MSG_MORE before a file body: the head rides in the body's first segment. Before
                // the end of a closing connection: the FIN rides in the last one.
                let fileFollows = (http.pendingFile?.count ?? 0) > 0
                let written = Self.writeSome(&io, kernel, fd, tls, io.scratchOut.readableView, more: fileFollows || (closing && http.pendingFile == nil))
                guard written >= 0 else {
                    io.scratchOut.clear()
                    _ = close(&io, kernel)
                    return false
                }
                if written < io.scratchOut.readableBytes {
                    output.write(UnsafeRawBufferPointer(rebasing: io.scratchOut.readableView[written...]))
                    socketFull = true
                }
            } else {
                output.write(io.scratchOut.readableView)
            }
            io.scratchOut.clear()
        }
        if !socketFull { guard writePending(&io, kernel) else { return false } }
        if hasPendingOutput {
            if !writeBlocked {
                writeBlocked = true
                deadline = io.now + io.settings.sendTimeout
                if registered { try? kernel.epollModify(fd, events: Epoll.writable, data: Token.make(Token.connection, generation, fd)) }
            }
        } else if output.isAllocated {
            output.releaseStorage()
        }
        return true
    }

    /// Writes the connection's own pending bytes, then its pending file body, as far as the socket
    /// takes them. False when the connection was closed on an error.
    mutating func writePending<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> Bool {
        if output.readableBytes > 0 {
            let written = Self.writeSome(&io, kernel, fd, tls, output.readableView)
            guard written >= 0 else {
                _ = close(&io, kernel)
                return false
            }
            output.moveReaderIndex(forwardBy: written)
        }
        if output.readableBytes == 0 && http.pendingFile != nil { return sendFileSome(&io, kernel) }
        return true
    }

    /// sendfile(2) of the pending file body as far as the socket takes it. False when the
    /// connection was closed on an error.
    mutating func sendFileSome<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> Bool {
        if let tls { return tlsSendFileSome(tls, &io, kernel) }
        guard var file = http.pendingFile else { return true }
        while file.count > 0 {
            let result: IOResult<Int>
            do { result = try kernel.sendfile(fd, file.fd, offset: &file.offset, count: min(file.count, 1 << 30)) } catch {
                _ = close(&io, kernel)
                return false
            }
            switch result {
            case .wouldBlock:
                http.pendingFile = file
                return true
            case .processed(0):
                return fileShrank(&io, kernel)
            case .processed(let n):
                file.count -= n
                io.stats.add(.bytesOut, UInt64(n))
            }
        }
        fileSent(file, kernel)
        return true
    }

    /// The file body is all out: its descriptor closed (unless an open-file cache owns it).
    mutating func fileSent<K: Kernel>(_ file: FileBody, _ kernel: K) {
        if file.ownsDescriptor { kernel.close(file.fd) }
        http.pendingFile = nil
    }

    /// The file shrank under us: the promised length cannot be sent; the connection ends.
    mutating func fileShrank<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> Bool {
        io.logger.warning("static file shrank while being sent; closing the connection")
        _ = close(&io, kernel)
        return false
    }

    /// write(2) as much as the socket takes. -1 when the connection failed.
    @inline(__always)
    static func writeSome<K: Kernel>(_ io: inout WorkerIO, _ kernel: K, _ fd: Int32, _ tls: TLSConnection?, _ bytes: UnsafeRawBufferPointer, more: Bool = false) -> Int {
        if let tls { return tlsWriteSome(&io, tls, bytes) }
        var offset = 0
        while offset < bytes.count {
            do {
                switch try kernel.write(fd, bytes.baseAddress! + offset, bytes.count - offset, more: more) {
                case .wouldBlock:
                    io.stats.add(.bytesOut, UInt64(offset))
                    return offset
                case .processed(let n): offset += n
                }
            } catch {
                return -1
            }
        }
        io.stats.add(.bytesOut, UInt64(offset))
        return offset
    }

    /// Closes after the response: at once when nothing unread is left, otherwise by shutting the
    /// write side and discarding input for a while (lingering close), so the client reads the
    /// response instead of a reset.
    mutating func beginClose<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> ConnectionAction {
        // Unread input (pipelined requests after a `Connection: close`, or a refused request's
        // body) would make close() send a reset that can destroy the response in flight: linger.
        // Otherwise close at once, as nginx does (no FIONREAD probe per connection).
        if input.readableBytes == 0 && !http.isMidRequest { return close(&io, kernel) }
        shutDownAndLinger(io, kernel)
        return .none
    }

    /// A header, body, send, keep-alive or linger deadline passed. `closeIdle`: an idle keep-alive
    /// connection is closed gracefully (the worker stops, or it was adopted over the cap) rather
    /// than at once (`.closeGracefully`).
    mutating func timedOut<K: Kernel>(_ io: inout WorkerIO, _ kernel: K, closeIdle: Bool) -> ConnectionAction {
        if lingering || writeBlocked { return close(&io, kernel) }
        if awaitingProxyHeader {
            // Nothing sent yet while the worker stops: closed gracefully, like an idle one.
            if closeIdle && input.readableBytes == 0 { return .closeGracefully }
            // No PROXY header within headerTimeout: not answered (it is not HTTP we were sent).
            io.stats.add(.proxyInvalid, 1)
            return close(&io, kernel)
        }
        if http.phase == .awaiting {
            // Never a 408 in place of (or inside) an answer being worked out or streamed.
            return close(&io, kernel)
        }
        if http.isMidRequest {
            let error: HTTPError = http.phase == .head ? .headerTimeout : .bodyTimeout
            http.abandon(with: error, output: io.scratchOut, context: io.context(socket: -1))
            io.counters.count(status: error.status)
            io.accessLog?.appendRejected(error, peer: peer, wall: io.wallSecond)
            guard flush(&io, kernel) else { return .closed }
            if hasPendingOutput {
                closeWhenFlushed = true
                return .none
            }
            return beginClose(&io, kernel)
        }
        return closeIdle ? .closeGracefully : close(&io, kernel)
    }

    /// Closes the socket (and a file being sent) and frees the buffers; the slot is free after.
    /// The one way a connection closes: the caller passes `.closed` on to the loop.
    mutating func close<K: Kernel>(_ io: inout WorkerIO, _ kernel: K) -> ConnectionAction {
        guard fd >= 0 else { return .none }  // closed before: counted then
        http.interruptBody("the connection closed")
        if let tls {
            // close_notify first (nothing after a failure or during the handshake): without it a
            // client's OpenSSL reads an unexpected EOF and will not resume the session.
            tls.closeNotify()
            tls.free()
            self.tls = nil
        }
        kernel.close(fd)
        if let file = http.pendingFile {
            if file.ownsDescriptor { kernel.close(file.fd) }
            http.pendingFile = nil
        }
        input.releaseStorage()
        output.releaseStorage()
        fd = -1
        return .closed
    }
}
