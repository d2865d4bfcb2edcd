import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem

/// An identifier for a control client waiting for an answer.
public typealias RequestID = Int

public enum LogLevel: Sendable { case debug, info, notice, warning, error, critical }

public struct MasterFailure: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What `MasterCore` decided the world must do. The core makes no syscall and holds no reference to
/// its executor: every input (`MasterCore.tick`, `.workerExited`, `.scale`, ...) returns these, in
/// order, and the executor (`Master`) performs them. Three can fail — `openListeners`, `spawn` and
/// `readConfig` — and their outcome comes back as an input (`listenersOpened`/`listenersFailed`,
/// `workerSpawned`/`spawnFailed`, `configLoaded`/`configLoadFailed`): the executor feeds the
/// outcome of `openListeners` and `spawn` back at once, and performs the actions it returns in
/// their place, before the rest of the list (the core plans the rest knowing that).
public enum MasterAction: Equatable, Sendable {
    /// Refuse (before anything is opened) a change the master's descriptor limit cannot hold —
    /// listeners for slots 0..<slots of `set` plus a channel for each of `newWorkers`, with room left
    /// to restart a crashed worker and answer the control socket — then give `set` listeners for
    /// slots 0..<slots, created in slot order, all or nothing.
    /// Outcome: `listenersOpened(for:)` or `listenersFailed(for:_:)`.
    case openListeners(set: Int, slots: Int, newWorkers: Int, for: ListenerRequest)
    /// Close the listeners of slots >= `keep` in `set`, highest slot first (so reuseport indexes of
    /// the slots that stay never move); what was queued on them goes to a live worker.
    case trimListeners(set: Int, keep: Int)
    /// No generation uses listener set `set` any more: close what no other set needs.
    case releaseListenerSet(Int)
    /// Steer new connections of `set` to its listeners 0..<active other than `skipping` (reuseport
    /// BPF; `skipping` ascending).
    case steer(set: Int, active: Int, skipping: [Int])
    /// Start a worker. Outcome: `workerSpawned(_:pid:)` or `spawnFailed(_:reason:)`.
    case spawn(WorkerLaunch)
    case send(MasterToWorker, to: ProcessID)
    case signal(Int32, to: ProcessID)
    /// sd_notify with these assignments (`READY=1\nSTATUS=...`).
    case notify(String)
    /// sd_notify `RELOADING=1` with `MONOTONIC_USEC=` and this STATUS.
    case notifyReloading(status: String)
    /// sd_notify `WATCHDOG=1`: the master's checks passed (see `MasterCore.isHealthy`).
    case feedWatchdog
    case reply(RequestID, JSON)
    case log(LogLevel, String)
    /// A stats slot is free again: fold its counters into the totals and zero it.
    case retireStats(statsSlot: Int)
    /// Connections a dead worker took down with it: lost with a crashed worker, or closed because
    /// its drain timed out (it was fast-stopped or killed at the deadline).
    case countLostConnections(Int, closedOnDrainTimeout: Bool)
    /// Read the config file off the loop (a hung filesystem must not freeze it), decode and
    /// validate it. Outcome, later: `configLoaded` or `configLoadFailed`.
    case readConfig
    /// The read has not returned by its deadline: stop waiting for it (`abandonedReadReturned`
    /// when it finally does).
    case abandonConfigRead
    /// A stop began: from now on no new connection may enter any listener's accept queue (the
    /// kernel drops new SYNs; handshakes already under way still complete and are queued).
    case refuseNewConnections
    /// Take what is still queued on every listener, pass it to `relayingQueuedTo` (workers that will
    /// serve it before they drain), then shut every listener down and close it: from here on a
    /// connection attempt is refused (RST). An empty list closes what was queued.
    case closeListeners(relayingQueuedTo: [ProcessID])
    /// Tell every worker to reopen its log files.
    case reopenLogs
    /// Check the binary at the daemon's path (it starts and accepts the running config) off the
    /// loop. Outcome, later: `upgradeChecked(requester:build:)` or `upgradeCheckFailed`.
    case checkUpgrade(requester: RequestID?)
    /// Re-execute the master from the binary at its path, handing over listeners, control socket,
    /// stats and workers. Returns only if the kernel refused: outcome `upgradeExecFailed`.
    case execUpgrade
    case exit(code: Int32)
}

/// What a worker is started with: the core picks the slot, generation and stats slot; the listener
/// set and the exact config bytes are the generation's.
public struct WorkerLaunch: Equatable, Sendable {
    public var slot: Int
    public var generation: Int
    public var statsSlot: Int
    public var listenerSet: Int
    public var configBytes: [UInt8]

    public init(slot: Int, generation: Int, statsSlot: Int, listenerSet: Int, configBytes: [UInt8]) {
        (self.slot, self.generation, self.statsSlot, self.listenerSet, self.configBytes) = (slot, generation, statsSlot, listenerSet, configBytes)
    }
}

/// Why listeners are opened; handed back with the outcome so the core needs no state in between.
public enum ListenerRequest: Equatable, Sendable {
    /// Generation 1's listeners at start.
    case start
    case scale(to: Int, requester: RequestID?, wait: Bool)
    case reload(ReloadPlan)
}

/// A validated new config on its way to becoming generation `generation`.
public struct ReloadPlan: Equatable, Sendable {
    public var generation: Int
    public var workers: Int
    public var config: ClusterConfiguration
    public var configBytes: [UInt8]
    public var listenerSet: Int
    public var requester: RequestID?
    public var wait: Bool

    public init(generation: Int, workers: Int, config: ClusterConfiguration, configBytes: [UInt8], listenerSet: Int, requester: RequestID?, wait: Bool) {
        self.generation = generation
        self.workers = workers
        self.config = config
        self.configBytes = configBytes
        self.listenerSet = listenerSet
        self.requester = requester
        self.wait = wait
    }
}

/// How `openListeners` failed.
public enum ListenerFailure: Error, Equatable, Sendable {
    /// The descriptor budget check refused it; nothing was opened.
    case descriptors(String)
    /// A listener could not be opened; those the action opened were closed again.
    case listeners(String)

    public var message: String {
        switch self {
        case .descriptors(let m), .listeners(let m): return m
        }
    }
}

/// The exit code a worker (and `clusterd --check-config`) uses for a config it cannot run with.
/// A worker that exits with it is not respawned: the same config would fail the same way.
public enum FatalConfigExit {
    public static let code: Int32 = 78
}
