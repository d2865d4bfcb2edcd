import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterMaster
import ClusterSystem
import Testing

@Suite struct MasterStart {
    @Test func readyOnlyWhenAllWorkersReport() {
        let h = makeCore(workers: 3)
        #expect(h.spawned.map(\.slot) == [0, 1, 2])
        #expect(h.listeners[0] == 3)
        h.workerSaid(.ready, pid: h.spawned[0].pid)
        h.workerSaid(.ready, pid: h.spawned[1].pid)
        #expect(!h.notifications.contains { $0.hasPrefix("READY=1") })
        h.workerSaid(.ready, pid: h.spawned[2].pid)
        #expect(h.notifications.last == "READY=1\nSTATUS=3 workers, generation 1")
        #expect(h.core.phase == .running)
        #expect(h.steered.last == 3)
    }

    @Test func unbindableListenersFailStart() {
        let h = Harness(workers: 2, start: false)
        h.failListeners = true
        h.perform(h.core.start(cpus: 4, now: 0))
        #expect(h.exitCode == 1)
        #expect(h.spawned.isEmpty)
        #expect(h.notifications == ["STATUS=failed: cannot listen on 127.0.0.1:1: Address already in use"])
    }
}

@Suite struct MasterSupervision {
    @Test func crashRespawnsSameSlotWithBackoff() {
        let h = makeCore(workers: 2)
        h.readyAll()
        let victim = h.spawned[1].pid
        h.tick(now: 20_000)
        h.workerExited(pid: victim, status: .signaled(9))
        #expect(h.spawned.last?.slot == 1, "first crash: respawned at once")
        #expect(h.spawned.count == 3)
        // It dies again quickly: now there is a delay.
        h.workerExited(pid: h.spawned[2].pid, status: .exited(1))
        #expect(h.spawned.count == 3)
        h.tick(now: 20_150)
        #expect(h.spawned.count == 3)
        h.tick(now: 20_200)
        #expect(h.spawned.count == 4)
        #expect(h.spawned.last?.slot == 1)
        #expect(h.core.restarts == 2)
    }

    /// A dead slot (in its backoff) is taken out of the reuseport selection, in the middle as well as
    /// at the end, and back in once its new worker is ready; its queued connections are for the
    /// master to hand to a live worker.
    @Test func deadSlotIsSteeredAwayUntilItsWorkerIsReady() {
        let h = makeCore(workers: 3)
        h.readyAll()
        #expect(h.steered.last == 3 && h.skipped.last == [])
        #expect(h.core.unservedSlots == [])
        h.tick(now: 20_000)
        h.workerExited(pid: h.spawned[1].pid, status: .signaled(9))
        #expect(h.steered.last == 3 && h.skipped.last == [1], "slot 1 skipped while it has no live worker")
        #expect(h.core.unservedSlots == [1])
        h.workerExited(pid: h.spawned.last!.pid, status: .signaled(9))  // dies again: backoff
        h.workerExited(pid: h.spawned[2].pid, status: .signaled(9))
        #expect(h.steered.last == 1 && h.skipped.last == [], "only slot 0 is live")
        #expect(h.core.unservedSlots == [1, 2])
        h.tick(now: 21_000)
        h.readyAll()
        #expect(h.steered.last == 3 && h.skipped.last == [])
        #expect(h.core.unservedSlots == [])
        // A new slot of a scale-up is not steered to before it is ready, and nothing waits on it.
        h.scale(.absolute(4), requester: nil)
        #expect(h.steered.last == 3 && h.skipped.last == [])
        #expect(h.core.unservedSlots == [])
        h.readyAll()
        #expect(h.steered.last == 4)
    }

