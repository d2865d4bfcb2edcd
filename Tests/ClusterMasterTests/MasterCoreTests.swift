import ClusterControl
import ClusterJSON
import ClusterMaster
import ClusterSystem
import Testing

/// Records what the master decided; the clock is whatever the test says.
final class FakeEffects: MasterEffects {
    var log: [String] = []
    var nextPid: ProcessID = 100
    var spawned: [(pid: ProcessID, slot: Int, generation: Int)] = []
    var listeners: [Int: Int] = [:]
    var steered: [Int] = []
    /// The slots below `steered` each steering left out.
    var skipped: [[Int]] = []
    /// Descriptors still free for `checkDescriptors` (one per listener or worker asked for).
    var freeDescriptors = Int.max
    var sent: [(MasterToWorker, ProcessID)] = []
    var signals: [(Int32, ProcessID)] = []
    var notifications: [String] = []
    var replies: [(RequestID, JSON)] = []
    var heartbeats: [Int: Int64] = [:]
    var exitCode: Int32? = nil
    var failSpawn = false
    var failListeners = false
    var refusing = false
    /// `closeListeners` calls: the workers the queued connections were passed to.
    var listenersClosedRelayingTo: [[ProcessID]] = []
    var open: [Int: Int] = [:]
    var lost = 0
    var closedOnDrainTimeout = 0

    func ensureListeners(set: Int, count: Int) throws(MasterFailure) {
        if failListeners { throw MasterFailure("cannot listen on 127.0.0.1:1: Address already in use") }
        listeners[set] = max(listeners[set] ?? 0, count)
    }
    func trimListeners(set: Int, keep: Int) { listeners[set] = min(listeners[set] ?? 0, keep) }
    func checkDescriptors(set: Int, slots: Int, newWorkers: Int) throws(MasterFailure) {
        let needed = max(0, slots - (listeners[set] ?? 0)) + newWorkers
        if needed > freeDescriptors { throw MasterFailure("not enough file descriptors: need \(needed), \(freeDescriptors) are free") }
    }
    func steer(set: Int, active: Int, skipping: [Int]) {
        steered.append(active)
        skipped.append(skipping)
    }
    func spawnWorker(slot: Int, generation: Int, statsSlot: Int) throws(MasterFailure) -> ProcessID {
        if failSpawn { throw MasterFailure("posix_spawn: out of memory") }
        nextPid += 1
        spawned.append((nextPid, slot, generation))
        return nextPid
    }
    func send(_ message: MasterToWorker, to pid: ProcessID) { sent.append((message, pid)) }
    func signal(_ signal: Int32, to pid: ProcessID) { signals.append((signal, pid)) }
    func notify(_ state: String) { notifications.append(state) }
    func reply(_ id: RequestID, _ response: JSON) { replies.append((id, response)) }
    /// Whether `id` got an answer at all, and whether it was ok.
    func answered(_ id: RequestID) -> Bool { replies.contains { $0.0 == id } }
    func answeredOK(_ id: RequestID) -> Bool { replies.contains { $0.0 == id && $0.1["ok"] == true } }
    func log(_ level: LogLevel, _ message: String) { log.append(message) }
    func heartbeat(statsSlot: Int) -> Int64 { heartbeats[statsSlot] ?? 0 }
    func retireStats(statsSlot: Int) {}
    func releaseGeneration(_ generation: Int) {}
    func exit(code: Int32) { exitCode = code }
    func refuseNewConnections() { refusing = true }
    func closeListeners(relayingQueuedTo relayTo: [ProcessID]) { listenersClosedRelayingTo.append(relayTo) }
    func openConnections(statsSlot: Int) -> Int { open[statsSlot] ?? 0 }
    func countLostConnections(_ count: Int, closedOnDrainTimeout atDeadline: Bool) {
        if atDeadline { closedOnDrainTimeout += count } else { lost += count }
    }
}

