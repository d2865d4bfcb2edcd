import ClusterControl
import ClusterJSON
import ClusterMaster
import ClusterSystem

// What the control fuzz target runs on one input; also compiled into ClusterMasterTests (a symlink
// there) so `ControlFuzzRegressions` replays Fuzz/control/crashers/ with the same invariants.
//
// The input is lines. A line the control decoder accepts is a command, applied to a MasterCore as
// the master's executor applies it (Master.handle); any other line is a script of events, one per
// byte: worker messages, exits, clock ticks, reloads, failing spawns and listeners. Checked:
//  - nothing traps (overflow, bounds, preconditions) and ASan sees no memory error;
//  - a decoded request encodes back to the same request;
//  - the worker count stays within 1...maxWorkers and the worker table within its stats slots;
//  - every request gets at most one answer, and once the daemon stopped every request has one.

/// The effects of a master with fake processes: pids count up, listeners are numbers.
public final class FuzzEffects: MasterEffects {
    public var nextPid: ProcessID = 1000
    public var failSpawn = false
    public var failListeners = false
    public var heartbeats: [Int: Int64] = [:]
    public var answers: [RequestID: Int] = [:]
    public var exitCode: Int32? = nil
    public var listeners: [Int: Int] = [:]

    public init() {}

    public func ensureListeners(set: Int, count: Int) throws(MasterFailure) {
        if failListeners { throw MasterFailure("listeners refused (fuzz)") }
        listeners[set] = max(listeners[set] ?? 0, count)
    }
    public func trimListeners(set: Int, keep: Int) { listeners[set] = min(listeners[set] ?? 0, keep) }
    public func checkDescriptors(set: Int, slots: Int, newWorkers: Int) throws(MasterFailure) {
        precondition(slots >= 0 && newWorkers >= 0, "descriptor check for \(slots) slots, \(newWorkers) workers")
        if failListeners { throw MasterFailure("not enough file descriptors (fuzz)") }
    }
    public func steer(set: Int, active: Int, skipping: [Int]) {
        precondition(active >= 1, "steering to \(active) listeners")
        precondition(skipping.count < active && skipping.allSatisfy { $0 >= 0 && $0 < active }, "skipping \(skipping) of \(active)")
        precondition(skipping == skipping.sorted() && Set(skipping).count == skipping.count, "skip list not ascending: \(skipping)")
    }
    public func spawnWorker(slot: Int, generation: Int, statsSlot: Int) throws(MasterFailure) -> ProcessID {
        if failSpawn { throw MasterFailure("spawn refused (fuzz)") }
        nextPid += 1
        return nextPid
    }
    public func send(_ message: MasterToWorker, to pid: ProcessID) {}
    public func signal(_ signal: Int32, to pid: ProcessID) {}
    public func notify(_ state: String) {}
    public func reply(_ id: RequestID, _ response: JSON) {
        answers[id, default: 0] += 1
        precondition(answers[id]! == 1, "request \(id) answered twice: \(response.serialized)")
        guard case .object(let o) = response, o["ok"]?.boolValue != nil else { preconditionFailure("answer without ok: \(response.serialized)") }
    }
    public func log(_ level: LogLevel, _ message: String) {}
    public func heartbeat(statsSlot: Int) -> Int64 { heartbeats[statsSlot] ?? 0 }
    public func retireStats(statsSlot: Int) {}
    public func releaseGeneration(_ generation: Int) {}
    public func refuseNewConnections() {}
    public func closeListeners(relayingQueuedTo relayTo: [ProcessID]) {}
    /// A connection count the fuzzer chose for the slot (what a worker last published).
    public func openConnections(statsSlot: Int) -> Int { Int(heartbeats[statsSlot] ?? 0) & 0xff }
    public func countLostConnections(_ count: Int, closedOnDrainTimeout: Bool) {
        precondition(count >= 0, "counting \(count) lost connections")
    }
    public func exit(code: Int32) { exitCode = code }
}

public enum ControlFuzzDriver {
    public static let maxWorkers = 6

