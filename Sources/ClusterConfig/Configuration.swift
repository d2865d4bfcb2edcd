// The fuzzer (Fuzz/config) compiles ClusterJSON's and ClusterConfig's sources as one module.
#if canImport(ClusterJSON)
import ClusterJSON
#endif

/// The daemon's whole configuration: an immutable value, validated when decoded. Every field has a
/// default except `listen`; Docs/configuration.md lists them all.
public struct ClusterConfiguration: Equatable, Sendable {
    public enum WorkerCount: Equatable, Sendable, CustomStringConvertible {
        /// One worker per online CPU.
        case auto
        case fixed(Int)

        /// - Parameter cpus: how many CPUs the process may run on (its affinity mask).
        public func resolved(cpus: Int) -> Int {
            switch self {
            case .auto: return max(1, cpus)
            case .fixed(let n): return n
            }
        }

        public var description: String {
            switch self {
            case .auto: return "auto"
            case .fixed(let n): return String(n)
            }
        }
    }

    /// The file this config was read from (for messages).
    public var source: String = ""
    /// Number of worker processes: a number or `"auto"` (the CPUs the daemon may run on: its
    /// affinity mask, so a container's cpuset or `taskset` counts). Default `auto`.
    public var workers: WorkerCount = .auto
    /// Upper bound for `workers` and for `clusterctl scale`. Default 256.
    public var maxWorkers: Int = 256
    /// Addresses to serve on (`"0.0.0.0:8080"`, `"[::]:8080"`, `"unix:/run/clusterd/http.sock"`).
    /// Required, at least one.
    public var listen: [ListenAddress] = []
    /// The file mode and group of each Unix-socket listener in `listen` (`{"address": "unix:...",
    /// "mode": "0660", "group": "www-data"}`); one absent here gets `UnixSocketFile()`'s.
    public var unixSocketFiles: [ListenAddress: UnixSocketFile] = [:]
    /// Listeners whose connections must begin with a PROXY protocol header (v1 or v2) from one of
    /// `trustedProxies`: `{"address": "...", "proxyProtocol": true}` in `listen`.
    public var proxyProtocol: Set<ListenAddress> = []
    /// Listeners that speak HTTPS: `{"address": "0.0.0.0:8443", "tls": {...}}` in `listen`.
    public var tls: [ListenAddress: TLS] = [:]
    /// Balancers whose PROXY headers are believed (and, later, `X-Forwarded-For`). Default none.
    public var trustedProxies: [IPNetwork] = []
    /// Path of the control socket. Default `/run/clusterd/control.sock`.
    public var controlSocket: String = "/run/clusterd/control.sock"
    /// Who the workers run as (`user`, `group`): a name from the user database or a number. The
    /// master keeps its own user (it binds the listeners and owns the control socket); the workers
    /// switch after inheriting the listeners, before they read a byte from a client. Nil: the
    /// master's user.
    public var user: Principal? = nil
    public var group: Principal? = nil

    /// A user or group by name or by number.
    public enum Principal: Equatable, Hashable, Sendable, CustomStringConvertible {
        case name(String)
        case id(Int)

        public var description: String {
            switch self {
            case .name(let n): return "\"\(n)\""
            case .id(let i): return String(i)
            }
        }
    }

    /// Group (numeric gid) whose members may also use the control socket; nil: owner and root only.
    public var controlGroup: Int? = nil
    /// Seconds a retiring worker may take to finish its connections before it is killed. Default 30.
    public var drainTimeout: Double = 30
    /// Seconds a graceful stop keeps accepting and serving (every response with `Connection: close`,
    /// `/healthz` answering 503 `draining`) before it refuses new connections and drains: the time a
    /// load balancer or Kubernetes needs to stop sending new connections here. Default 0.
    public var shutdownDelay: Double = 0
    /// Seconds a worker may go without a heartbeat (a turn of its loop) before the master kills and
    /// replaces it. Default 10.
    public var heartbeatTimeout: Double = 10
    /// Seconds without a request after which a worker gives back memory it does not need: the clean
    /// pages of code and read-only data it mapped while starting or serving, and free heap pages.
    /// 0: never. Default 10.
    public var releaseMemoryAfterIdle: Double = 10
    /// Microseconds a worker that just served something may poll for its next event before it
    /// sleeps, while such polls usually find one (a busy worker); 0: never. Default 20.
    public var busyPoll: Int = 20
    /// HTTP engine limits and timeouts.
    public var http = HTTPSettings()
    /// Fixed responses by exact path.
    public var routes: [Route] = []
    /// Static file roots by path prefix.
    public var staticRoots: [StaticRoot] = []
    /// The access log; nil when off.
    public var accessLog: AccessLog? = nil
    /// The Prometheus endpoint (the whole cluster's numbers, from any worker), or nil when off.
    /// Default: `/metrics`, for loopback clients only.
    public var metrics: Metrics? = Metrics()

