import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterTLS

/// A TLS connection's steps: the handshake, reads through SSL_read, writes through SSL_write, file
/// bodies through SSL_sendfile (kernel TLS) or read and encrypted in chunks. The plain connection's
/// steps (`readable`, `flush`, `writePending`, `sendFileSome`, `close`) branch here on `tls` only.
///
/// OpenSSL reads and writes the socket itself (a socket BIO, which kernel TLS needs), so these
/// calls bypass `Kernel` for the connection's bytes; the file reads, the epoll changes and the close
/// still go through it.
extension Connection {
    /// Drives the handshake. nil once it is complete (go on reading); otherwise what the step returns.
    mutating func continueHandshake<K: Kernel>(_ tls: TLSConnection, _ io: inout WorkerIO, _ kernel: K) -> ConnectionAction? {
        switch tls.handshake() {
        case .processed:
            tlsHandshaking = false
            io.stats.add(.tlsHandshakes, 1)
            if tls.resumed { io.stats.add(.tlsResumed, 1) }
            if tls.kernelSends { io.stats.add(.tlsKernelSend, 1) }
            if tlsWantsWrite { waitForTLS(write: false, kernel) }
            return nil
        case .wantRead:
            if tlsWantsWrite { waitForTLS(write: false, kernel) }
            return .nothingRead
        case .wantWrite:
            if !tlsWantsWrite { waitForTLS(write: true, kernel) }
            return ConnectionAction.none
        case .failed:
            // Not TLS, a version or cipher we do not offer, an unknown CA at the client, a reset.
            io.stats.add(.tlsHandshakeFailures, 1)
            return close(&io, kernel)
        case .plainHTTP:
            // As nginx does: a plain 400 that says why, then a lingering close (the request's
            // unread rest would otherwise turn the close into a reset that destroys the answer).
            io.stats.add(.tlsHandshakeFailures, 1)
            io.counters.count(status: 400)
            Self.plainHTTPAnswer.withUnsafeBytes { _ = try? kernel.write(fd, $0.baseAddress!, $0.count, more: false) }
            tlsHandshaking = false
            if tlsWantsWrite { waitForTLS(write: false, kernel) }
            self.tls = nil
            tls.free()
            shutDownAndLinger(io, kernel)
            return ConnectionAction.none
        }
    }

    static let plainHTTPAnswer: [UInt8] = Array(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 53\r\nConnection: close\r\n\r\nThis port speaks HTTPS: send the request to https://\n".utf8)

    /// Switches the epoll interest between readable and writable while the handshake waits.
    mutating func waitForTLS<K: Kernel>(write: Bool, _ kernel: K) {
        tlsWantsWrite = write
        if registered {
            try? kernel.epollModify(fd, events: write ? Epoll.writable : readInterest, data: Token.make(Token.connection, generation, fd))
        }
    }

    /// SSL_read into `buffer` (at least 16 KiB of room, one whole record, so OpenSSL keeps no
    /// decrypted bytes back that epoll would not report), then what it still holds while there is room.
    mutating func tlsReceive(_ tls: TLSConnection, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> IOResult<Int>? {
        var total = 0
        repeat {
            switch tls.read(buffer + total, count - total) {
            case .processed(0):
                return .processed(total)  // closed: what came before it first, then EOF on the next read
            case .processed(let n):
                total += n
            case .wantRead, .wantWrite:
                return total > 0 ? .processed(total) : .wouldBlock
            case .failed, .plainHTTP:
                return total > 0 ? .processed(total) : nil
            }
        } while total < count && tls.hasPending
        return .processed(total)
    }

    /// SSL_write of as much as the socket takes (like `writeSome`). -1 when the connection failed.
    static func tlsWriteSome(_ io: inout WorkerIO, _ tls: TLSConnection, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count {
            switch tls.write(bytes.baseAddress! + offset, bytes.count - offset) {
            case .processed(let n): offset += n
            case .wantWrite, .wantRead:
                io.stats.add(.bytesOut, UInt64(offset))
                return offset
            case .failed, .plainHTTP:
                return -1
            }
        }
        io.stats.add(.bytesOut, UInt64(offset))
        return offset
    }

    /// The pending file body over TLS: SSL_sendfile when the kernel encrypts, else 64 KiB at a
    /// time read into the connection's output and written from there (a write that must wait is
    /// retried with the same bytes, as OpenSSL requires). False when the connection was closed.
    mutating func tlsSendFileSome<K: Kernel>(_ tls: TLSConnection, _ io: inout WorkerIO, _ kernel: K) -> Bool {
        guard var file = http.pendingFile else { return true }
        let kernelSends = tls.kernelSends
        while file.count > 0 || output.readableBytes > 0 {
            if kernelSends {
                switch tls.sendfile(file.fd, offset: file.offset, count: min(file.count, 1 << 30)) {
                case .processed(0):
                    return fileShrank(&io, kernel)
                case .processed(let n):
                    file.offset += n
                    file.count -= n
                    io.stats.add(.bytesOut, UInt64(n))
                    continue
                case .wantWrite, .wantRead:
                    http.pendingFile = file
                    return true
                case .failed, .plainHTTP:
                    _ = close(&io, kernel)
                    return false
                }
            }
            if output.readableBytes == 0 {
                let chunk = min(file.count, 64 * 1024)
                output.reserveWritable(chunk)
                let n: Int
                do { n = try kernel.readFile(file.fd, output.writePointer, chunk, offset: file.offset) } catch {
                    io.logger.warning("static file: \(error); closing the connection")
                    _ = close(&io, kernel)
                    return false
                }
                guard n > 0 else { return fileShrank(&io, kernel) }
                output.moveWriterIndex(forwardBy: n)
                file.offset += n
                file.count -= n
            }
            let written = Self.tlsWriteSome(&io, tls, output.readableView)
            guard written >= 0 else {
                _ = close(&io, kernel)
                return false
            }
            output.moveReaderIndex(forwardBy: written)
            if output.readableBytes > 0 {
                http.pendingFile = file
                return true
            }
        }
        fileSent(file, kernel)
        return true
    }
}
