/// Messages on the socketpair between the master and one worker (SOCK_SEQPACKET: one message per
/// packet, short ASCII words).
public enum WorkerToMaster: Equatable, Sendable {
    /// The worker's listeners are registered and it accepts.
    case ready
    /// The worker stopped accepting and is finishing its connections.
    case draining
    /// Something the master should log.
    case error(String)

    public var encoded: [UInt8] {
        switch self {
        case .ready: return Array("ready".utf8)
        case .draining: return Array("draining".utf8)
        case .error(let text): return Array("error \(text)".utf8.prefix(400))
        }
    }

    public static func decode(_ bytes: some Collection<UInt8>) -> WorkerToMaster? {
        let text = String(decoding: bytes, as: UTF8.self)
        switch text {
        case "ready": return .ready
        case "draining": return .draining
        default:
            if text.hasPrefix("error ") { return .error(String(text.dropFirst(6))) }
            return nil
        }
    }
}

public enum MasterToWorker: Equatable, Sendable {
    /// The daemon stops: stop accepting, finish in-flight requests (closing their connections), exit.
    case drain
    /// A new generation took over the same listeners: stop accepting now, hand every keep-alive
    /// connection to the master (for a live worker) as soon as it is idle, exit.
    case replace
    /// This worker's listeners will be closed (scale-down, or a reload that changed addresses): keep
    /// accepting what is already queued for a short grace period, then as `replace`.
    case retire
    /// Reopen log files (USR1 / `clusterctl reopen-logs`).
    case reopenLogs
    /// A graceful stop with `shutdownDelay` began: keep accepting and serving, but answer every
    /// response with `Connection: close` and `/healthz` with 503, until `drain` follows.
    case stopping
    /// The session-ticket keys every TLS listener uses: `ticketKeyBytes` each, the current (which
    /// issues tickets) first, then the previous ones (still accepted). Sent to each worker when it
    /// starts and to all at every rotation; binary after the prefix `tickets `.
    case ticketKeys([UInt8])

    /// One ticket key: 16 bytes of name, 32 of AES-256-CBC key, 32 of HMAC-SHA256 key.
    public static let ticketKeyBytes = 80
    static let ticketPrefix = Array("tickets ".utf8)

    public var encoded: [UInt8] {
        switch self {
        case .drain: return Array("drain".utf8)
        case .replace: return Array("replace".utf8)
        case .retire: return Array("retire".utf8)
        case .reopenLogs: return Array("reopen-logs".utf8)
        case .stopping: return Array("stopping".utf8)
        case .ticketKeys(let keys): return Self.ticketPrefix + keys
        }
    }

    public static func decode(_ bytes: some Collection<UInt8>) -> MasterToWorker? {
        if bytes.starts(with: ticketPrefix) {
            let keys = Array(bytes.dropFirst(ticketPrefix.count))
            guard !keys.isEmpty, keys.count % ticketKeyBytes == 0, keys.count <= 4 * ticketKeyBytes else { return nil }
            return .ticketKeys(keys)
        }
        switch String(decoding: bytes, as: UTF8.self) {
        case "drain": return .drain
        case "replace": return .replace
        case "retire": return .retire
        case "reopen-logs": return .reopenLogs
        case "stopping": return .stopping
        default: return nil
        }
    }
}

/// A connection moving between workers: the socket travels as SCM_RIGHTS on the channel, with a
/// message of `prefix` followed by the bytes already read from it but not yet parsed. Both
/// directions (retiring worker → master → live worker) use it.
public enum ConnectionHandoff {
    public static let prefix: [UInt8] = Array("conn ".utf8)
    /// A connection that came through a `proxyProtocol` listener and whose header was read: this
    /// prefix, then a PROXY v2 header (no TLVs) naming its client, then the pending bytes.
    public static let proxiedPrefix: [UInt8] = Array("connp".utf8)

    public enum Kind: Sendable { case plain, proxied }
    /// Largest unparsed input that travels with a connection; a connection with more is not moved.
    public static let maxPendingBytes = 60 * 1024
    /// Receive buffer needed for one channel message.
    public static let maxMessageBytes = maxPendingBytes + 64

    public static func isHandoff(_ message: UnsafeRawBufferPointer) -> Bool { kind(message) != nil }

    public static func isHandoff(_ message: [UInt8]) -> Bool { message.withUnsafeBytes { kind($0) != nil } }

    /// Which hand-off message this is (both prefixes are 5 bytes), nil when it is none.
    public static func kind(_ message: UnsafeRawBufferPointer) -> Kind? {
        guard message.count >= prefix.count else { return nil }
        if zip(message, prefix).allSatisfy({ $0 == $1 }) { return .plain }
        if zip(message, proxiedPrefix).allSatisfy({ $0 == $1 }) { return .proxied }
        return nil
    }
}