    /// Where `/metrics` is served and to whom. It shows worker pids, generations and restart
    /// counts, so like nginx's `stub_status` behind `allow`/`deny`, it answers only clients in
    /// `allow` (others get 403), on any listener.
    public struct Metrics: Equatable, Sendable {
        /// Request path. Default `/metrics`.
        public var path: String = "/metrics"
        /// Client networks that may read it. Default loopback: `127.0.0.0/8`, `::1/128`.
        public var allow: [IPNetwork] = Metrics.loopback

        public static let loopback: [IPNetwork] = [
            IPNetwork(address: IPAddress(validated: [127, 0, 0, 0]), prefixLength: 8)!,
            IPNetwork(address: IPAddress(validated: [UInt8](repeating: 0, count: 15) + [1]), prefixLength: 128)!,
        ]

        public init(path: String = "/metrics", allow: [IPNetwork] = Metrics.loopback) {
            self.path = path
            self.allow = allow
        }

        /// Whether a client at `peer` may read the metrics.
        public func allows(_ peer: IPAddress) -> Bool { allow.contains { $0.contains(peer) } }
    }

    /// The stock app's health check path; no route may take it (a route would silently replace it).
    public static let healthPath = "/healthz"
    /// Served by clusterd itself: 200 `ready` when the instance is ready for traffic, else 503.
    public static let readinessPath = "/readyz"
    /// Response headers the server writes itself; a route may not add a second one.
    public static let serverHeaders: Set<String> = ["content-length", "transfer-encoding", "connection", "date", "content-type", "server", "keep-alive"]
    /// Worker CPU pinning: off, `auto` (worker slot i on the i-th CPU the daemon may run on, modulo
    /// their number), or a list of CPUs
    /// (slot i on list[i mod count]).
    public var cpuAffinity: CPUAffinity = .off
    /// How the reuseport group's BPF program spreads new connections over the active workers:
    /// `random` (default) or `cpu` (by the CPU that received the SYN; pair with cpuAffinity).
    public var reusePortSteering: Steering = .random
    /// TCP_DEFER_ACCEPT on the listeners (nginx's `listen … deferred`): a connection is accepted
    /// only once its first data has arrived, which saves a wake-up and an epoll registration per
    /// connection. A client that completed its handshake but has sent nothing is in no accept
    /// queue yet, so a listener taken out of use (scale-down, a reload that drops an address)
    /// stays open 2.5 s, until the kernel has made such clients connections, which the master
    /// hands on. Default false.
    public var deferAccept = false

    public enum CPUAffinity: Equatable, Sendable {
        case off
        case auto
        case list([Int])

        /// The CPU for a worker slot, or nil when not pinned. `allowed`: the CPUs the process may
        /// run on, ascending; `auto` takes the slot's place in that list.
        public func cpu(forSlot slot: Int, allowed: [Int]) -> Int? {
            switch self {
            case .off: return nil
            case .auto: return allowed.isEmpty ? nil : allowed[slot % allowed.count]
            case .list(let cpus): return cpus.isEmpty ? nil : cpus[slot % cpus.count]
            }
        }
    }

    public enum Steering: String, Equatable, Sendable { case random, cpu }

    /// Extra or overriding Content-Types by file extension (lowercase, without the dot).
    public var mimeTypes: [String: String] = [:]
    /// The `app` section: the application's own settings (a library user's handler reads them
    /// from `HandlerContext.app`), kept as JSON; clusterd does not look inside. Nil when absent.
    public var app: JSON? = nil

    public init() {}

    public struct HTTPSettings: Equatable, Sendable {
        /// Seconds an idle keep-alive connection is kept open. 0 disables keep-alive. Default 75.
        public var keepAliveTimeout: Double = 75
        /// Seconds a client has to send a complete request head once it started one. Default 10.
        public var headerTimeout: Double = 10
        /// Seconds a client has to send a request body, measured between reads. Default 30.
        public var bodyTimeout: Double = 30
        /// Largest request head (request line plus headers) in bytes; larger → 431. Default 16384.
        public var maxHeaderBytes: Int = 16384
        /// Most header fields in a request; more → 431. Default 100.
        public var maxHeaderCount: Int = 100
        /// Largest request body in bytes; larger → 413. Default 1 MiB.
        public var maxBodyBytes: Int = 1_048_576
        /// Most open connections per worker; past it new connections are closed at once. Default 10000.
        public var maxConnections: Int = 10_000
        /// Most requests served on one keep-alive connection; 0 for unlimited. Default 0.
        public var maxKeepAliveRequests: Int = 0

