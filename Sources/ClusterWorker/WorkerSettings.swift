import ClusterConfig
import ClusterHTTP

/// What one worker process needs to know, derived from the config. The values that come from the
/// config have no defaults of their own here: `init()` takes `ClusterConfiguration`'s.
public struct WorkerSettings: Sendable {
    public var limits = HTTPLimits()
    /// Milliseconds; 0 disables keep-alive.
    public var keepAliveTimeout: Int64
    public var headerTimeout: Int64
    public var bodyTimeout: Int64
    /// Time a blocked write may make no progress before the connection is dropped: not a config
    /// key, `max(bodyTimeout, 10 s)` (Docs/configuration.md, `http`).
    public var sendTimeout: Int64
    /// Time spent discarding input after an error response before closing (avoids a reset that
    /// would destroy the response on the client's side).
    public var lingerTimeout: Int64 = 2_000
    public var maxConnections: Int
    /// When the daemon stops, how long an idle keep-alive connection stays open: a request that
    /// arrives meanwhile is answered with `Connection: close`; then it is closed gracefully (FIN,
    /// then reading until the client closes or `lingerTimeout`).
    public var drainIdleGrace: Int64 = 1_000
    /// Most connections taken at once when a draining worker empties its listeners' queues (in
    /// normal running a worker accepts one connection per readiness report).
    public var acceptBatch = 64
    /// Back-off after EMFILE/ENFILE on accept.
    public var acceptBackoff: Int64 = 100
    /// The access log, nil when off.
    public var accessLog: ClusterConfiguration.AccessLog? = nil
    /// Milliseconds without a request before idle memory is given back; 0: never.
    public var releaseMemoryAfterIdle: Int64
    /// Longest poll for the next event before sleeping, in µs (`BusyPollPolicy`); 0: never.
    public var busyPollMicroseconds: Int
    /// For each listener, in `listen` order (the order the worker inherits them in): whether its
    /// connections begin with a PROXY protocol header.
    public var proxyProtocol: [Bool]
    /// `trustedProxies`: the peers a PROXY header or `X-Forwarded-For` is believed from.
    public var trustedProxies: TrustedNetworks

    public init() { self.init(ClusterConfiguration()) }

    public init(_ config: ClusterConfiguration) {
        let http = config.http
        limits.maxHeaderBytes = http.maxHeaderBytes
        limits.maxHeaderCount = http.maxHeaderCount
        limits.maxBodyBytes = http.maxBodyBytes
        limits.maxKeepAliveRequests = http.maxKeepAliveRequests
        limits.keepAlive = http.keepAliveTimeout > 0
        limits.maxRequestLine = min(8192, http.maxHeaderBytes)
        keepAliveTimeout = Int64(http.keepAliveTimeout * 1000)
        headerTimeout = Int64(http.headerTimeout * 1000)
        bodyTimeout = Int64(http.bodyTimeout * 1000)
        sendTimeout = max(bodyTimeout, 10_000)
        maxConnections = http.maxConnections
        accessLog = config.accessLog
        releaseMemoryAfterIdle = Int64(config.releaseMemoryAfterIdle * 1000)
        busyPollMicroseconds = config.busyPoll
        proxyProtocol = config.listen.map { config.proxyProtocol.contains($0) }
        trustedProxies = TrustedNetworks(config.trustedProxies.map { ($0.address.bytes, $0.prefixLength) })
    }
}
