import ClusterConfig
import ClusterSystem
import ClusterTLS

/// The one validation that `--check-config`, start-up and reload all run, so that a config the
/// check passes is one the daemon starts with, and one it refuses on start a reload refuses too
/// (keeping the old generation): the pure checks of `ClusterConfiguration.decode` (syntax, types,
/// ranges, listen addresses that can be bound and do not overlap, routes that do not shadow
/// `/healthz` or the metrics path, no second `Server`/`Date`/... header), then what only this
/// machine can answer (below), then the app's own handler built once (its static roots readable).
public enum ConfigCheck {
    public static func validate<H>(_ config: ClusterConfiguration, makeHandler: (HandlerContext) throws -> H) throws {
        try checkEnvironment(config)
        _ = try makeHandler(HandlerContext(config: config))
    }

    /// What the workers will open, opened the way they will open it, as the user they run as (the
    /// workers run as the master's user): the access log for append, created if missing, like
    /// `nginx -t`. A missing directory, a read-only file system or a permission the workers lack
    /// is refused here rather than leaving a daemon that says "running" and logs nothing.
    public static func checkEnvironment(_ config: ClusterConfiguration) throws(ConfigError) {
        _ = try WorkerIdentity.resolve(config)
        // A stale socket is replaced at start; anything else there is someone's data, never deleted.
        if let problem = Socket.unixSocketPathProblem(config.controlSocket) {
            throw ConfigError(file: config.source, keyPath: "controlSocket", message: problem)
        }
        for (i, address) in config.listen.enumerated() {
            guard let path = address.unixPath else { continue }
            if let problem = Socket.unixSocketPathProblem(path) {
                throw ConfigError(file: config.source, keyPath: "listen[\(i)]", message: problem)
            }
            let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            if !directory.isEmpty && !FileIO.exists(directory) {
                throw ConfigError(file: config.source, keyPath: "listen[\(i)]", message: "the directory \(directory) of \(address) does not exist (under systemd, RuntimeDirectory=clusterd makes /run/clusterd)")
            }
            if case .name(let name)? = config.unixSocketFiles[address]?.group, Identity.group(named: name) == nil {
                throw ConfigError(file: config.source, keyPath: "listen[\(i)].group", message: "no group \"\(name)\" in the group database")
            }
        }
        try checkTLS(config)
        if let log = config.accessLog {
            do {
                // Non-blocking: a FIFO without a reader fails (ENXIO) instead of blocking the master.
                _ = Descriptor(taking: try FileIO.openAppending(log.path, nonBlocking: true))
            } catch {
                throw ConfigError(file: config.source, keyPath: "accessLog.path", message: "cannot open \(log.path) for appending: \(explain(error, path: log.path))")
            }
        }
    }

    /// Every TLS listener's certificates and keys, loaded as a worker loads them: readable (by the
    /// master's user, which the workers still are when they load them), a key that matches its
    /// certificate, valid now, ciphers OpenSSL knows.
    public static func checkTLS(_ config: ClusterConfiguration) throws(ConfigError) {
        for (i, address) in config.listen.enumerated() {
            guard let tls = config.tls[address] else { continue }
            _ = try TLSServer(tls, file: config.source, keyPath: "listen[\(i)].tls", now: Clock.wallSeconds(), kernelTLSAvailable: false)
        }
    }

    /// One line per TLS listener for `--check-config`: its certificates, serials and expiry.
    public static func describeTLS(_ config: ClusterConfiguration) throws(ConfigError) -> [String] {
        var lines: [String] = []
        for (i, address) in config.listen.enumerated() {
            guard let tls = config.tls[address] else { continue }
            let server = try TLSServer(tls, file: config.source, keyPath: "listen[\(i)].tls", now: Clock.wallSeconds(), kernelTLSAvailable: false)
            let pairs = server.certificates.map { "\($0.path) (\($0.subject), serial \($0.serial), until \(TLSCertificateInfo.date($0.notAfter)))" }
            lines.append("\(address) TLS \(tls.minVersion.rawValue)+: \(pairs.joined(separator: "; "))")
        }
        return lines
    }

    /// strerror plus what to check.
    static func explain(_ error: SystemError, path: String) -> String {
        var directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if directory.isEmpty { directory = "/" }
        switch error.code {
        case .noSuchFileOrDirectory where !FileIO.exists(directory): return "\(error.reason) (the directory \(directory) does not exist)"
        case .permissionDenied, .notPermitted: return "\(error.reason) (clusterd runs as uid \(Sys.uid); can it write to \(directory)?)"
        case .readOnlyFileSystem: return "\(error.reason) (under systemd's ProtectSystem=strict only the unit's LogsDirectory= and ReadWritePaths= are writable)"
        case .noSuchAddressOrDevice: return "\(error.reason) (a FIFO nobody reads)"
        default: return error.reason
        }
    }
}