        public init() {}
    }

    public struct Route: Equatable, Sendable {
        /// Exact request path (no query) this route answers, e.g. `/`.
        public var path: String
        /// HTTP status code. Default 200.
        public var status: Int = 200
        /// Content-Type of the body. Default `text/plain`.
        public var contentType: String = "text/plain"
        /// Response body. Default empty.
        public var body: String = ""
        /// Extra response headers, in order.
        public var headers: [(name: String, value: String)] = []

        public init(path: String, status: Int = 200, contentType: String = "text/plain", body: String = "", headers: [(name: String, value: String)] = []) {
            self.path = path
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }

        public static func == (a: Route, b: Route) -> Bool {
            a.path == b.path && a.status == b.status && a.contentType == b.contentType && a.body == b.body
                && a.headers.count == b.headers.count && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        }
    }

    public struct StaticRoot: Equatable, Sendable {
        /// URL path prefix, starting and ending with `/`.
        public var prefix: String
        /// Directory served under the prefix.
        public var root: String
        /// File served for a directory. Default `index.html`.
        public var index: String = "index.html"
        /// Follow symlinks that point outside the root. Default false (the kernel refuses them).
        public var allowSymlinksOutside = false
        /// Serve hidden names (a path segment starting with `.`: `.env`, `.git/config`). Default
        /// false: they answer 404. `/.well-known/` is served either way.
        public var allowHidden = false
        /// Files each worker keeps open for this root (the open-file cache, each entry one
        /// descriptor); 0 turns the cache off. Default 1000.
        public var openFileCache = 1000

        public init(prefix: String, root: String, index: String = "index.html", allowSymlinksOutside: Bool = false, allowHidden: Bool = false) {
            self.prefix = prefix
            self.root = root
            self.index = index
            self.allowSymlinksOutside = allowSymlinksOutside
            self.allowHidden = allowHidden
        }
    }

    public struct AccessLog: Equatable, Sendable {
        public enum Format: String, Equatable, Sendable { case combined, json }
        public var path: String
        public var format: Format = .combined

        public init(path: String, format: Format = .combined) {
            self.path = path
            self.format = format
        }
    }
}

/// Where a listener listens: a numeric address and port (`0.0.0.0:8080`, `127.0.0.1:80`,
/// `[::]:8080`, `[::1]:8080`), or a Unix stream socket's path (`unix:/run/clusterd/http.sock`).
public enum ListenAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// TCP on a numeric IPv4 or IPv6 address: one SO_REUSEPORT listener per worker slot.
    case inet(host: String, port: UInt16)
    /// A Unix stream socket at an absolute path: one listener, shared by every worker.
    case unix(path: String)

    /// The text that names a Unix-socket listener in `listen`.
    public static let unixPrefix = "unix:"
    /// The most bytes a Unix socket path may have (sun_path's 108, less the terminating NUL).
    public static let maxUnixPathBytes = 107

    public init(host: String, port: UInt16) { self = .inet(host: host, port: port) }

    /// The numeric host; nil for a Unix socket.
    public var host: String? {
        if case .inet(let host, _) = self { return host }
        return nil
    }

    /// The TCP port; nil for a Unix socket.
    public var port: UInt16? {
        if case .inet(_, let port) = self { return port }
        return nil
    }

    /// The socket file's path; nil for TCP.
    public var unixPath: String? {
        if case .unix(let path) = self { return path }
        return nil
    }

    public var isUnix: Bool { unixPath != nil }
    public var isIPv6: Bool { host?.contains(":") ?? false }

    public var description: String {
        switch self {
        case .inet(let host, let port): return isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return Self.unixPrefix + path
        }
    }

    /// The parsed address (nil for a Unix socket, or a value built by hand from a bad host).
    public var ip: IPAddress? { host.flatMap(IPAddress.parse) }

    /// Parses the text form; the reason on failure. Accepts exactly what the master can bind:
    /// `inet_pton(3)` syntax, and no IPv4-mapped IPv6 (the IPv6 listeners are v6-only); or
    /// `unix:` and an absolute path (`parseUnixPath`).
    public static func parse(_ text: String) -> Result<ListenAddress, ListenAddressError> {
        if text.hasPrefix(unixPrefix) { return parseUnixPath(String(text.dropFirst(unixPrefix.count))).map { .unix(path: $0) } }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.init("missing ']' in IPv6 address")) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(.init("expected ':PORT' after ']'")) }
            portText = rest.dropFirst()
            if host.contains("%") { return .failure(.init("a zone ('%\(host.split(separator: "%", maxSplits: 1).last ?? "")') is not supported: listen on the address itself")) }
            guard let ip = IPAddress.parseIPv6(host) else { return .failure(.init("'\(host)' is not a numeric IPv6 address")) }
            if ip.isIPv4Mapped { return .failure(.init("'\(host)' is an IPv4-mapped address: write it as \(ip.unmapped):PORT")) }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.init("expected HOST:PORT, e.g. 0.0.0.0:8080, or unix:/PATH")) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            guard IPAddress.parseIPv4(host) != nil else {
                return .failure(.init("'\(host)' is not a numeric IPv4 address (write IPv6 as [::]:PORT, a Unix socket as unix:/PATH)"))
            }
        }
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText), (1...65535).contains(port) else {
            let shown = portText.count <= 12 && portText.allSatisfy({ $0.isASCII && $0.isNumber }) ? ", got \(portText)" : ""
            return .failure(.init("the port must be 1...65535\(shown)"))
        }
        return .success(ListenAddress(host: String(host), port: UInt16(port)))
    }

    /// A Unix socket path as the master can bind it and as two listeners can be compared: absolute,
    /// at most `maxUnixPathBytes`, in its plain form (no empty, `.` or `..` component, no trailing
    /// `/`: two spellings of one file would pass the duplicate check), without control characters.
    public static func parseUnixPath(_ path: String) -> Result<String, ListenAddressError> {
        guard path.hasPrefix("/") else { return .failure(.init("a Unix socket path must be absolute, e.g. unix:/run/clusterd/http.sock")) }
        guard path.utf8.count <= maxUnixPathBytes else {
            return .failure(.init("a Unix socket path may have at most \(maxUnixPathBytes) bytes (sun_path), this one has \(path.utf8.count)"))
        }
        guard path.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }) else { return .failure(.init("a Unix socket path may not contain control characters")) }
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            return .failure(.init("write the path plainly: no '//', '/./', '/../' or trailing '/'"))
        }
        return .success(path)
    }

    /// Whether a listener on `self` and one on `other` would take the same connections: the same
    /// socket path; or the same port and family, and the same address or one of them the wildcard
    /// (`0.0.0.0`, `[::]`). `0.0.0.0` and `[::]` do not overlap: the IPv6 listeners are IPV6_V6ONLY.
    public func overlaps(_ other: ListenAddress) -> Bool {
        if let path = unixPath { return path == other.unixPath }
        guard port == other.port, let a = ip, let b = other.ip, a.isIPv6 == b.isIPv6 else { return false }
        return a == b || a.isUnspecified || b.isUnspecified
    }
}

