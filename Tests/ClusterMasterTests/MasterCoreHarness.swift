import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterMaster
import ClusterSystem
import Testing

/// Drives a `MasterCore` as the master's executor does, and records every action it returns: the
/// lists themselves (`actions`, `last`), and what they add up to (spawned workers, listeners per
/// set, replies, ...). The outcome of an action that can fail is fed back at once, as the executor
/// does: spawning and opening listeners fail on demand (`failSpawn`, `failListeners`,
/// `freeDescriptors`). The clock is whatever the test says.
final class Harness {
    var core: MasterCore
    /// Every action, in order.
    var actions: [MasterAction] = []
    /// The actions the last input returned (with those its fed-back outcomes returned).
    var last: [MasterAction] = []
    var log: [String] = []
    var nextPid: ProcessID = 100
    var spawned: [(pid: ProcessID, slot: Int, generation: Int)] = []
    var listeners: [Int: Int] = [:]
    var released: [Int] = []
    var steered: [Int] = []
    /// The slots below `steered` each steering left out.
    var skipped: [[Int]] = []
    /// Descriptors still free for the descriptor check (one per listener or worker asked for).
    var freeDescriptors = Int.max
    var sent: [(MasterToWorker, ProcessID)] = []
    var signals: [(Int32, ProcessID)] = []
    var notifications: [String] = []
    var replies: [(RequestID, JSON)] = []
    /// Heartbeats by stats slot, as workers publish them.
    var heartbeats: [Int: Int64] = [:]
    var exitCode: Int32? = nil
    var failSpawn = false
    var failListeners = false
    var refusing = false
    var readsAsked = 0
    var watchdogFed = 0
    /// `closeListeners` actions: the workers the queued connections were passed to.
    var listenersClosedRelayingTo: [[ProcessID]] = []
    /// Open connections by stats slot, as workers publish them.
    var open: [Int: Int] = [:]
    var lost = 0
    var closedOnDrainTimeout = 0
    /// `checkUpgrade` requesters, and `execUpgrade`s asked for.
    var upgradeChecks: [RequestID?] = []
    var upgradeExecs = 0

    init(workers: Int, maxWorkers: Int = 8, settings: MasterCore.Settings? = nil, start: Bool = true) {
        var config = ClusterConfiguration()
        config.source = "test.json"
        config.workers = .fixed(workers)
        config.maxWorkers = maxWorkers
        config.drainTimeout = 1
        var s = settings ?? MasterCore.Settings()
        s.maxWorkers = maxWorkers
        core = MasterCore(settings: s, config: config, configBytes: Array("{}".utf8), listenerSet: 0)
        if start { perform(core.start(cpus: 4, now: 0)) }
    }

    func perform(_ list: [MasterAction], top: Bool = true) {
        if top { last = [] }
        for action in list {
            actions.append(action)
            last.append(action)
            switch action {
            case .openListeners(let set, let slots, let newWorkers, let request):
                let needed = max(0, slots - (listeners[set] ?? 0)) + newWorkers
                if needed > freeDescriptors {
                    perform(core.listenersFailed(for: request, .descriptors("not enough file descriptors: need \(needed), \(freeDescriptors) are free")), top: false)
                } else if failListeners {
                    perform(core.listenersFailed(for: request, .listeners("cannot listen on 127.0.0.1:1: Address already in use")), top: false)
                } else {
                    listeners[set] = max(listeners[set] ?? 0, slots)
                    perform(core.listenersOpened(for: request), top: false)
                }
            case .spawn(let launch):
                if failSpawn {
                    perform(core.spawnFailed(launch, reason: "posix_spawn: out of memory"), top: false)
                } else {
                    nextPid += 1
                    spawned.append((nextPid, launch.slot, launch.generation))
                    perform(core.workerSpawned(launch, pid: nextPid), top: false)
                }
            case .trimListeners(let set, let keep): listeners[set] = min(listeners[set] ?? 0, keep)
            case .releaseListenerSet(let set):
                released.append(set)
                listeners[set] = nil
            case .steer(_, let active, let skipping):
                steered.append(active)
                skipped.append(skipping)
            case .send(let message, let pid): sent.append((message, pid))
            case .signal(let signal, let pid): signals.append((signal, pid))
            case .notify(let state): notifications.append(state)
            case .notifyReloading(let status): notifications.append("RELOADING=1\nSTATUS=\(status)")
            case .feedWatchdog: watchdogFed += 1
            case .reply(let id, let response): replies.append((id, response))
            case .log(_, let message): log.append(message)
            case .retireStats: break
            case .countLostConnections(let count, let atDeadline):
                if atDeadline { closedOnDrainTimeout += count } else { lost += count }
            case .readConfig: readsAsked += 1
            case .abandonConfigRead: break
            case .refuseNewConnections: refusing = true
            case .closeListeners(let relayTo): listenersClosedRelayingTo.append(relayTo)
            case .reopenLogs: break
            case .checkUpgrade(let requester): upgradeChecks.append(requester)
            case .execUpgrade: upgradeExecs += 1
            case .exit(let code): exitCode = code
            }
        }
    }

    // MARK: - Inputs, as the executor gives them

    func workerSaid(_ message: WorkerToMaster, pid: ProcessID) { perform(core.workerSaid(message, pid: pid)) }

    func workerExited(pid: ProcessID, status: ClusterSystem.ExitStatus) {
        let open = core.workers[pid].map { self.open[$0.statsSlot] ?? 0 } ?? 0
        perform(core.workerExited(pid: pid, status: status, openConnections: open))
    }

    func tick(now: Int64) {
        var beats: [ProcessID: Int64] = [:]
        for (pid, w) in core.workers { beats[pid] = heartbeats[w.statsSlot] ?? 0 }
        perform(core.tick(now: now, heartbeats: beats))
    }

    func scale(_ target: ControlRequest.ScaleTarget, requester: RequestID?, wait: Bool = false) {
        perform(core.scale(target, requester: requester, wait: wait))
    }

    func stop(graceful: Bool, requester: RequestID?) { perform(core.stop(graceful: graceful, requester: requester)) }

    /// A reload whose file reads as the current config with `workers` and listener set `listenerSet`.
    func beginReload(workers: Int, listenerSet: Int, requester: RequestID?, wait: Bool) {
        perform(core.reload(requester: requester, wait: wait))
        guard last.contains(.readConfig) else { return }
        var config = core.config
        config.workers = .fixed(workers)
        loadConfig(config, listenerSet: listenerSet)
    }

    /// A `reload --wait` from `requester` to one worker, whose new worker then reports ready.
    func reloadToOneReadyWorker(requester: RequestID) {
        beginReload(workers: 1, listenerSet: 0, requester: requester, wait: true)
        readyAll()
    }

    func loadConfig(_ config: ClusterConfiguration, listenerSet: Int = 0) {
        perform(core.configLoaded(config, bytes: Array("{\"reloaded\":1}".utf8), listenerSet: listenerSet, cpus: 4))
    }

    func readyAll() {
        for s in spawned where core.workers[s.pid]?.state == .starting { workerSaid(.ready, pid: s.pid) }
    }

    /// Whether `id` got an answer at all, and whether it was ok.
    func answered(_ id: RequestID) -> Bool { replies.contains { $0.0 == id } }
    func answeredOK(_ id: RequestID) -> Bool { replies.contains { $0.0 == id && $0.1["ok"] == true } }
}

func makeCore(workers: Int = 2) -> Harness { Harness(workers: workers) }