    @Test func noLiveSlotKeepsEverySlotSteered() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 20_000)
        h.workerExited(pid: h.spawned[0].pid, status: .signaled(9))
        #expect(h.skipped.last == [0])
        h.workerExited(pid: h.spawned[1].pid, status: .signaled(9))
        #expect(h.steered.last == 2 && h.skipped.last == [], "nobody to steer to: the backlog waits for a respawn")
        #expect(h.core.unservedSlots == [])
    }

    @Test func crashLoopIsReported() {
        let h = makeCore(workers: 1)
        h.readyAll()
        var now: Int64 = 0
        var delays: [Int64] = []
        for _ in 0..<5 {
            let before = h.spawned.count
            let crashedAt = now
            h.workerExited(pid: h.spawned.last!.pid, status: .exited(1))
            while h.spawned.count == before && now - crashedAt < 60_000 {
                now += 50
                h.tick(now: now)
            }
            delays.append(now - crashedAt)
        }
        #expect(delays == [0, 200, 400, 800, 1600], "exponential backoff after the first immediate restart")
        #expect(h.log.contains { $0.contains("crash-looping") })
        #expect(h.notifications.contains { $0.contains("crash-looping") })
    }

    @Test func missedHeartbeatKills() {
        let h = makeCore(workers: 1)
        h.readyAll()
        let w = h.core.workers.values.first!
        h.heartbeats[w.statsSlot] = 1000
        h.tick(now: 5000)
        #expect(h.signals.isEmpty)
        h.tick(now: 11_001)
        #expect(h.signals.first?.0 == SignalNumber.kill)
        #expect(h.signals.first?.1 == w.pid)
        // Not reaped yet on the next turns: killed and logged once.
        h.tick(now: 11_101)
        h.tick(now: 11_201)
        #expect(h.signals.count == 1)
        #expect(h.log.filter { $0.contains("missed its heartbeat") }.count == 1)
    }

    @Test func connectionsOfADeadWorkerAreCountedWhateverItsState() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 100)
        let (a, b) = (h.core.workers[h.spawned[0].pid]!, h.core.workers[h.spawned[1].pid]!)
        h.open[a.statsSlot] = 7
        h.open[b.statsSlot] = 5
        // A reload: both old workers drain; one is killed in the middle of its hand-over.
        h.beginReload(workers: 2, listenerSet: 0, requester: nil, wait: false)
        h.readyAll()
        #expect(h.core.workers[a.pid]?.state == .draining)
        h.workerExited(pid: a.pid, status: .signaled(9))
        #expect(h.lost == 7)
        #expect(h.log.contains { $0.contains("worker \(a.pid)") && $0.contains("died with 7 open connection(s) (killed by SIGKILL); they are lost") })
        // The other is stuck: fast stop at the deadline, then KILL.
        h.tick(now: 1100)
        h.tick(now: 4100)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.kill])
        h.workerExited(pid: b.pid, status: .signaled(9))
        #expect(h.closedOnDrainTimeout == 5)
        #expect(h.lost == 7)
        #expect(h.log.contains { $0.contains("at its drain deadline: 5 open connection(s) closed") })
        // A clean exit closed (and counted) its own connections.
        let c = h.core.workers.values.first!
        h.open[c.statsSlot] = 3
        h.stop(graceful: false, requester: nil)
        h.workerExited(pid: c.pid, status: .exited(0))
        #expect(h.lost == 7 && h.closedOnDrainTimeout == 5)
    }

    @Test func drainEscalatesOnTheClock() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 100)
        h.scale(.absolute(1), requester: 7)
        let retiring = h.spawned[1].pid
        #expect(h.steered.last == 1, "steered away before the drain")
        #expect(h.sent.map(\.1) == [retiring])
        h.tick(now: 1099)
        #expect(h.signals.isEmpty)
        h.tick(now: 1100)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt])
        h.tick(now: 4100)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.kill])
        h.workerExited(pid: retiring, status: .signaled(9))
        #expect(h.listeners[0] == 1, "the retired slot's listeners close after its worker is gone")
        #expect(h.core.restarts == 0, "a retired worker is not respawned")
    }
}

