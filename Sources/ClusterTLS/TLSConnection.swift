import CTLS

/// One server-side TLS connection (OpenSSL's `SSL`) on a socket the worker owns: a pointer, no
/// Swift allocation. OpenSSL reads and writes the socket itself (non-blocking); each step says
/// what it waits for. The worker frees it (`free`) when the connection closes.
public struct TLSConnection: Equatable {
    let ssl: UnsafeMutableRawPointer

    init(_ ssl: UnsafeMutableRawPointer) { self.ssl = ssl }

    /// What a step did.
    public enum Step: Equatable {
        /// Bytes read or written (a read of 0: the peer closed, with close_notify or a bare EOF).
        case processed(Int)
        /// Call again once the socket is readable.
        case wantRead
        /// Call again once the socket is writable (a write: with the same bytes, or more after them).
        case wantWrite
        /// The connection failed (a protocol error, a reset, a handshake refused): close it.
        case failed
        /// `handshake` only: the client sent a plain HTTP request instead of a ClientHello.
        case plainHTTP
    }

    static func step(_ r: Int) -> Step {
        if r >= 0 { return .processed(r) }
        switch r {
        case Int(CTLS_WANT_READ): return .wantRead
        case Int(CTLS_WANT_WRITE): return .wantWrite
        case Int(CTLS_PLAIN_HTTP): return .plainHTTP
        default: return .failed
        }
    }

    /// SSL_do_handshake: `.processed(0)` once complete.
    public func handshake() -> Step { Self.step(Int(ctls_handshake(ssl))) }

    /// SSL_read of up to `count` bytes.
    public func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Step {
        Self.step(Int(ctls_read(ssl, buffer, Int32(clamping: count))))
    }

    /// SSL_write of up to `count` bytes (partial writes on: like write(2)).
    public func write(_ bytes: UnsafeRawPointer, _ count: Int) -> Step {
        Self.step(Int(ctls_write(ssl, bytes, Int32(clamping: count))))
    }

    /// SSL_sendfile: only when `kernelSends`.
    public func sendfile(_ fd: Int32, offset: Int, count: Int) -> Step {
        Self.step(ctls_sendfile(ssl, fd, offset, count))
    }

    /// Decrypted bytes OpenSSL holds that no read took yet.
    public var hasPending: Bool { ctls_has_pending(ssl) != 0 }

    /// The kernel encrypts what is sent (kTLS): file bodies go by SSL_sendfile.
    public var kernelSends: Bool { ctls_kernel_offload(ssl) & 1 != 0 }
    public var kernelReceives: Bool { ctls_kernel_offload(ssl) & 2 != 0 }
    /// Resumed from a session ticket (no full handshake).
    public var resumed: Bool { ctls_session_reused(ssl) != 0 }
    /// "TLSv1.3", "TLSv1.2".
    public var version: String { String(cString: ctls_version(ssl)) }

    /// ALPN selected `http/1.1`.
    public var negotiatedHTTP11: Bool { ctls_alpn_is_http11(ssl) != 0 }

    /// The peer's certificate serial in hex (a client's view of the server), "" without one.
    public var peerSerial: String {
        var serial = [CChar](repeating: 0, count: 128)
        ctls_peer_serial(ssl, &serial, serial.count)
        return TLSServer.text(serial)
    }

    /// A client connection on `fd` (no verification; for tests and tools): the same steps drive it.
    public static func client(fd: Int32, serverName: String?) -> TLSConnection? {
        ctls_client_new(fd, serverName).map(TLSConnection.init)
    }

    /// Sends close_notify (one try; nothing after a failure).
    public func closeNotify() { ctls_close_notify(ssl) }

    /// SSL_free: the connection is gone (the socket is the worker's to close).
    public func free() { ctls_connection_free(ssl) }
}

