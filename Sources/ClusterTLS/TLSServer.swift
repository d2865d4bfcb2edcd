import CTLS
import ClusterConfig
import ClusterSystem

/// One TLS listener's OpenSSL contexts (OpenSSL 3, `SSL_CTX`): the default certificate and those
/// chosen by SNI, the versions and ciphers it offers, ALPN `http/1.1`, session tickets under the
/// master's keys (`TicketKeys`). Built from `listen[].tls` by reading and checking every pair
/// (`load`): `--check-config`, the master's reload validation and each worker at start build it the
/// same way, so what the check passes is what the workers serve.
public final class TLSServer: @unchecked Sendable {  // immutable after init; OpenSSL contexts are thread-safe to share
    let raw: OpaquePointer
    /// The leaf certificate of each pair, in `pairs` order.
    public let certificates: [TLSCertificateInfo]
    /// Kernel TLS was asked for (`kernelTLS`) and this kernel has the `tls` module.
    public let kernelTLS: Bool

    /// Reads every pair's files (regular files, at most 1 MiB), loads them, checks that each key
    /// matches its certificate and that each certificate is valid at `now` (Unix seconds).
    /// - Throws: a `ConfigError` at `keyPath` (e.g. `listen[1].tls`) naming the file and what is wrong.
    public init(_ tls: TLS, file: String, keyPath: String, now: Int64, kernelTLSAvailable: Bool) throws(ConfigError) {
        func fail(_ path: String, _ message: String) -> ConfigError { ConfigError(file: file, keyPath: path, message: message) }
        var error = [CChar](repeating: 0, count: 512)
        let wantKTLS = tls.kernelTLS && kernelTLSAvailable
        let version = tls.minVersion == .tls13 ? Int32(CTLS_TLS1_3) : Int32(CTLS_TLS1_2)
        guard let server = ctls_server_new(version, tls.ciphers, tls.ciphersuites, wantKTLS ? 1 : 0, &error, error.count) else {
            throw fail(keyPath, String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        raw = server
        kernelTLS = wantKTLS
        var infos: [TLSCertificateInfo] = []
        for (i, pair) in tls.pairs.enumerated() {
            let pairPath = i == 0 ? keyPath : "\(keyPath).certificates[\(i - 1)]"
            let certificate: [UInt8], key: [UInt8]
            do { certificate = try FileIO.readRegularFile(path: pair.certificate, limit: 1 << 20) } catch {
                ctls_server_free(server)
                throw fail("\(pairPath).certificate", "cannot read \(pair.certificate): \(Self.explain(error))")
            }
            do { key = try FileIO.readRegularFile(path: pair.key, limit: 1 << 20) } catch {
                ctls_server_free(server)
                throw fail("\(pairPath).key", "cannot read \(pair.key): \(Self.explain(error))")
            }
            let added = certificate.withUnsafeBufferPointer { c in
                key.withUnsafeBufferPointer { k in
                    c.withMemoryRebound(to: CChar.self) { c in
                        k.withMemoryRebound(to: CChar.self) { k in
                            ctls_server_add(server, c.baseAddress, c.count, k.baseAddress, k.count, &error, error.count)
                        }
                    }
                }
            }
            guard added == 0 else {
                ctls_server_free(server)
                throw fail(pairPath, "\(pair.certificate) with \(pair.key): \(Self.text(error))")
            }
            var notBefore: Int64 = 0, notAfter: Int64 = 0
            var serial = [CChar](repeating: 0, count: 128), subject = [CChar](repeating: 0, count: 256)
            _ = ctls_server_leaf(server, Int32(i), &notBefore, &notAfter, &serial, serial.count, &subject, subject.count)
            let info = TLSCertificateInfo(path: pair.certificate, subject: Self.text(subject), serial: Self.text(serial),
                                          notBefore: notBefore, notAfter: notAfter)
            if now < notBefore {
                ctls_server_free(server)
                throw fail("\(pairPath).certificate", "\(pair.certificate) is not valid yet: notBefore \(HTTPDateText.format(notBefore)) (\(info.subject))")
            }
            if now >= notAfter {
                ctls_server_free(server)
                throw fail("\(pairPath).certificate", "\(pair.certificate) has expired: notAfter \(HTTPDateText.format(notAfter)) (\(info.subject))")
            }
            infos.append(info)
        }
        certificates = infos
    }

    deinit { ctls_server_free(raw) }

    /// Whether this kernel offers kernel TLS (the `tls` upper-layer protocol is available: built in
    /// or its module loaded; /proc/sys/net/ipv4/tcp_available_ulp lists it).
    public static func kernelTLSAvailable() -> Bool {
        guard let bytes = try? FileIO.readAll(path: "/proc/sys/net/ipv4/tcp_available_ulp", limit: 4096) else { return false }
        return String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("tls")
    }

    /// A server-side TLS connection on the accepted, non-blocking socket `fd`; nil when OpenSSL
    /// cannot make one (out of memory).
    public func connection(fd: Int32) -> TLSConnection? {
        ctls_connection_new(raw, fd).map(TLSConnection.init)
    }

    static func text(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func explain(_ error: SystemError) -> String {
        switch error.code {
        case .permissionDenied: return "\(error.reason) (clusterd runs as uid \(Sys.uid); the master and each worker read it before the worker changes user)"
        default: return error.reason
        }
    }

    /// Installs the session-ticket keys (the master's, `MasterToWorker.ticketKeys`: 80 bytes each,
    /// the current first) for every TLS listener of this process.
    public static func installTicketKeys(_ keys: [UInt8]) {
        keys.withUnsafeBufferPointer { ctls_set_ticket_keys($0.baseAddress, $0.count / 80) }
    }
}

/// What a certificate says of itself, for messages and the log.
public struct TLSCertificateInfo: Equatable, Sendable {
    public var path: String
    public var subject: String
    /// Hexadecimal, as `openssl x509 -serial` prints it.
    public var serial: String
    /// Unix seconds.
    public var notBefore: Int64
    public var notAfter: Int64

    /// `2026-11-29 08:00:00 UTC`.
    public static func date(_ seconds: Int64) -> String { HTTPDateText.format(seconds) }
}

/// Dates in messages: `2026-11-29 08:00:00 UTC`.
enum HTTPDateText {
    static func format(_ seconds: Int64) -> String {
        // Civil from days (Howard Hinnant's algorithm): no Foundation below the config line.
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let rest = seconds - days * 86400
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(y)-\(two(m))-\(two(d)) \(two(rest / 3600)):\(two(rest / 60 % 60)):\(two(rest % 60)) UTC"
    }
}