@Suite struct MasterCommands {
    @Test func scaleUpOpensListenersThenSpawns() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.relative(2), requester: 1)
        #expect(h.listeners[0] == 3)
        #expect(h.spawned.map(\.slot) == [0, 1, 2])
        #expect(h.replies.last?.1["workers"] == 3)
        #expect(h.notifications.last?.hasPrefix("STATUS=") == true)
        #expect(!(h.notifications.last?.contains("READY") ?? true))
    }

    @Test func scaleBeyondTheDescriptorBudgetIsRefusedBeforeAnythingOpens() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.freeDescriptors = 4
        h.scale(.absolute(4), requester: 1)
        #expect(h.replies.last?.1["error"] == "cannot scale to 4 workers: not enough file descriptors: need 6, 4 are free")
        #expect(h.listeners[0] == 1, "no listener opened")
        #expect(h.spawned.count == 1)
        #expect(h.core.target == 1)
        h.scale(.absolute(2), requester: 2)
        #expect(h.answeredOK(2))
        #expect(h.core.target == 2)
    }

    @Test func scaleBounds() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(9), requester: 1)
        #expect(h.replies.last?.1["error"] == "scale: workers must be 1...8 (maxWorkers), got 9")
        h.scale(.relative(-1), requester: 2)
        #expect(h.replies.last?.1["ok"] == false)
        #expect(h.core.target == 1)
    }

    @Test func reloadBeyondTheDescriptorBudgetFailsAndKeepsServing() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.freeDescriptors = 3
        h.beginReload(workers: 2, listenerSet: 1, requester: 5, wait: true)
        #expect(h.replies.last?.1["error"] == "reload failed: not enough file descriptors: need 4, 3 are free")
        #expect(h.listeners[1] == nil, "no listener opened for the new set")
        #expect(h.spawned.count == 2)
        #expect(h.core.generation == 1 && !h.core.isReloading && h.core.failedReloads == 1)
        #expect(h.notifications.last?.hasPrefix("READY=1\nSTATUS=reload failed") == true)
    }

    /// Issue 12 item 2: `scale +9223372036854775806` (or a delta of Int.max) overflowed
    /// `target + delta` and the master trapped. Now every extreme is a refusal naming what was asked.
    @Test(arguments: [Int.max, Int.max - 1, Int.min, Int.min + 1, -Int.max])
    func scaleByExtremeDeltaIsRefusedNotTrapped(_ delta: Int) {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.scale(.relative(delta), requester: 1)
        #expect(h.replies.last?.1["ok"] == false)
        #expect(h.replies.last?.1["error"]?.stringValue?.hasPrefix("scale: workers must be 1...8 (maxWorkers), got ") == true)
        #expect(h.core.target == 2)
        h.scale(.absolute(Int.min), requester: 2)
        h.scale(.absolute(Int.max), requester: 3)
        #expect(h.replies.suffix(2).allSatisfy { $0.1["ok"] == false })
        #expect(h.core.target == 2)
    }

    @Test func scaleByOverflowingDeltaSaysWhatWasAsked() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.scale(.relative(Int.max), requester: 1)
        #expect(h.replies.last?.1["error"] == "scale: workers must be 1...8 (maxWorkers), got 2 + 9223372036854775807")
    }

    /// A config count beyond maxWorkers (`"auto"` on a machine with more CPUs) must not index past
    /// the slot table.
    @Test func startCountIsKeptWithinMaxWorkers() {
        let h = Harness(workers: 5, maxWorkers: 2)
        #expect(h.spawned.map(\.slot) == [0, 1])
        h.readyAll()
        h.workerExited(pid: h.spawned[1].pid, status: .exited(1))
        #expect(h.core.target == 2)
    }

    /// `scale --wait` is answered when the new workers said ready, not when they were spawned.
    @Test func scaleWaitAnswersWhenNewWorkersAreReady() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(3), requester: 1, wait: true)
        #expect(h.spawned.count == 3)
        #expect(!h.answered(1))
        h.workerSaid(.ready, pid: h.spawned[1].pid)
        #expect(!h.answered(1))
        h.workerSaid(.ready, pid: h.spawned[2].pid)
        #expect(h.answeredOK(1))
        #expect(h.replies.last?.1["workers"] == 3)
        // Without --wait: at once.
        h.scale(.absolute(4), requester: 2)
        #expect(h.answeredOK(2))
        // Scale-down with --wait: nothing to wait for.
        h.scale(.absolute(1), requester: 3, wait: true)
        #expect(h.answeredOK(3))
    }

    @Test func scaleWaitFailsWhenANewWorkerDiesBeforeReady() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(2), requester: 1, wait: true)
        h.workerExited(pid: h.spawned[1].pid, status: .exited(3))
        #expect(h.answered(1) && !h.answeredOK(1))
        #expect(h.replies.last?.1["error"]?.stringValue?.contains("slot 1") == true)
    }

    @Test func scaleWaitFailsAfterStartTimeoutAndOnStop() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(2), requester: 1, wait: true)
        h.scale(.absolute(3), requester: 2, wait: true)
        h.tick(now: 30_001)
        #expect(h.answered(1) && !h.answeredOK(1))
        #expect(h.replies.first { $0.0 == 1 }?.1["error"]?.stringValue?.contains("did not report ready within 30 s") == true)
        let h2 = makeCore(workers: 1)
        h2.readyAll()
        h2.scale(.absolute(2), requester: 4, wait: true)
        h2.stop(graceful: true, requester: nil)
        #expect(h2.replies.first { $0.0 == 4 }?.1["error"] == "scale abandoned: the daemon is stopping")
    }

    @Test func reloadReplacesGenerationWhenReady() {
        let h = makeCore(workers: 2)
        h.readyAll()
        let old = h.spawned.map(\.pid)
        h.beginReload(workers: 2, listenerSet: 0, requester: 5, wait: true)
        #expect(h.spawned.suffix(2).map(\.generation) == [2, 2])
        #expect(h.core.reloadRefusal() == "a reload is already in progress")
        h.scale(.absolute(3), requester: 6)
        #expect(h.replies.last?.1["ok"] == false)
        h.readyAll()
        #expect(h.core.generation == 2)
        #expect(Set(h.sent.map(\.1)) == Set(old))
        #expect(h.notifications.last?.hasPrefix("READY=1\nSTATUS=2 workers, generation 2") == true)
        // `reload --wait` is answered once the old generation has stopped accepting, not before.
        #expect(!h.answered(5))
        h.workerSaid(.draining, pid: old[0])
        #expect(!h.answered(5))
        h.workerExited(pid: old[1], status: .exited(0))
        #expect(h.answeredOK(5))
    }

    /// `/readyz`: not while starting, while a reload's new generation has no ready worker yet, or
    /// while stopping.
    @Test func readyOnlyWhileTheGenerationToServeHasAReadyWorker() {
        let h = makeCore(workers: 2)
        #expect(!h.core.isReady)
        h.readyAll()
        #expect(h.core.isReady)
        h.beginReload(workers: 2, listenerSet: 0, requester: 5, wait: false)
        #expect(!h.core.isReady, "the old generation serves, but the one that is to serve has no ready worker")
        h.workerSaid(.ready, pid: h.spawned.suffix(2).map(\.pid)[0])
        #expect(h.core.isReady)
        h.readyAll()
        #expect(h.core.isReady && h.core.generation == 2)
        h.stop(graceful: true, requester: nil)
        #expect(!h.core.isReady)
    }

    /// A second reload completing before the first one's requester was answered answers it too.
    @Test func backToBackReloadsAnswerEveryRequester() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.reloadToOneReadyWorker(requester: 8)
        h.reloadToOneReadyWorker(requester: 9)
        #expect(h.answeredOK(8))
        for s in h.spawned where h.core.workers[s.pid]?.generation ?? 3 < 3 { h.workerSaid(.draining, pid: s.pid) }
        #expect(h.answeredOK(9))
    }

    @Test func reloadWaitIsAnsweredEvenIfAnOldWorkerNeverAcknowledges() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.reloadToOneReadyWorker(requester: 7)
        #expect(!h.answered(7))
        h.tick(now: 100_000)
        #expect(h.answeredOK(7))
    }

    @Test func reloadAbortsWhenANewWorkerDies() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.beginReload(workers: 2, listenerSet: 0, requester: 5, wait: true)
        let newWorkers = h.spawned.suffix(2).map(\.pid)
        h.workerSaid(.ready, pid: newWorkers[0])
        h.workerExited(pid: newWorkers[1], status: .exited(78))
        #expect(h.core.generation == 1)
        #expect(!h.core.isReloading)
        #expect(h.sent.map(\.1) == [newWorkers[0]], "the new worker that did start is drained; the old ones keep serving")
        #expect(h.replies.last?.1["error"]?.stringValue?.hasPrefix("reload failed: new worker for slot 1 exited with code 78") == true)
        #expect(h.notifications.last?.hasPrefix("READY=1\nSTATUS=reload failed") == true)
    }

    @Test func reloadTimesOut() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.beginReload(workers: 1, listenerSet: 0, requester: nil, wait: false)
        h.tick(now: 30_001)
        #expect(!h.core.isReloading)
        #expect(h.core.lastReloadError?.contains("did not report ready") == true)
    }

    @Test func gracefulStopDrainsThenExits() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.stop(graceful: true, requester: 3)
        #expect(h.notifications.last?.hasPrefix("STOPPING=1") == true)
        h.tick(now: 500)
        #expect(h.sent.count == 2)
        h.workerExited(pid: h.spawned[0].pid, status: .exited(0))
        #expect(h.exitCode == nil)
        h.workerExited(pid: h.spawned[1].pid, status: .exited(0))
        #expect(h.exitCode == 0)
        #expect(h.spawned.count == 2, "nothing respawned while stopping")
    }

    @Test func gracefulStopRefusesAtOnceAndClosesListenersBeforeTheDrain() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 1000)
        h.stop(graceful: true, requester: nil)
        #expect(h.refusing, "new connections refused as the stop begins")
        #expect(h.listenersClosedRelayingTo.isEmpty && h.sent.isEmpty, "handshakes under way still complete and are served")
        h.tick(now: 1499)
        #expect(h.listenersClosedRelayingTo.isEmpty)
        h.tick(now: 1500)
        // What is still queued goes to the workers before they are told to drain.
        #expect(h.listenersClosedRelayingTo == [h.spawned.map(\.pid).sorted()])
        #expect(h.sent.map(\.0) == [.drain, .drain])
        #expect(h.core.listenersClosed)
        #expect(h.core.liveWorkers == h.spawned.map(\.pid).sorted(), "draining workers take what is handed over now")
        // The drain timeout counts from the stop, not from the listeners' close.
        h.tick(now: 1999)
        #expect(h.signals.isEmpty)
        h.tick(now: 2000)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
        h.tick(now: 2100)
        #expect(h.listenersClosedRelayingTo.count == 1)
    }

    @Test func shutdownDelayServesThenRefusesThenDrains() {
        var settings = MasterCore.Settings()
        settings.shutdownDelay = 3000
        let h = Harness(workers: 2, settings: settings)
        h.core.settings.shutdownDelay = 3000
        h.readyAll()
        h.tick(now: 1000)
        h.stop(graceful: true, requester: nil)
        #expect(h.sent.map(\.0) == [.stopping, .stopping], "healthz says draining, responses say close")
        #expect(!h.refusing && h.core.nextDeadline() == 4000)
        h.tick(now: 3999)
        #expect(!h.refusing)
        h.tick(now: 4000)
        #expect(h.refusing, "then the stop as without a delay")
        #expect(h.core.nextDeadline() == 4500)
        h.tick(now: 4500)
        #expect(h.sent.map(\.0).suffix(2) == [.drain, .drain] && h.core.listenersClosed)
        // The drain timeout (1 s in the harness) counts from the delay's end.
        h.tick(now: 4999)
        #expect(h.signals.isEmpty)
        h.tick(now: 5000)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
    }

    @Test func aFastStopCutsTheDelayShort() {
        let h = makeCore(workers: 1)
        h.core.settings.shutdownDelay = 3000
        h.readyAll()
        h.stop(graceful: true, requester: nil)
        h.stop(graceful: false, requester: nil)
        #expect(h.core.listenersClosed)
        h.tick(now: 3000)
        #expect(!h.refusing, "no refusal left over from the delay")
    }

    @Test func aRestartKeepsTheListenersAndHandsEveryConnectionOver() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 1000)
        h.perform(h.core.stop(graceful: true, requester: 4, keepListeners: true))
        #expect(h.core.restarting)
        #expect(!h.refusing && h.listenersClosedRelayingTo.isEmpty, "nothing refused, nothing closed: the next master adopts the listeners")
        #expect(h.sent.map(\.0) == [.replace, .replace], "stop accepting now, hand keep-alive connections over")
        #expect(h.core.liveWorkers.isEmpty, "handed-over connections go to the fd store, not to a worker")
        #expect(h.answeredOK(4))
        h.tick(now: 5000)
        #expect(!h.core.listenersClosed, "still open after the stop's accept grace")
        // A fast stop on top of it (INT) stops the workers now, but still leaves the listeners open.
        h.perform(h.core.stop(graceful: false, requester: nil))
        #expect(h.listenersClosedRelayingTo.isEmpty && !h.core.listenersClosed)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
        for worker in h.spawned { h.workerExited(pid: worker.pid, status: .exited(0)) }
        #expect(h.exitCode == 0 && h.spawned.count == 2, "exits once both are gone; nothing respawned")
    }

    @Test func theLoopWakesAtTheStopsCloseDeadline() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.tick(now: 1000)
        #expect(h.core.nextDeadline() == nil, "running, nothing due")
        h.stop(graceful: true, requester: nil)
        #expect(h.core.nextDeadline() == 1500, "the accept grace's end")
        // The loop's wait ends there, not at its next fixed tick.
        #expect(Master.waitTimeout(now: 1450, deadline: h.core.nextDeadline()) == 50)
        #expect(Master.waitTimeout(now: 1460, deadline: 1500) == 40)
        h.tick(now: 1500)
        #expect(h.core.listenersClosed)
        // Then the drain timeout (1 s in the harness), counted from the stop.
        #expect(h.core.nextDeadline() == 2000)
    }

    @Test func aStopsGraceCountsFromTheInputsClockNotTheLastTick() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.tick(now: 1000)
        h.core.clock(1090)  // TERM read 90 ms after the last tick
        h.stop(graceful: true, requester: nil)
        #expect(h.core.nextDeadline() == 1590, "the full 500 ms accept grace")
        h.core.clock(1050)
        #expect(h.core.now == 1090, "the clock never goes back")
    }

    @Test func nextDeadlineCoversRespawnsAndTimeouts() {
        let h = makeCore(workers: 2)
        #expect(h.core.nextDeadline() == 30_001, "the start timeout of the first workers")
        h.readyAll()
        h.tick(now: 20_000)
        h.workerExited(pid: h.spawned[0].pid, status: .signaled(9))  // first crash: respawned at once
        h.tick(now: 20_050)
        h.workerExited(pid: h.spawned[2].pid, status: .signaled(9))  // second: 200 ms backoff
        #expect(h.core.nextDeadline() == 20_250)
        h.tick(now: 20_250)
        #expect(h.spawned.count == 4)
        #expect(h.core.nextDeadline() == 50_251, "the new worker's start timeout")
    }

    @Test func waitTimeoutIsTheTickOrLessNeverNegative() {
        #expect(Master.waitTimeout(now: 0, deadline: nil) == 100)
        #expect(Master.waitTimeout(now: 0, deadline: 10_000) == 100)
        #expect(Master.waitTimeout(now: 1000, deadline: 1037) == 37)
        #expect(Master.waitTimeout(now: 1000, deadline: 1000) == 1)
        #expect(Master.waitTimeout(now: 1000, deadline: 400) == 1, "a deadline passed: at once")
        #expect(Master.waitTimeout(now: Int64.min, deadline: Int64.max) == 100)
    }

    @Test func fastStopInterrupts() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.stop(graceful: false, requester: nil)
        #expect(h.listenersClosedRelayingTo == [[]], "listeners closed at once, nothing relayed")
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt, SignalNumber.interrupt])
        h.tick(now: 3000)
        #expect(h.signals.filter { $0.0 == SignalNumber.kill }.count == 2)
    }
}

