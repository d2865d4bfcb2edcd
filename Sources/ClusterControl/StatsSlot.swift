/// The layout of one worker's slot in the shared stats segment (a memfd the master creates and every
/// worker maps). Each slot is 384 bytes (cache-line aligned, no false sharing); the owning worker is
/// the only writer of its slot, the master and other workers only read. Values are 64-bit words
/// written with plain aligned stores, which x86-64 and arm64 make atomic for readers.
public struct StatsSlot {
    public static let size = 384

    /// Word indexes inside a slot.
    public enum Field: Int, CaseIterable, Sendable {
        case pid = 0
        case generation
        case heartbeatMilliseconds  // CLOCK_MONOTONIC ms of the worker's last loop turn
        case startedAtMilliseconds
        case requests
        case status1xx, status2xx, status3xx, status4xx, status5xx
        case accepted
        case openConnections
        case parseErrors
        case bytesIn
        case bytesOut
        case state  // WorkerState raw value
        case connectionsHandedOff
        case connectionsClosedOnDrain
        /// Request latency histogram: counts of requests at or under each of `latencyBoundsMicros`,
        /// non-cumulative; the last counts the rest.
        case latency0, latency1, latency2, latency3, latency4, latency5, latency6, latency7, latency8, latency9, latencyOver
        case latencySumMicros
        /// The worker slot (not the stats slot) the worker serves.
        case slot
        /// Polls before sleeping (`busyPoll`) that found an event / that ran out their window.
        case busyPollHits, busyPollMisses
        /// Access log lines dropped because the file could not take them (a full disk).
        case accessLogDroppedLines
        /// Keep-alive connections handed over to this worker at `http.maxConnections`, closed
        /// gracefully instead of kept.
        case handoffsClosedAtCap
        /// Handed-over connections this worker took from its channel (the master compares it with
        /// what it sent when the worker dies: the rest died in the channel).
        case connectionsAdopted
        /// Connections to a `proxyProtocol` listener from a peer outside `trustedProxies`, closed
        /// at accept without reading a byte.
        case proxyUntrusted
        /// Connections to a `proxyProtocol` listener closed because their first bytes were not a
        /// valid PROXY protocol header, or none came within `http.headerTimeout`.
        case proxyInvalid
        /// TLS handshakes completed / failed (not TLS, no common version or cipher, a reset),
        /// completed by resuming a session from a ticket, and completed with the kernel encrypting
        /// what is sent (kTLS).
        case tlsHandshakes, tlsHandshakeFailures, tlsResumed, tlsKernelSend
        /// Which record layer this worker's TLS listeners use: 0 none (no TLS listener), 1 OpenSSL's,
        /// 2 the kernel's offered (kTLS; `tlsKernelSend` counts connections that got it).
        case tlsRecordLayer
    }

    /// Upper bounds (µs) of the latency buckets: 100 µs … 5 s.
    public static let latencyBoundsMicros: [UInt64] = [100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000]

    /// The bucket field for a latency.
    @inlinable
    public static func latencyField(micros: UInt64) -> Field {
        var i = 0
        while i < 10 && micros > latencyBoundsMicros[i] { i += 1 }
        return Field(rawValue: Field.latency0.rawValue + i)!
    }

    public let base: UnsafeMutableRawPointer

    public init(base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable
    public subscript(field: Field) -> UInt64 {
        get { base.load(fromByteOffset: field.rawValue * 8, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: field.rawValue * 8, as: UInt64.self) }
    }

    @inlinable
    public func add(_ field: Field, _ delta: UInt64) {
        self[field] = self[field] &+ delta
    }

    public func reset() {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: StatsSlot.size)
    }

    /// A slot in private memory, for a worker that runs without a master (tests, `--single`).
    public static func privateSlot() -> StatsSlot {
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return StatsSlot(base: p)
    }
}

/// The life of a worker as the master and `clusterctl workers` see it (HAProxy's INIT / READY / LEAVING).
public enum WorkerState: UInt64, Sendable, CustomStringConvertible {
    case starting = 0
    case ready = 1
    case draining = 2
    case exited = 3

    public var description: String {
        switch self {
        case .starting: return "starting"
        case .ready: return "ready"
        case .draining: return "draining"
        case .exited: return "exited"
        }
    }
}

/// The whole shared stats segment: `workerSlots` worker slots, then one slot of totals folded in
/// from workers that exited (same layout as a worker's), then one slot of master gauges.
public struct StatsSegment {
    public let base: UnsafeMutableRawPointer
    public let workerSlots: Int

    public init(base: UnsafeMutableRawPointer, workerSlots: Int) {
        self.base = base
        self.workerSlots = workerSlots
    }

    public static func byteCount(workerSlots: Int) -> Int { (workerSlots + 2) * StatsSlot.size }

    public func worker(_ index: Int) -> StatsSlot { StatsSlot(base: base + index * StatsSlot.size) }
    public var retired: StatsSlot { StatsSlot(base: base + workerSlots * StatsSlot.size) }
    public var master: MasterGauges { MasterGauges(base: base + (workerSlots + 1) * StatsSlot.size) }

    /// Counters that add up across workers (the rest are gauges or identities).
    public static let summable: [StatsSlot.Field] = StatsSlot.Field.allCases.filter {
        ![.pid, .generation, .heartbeatMilliseconds, .startedAtMilliseconds, .state, .openConnections, .tlsRecordLayer].contains($0)
    }

    /// Live workers' slots (pid set). Only slots below the master's high-water mark are read, so
    /// the untouched rest of the segment is never faulted in.
    public var liveWorkers: [StatsSlot] {
        let used = min(workerSlots, Int(clamping: master[.slotsHighWater]))
        return (0..<used).map(worker).filter { $0[.pid] != 0 }
    }

    /// Cluster totals of every field, indexed by `Field.rawValue`: exited workers' counters plus
    /// the live ones' (one scan of the segment).
    public func totals() -> [UInt64] {
        var sums = StatsSlot.Field.allCases.map { StatsSegment.summable.contains($0) ? retired[$0] : 0 }
        for w in liveWorkers {
            for field in StatsSegment.summable { sums[field.rawValue] &+= w[field] }
            sums[StatsSlot.Field.openConnections.rawValue] &+= w[.openConnections]
        }
        return sums
    }
}

/// Gauges the master publishes for `/metrics` (any worker serves the whole cluster's numbers).
public struct MasterGauges {
    public enum Field: Int, CaseIterable, Sendable {
        case pid = 0, workers, generation, reloads, failedReloads, restarts, handedOff, lostWithCrashedWorkers, startedAtMilliseconds
        /// One past the highest worker stats slot ever handed out.
        case slotsHighWater
        /// 1 while the instance is ready for traffic (`MasterCore.isReady`; `/readyz`), else 0.
        case ready
    }

    public let base: UnsafeMutableRawPointer

    public subscript(field: Field) -> UInt64 {
        get { base.load(fromByteOffset: field.rawValue * 8, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: field.rawValue * 8, as: UInt64.self) }
    }
}