func makeCore(workers: Int = 2) -> (MasterCore<FakeEffects>, FakeEffects) {
    let fx = FakeEffects()
    var settings = MasterCore<FakeEffects>.Settings()
    settings.maxWorkers = 8
    settings.drainTimeout = 1000
    var core = MasterCore(effects: fx, settings: settings)
    core.start(workers: workers, listenerSet: 0, now: 0)
    return (core, fx)
}

func readyAll(_ core: inout MasterCore<FakeEffects>, _ fx: FakeEffects) {
    for s in fx.spawned where core.workers[s.pid]?.state == .starting { core.workerSaid(.ready, pid: s.pid) }
}

@Suite struct MasterStart {
    @Test func readyOnlyWhenAllWorkersReport() {
        var (core, fx) = makeCore(workers: 3)
        #expect(fx.spawned.map(\.slot) == [0, 1, 2])
        #expect(fx.listeners[0] == 3)
        core.workerSaid(.ready, pid: fx.spawned[0].pid)
        core.workerSaid(.ready, pid: fx.spawned[1].pid)
        #expect(!fx.notifications.contains { $0.hasPrefix("READY=1") })
        core.workerSaid(.ready, pid: fx.spawned[2].pid)
        #expect(fx.notifications.last == "READY=1\nSTATUS=3 workers, generation 1")
        #expect(core.phase == .running)
        #expect(fx.steered.last == 3)
    }

    @Test func unbindableListenersFailStart() {
        let fx = FakeEffects()
        fx.failListeners = true
        var core = MasterCore(effects: fx, settings: .init())
        core.start(workers: 2, listenerSet: 0, now: 0)
        #expect(fx.exitCode == 1)
        #expect(fx.spawned.isEmpty)
    }
}