/// The core returns what it decided, in order; nothing is done behind the test's back.
@Suite struct MasterActionLists {
    @Test func scaleUpAsksForListenersThenSpawnsThenAnswers() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(3), requester: 1)
        let bytes = Array("{}".utf8)
        #expect(h.last == [
            .openListeners(set: 0, slots: 3, newWorkers: 2, for: .scale(to: 3, requester: 1, wait: false)),
            .spawn(WorkerLaunch(slot: 1, generation: 1, statsSlot: 1, listenerSet: 0, configBytes: bytes)),
            .spawn(WorkerLaunch(slot: 2, generation: 1, statsSlot: 2, listenerSet: 0, configBytes: bytes)),
            .log(.notice, "scaled to 3 workers"),
            .notify("STATUS=1 workers, generation 1"),
            .reply(1, ControlResponse.ok(["workers": 3])),
        ])
    }

    @Test func scaleDownSteersAwayBeforeItRetires() {
        let h = makeCore(workers: 2)
        h.readyAll()
        let retiring = h.spawned[1].pid
        h.scale(.absolute(1), requester: nil)
        #expect(h.last == [
            .steer(set: 0, active: 1, skipping: []),
            .send(.retire, to: retiring),
            .log(.notice, "scaled to 1 workers"),
            .notify("STATUS=1 workers, generation 1"),
        ])
    }

    @Test func aFailedSpawnComesBackAsAnInputAndBacksOff() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.failSpawn = true
        h.scale(.absolute(2), requester: nil)
        #expect(h.last.contains(.log(.error, "cannot start a worker for slot 1: posix_spawn: out of memory")))
        #expect(h.core.workers.count == 1)
        h.failSpawn = false
        h.tick(now: 199)
        #expect(h.spawned.count == 1)
        h.tick(now: 200)
        #expect(h.spawned.last?.slot == 1, "respawned after its back-off")
    }

    /// A reload's read of the file is asked for, not made: the core is told when it is in.
    @Test func reloadAsksForTheConfigThenOpensListenersThenSpawns() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.perform(h.core.reload(requester: 4, wait: false))
        #expect(h.last == [.notifyReloading(status: "reloading test.json"), .log(.notice, "reload: reading test.json"), .readConfig])
        h.perform(h.core.reload(requester: 5, wait: false))
        #expect(h.last.contains(.reply(5, ControlResponse.error("a reload is already in progress (reading test.json)"))))
        h.loadConfig(h.core.config)
        guard case .openListeners(0, 1, 1, .reload(let plan)) = h.last.first else {
            Issue.record("expected openListeners for the reload first: \(h.last)")
            return
        }
        #expect(plan.generation == 2 && plan.workers == 1 && plan.requester == 4)
        #expect(h.last.contains(.reply(4, ControlResponse.ok(["generation": 2, "started": true]))))
        #expect(h.spawned.last?.generation == 2)
    }
}

