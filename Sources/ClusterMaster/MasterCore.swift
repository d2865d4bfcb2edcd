import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem

/// The master's decisions as a state machine: child exits, worker messages, control commands,
/// signals, config reads and clock ticks go in; `MasterAction`s come out. No syscalls, no
/// reference to whoever performs the actions: tests and the fuzzer read the lists it returns.
///
/// The inputs, by file: start, queries and shared helpers here; worker messages, exits, spawn
/// outcomes and the clock in `MasterCore+Workers.swift`; scale, stop and log reopening in
/// `MasterCore+Commands.swift`; reload in `MasterCore+Reload.swift`; `clusterctl upgrade` in
/// `MasterCore+Upgrade.swift`.
public struct MasterCore {
    public struct Settings: Sendable {
        public var maxWorkers = 256
        public var drainTimeout: Int64 = 30_000
        /// A graceful stop's time of accepting and serving before it refuses (`shutdownDelay`).
        public var shutdownDelay: Int64 = 0
        /// A ready worker whose heartbeat is older than this is killed and replaced.
        public var heartbeatTimeout: Int64 = 10_000
        /// New workers must report ready within this.
        public var startTimeout: Int64 = 30_000
        /// After a fast stop (INT) a worker has this long before KILL.
        public var fastStopGrace: Int64 = 3_000
        /// After a graceful stop began, how long the listeners stay open (new SYNs already dropped)
        /// so that handshakes under way complete and are served, before they are shut and every
        /// connection attempt is refused. Covers a client round trip (and, with `deferAccept`, the
        /// kernel's deferred handshakes).
        public var stopAcceptGrace: Int64 = 500
        public var backoffBase: Int64 = 100
        public var backoffMax: Int64 = 30_000
        /// A worker that lived this long resets its slot's crash count.
        public var stableAfter: Int64 = 10_000
        /// Consecutive crashes from which a slot is reported as crash-looping.
        public var crashLoopThreshold = 5
        /// How long a reload's read of the config file may take (a hung network filesystem).
        public var configReadTimeout: Int64 = 10_000
        /// `WatchdogSec=` halved (systemd's advice), or nil when systemd does not watch.
        public var watchdogInterval: Int64? = nil
        public init() {}

        /// The values a config sets (at start and when a reload begins).
        public mutating func adopt(_ config: ClusterConfiguration) {
            drainTimeout = Int64(config.drainTimeout * 1000)
            shutdownDelay = Int64(config.shutdownDelay * 1000)
            heartbeatTimeout = Int64(config.heartbeatTimeout * 1000)
        }
    }

    public struct WorkerRecord: Equatable, Sendable {
        public var pid: ProcessID
        public var slot: Int
        public var generation: Int
        public var statsSlot: Int
        public var state: WorkerState
        public var startedAt: Int64
        public var drainSince: Int64? = nil
        /// The worker said `draining`: it has stopped accepting.
        public var drainAcknowledged = false
        /// How far a stop of this worker has been pushed.
        public var escalation = Escalation.none
    }

    struct SlotRecord {
        var crashes = 0
        var respawnAt: Int64? = nil
        /// Its worker exited with `FatalConfigExit.code`: not respawned until a reload or a scale
        /// gives the slot a new start.
        var stopped = false
    }

    /// The config, its exact bytes (what workers get) and the listener set of a live generation.
    struct GenerationConfig {
        var config: ClusterConfiguration
        var bytes: [UInt8]
        var listenerSet: Int
    }

    struct Reload {
        var generation: Int
        var target: Int
        var listenerSet: Int
        var requesters: [RequestID]
        var startedAt: Int64
    }

    /// A reload's read of the config file, under way.
    struct ConfigRead {
        var requester: RequestID?
        var wait: Bool
        var startedAt: Int64
    }

    /// `scale --wait` requesters of a scale-up: answered when every slot below `target` of
    /// `generation` has a ready worker, or with an error when a new worker exits before it said
    /// ready, `startTimeout` passes, a reload replaces the generation, a later scale goes below
    /// `target`, or the daemon stops.
    struct ScaleWaiter {
        var requester: RequestID
        var generation: Int
        var target: Int
        /// The slots this scale-up started.
        var newSlots: Range<Int>
        var since: Int64
    }

    public enum Phase: Equatable, Sendable {
        case starting
        case running
        case stopping(graceful: Bool)
    }