@Suite struct MasterSupervision {
    @Test func crashRespawnsSameSlotWithBackoff() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        let victim = fx.spawned[1].pid
        core.tick(now: 20_000)
        core.workerExited(pid: victim, status: .signaled(9))
        #expect(fx.spawned.last?.slot == 1, "first crash: respawned at once")
        #expect(fx.spawned.count == 3)
        // It dies again quickly: now there is a delay.
        core.workerExited(pid: fx.spawned[2].pid, status: .exited(1))
        #expect(fx.spawned.count == 3)
        core.tick(now: 20_150)
        #expect(fx.spawned.count == 3)
        core.tick(now: 20_200)
        #expect(fx.spawned.count == 4)
        #expect(fx.spawned.last?.slot == 1)
        #expect(core.restarts == 2)
    }

    /// A dead slot (in its backoff) is taken out of the reuseport selection, in the middle as well as
    /// at the end, and back in once its new worker is ready; its queued connections are for the
    /// master to hand to a live worker.
    @Test func deadSlotIsSteeredAwayUntilItsWorkerIsReady() {
        var (core, fx) = makeCore(workers: 3)
        readyAll(&core, fx)
        #expect(fx.steered.last == 3 && fx.skipped.last == [])
        #expect(core.unservedSlots == [])
        core.tick(now: 20_000)
        core.workerExited(pid: fx.spawned[1].pid, status: .signaled(9))
        #expect(fx.steered.last == 3 && fx.skipped.last == [1], "slot 1 skipped while it has no live worker")
        #expect(core.unservedSlots == [1])
        core.workerExited(pid: fx.spawned.last!.pid, status: .signaled(9))  // dies again: backoff
        core.workerExited(pid: fx.spawned[2].pid, status: .signaled(9))
        #expect(fx.steered.last == 1 && fx.skipped.last == [], "only slot 0 is live")
        #expect(core.unservedSlots == [1, 2])
        core.tick(now: 21_000)
        readyAll(&core, fx)
        #expect(fx.steered.last == 3 && fx.skipped.last == [])
        #expect(core.unservedSlots == [])
        // A new slot of a scale-up is not steered to before it is ready, and nothing waits on it.
        core.scale(.absolute(4), requester: nil)
        #expect(fx.steered.last == 3 && fx.skipped.last == [])
        #expect(core.unservedSlots == [])
        readyAll(&core, fx)
        #expect(fx.steered.last == 4)
    }

    @Test func noLiveSlotKeepsEverySlotSteered() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.tick(now: 20_000)
        core.workerExited(pid: fx.spawned[0].pid, status: .signaled(9))
        #expect(fx.skipped.last == [0])
        core.workerExited(pid: fx.spawned[1].pid, status: .signaled(9))
        #expect(fx.steered.last == 2 && fx.skipped.last == [], "nobody to steer to: the backlog waits for a respawn")
        #expect(core.unservedSlots == [])
    }

    @Test func crashLoopIsReported() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        var now: Int64 = 0
        var delays: [Int64] = []
        for _ in 0..<5 {
            let before = fx.spawned.count
            let crashedAt = now
            core.workerExited(pid: fx.spawned.last!.pid, status: .exited(1))
            while fx.spawned.count == before && now - crashedAt < 60_000 {
                now += 50
                core.tick(now: now)
            }
            delays.append(now - crashedAt)
        }
        #expect(delays == [0, 200, 400, 800, 1600], "exponential backoff after the first immediate restart")
        #expect(fx.log.contains { $0.contains("crash-looping") })
        #expect(fx.notifications.contains { $0.contains("crash-looping") })
    }

    @Test func missedHeartbeatKills() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        let w = core.workers.values.first!
        fx.heartbeats[w.statsSlot] = 1000
        core.tick(now: 5000)
        #expect(fx.signals.isEmpty)
        core.tick(now: 11_001)
        #expect(fx.signals.first?.0 == SignalNumber.kill)
        #expect(fx.signals.first?.1 == w.pid)
        // Not reaped yet on the next turns: killed and logged once.
        core.tick(now: 11_101)
        core.tick(now: 11_201)
        #expect(fx.signals.count == 1)
        #expect(fx.log.filter { $0.contains("missed its heartbeat") }.count == 1)
    }

    @Test func connectionsOfADeadWorkerAreCountedWhateverItsState() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.tick(now: 100)
        let (a, b) = (core.workers[fx.spawned[0].pid]!, core.workers[fx.spawned[1].pid]!)
        fx.open[a.statsSlot] = 7
        fx.open[b.statsSlot] = 5
        // A reload: both old workers drain; one is killed in the middle of its hand-over.
        core.beginReload(workers: 2, listenerSet: 0, requester: nil, wait: false)
        readyAll(&core, fx)
        #expect(core.workers[a.pid]?.state == .draining)
        core.workerExited(pid: a.pid, status: .signaled(9))
        #expect(fx.lost == 7)
        #expect(fx.log.contains { $0.contains("worker \(a.pid)") && $0.contains("died with 7 open connection(s) (killed by SIGKILL); they are lost") })
        // The other is stuck: fast stop at the deadline, then KILL.
        core.tick(now: 1100)
        core.tick(now: 4100)
        #expect(fx.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.kill])
        core.workerExited(pid: b.pid, status: .signaled(9))
        #expect(fx.closedOnDrainTimeout == 5)
        #expect(fx.lost == 7)
        #expect(fx.log.contains { $0.contains("at its drain deadline: 5 open connection(s) closed") })
        // A clean exit closed (and counted) its own connections.
        let c = core.workers.values.first!
        fx.open[c.statsSlot] = 3
        core.stop(graceful: false, requester: nil)
        core.workerExited(pid: c.pid, status: .exited(0))
        #expect(fx.lost == 7 && fx.closedOnDrainTimeout == 5)
    }

    @Test func drainEscalatesOnTheClock() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.tick(now: 100)
        core.scale(.absolute(1), requester: 7)
        let retiring = fx.spawned[1].pid
        #expect(fx.steered.last == 1, "steered away before the drain")
        #expect(fx.sent.map(\.1) == [retiring])
        core.tick(now: 1099)
        #expect(fx.signals.isEmpty)
        core.tick(now: 1100)
        #expect(fx.signals.map(\.0) == [SignalNumber.interrupt])
        core.tick(now: 4100)
        #expect(fx.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.kill])
        core.workerExited(pid: retiring, status: .signaled(9))
        #expect(fx.listeners[0] == 1, "the retired slot's listeners close after its worker is gone")
        #expect(core.restarts == 0, "a retired worker is not respawned")
    }
}