/// Reload policy lives in the core: what may change, how many workers, the read's deadline.
@Suite struct MasterReloadPolicy {
    @Test(arguments: ["controlSocket", "reusePortSteering", "deferAccept", "maxWorkers"])
    func whatNeedsARestartIsRefused(_ key: String) {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.perform(h.core.reload(requester: 1, wait: true))
        var config = h.core.config
        switch key {
        case "controlSocket": config.controlSocket = "/elsewhere.sock"
        case "reusePortSteering": config.reusePortSteering = .cpu
        case "deferAccept": config.deferAccept.toggle()
        default: config.maxWorkers = 9
        }
        h.loadConfig(config, listenerSet: 1)
        #expect(h.replies.last?.1["error"] == .string("reload failed: test.json: \(key): cannot change on reload (restart instead)"))
        #expect(h.released == [1], "the unused listener set is released")
        #expect(h.core.generation == 1 && h.core.failedReloads == 1 && h.core.config.controlSocket != "/elsewhere.sock")
        #expect(h.notifications.last?.hasPrefix("READY=1\nSTATUS=reload failed") == true)
    }

    @Test func aRuntimeScaleSurvivesAReloadThatDoesNotChangeWorkers() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.scale(.absolute(3), requester: nil)
        h.readyAll()
        h.perform(h.core.reload(requester: nil, wait: false))
        h.loadConfig(h.core.config)
        #expect(h.spawned.filter { $0.generation == 2 }.count == 3)
        h.readyAll()
        var config = h.core.config
        config.workers = .fixed(5)
        h.perform(h.core.reload(requester: nil, wait: false))
        h.loadConfig(config)
        #expect(h.spawned.filter { $0.generation == 3 }.count == 5, "a changed `workers` wins")
    }

    @Test func aHungReadFailsTheReloadAndBlocksTheNextUntilItReturns() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.perform(h.core.reload(requester: 1, wait: false))
        h.tick(now: 10_000)
        #expect(!h.answered(1))
        h.tick(now: 10_001)
        #expect(h.last.contains(.abandonConfigRead))
        #expect(h.replies.last?.1["error"] == "reload failed: test.json: cannot read or check: no answer in 10 s (a hung filesystem?)")
        h.perform(h.core.reload(requester: 2, wait: false))
        #expect(h.replies.last?.1["error"] == "the last read of test.json has not returned yet (a hung filesystem?); try again when it has")
        h.perform(h.core.abandonedReadReturned())
        h.perform(h.core.reload(requester: 3, wait: false))
        #expect(h.last.contains(.readConfig))
        // A late answer to the abandoned read is not taken for this one's: only `configLoaded` counts.
        h.perform(h.core.configLoadFailed("test.json: bad"))
        #expect(h.replies.last?.1["error"] == "reload failed: test.json: bad")
    }

    @Test func theNewConfigsTimeoutsApplyFromTheReload() {
        let h = makeCore(workers: 1)
        h.readyAll()
        var config = h.core.config
        config.drainTimeout = 7
        config.heartbeatTimeout = 3
        h.perform(h.core.reload(requester: nil, wait: false))
        h.loadConfig(config)
        #expect(h.core.settings.drainTimeout == 7000 && h.core.settings.heartbeatTimeout == 3000)
    }
}

