import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterMaster
import ClusterSystem

// What the control fuzz target runs on one input; also compiled into ClusterMasterTests (a symlink
// there) so `ControlFuzzRegressions` replays Fuzz/control/crashers/ with the same invariants.
//
// The input is lines. A line the control decoder accepts is a command, applied to a MasterCore as
// the master's executor applies it (Master.handle); any other line is a script of events, one per
// byte: worker messages, exits, clock ticks, reloads, failing spawns and listeners. Every action the
// core returns is performed by a fake executor (`FuzzExecutor`) that checks it. Checked:
//  - nothing traps (overflow, bounds, preconditions) and ASan sees no memory error;
//  - a decoded request encodes back to the same request;
//  - the worker count stays within 1...maxWorkers and the worker table within its stats slots;
//  - steering selects at least one listener, skips ascending slots below it;
//  - every request gets at most one answer, and once the daemon stopped every request has one.

/// The executor of a master with fake processes: pids count up, listeners are numbers.
public final class FuzzExecutor {
    public var core: MasterCore
    public var nextPid: ProcessID = 1000
    public var failSpawn = false
    public var failListeners = false
    /// Heartbeats (and, masked, open connection counts) by stats slot, as workers publish them.
    public var heartbeats: [Int: Int64] = [:]
    public var answers: [RequestID: Int] = [:]
    public var exitCode: Int32? = nil
    public var listeners: [Int: Int] = [:]
    public var readPending = false
    var upgradeChecks = 0

    public init(core: MasterCore) { self.core = core }

    public func perform(_ actions: [MasterAction]) {
        for action in actions { perform(action) }
    }

    func perform(_ action: MasterAction) {
        switch action {
        case .openListeners(let set, let slots, let newWorkers, let request):
            precondition(slots >= 1 && newWorkers >= 0, "listeners for \(slots) slots, \(newWorkers) workers")
            if failListeners {
                perform(core.listenersFailed(for: request, .listeners("listeners refused (fuzz)")))
            } else {
                listeners[set] = max(listeners[set] ?? 0, slots)
                perform(core.listenersOpened(for: request))
            }
        case .trimListeners(let set, let keep):
            precondition(keep >= 0, "keeping \(keep) listeners")
            listeners[set] = min(listeners[set] ?? 0, keep)
        case .releaseListenerSet(let set):
            listeners[set] = nil
        case .steer(_, let active, let skipping):
            precondition(active >= 1, "steering to \(active) listeners")
            precondition(skipping.count < active && skipping.allSatisfy { $0 >= 0 && $0 < active }, "skipping \(skipping) of \(active)")
            precondition(skipping == skipping.sorted() && Set(skipping).count == skipping.count, "skip list not ascending: \(skipping)")
        case .spawn(let launch):
            precondition(launch.slot >= 0 && launch.slot < ControlFuzzDriver.maxWorkers, "spawning slot \(launch.slot)")
            if failSpawn {
                perform(core.spawnFailed(launch, reason: "spawn refused (fuzz)"))
            } else {
                nextPid += 1
                perform(core.workerSpawned(launch, pid: nextPid))
            }
        case .reply(let id, let response):
            answers[id, default: 0] += 1
            precondition(answers[id]! == 1, "request \(id) answered twice: \(response.serialized)")
            guard case .object(let o) = response, o["ok"]?.boolValue != nil else { preconditionFailure("answer without ok: \(response.serialized)") }
        case .countLostConnections(let count, _):
            precondition(count >= 0, "counting \(count) lost connections")
        case .readConfig:
            precondition(!readPending, "a second read while one is under way")
            readPending = true
        case .abandonConfigRead:
            readPending = false
            perform(core.abandonedReadReturned())
        case .exit(let code):
            exitCode = code
        case .checkUpgrade(let requester):
            // The binary passes its check or not, by the fuzzer's clock; a re-exec cannot happen here.
            upgradeChecks += 1
            if upgradeChecks % 2 == 0 {
                perform(core.upgradeChecked(requester: requester, build: "b"))
            } else {
                perform(core.upgradeCheckFailed(requester: requester, reason: "refused (fuzz)"))
            }
        case .execUpgrade:
            perform(core.upgradeExecFailed(reason: "exec refused (fuzz)"))
        case .send, .signal, .notify, .notifyReloading, .feedWatchdog, .log, .retireStats, .refuseNewConnections,
            .closeListeners, .reopenLogs:
            break
        }
    }

    /// Each worker's heartbeat as its stats slot says (the fuzzer's choice).
    var beats: [ProcessID: Int64] {
        var out: [ProcessID: Int64] = [:]
        for (pid, w) in core.workers { out[pid] = heartbeats[w.statsSlot] ?? 0 }
        return out
    }

    /// A connection count the fuzzer chose for the worker's slot (what it last published).
    func openConnections(_ pid: ProcessID) -> Int {
        core.workers[pid].map { Int(heartbeats[$0.statsSlot] ?? 0) & 0xff } ?? 0
    }

    /// The reload's read came back: `listenerSet` and `workers` chosen by the fuzzer.
    func loadConfig(workers: Int, listenerSet: Int) {
        guard readPending else { return }
        readPending = false
        var config = core.config
        config.workers = .fixed(workers)
        perform(core.configLoaded(config, bytes: [0x7B, 0x7D], listenerSet: listenerSet, cpus: 4))
    }
}

public enum ControlFuzzDriver {
    public static let maxWorkers = 6