    /// Runs one input; traps (precondition) when an invariant breaks.
    public static func run(_ input: [UInt8]) {
        let fx = FuzzEffects()
        var settings = MasterCore<FuzzEffects>.Settings()
        settings.maxWorkers = maxWorkers
        settings.drainTimeout = 1000
        settings.startTimeout = 5000
        var core = MasterCore(effects: fx, settings: settings)
        var now: Int64 = 1
        core.start(workers: Int(input.first ?? 0) % (maxWorkers + 3), listenerSet: 0, now: now)
        var nextRequest: RequestID = 1
        var issued = 0

        func check() {
            if case .running = core.phase {
                precondition(core.target >= 1 && core.target <= maxWorkers, "target \(core.target) out of 1...\(maxWorkers)")
            }
            precondition(core.workers.count <= MasterCore<FuzzEffects>.statsCapacity(maxWorkers: maxWorkers), "more workers than stats slots")
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
                apply(request, id: id, core: &core, fx: fx)
            case .failure(let error):
                precondition(!error.message.isEmpty)
                events(line, core: &core, fx: fx, now: &now, nextRequest: &nextRequest, issued: &issued)
            }
            check()
        }
        // Stop fast and let every worker go: by then every request must have its one answer.
        if fx.exitCode == nil {
            core.stop(graceful: false, requester: nil)
            for pid in core.workers.keys.sorted() { core.workerExited(pid: pid, status: .signaled(2)) }
            core.tick(now: now + 100_000)
        }
        let unanswered = (1..<nextRequest).filter { fx.answers[$0] == nil }
        precondition(unanswered.isEmpty || fx.exitCode == nil, "requests \(unanswered) never answered")
        precondition(issued == nextRequest - 1)
    }

    /// As the master's executor does with a decoded request (Master.handle).
    static func apply(_ request: ControlRequest, id: RequestID, core: inout MasterCore<FuzzEffects>, fx: FuzzEffects) {
        switch request {
        case .status, .workers, .reopenLogs:
            fx.reply(id, ControlResponse.ok(["workers": .integer(Int64(core.target))]))
        case .scale(let target, let wait):
            core.scale(target, requester: id, wait: wait)
        case .reload(let wait):
            if let refusal = core.reloadRefusal() {
                fx.reply(id, ControlResponse.error(refusal))
            } else {
                core.beginReload(workers: core.target, listenerSet: core.generation % 3, requester: id, wait: wait)
            }
        case .stop(let graceful):
            core.stop(graceful: graceful, requester: id)
        }
    }

    /// One event per byte: the low 3 bits choose it, the rest is its argument.
    static func events(_ script: ArraySlice<UInt8>, core: inout MasterCore<FuzzEffects>, fx: FuzzEffects, now: inout Int64,
                       nextRequest: inout RequestID, issued: inout Int) {
        for byte in script {
            if fx.exitCode != nil { return }
            let arg = Int(byte >> 3)
            let pids = core.workers.keys.sorted()
            let pid = pids.isEmpty ? 0 : pids[arg % pids.count]
            switch byte & 7 {
            case 0: core.workerSaid(.ready, pid: pid)
            case 1: core.workerSaid(arg & 1 == 0 ? .draining : .error("fuzz"), pid: pid)
            case 2: core.workerExited(pid: pid, status: arg & 1 == 0 ? .exited(Int32(arg >> 1)) : .signaled(9))
            case 3:
                now += Int64(arg) * Int64(arg) * 50
                core.tick(now: now)
            case 4:
                let id = nextRequest
                nextRequest += 1
                issued += 1
                if let refusal = core.reloadRefusal() {
                    fx.reply(id, ControlResponse.error(refusal))
                } else {
                    core.beginReload(workers: arg % (maxWorkers + 3), listenerSet: arg % 3, requester: id, wait: arg & 1 == 1)
                }
            case 5:
                let id = nextRequest
                nextRequest += 1
                issued += 1
                core.reloadFailed("fuzz", requester: id)
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