/// Exit code 78 (`FatalConfigExit.code`): a worker that cannot run with the config is not respawned.
@Suite struct MasterFatalConfigExit {
    @Test func aServingWorkerExiting78IsNotRespawnedAndItsSlotIsSteeredAway() {
        let h = makeCore(workers: 3)
        h.readyAll()
        h.tick(now: 20_000)
        h.workerExited(pid: h.spawned[1].pid, status: .exited(78))
        #expect(h.spawned.count == 3)
        #expect(h.core.restarts == 0)
        #expect(h.skipped.last == [1])
        #expect(h.core.unservedSlots == [1], "what was queued on its listeners goes to a live worker")
        #expect(h.log.contains { $0.contains("exited with code 78: it cannot run with this config; the slot is not restarted") })
        #expect(h.notifications.last == "STATUS=2 workers, generation 1; slot 1 stopped: fatal config error (exit 78)")
        for t in stride(from: Int64(20_100), through: 120_000, by: 5_000) { h.tick(now: t) }
        #expect(h.spawned.count == 3, "never respawned")
        #expect(h.exitCode == nil)
        // A reload gives every slot a new start.
        h.beginReload(workers: 3, listenerSet: 0, requester: nil, wait: false)
        #expect(h.spawned.filter { $0.generation == 2 }.map(\.slot) == [0, 1, 2])
    }