    /// Runs one input; traps (precondition) when an invariant breaks.
    public static func run(_ input: [UInt8]) {
        var settings = MasterCore.Settings()
        settings.maxWorkers = maxWorkers
        settings.startTimeout = 5000
        var config = ClusterConfiguration()
        config.maxWorkers = maxWorkers
        config.drainTimeout = 1
        config.workers = .fixed(Int(input.first ?? 0) % (maxWorkers + 3))
        let fx = FuzzExecutor(core: MasterCore(settings: settings, config: config, configBytes: [0x7B, 0x7D], listenerSet: 0))
        var now: Int64 = 1
        fx.perform(fx.core.start(cpus: 4, now: now))
        var nextRequest: RequestID = 1
        var issued = 0

        func check() {
            if case .running = fx.core.phase {
                precondition(fx.core.target >= 1 && fx.core.target <= maxWorkers, "target \(fx.core.target) out of 1...\(maxWorkers)")
            }
            precondition(fx.core.workers.count <= MasterCore.statsCapacity(maxWorkers: maxWorkers), "more workers than stats slots")
        }

        for line in input.split(separator: 0x0A, omittingEmptySubsequences: true) {
            if fx.exitCode != nil { break }
            switch ControlRequest.decode(Array(line)) {
            case .success(let request):
                let again = ControlRequest.decode(Array(request.json.serialized.utf8))
                precondition(again == .success(request), "\(request) does not survive encoding: \(request.json.serialized)")
                let id = nextRequest
                nextRequest += 1
                issued += 1
                apply(request, id: id, fx: fx)
            case .failure(let error):
                precondition(!error.message.isEmpty)
                events(line, fx: fx, now: &now, nextRequest: &nextRequest, issued: &issued)
            }
            check()
        }
        // Stop fast and let every worker go: by then every request must have its one answer.
        if fx.exitCode == nil {
            fx.loadConfig(workers: fx.core.target, listenerSet: 0)
            fx.perform(fx.core.stop(graceful: false, requester: nil))
            for pid in fx.core.workers.keys.sorted() {
                fx.perform(fx.core.workerExited(pid: pid, status: .signaled(2), openConnections: fx.openConnections(pid)))
            }
            fx.perform(fx.core.tick(now: now + 100_000, heartbeats: fx.beats))
        }
        let unanswered = (1..<nextRequest).filter { fx.answers[$0] == nil }
        precondition(unanswered.isEmpty || fx.exitCode == nil, "requests \(unanswered) never answered")
        precondition(issued == nextRequest - 1)
    }

    /// As the master's executor does with a decoded request (Master.handle); a reload's read
    /// comes back at once, with the config as it is.
    static func apply(_ request: ControlRequest, id: RequestID, fx: FuzzExecutor) {
        switch request {
        case .status, .workers:
            fx.perform(.reply(id, ControlResponse.ok(["workers": .integer(Int64(fx.core.target))])))
        case .reopenLogs:
            fx.perform(fx.core.reopenLogs(requester: id))
        case .scale(let target, let wait):
            fx.perform(fx.core.scale(target, requester: id, wait: wait))
        case .reload(let wait):
            fx.perform(fx.core.reload(requester: id, wait: wait))
            fx.loadConfig(workers: fx.core.target, listenerSet: fx.core.generation % 3)
        case .stop(let graceful):
            fx.perform(fx.core.stop(graceful: graceful, requester: id))
        case .upgrade:
            fx.perform(fx.core.upgrade(requester: id))
        }
    }

    /// One event per byte: the low 3 bits choose it, the rest is its argument.
    static func events(_ script: ArraySlice<UInt8>, fx: FuzzExecutor, now: inout Int64, nextRequest: inout RequestID, issued: inout Int) {
        for byte in script {
            if fx.exitCode != nil { return }
            let arg = Int(byte >> 3)
            let pids = fx.core.workers.keys.sorted()
            let pid = pids.isEmpty ? 0 : pids[arg % pids.count]
            switch byte & 7 {
            case 0: fx.perform(fx.core.workerSaid(.ready, pid: pid))
            case 1: fx.perform(fx.core.workerSaid(arg & 1 == 0 ? .draining : .error("fuzz"), pid: pid))
            case 2:
                let status: ExitStatus = arg & 1 == 0 ? .exited(arg & 2 == 0 ? Int32(arg >> 2) : FatalConfigExit.code) : .signaled(9)
                fx.perform(fx.core.workerExited(pid: pid, status: status, openConnections: fx.openConnections(pid)))
            case 3:
                now += Int64(arg) * Int64(arg) * 50
                fx.perform(fx.core.tick(now: now, heartbeats: fx.beats))
            case 4:
                // A reload (SIGHUP or a request) whose read comes back now, later, or never.
                let id = nextRequest
                nextRequest += 1
                issued += 1
                fx.perform(fx.core.reload(requester: id, wait: arg & 1 == 1))
                if arg & 2 == 0 { fx.loadConfig(workers: arg % (maxWorkers + 3), listenerSet: arg % 3) }
            case 5:
                // The pending read comes back: decoded, or failed.
                if arg & 1 == 0 {
                    fx.loadConfig(workers: arg % (maxWorkers + 3), listenerSet: (arg >> 1) % 3)
                } else if fx.readPending {
                    fx.readPending = false
                    fx.perform(fx.core.configLoadFailed("fuzz"))
                }
            case 6:
                if arg & 1 == 1 { fx.failSpawn.toggle() } else { fx.failListeners.toggle() }
            default:
                // A heartbeat: fresh, stale, or a wild value from a worker's shared memory.
                let slot = arg % 8
                fx.heartbeats[slot] = arg & 8 == 0 ? now : (arg & 16 == 0 ? Int64.max : Int64.min + 1)
            }
        }
    }
}
