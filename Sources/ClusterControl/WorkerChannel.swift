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

    public var encoded: [UInt8] {
        switch self {
        case .drain: return Array("drain".utf8)
        case .replace: return Array("replace".utf8)
        case .retire: return Array("retire".utf8)
        case .reopenLogs: return Array("reopen-logs".utf8)
        }
    }

    public static func decode(_ bytes: some Collection<UInt8>) -> MasterToWorker? {
        switch String(decoding: bytes, as: UTF8.self) {
        case "drain": return .drain
        case "replace": return .replace
        case "retire": return .retire
        case "reopen-logs": return .reopenLogs
        default: return nil
        }
    }
}

/// A connection moving between workers: the socket travels as SCM_RIGHTS on the channel, with a
/// message of `prefix` followed by the bytes already read from it but not yet parsed. Both
/// directions (retiring worker → master → live worker) use it.
public enum ConnectionHandoff {
    public static let prefix: [UInt8] = Array("conn ".utf8)
    /// Largest unparsed input that travels with a connection; a connection with more is not moved.
    public static let maxPendingBytes = 60 * 1024
    /// Receive buffer needed for one channel message.
    public static let maxMessageBytes = maxPendingBytes + 64

    public static func isHandoff(_ message: UnsafeRawBufferPointer) -> Bool {
        message.count >= prefix.count && zip(message, prefix).allSatisfy { $0 == $1 }
    }
}

/// Environment variables a master sets for the workers it spawns.
public enum WorkerEnvironment {
    /// The worker's slot number (0-based); its presence means "run as a worker".
    public static let slot = "CLUSTERD_WORKER_SLOT"
    /// The worker's generation.
    public static let generation = "CLUSTERD_GENERATION"
    /// Descriptor of the socketpair end to the master.
    public static let channelFD = "CLUSTERD_CHANNEL_FD"
    /// Descriptor of the shared stats memfd.
    public static let statsFD = "CLUSTERD_STATS_FD"
    /// Number of stats slots in the memfd.
    public static let statsSlots = "CLUSTERD_STATS_SLOTS"
    /// Index of this worker's stats slot.
    public static let statsSlot = "CLUSTERD_STATS_SLOT"
    /// The master's pid (a worker exits when its parent is no longer it).
    public static let masterPID = "CLUSTERD_MASTER_PID"
    /// The systemd convention: number of listeners passed from fd 3 on.
    public static let listenFDs = "LISTEN_FDS"
    /// Descriptor of a memfd holding the config bytes the master validated.
    public static let configFD = "CLUSTERD_CONFIG_FD"
    /// The config file name, for messages.
    public static let configPath = "CLUSTERD_CONFIG"
}