    @Test func aWorkerExiting78BeforeTheDaemonWasReadyFailsTheStart() {
        let h = makeCore(workers: 2)
        h.workerSaid(.ready, pid: h.spawned[1].pid)
        h.workerExited(pid: h.spawned[0].pid, status: .exited(78))
        #expect(h.spawned.count == 2)
        #expect(h.signals.map(\.0) == [SignalNumber.interrupt], "the other worker is stopped")
        #expect(h.notifications.contains { $0.hasPrefix("STATUS=failed: worker \(h.spawned[0].pid) (slot 0) exited with code 78") })
        #expect(h.exitCode == nil)
        h.workerExited(pid: h.spawned[1].pid, status: .signaled(2))
        #expect(h.exitCode == 78, "systemd's RestartPreventExitStatus=78 keeps it from looping")
    }

    @Test func theLastServingWorkerExiting78StopsTheDaemon() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.workerExited(pid: h.spawned[0].pid, status: .exited(78))
        #expect(h.exitCode == 78)
        #expect(h.log.contains { $0.contains("no worker is left to serve: stopping") })
    }

    /// Found by the control fuzzer: a reload whose read was under way when the master exited was
    /// never answered. A stop answers it at once.
    @Test func aReloadStillReadingIsAnsweredWhenTheMasterStops() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.perform(h.core.reload(requester: 9, wait: true))
        h.workerExited(pid: h.spawned[0].pid, status: .exited(78))
        #expect(h.exitCode == 78)
        #expect(h.replies.last?.0 == 9 && h.replies.last?.1["error"] == "reload abandoned: the daemon is stopping")
        h.loadConfig(h.core.config)
        #expect(h.spawned.count == 1 && h.replies.count == 1, "the late config is ignored")
    }

    @Test func otherExitCodesStillRespawn() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.workerExited(pid: h.spawned[0].pid, status: .exited(77))
        #expect(h.spawned.count == 2 && h.exitCode == nil)
    }

    @Test func scaleWaitSaysANewWorkerExiting78IsNotRestarted() {
        let h = makeCore(workers: 1)
        h.readyAll()
        h.scale(.absolute(2), requester: 1, wait: true)
        h.workerExited(pid: h.spawned[1].pid, status: .exited(78))
        #expect(h.replies.last?.1["error"] == "the new worker for slot 1 exited with code 78 before it was ready; it is not restarted (fatal config error)")
        #expect(h.spawned.count == 2 && h.exitCode == nil)
    }
}

/// The watchdog is fed from the tick, with the heartbeats the executor read.
@Suite struct MasterWatchdog {
    @Test func fedOnlyWhileAServingWorkerIsFresh() {
        var settings = MasterCore.Settings()
        settings.watchdogInterval = 1000
        let h = Harness(workers: 1, settings: settings)
        h.tick(now: 100)
        #expect(h.watchdogFed == 0, "no ready worker yet")
        h.readyAll()
        let slot = h.core.workers.values.first!.statsSlot
        h.heartbeats[slot] = 1000
        h.tick(now: 1500)
        #expect(h.watchdogFed == 1)
        h.tick(now: 2000)
        #expect(h.watchdogFed == 1, "not before the interval")
        h.tick(now: 3100)
        #expect(h.watchdogFed == 1, "heartbeat 2.1 s old: not fed")
        h.heartbeats[slot] = 3000
        h.tick(now: 3200)
        #expect(h.watchdogFed == 2)
    }
}
