import ClusterControl
import ClusterHTTP
import ClusterSystem
import Logging

/// What a connection's steps (`Connection+Reading`, `Connection+Writing`) work with besides the
/// connection itself: the kernel, the buffers all connections share, the HTTP engine, the clock and
/// the counters. Kept apart from the connection table so that a step can run on a connection in
/// place in the table (`table[fd].readable(&io)`) while it uses these.
///
/// Not generic (the kernel and the handler are passed to the steps beside it): the worker's code is
/// compiled once for any handler, and a generic struct there would cost a metadata lookup per use.
struct WorkerIO: ~Copyable {
    let parser: HTTPParser
    let settings: WorkerSettings
    let stats: StatsSlot
    let accessLog: AccessLog?
    var logger: Logger

    /// Where a read lands when the connection has no partial request buffered (the common case).
    let scratchIn = IOBuffer(capacity: HTTPLimits.scratchReadBytes)
    /// Where responses are encoded before they are written.
    let scratchOut = IOBuffer(capacity: 64 * 1024)
    var dateCache = DateLineCache()

    /// CLOCK_MONOTONIC ms at the start of this turn of the loop.
    var now: Int64 = 0
    /// Wall-clock seconds at the start of this turn (the access log's time).
    var wallSecond: Int64 = 0
    /// Every response closes its connection: the worker stops, or drains without handing off.
    var closeConnections = false

    /// `trustedProxies`, nil when there are none; one allocation for the worker's life, so that a
    /// request can point at it (`ResponseContext.forwardingTrust`) without reference counting.
    let trust: UnsafeMutablePointer<TrustedNetworks>?

    var counters = HTTPCounters()
    var latencyCounts = [UInt64](repeating: 0, count: 11)
    var latencySum: UInt64 = 0

    init(settings: WorkerSettings, stats: StatsSlot, logger: Logger) {
        self.parser = HTTPParser(limits: settings.limits)
        self.settings = settings
        self.stats = stats
        self.logger = logger
        accessLog = settings.accessLog.map { AccessLog(path: $0.path, format: $0.format, logger: logger, stats: stats) }
        if settings.trustedProxies.isEmpty {
            trust = nil
        } else {
            let p = UnsafeMutablePointer<TrustedNetworks>.allocate(capacity: 1)
            p.initialize(to: settings.trustedProxies)
            trust = p
        }
    }

    deinit {
        trust?.deinitialize(count: 1)
        trust?.deallocate()
    }

    /// Whether a connection from `peer` (nil: a Unix socket's peer, which the socket file's mode
    /// admits) is from a trusted proxy.
    func isTrusted(_ peer: SocketEndpoint?) -> Bool {
        guard let peer else { return true }
        guard let trust else { return false }
        return trust.pointee.contains(peer.isIPv6 ? ProxyAddress(ipv6High: peer.high, low: peer.low) : ProxyAddress(ipv4: UInt32(truncatingIfNeeded: peer.low)))
    }

    /// Reads the clocks at the start of a turn; the Date line changes once a second.
    @inline(__always)
    mutating func tick<K: Kernel>(_ kernel: K) {
        now = kernel.monotonicMilliseconds()
        let wall = kernel.wallSeconds()
        wallSecond = wall
        dateCache.update(epochSeconds: wall)
        stats[.heartbeatMilliseconds] = UInt64(now)
    }

    /// What the HTTP engine needs to answer on the connection `socket`.
    @inline(__always)
    func context(socket: Int32) -> ResponseContext {
        ResponseContext(
            dateLine: dateCache.line,
            closeConnections: closeConnections, socket: socket)
    }

    /// Counts `answered` requests whose first byte was read at `requestStart` (ns).
    @inline(__always)
    mutating func recordLatency(answered: Int, since requestStart: UInt64, now: UInt64) {
        let micros = (now &- requestStart) / 1000
        let bucket = StatsSlot.latencyField(micros: micros).rawValue - StatsSlot.Field.latency0.rawValue
        latencyCounts[bucket] &+= UInt64(answered)
        latencySum &+= micros &* UInt64(answered)
    }

    /// Publishes what this turn counted to the stats slot (and writes the access log).
    mutating func flushCounters() {
        accessLog?.flush()
        if latencySum != 0 || latencyCounts.contains(where: { $0 != 0 }) {
            for i in 0..<11 where latencyCounts[i] != 0 {
                stats.add(StatsSlot.Field(rawValue: StatsSlot.Field.latency0.rawValue + i)!, latencyCounts[i])
                latencyCounts[i] = 0
            }
            stats.add(.latencySumMicros, latencySum)
            latencySum = 0
        }
        // (Not only when a request was answered: a timeout's 408 is counted without one.)
        if counters != HTTPCounters() {
            stats.add(.requests, UInt64(counters.requests))
            stats.add(.status1xx, UInt64(counters.statusClasses.1))
            stats.add(.status2xx, UInt64(counters.statusClasses.2))
            stats.add(.status3xx, UInt64(counters.statusClasses.3))
            stats.add(.status4xx, UInt64(counters.statusClasses.4))
            stats.add(.status5xx, UInt64(counters.statusClasses.5))
            stats.add(.parseErrors, UInt64(counters.parseErrors))
            counters = HTTPCounters()
        }
        // (`openConnections` is published as it changes, by `ConnectionTable`'s users.)
    }
}
