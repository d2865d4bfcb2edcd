/// The layout of one worker's slot in the shared stats segment (a memfd the master creates and every
/// worker maps). Each slot is 256 bytes (cache-line aligned, no false sharing); the owning worker is
/// the only writer of its slot, the master and other workers only read. Values are 64-bit words
/// written with plain aligned stores, which x86-64 and arm64 make atomic for readers.
public struct StatsSlot {
    public static let size = 256

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