    public var settings: Settings
    public internal(set) var phase = Phase.starting
    public internal(set) var workers: [ProcessID: WorkerRecord] = [:]
    var slots: [SlotRecord]
    /// The generation serving now.
    public internal(set) var generation = 1
    /// The worker count the serving generation should have.
    public internal(set) var target = 0
    /// The config the master runs under: the serving generation's, or a reload's from when it began.
    public internal(set) var config: ClusterConfiguration
    var generations: [Int: GenerationConfig] = [:]
    var reload: Reload? = nil
    var configRead: ConfigRead? = nil
    /// A read given up on at its deadline that has not returned yet: no other starts until it has.
    var abandonedRead = false
    /// `reload --wait` requesters of a completed reload, answered once every worker of the older
    /// generations has said it stopped accepting (or exited): from then on every new connection
    /// meets the new config. Answered anyway after `drainAckTimeout` (a stuck worker is the drain
    /// escalation's business, not the requester's).
    var awaitingDrainAcks: (generation: Int, target: Int, requesters: [RequestID], since: Int64)? = nil
    static var drainAckTimeout: Int64 { 2000 }
    var scaleWaiters: [ScaleWaiter] = []
    /// What the current set's steering program selects (nil before the first).
    var steered: (set: Int, active: Int, skipping: [Int])? = nil
    var freeStats: [Int]
    public internal(set) var now: Int64 = 0
    public internal(set) var reloads = 0
    public internal(set) var failedReloads = 0
    public internal(set) var restarts = 0
    public internal(set) var lastReloadError: String? = nil
    /// A graceful stop: when the listeners close and the workers are told to drain.
    var closeListenersAt: Int64? = nil
    /// A graceful stop with `shutdownDelay`: when new connections start being refused.
    var refuseAt: Int64? = nil
    var stopBeganAt: Int64 = 0
    /// What the master exits with once its workers are gone: 0, or `FatalConfigExit.code` when a
    /// worker could not run with the config.
    var stopExitCode: Int32 = 0
    var lastWatchdog: Int64? = nil
    /// The listeners were shut for a stop (connection attempts are refused).
    public internal(set) var listenersClosed = false
    /// A stop for a restart (`stop(keepListeners: true)`): the listeners stay open for the next
    /// master, and connections the workers hand over go to systemd's fd store, not to a worker.
    public internal(set) var restarting = false
    /// `clusterctl upgrade` is checking the new binary or re-executing (`MasterCore+Upgrade.swift`).
    public internal(set) var upgrading = false
    public internal(set) var lastUpgradeError: String? = nil
    /// What the input being handled decided so far (returned and emptied by `flush`).
    var actions: [MasterAction] = []

    /// - Parameters:
    ///   - config: generation 1's config, `configBytes` the exact bytes it was read from (what the
    ///     workers get), `listenerSet` the executor's set for its addresses.
    public init(settings: Settings, config: ClusterConfiguration, configBytes: [UInt8], listenerSet: Int) {
        self.settings = settings
        self.config = config
        slots = Array(repeating: SlotRecord(), count: settings.maxWorkers)
        freeStats = Array((0..<Self.statsCapacity(maxWorkers: settings.maxWorkers)).reversed())
        generations[generation] = GenerationConfig(config: config, bytes: configBytes, listenerSet: listenerSet)
    }

    /// Stats slots needed: two generations at once plus draining stragglers.
    public static func statsCapacity(maxWorkers: Int) -> Int { maxWorkers * 3 + 2 }

    public var isReloading: Bool { reload != nil }

    /// Workers that may take a handed-off connection: ready, of the serving generation. Once a
    /// graceful stop closed the listeners, the draining workers that were not fast-stopped (they
    /// serve what they are given, with `Connection: close`).
    public var liveWorkers: [ProcessID] {
        if listenersClosed, case .stopping(true) = phase {
            return workers.values.filter { $0.state == .draining && $0.escalation == .none }.map(\.pid).sorted()
        }
        return workers.values.filter { $0.generation == generation && $0.state == .ready }.map(\.pid).sorted()
    }
    public var currentListenerSet: Int { generations[generation]?.listenerSet ?? 0 }

    /// The executor's clock as an input arrives (a signal, a control command, a worker's message),
    /// so that what the input decides counts from now rather than from the last `tick` (up to a
    /// tick old): a graceful stop's accept grace is the full `stopAcceptGrace`. Never goes back.
    public mutating func clock(_ now: Int64) {
        if now > self.now { self.now = now }
    }