@Suite struct MasterCommands {
    @Test func scaleUpOpensListenersThenSpawns() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.scale(.relative(2), requester: 1)
        #expect(fx.listeners[0] == 3)
        #expect(fx.spawned.map(\.slot) == [0, 1, 2])
        #expect(fx.replies.last?.1["workers"] == 3)
        #expect(fx.notifications.last?.hasPrefix("STATUS=") == true)
        #expect(!(fx.notifications.last?.contains("READY") ?? true))
    }

    @Test func scaleBeyondTheDescriptorBudgetIsRefusedBeforeAnythingOpens() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        fx.freeDescriptors = 4
        core.scale(.absolute(4), requester: 1)
        #expect(fx.replies.last?.1["error"] == "cannot scale to 4 workers: not enough file descriptors: need 6, 4 are free")
        #expect(fx.listeners[0] == 1, "no listener opened")
        #expect(fx.spawned.count == 1)
        #expect(core.target == 1)
        core.scale(.absolute(2), requester: 2)
        #expect(fx.answeredOK(2))
        #expect(core.target == 2)
    }

    @Test func scaleBounds() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.scale(.absolute(9), requester: 1)
        #expect(fx.replies.last?.1["error"] == "scale: workers must be 1...8 (maxWorkers), got 9")
        core.scale(.relative(-1), requester: 2)
        #expect(fx.replies.last?.1["ok"] == false)
        #expect(core.target == 1)
    }

    @Test func reloadBeyondTheDescriptorBudgetFailsAndKeepsServing() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        fx.freeDescriptors = 3
        core.beginReload(workers: 2, listenerSet: 1, requester: 5, wait: true)
        #expect(fx.replies.last?.1["error"] == "reload failed: not enough file descriptors: need 4, 3 are free")
        #expect(fx.listeners[1] == nil, "no listener opened for the new set")
        #expect(fx.spawned.count == 2)
        #expect(core.generation == 1 && !core.isReloading && core.failedReloads == 1)
        #expect(fx.notifications.last?.hasPrefix("READY=1\nSTATUS=reload failed") == true)
    }

    /// Issue 12 item 2: `scale +9223372036854775806` (or a delta of Int.max) overflowed
    /// `target + delta` and the master trapped. Now every extreme is a refusal naming what was asked.
    @Test(arguments: [Int.max, Int.max - 1, Int.min, Int.min + 1, -Int.max])
    func scaleByExtremeDeltaIsRefusedNotTrapped(_ delta: Int) {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.scale(.relative(delta), requester: 1)
        #expect(fx.replies.last?.1["ok"] == false)
        #expect(fx.replies.last?.1["error"]?.stringValue?.hasPrefix("scale: workers must be 1...8 (maxWorkers), got ") == true)
        #expect(core.target == 2)
        core.scale(.absolute(Int.min), requester: 2)
        core.scale(.absolute(Int.max), requester: 3)
        #expect(fx.replies.suffix(2).allSatisfy { $0.1["ok"] == false })
        #expect(core.target == 2)
    }

    @Test func scaleByOverflowingDeltaSaysWhatWasAsked() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.scale(.relative(Int.max), requester: 1)
        #expect(fx.replies.last?.1["error"] == "scale: workers must be 1...8 (maxWorkers), got 2 + 9223372036854775807")
    }

    /// A config count beyond maxWorkers (`"auto"` on a machine with more CPUs) must not index past
    /// the slot table.
    @Test func startCountIsKeptWithinMaxWorkers() {
        let fx = FakeEffects()
        var settings = MasterCore<FakeEffects>.Settings()
        settings.maxWorkers = 2
        var core = MasterCore(effects: fx, settings: settings)
        core.start(workers: 5, listenerSet: 0, now: 0)
        #expect(fx.spawned.map(\.slot) == [0, 1])
        readyAll(&core, fx)
        core.workerExited(pid: fx.spawned[1].pid, status: .exited(1))
        #expect(core.target == 2)
    }

    /// `scale --wait` is answered when the new workers said ready, not when they were spawned.
    @Test func scaleWaitAnswersWhenNewWorkersAreReady() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.scale(.absolute(3), requester: 1, wait: true)
        #expect(fx.spawned.count == 3)
        #expect(!fx.answered(1))
        core.workerSaid(.ready, pid: fx.spawned[1].pid)
        #expect(!fx.answered(1))
        core.workerSaid(.ready, pid: fx.spawned[2].pid)
        #expect(fx.answeredOK(1))
        #expect(fx.replies.last?.1["workers"] == 3)
        // Without --wait: at once.
        core.scale(.absolute(4), requester: 2)
        #expect(fx.answeredOK(2))
        // Scale-down with --wait: nothing to wait for.
        core.scale(.absolute(1), requester: 3, wait: true)
        #expect(fx.answeredOK(3))
    }

    @Test func scaleWaitFailsWhenANewWorkerDiesBeforeReady() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.scale(.absolute(2), requester: 1, wait: true)
        core.workerExited(pid: fx.spawned[1].pid, status: .exited(3))
        #expect(fx.answered(1) && !fx.answeredOK(1))
        #expect(fx.replies.last?.1["error"]?.stringValue?.contains("slot 1") == true)
    }

    @Test func scaleWaitFailsAfterStartTimeoutAndOnStop() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.scale(.absolute(2), requester: 1, wait: true)
        core.scale(.absolute(3), requester: 2, wait: true)
        core.tick(now: 30_001)
        #expect(fx.answered(1) && !fx.answeredOK(1))
        #expect(fx.replies.first { $0.0 == 1 }?.1["error"]?.stringValue?.contains("did not report ready within 30 s") == true)
        var (core2, fx2) = makeCore(workers: 1)
        readyAll(&core2, fx2)
        core2.scale(.absolute(2), requester: 4, wait: true)
        core2.stop(graceful: true, requester: nil)
        #expect(fx2.replies.first { $0.0 == 4 }?.1["error"] == "scale abandoned: the daemon is stopping")
    }

    @Test func reloadReplacesGenerationWhenReady() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        let old = fx.spawned.map(\.pid)
        core.beginReload(workers: 2, listenerSet: 0, requester: 5, wait: true)
        #expect(fx.spawned.suffix(2).map(\.generation) == [2, 2])
        #expect(core.reloadRefusal() == "a reload is already in progress")
        core.scale(.absolute(3), requester: 6)
        #expect(fx.replies.last?.1["ok"] == false)
        readyAll(&core, fx)
        #expect(core.generation == 2)
        #expect(Set(fx.sent.map(\.1)) == Set(old))
        #expect(fx.notifications.last?.hasPrefix("READY=1\nSTATUS=2 workers, generation 2") == true)
        // `reload --wait` is answered once the old generation has stopped accepting, not before.
        #expect(!fx.answered(5))
        core.workerSaid(.draining, pid: old[0])
        #expect(!fx.answered(5))
        core.workerExited(pid: old[1], status: .exited(0))
        #expect(fx.answeredOK(5))
    }

    /// A second reload completing before the first one's requester was answered answers it too.
    @Test func backToBackReloadsAnswerEveryRequester() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.beginReload(workers: 1, listenerSet: 0, requester: 8, wait: true)
        readyAll(&core, fx)
        core.beginReload(workers: 1, listenerSet: 0, requester: 9, wait: true)
        readyAll(&core, fx)
        #expect(fx.answeredOK(8))
        for s in fx.spawned where core.workers[s.pid]?.generation ?? 3 < 3 { core.workerSaid(.draining, pid: s.pid) }
        #expect(fx.answeredOK(9))
    }

    @Test func reloadWaitIsAnsweredEvenIfAnOldWorkerNeverAcknowledges() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.beginReload(workers: 1, listenerSet: 0, requester: 7, wait: true)
        readyAll(&core, fx)
        #expect(!fx.answered(7))
        core.tick(now: 100_000)
        #expect(fx.answeredOK(7))
    }

    @Test func reloadAbortsWhenANewWorkerDies() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.beginReload(workers: 2, listenerSet: 0, requester: 5, wait: true)
        let newWorkers = fx.spawned.suffix(2).map(\.pid)
        core.workerSaid(.ready, pid: newWorkers[0])
        core.workerExited(pid: newWorkers[1], status: .exited(78))
        #expect(core.generation == 1)
        #expect(!core.isReloading)
        #expect(fx.sent.map(\.1) == [newWorkers[0]], "the new worker that did start is drained; the old ones keep serving")
        #expect(fx.replies.last?.1["error"]?.stringValue?.hasPrefix("reload failed: new worker for slot 1 exited with code 78") == true)
        #expect(fx.notifications.last?.hasPrefix("READY=1\nSTATUS=reload failed") == true)
    }

    @Test func reloadTimesOut() {
        var (core, fx) = makeCore(workers: 1)
        readyAll(&core, fx)
        core.beginReload(workers: 1, listenerSet: 0, requester: nil, wait: false)
        core.tick(now: 30_001)
        #expect(!core.isReloading)
        #expect(core.lastReloadError?.contains("did not report ready") == true)
    }

    @Test func gracefulStopDrainsThenExits() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.stop(graceful: true, requester: 3)
        #expect(fx.notifications.last?.hasPrefix("STOPPING=1") == true)
        core.tick(now: 500)
        #expect(fx.sent.count == 2)
        core.workerExited(pid: fx.spawned[0].pid, status: .exited(0))
        #expect(fx.exitCode == nil)
        core.workerExited(pid: fx.spawned[1].pid, status: .exited(0))
        #expect(fx.exitCode == 0)
        #expect(fx.spawned.count == 2, "nothing respawned while stopping")
    }

    @Test func gracefulStopRefusesAtOnceAndClosesListenersBeforeTheDrain() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.tick(now: 1000)
        core.stop(graceful: true, requester: nil)
        #expect(fx.refusing, "new connections refused as the stop begins")
        #expect(fx.listenersClosedRelayingTo.isEmpty && fx.sent.isEmpty, "handshakes under way still complete and are served")
        core.tick(now: 1499)
        #expect(fx.listenersClosedRelayingTo.isEmpty)
        core.tick(now: 1500)
        // What is still queued goes to the workers before they are told to drain.
        #expect(fx.listenersClosedRelayingTo == [fx.spawned.map(\.pid).sorted()])
        #expect(fx.sent.map(\.0) == [.drain, .drain])
        #expect(core.listenersClosed)
        #expect(core.liveWorkers == fx.spawned.map(\.pid).sorted(), "draining workers take what is handed over now")
        // The drain timeout counts from the stop, not from the listeners' close.
        core.tick(now: 1999)
        #expect(fx.signals.isEmpty)
        core.tick(now: 2000)
        #expect(fx.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
        core.tick(now: 2100)
        #expect(fx.listenersClosedRelayingTo.count == 1)
    }

    @Test func fastStopInterrupts() {
        var (core, fx) = makeCore(workers: 2)
        readyAll(&core, fx)
        core.stop(graceful: false, requester: nil)
        #expect(fx.listenersClosedRelayingTo == [[]], "listeners closed at once, nothing relayed")
        #expect(fx.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
        core.tick(now: 3000)
        #expect(fx.signals.filter { $0.0 == SignalNumber.kill }.count == 2)
    }
}