/// A listener's TLS (`listen[].tls`): its certificates, the protocol versions and ciphers it offers.
/// Loaded and checked (key matches, dates, readable) by `--check-config`, at start and at every
/// reload: a reload is how a renewed certificate is put into service.
public struct TLS: Equatable, Hashable, Sendable {
    /// A certificate chain (PEM, the leaf first, then its intermediates) and its private key (PEM,
    /// unencrypted).
    public struct Pair: Equatable, Hashable, Sendable {
        public var certificate: String
        public var key: String

        public init(certificate: String, key: String) {
            self.certificate = certificate
            self.key = key
        }
    }

    public enum Version: String, Equatable, Hashable, Sendable {
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    /// The first is the default (served when the client sends no SNI name, or one no other pair's
    /// certificate covers); the others are chosen by SNI against their certificates' names.
    public var pairs: [Pair]
    /// The oldest version offered. Default "1.2" (1.3 is always offered, and preferred).
    public var minVersion: Version = .tls12
    /// TLS 1.2 cipher list in OpenSSL syntax; nil: OpenSSL's defaults (`DEFAULT`: AEAD and
    /// forward-secret suites first).
    public var ciphers: String? = nil
    /// TLS 1.3 cipher suites (`TLS_AES_128_GCM_SHA256:...`); nil: OpenSSL's defaults.
    public var ciphersuites: String? = nil
    /// Ask the kernel to do the record layer (kTLS) where it can. Default true.
    public var kernelTLS: Bool = true

    public init(pairs: [Pair]) { self.pairs = pairs }
}

/// How a Unix-socket listener's file is made: its permission bits and its group (nginx makes its
/// `listen unix:` sockets 0666; so do we by default). The owner is the master's user.
public struct UnixSocketFile: Equatable, Hashable, Sendable {
    /// Permission bits (0...0o777). Connecting needs write permission on the file. Default 0o666.
    public var mode: UInt16 = 0o666
    /// The file's group (chown), or nil: the master's group.
    public var group: ClusterConfiguration.Principal? = nil

    public init(mode: UInt16 = 0o666, group: ClusterConfiguration.Principal? = nil) {
        self.mode = mode
        self.group = group
    }
}

public struct ListenAddressError: Error, Equatable {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
}