    /// Returns what the input just handled decided, and starts a new list.
    mutating func flush() -> [MasterAction] {
        let out = actions
        actions = []
        return out
    }

    mutating func emit(_ action: MasterAction) { actions.append(action) }
    mutating func log(_ level: LogLevel, _ message: String) { actions.append(.log(level, message)) }

    // MARK: - Start

    /// Starts generation 1 with the config's worker count (`cpus`: for `"workers": "auto"`).
    public mutating func start(cpus: Int, now: Int64) -> [MasterAction] {
        self.now = now
        settings.adopt(config)
        let count = clampedWorkerCount(config.workers.resolved(cpus: cpus))
        target = count
        emit(.openListeners(set: currentListenerSet, slots: count, newWorkers: count, for: .start))
        return flush()
    }

    /// Generation 1's listeners are open: start its workers.
    mutating func startListenersOpened() {
        for slot in 0..<target { spawn(slot: slot, generation: generation) }
    }

    mutating func startListenersFailed(_ failure: ListenerFailure) {
        log(.critical, "cannot open listeners: \(failure.message)")
        emit(.notify("STATUS=failed: \(failure.message)"))
        emit(.exit(code: 1))
    }

    /// The outcome of `openListeners`: it succeeded.
    public mutating func listenersOpened(for request: ListenerRequest) -> [MasterAction] {
        switch request {
        case .start: startListenersOpened()
        case .scale(let wanted, let requester, let wait): scaleListenersOpened(to: wanted, requester: requester, wait: wait)
        case .reload(let plan): beginReload(plan)
        }
        return flush()
    }

    /// The outcome of `openListeners`: it failed, and nothing was opened.
    public mutating func listenersFailed(for request: ListenerRequest, _ failure: ListenerFailure) -> [MasterAction] {
        switch request {
        case .start: startListenersFailed(failure)
        case .scale(let wanted, let requester, _):
            switch failure {
            case .descriptors(let m): refuse(requester, "cannot scale to \(wanted) workers: \(m)")
            case .listeners(let m): refuse(requester, "cannot open listeners for \(wanted) workers: \(m)")
            }
        case .reload(let plan):
            reloadFailed(failure.message, requester: plan.requester)
            releaseUnusedListenerSet(plan.listenerSet)
        }
        return flush()
    }

    // MARK: - Queries

    /// Slots below the target whose worker died and has no ready replacement yet, while another slot
    /// has a ready worker (running only). They are steered away from; connections that were queued
    /// on their listeners before are taken by the master and handed to a live worker instead of
    /// waiting for the respawn. (New slots of a scale-up were never steered to: nothing is queued.)
    public var unservedSlots: [Int] {
        guard case .running = phase else { return [] }
        let ready = readySlots
        guard ready.contains(true) else { return [] }
        return ready.indices.filter { !ready[$0] && (slots[$0].crashes > 0 || slots[$0].stopped) }
    }

    /// The watchdog is fed only while the master's own checks pass: its loop turns (it is being
    /// asked), and the serving generation has at least one ready worker whose loop turned in the
    /// last 2 s (a worker's loop turns at least every 500 ms). `heartbeats`: each worker's last
    /// heartbeat (CLOCK_MONOTONIC ms) from its stats slot.
    public func isHealthy(now: Int64, heartbeats: [ProcessID: Int64]) -> Bool {
        let fresh = min(settings.heartbeatTimeout, 2000)
        return workers.values.contains { w in
            w.generation == generation && w.state == .ready && now &- (heartbeats[w.pid] ?? 0) < fresh
        }
    }

    /// Ready for traffic (`/readyz`): running, no upgrade under way, and the generation that is to
    /// serve — a reload's new one while a reload is under way — has a ready worker. Not while
    /// starting or stopping.
    public var isReady: Bool {
        guard phase == .running, !upgrading else { return false }
        let serving = reload?.generation ?? generation
        return workers.values.contains { $0.generation == serving && $0.state == .ready }
    }

    public var phaseName: String {
        switch phase {
        case .starting: return "starting"
        case .running: return reload == nil ? "running" : "reloading"
        case .stopping(let g): return g ? "stopping" : "stopping (fast)"
        }
    }

    /// systemd STATUS= text; the executor appends the request rate.
    public var statusLine: String {
        let live = workers.values.filter { $0.generation == generation && $0.state == .ready }.count
        return "\(live) workers, generation \(generation)"
    }