/// What a master tells a worker it starts, in one place for both sides: which descriptors the
/// worker inherits where (listeners from fd 3, the systemd `LISTEN_FDS` convention, then its
/// channel, the stats memfd and a memfd with the config bytes the master validated) and who it is.
/// The master writes it as environment variables (`environment`); the worker reads it back
/// (`init(environment:)`), so the layout is written once and the two sides cannot disagree.
public struct WorkerStartup: Equatable, Sendable {
    /// The worker's slot number (0-based).
    public var slot: Int
    /// The generation it belongs to.
    public var generation: Int
    /// Listeners it inherits, at fds 3 ..< 3 + listenerCount (at least one).
    public var listenerCount: Int
    /// Slots in the stats segment, and this worker's.
    public var statsSlots: Int
    public var statsSlot: Int
    /// The master's pid (a worker whose parent is no longer it exits).
    public var masterPID: Int32
    /// The config file's name, for messages.
    public var configPath: String
    /// The master's build (`BuildID`, hex; "" when its binary has none). A worker whose own build
    /// differs refuses to run: the channel's format is only ever agreed between one build.
    public var build: String

    public init(slot: Int, generation: Int, listenerCount: Int, statsSlots: Int, statsSlot: Int, masterPID: Int32, configPath: String, build: String = "") {
        (self.slot, self.generation, self.listenerCount) = (slot, generation, listenerCount)
        (self.statsSlots, self.statsSlot, self.masterPID, self.configPath) = (statsSlots, statsSlot, masterPID, configPath)
        self.build = build
    }

    /// The first inherited descriptor (the first listener).
    public static let firstFD: Int32 = 3
    /// The listeners' descriptors in the worker.
    public var listenerFDs: [Int32] { (0..<listenerCount).map { Self.firstFD + Int32($0) } }
    /// The worker's end of its channel to the master.
    public var channelFD: Int32 { Self.firstFD + Int32(listenerCount) }
    /// The shared stats memfd.
    public var statsFD: Int32 { channelFD + 1 }
    /// The memfd with the config bytes of the worker's generation.
    public var configFD: Int32 { channelFD + 2 }
    /// The binary it was started from (`ProcessControl.spawn(image:)` puts it after the rest); the
    /// worker closes it.
    public var imageFD: Int32 { channelFD + 3 }
    /// The master's descriptors in the order the worker inherits them from fd 3 on (listeners,
    /// channel, stats, config), which is where `listenerFDs`, `channelFD`, `statsFD` and `configFD` say;
    /// `spawn(image:)` adds the binary after them (`imageFD`).
    public static func inherited(listeners: [Int32], channel: Int32, stats: Int32, config: Int32) -> [Int32] {
        listeners + [channel, stats, config]
    }

    /// The environment variable whose presence means "run as a worker".
    public static let slotVariable = "CLUSTERD_WORKER_SLOT"
    /// The variables the master adds to a worker's environment.
    public var environment: [String] {
        [
            "\(Self.slotVariable)=\(slot)",
            "CLUSTERD_GENERATION=\(generation)",
            "LISTEN_FDS=\(listenerCount)",
            "CLUSTERD_CHANNEL_FD=\(channelFD)",
            "CLUSTERD_STATS_FD=\(statsFD)",
            "CLUSTERD_CONFIG_FD=\(configFD)",
            "CLUSTERD_IMAGE_FD=\(imageFD)",
            "CLUSTERD_STATS_SLOTS=\(statsSlots)",
            "CLUSTERD_STATS_SLOT=\(statsSlot)",
            "CLUSTERD_MASTER_PID=\(masterPID)",
            "CLUSTERD_CONFIG=\(configPath)",
            "CLUSTERD_BUILD=\(build)",
        ]
    }

    /// Reads what a master wrote; nil when anything is missing, malformed or out of range, or the
    /// descriptors are not where this layout puts them (a worker started by another build).
    public init?(environment lookup: (String) -> String?) {
        func int(_ name: String) -> Int? { lookup(name).flatMap { Int($0) } }
        guard let slot = int(Self.slotVariable), slot >= 0,
            let generation = int("CLUSTERD_GENERATION"), generation >= 0,
            let listenerCount = int("LISTEN_FDS"), (1...65_536).contains(listenerCount),
            let statsSlots = int("CLUSTERD_STATS_SLOTS"), statsSlots > 0,
            let statsSlot = int("CLUSTERD_STATS_SLOT"), (0..<statsSlots).contains(statsSlot),
            let masterPID = lookup("CLUSTERD_MASTER_PID").flatMap({ Int32($0) }), masterPID > 0
        else { return nil }
        self.init(slot: slot, generation: generation, listenerCount: listenerCount, statsSlots: statsSlots,
                  statsSlot: statsSlot, masterPID: masterPID, configPath: lookup("CLUSTERD_CONFIG") ?? "config",
                  build: lookup("CLUSTERD_BUILD") ?? "")
        guard int("CLUSTERD_CHANNEL_FD") == Int(channelFD), int("CLUSTERD_STATS_FD") == Int(statsFD),
            int("CLUSTERD_CONFIG_FD") == Int(configFD), int("CLUSTERD_IMAGE_FD") == Int(imageFD)
        else { return nil }
    }
}