    // MARK: - Helpers

    /// Tells a worker to leave: `.retire` when its listeners will close, `.replace` when another
    /// generation takes them over, `.drain` when the daemon stops.
    mutating func drain(_ pid: ProcessID, _ how: MasterToWorker) {
        guard var worker = workers[pid] else { return }
        worker.state = .draining
        worker.drainSince = now
        workers[pid] = worker
        emit(.send(how, to: pid))
    }

    /// How a worker of `generation` leaves when `generation` is replaced by the serving one.
    func replacement(for gen: Int) -> MasterToWorker {
        generations[gen]?.listenerSet == currentListenerSet ? .replace : .retire
    }

    func allSlotsReady(generation gen: Int, count: Int) -> Bool {
        var ready = Array(repeating: false, count: count)
        for w in workers.values where w.generation == gen && w.state == .ready && w.slot < count { ready[w.slot] = true }
        return ready.allSatisfy { $0 }
    }

    /// Steers new connections of the serving generation to the slots below the target that have a
    /// ready worker. A slot whose new worker has not said ready yet (scale-up, respawn) or whose
    /// worker died (a crash, a backoff) is skipped, in the middle as well as at the end, so its share
    /// of new connections goes to live workers instead of waiting in its listener's queue (what was
    /// queued before is taken by the master: `unservedSlots`). If no slot has a ready worker, every
    /// target slot stays steered: the connections wait for whichever worker comes first.
    mutating func steer() {
        let ready = readySlots
        let active = (ready.lastIndex(of: true) ?? -1) + 1
        let skipping = ready[..<active].indices.filter { !ready[$0] }
        let selection = active == 0 ? (active: max(1, target), skipping: [Int]()) : (active: active, skipping: skipping)
        let set = currentListenerSet
        if let s = steered, s.set == set, s.active == selection.active, s.skipping == selection.skipping { return }
        steered = (set, selection.active, selection.skipping)
        emit(.steer(set: set, active: selection.active, skipping: selection.skipping))
    }

    /// For each slot below the target: whether it has a ready worker of the serving generation.
    var readySlots: [Bool] {
        var ready = Array(repeating: false, count: target)
        for w in workers.values where w.generation == generation && w.state == .ready && w.slot < target { ready[w.slot] = true }
        return ready
    }

    /// Closes listeners no live worker and no slot below the target needs, highest first.
    mutating func trimListeners() {
        let set = currentListenerSet
        var needed = target
        if let r = reload, r.listenerSet == set { needed = max(needed, r.target) }
        for w in workers.values where generations[w.generation]?.listenerSet == set { needed = max(needed, w.slot + 1) }
        emit(.trimListeners(set: set, keep: needed))
    }

    /// Forgets the generations no worker runs any more (and that will not be used again), and
    /// releases their listener sets if no other generation uses them.
    mutating func releaseUnusedGenerations() {
        for gen in generations.keys.sorted() where gen != generation && gen != reload?.generation {
            if !workers.values.contains(where: { $0.generation == gen }), let old = generations.removeValue(forKey: gen) {
                releaseUnusedListenerSet(old.listenerSet)
            }
        }
    }

    mutating func releaseUnusedListenerSet(_ set: Int) {
        guard !generations.values.contains(where: { $0.listenerSet == set }) else { return }
        emit(.releaseListenerSet(set))
    }

    mutating func refuse(_ requester: RequestID?, _ message: String) {
        log(.warning, message)
        if let requester { emit(.reply(requester, ControlResponse.error(message))) }
    }

    /// A worker count from a config (not a request: those are refused when out of range) kept
    /// within 1...maxWorkers, so every slot index stays inside `slots`.
    mutating func clampedWorkerCount(_ requested: Int) -> Int {
        let count = min(max(1, requested), workerLimit)
        if count != requested {
            log(.warning, "\(requested) workers asked for; running \(count) (1...\(workerLimit), maxWorkers)")
        }
        return count
    }

    /// The most workers a generation may have: `maxWorkers`, and never more slots than were made.
    var workerLimit: Int { min(settings.maxWorkers, slots.count) }
}

/// How far the master has pushed a worker that should stop: nothing sent beyond the drain, a fast
/// stop (SIGINT) after its drain deadline, or SIGKILL.
public enum Escalation: Sendable, Equatable {
    case none, fastStop, killed
}
