import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem
import Testing

@testable import ClusterMaster

/// `clusterctl upgrade` in the core: when it may start, what its outcomes do, and how the new image
/// takes over the old one's workers (they drain only once the new generation is ready).
@Suite struct MasterUpgrade {
    @Test func theCheckThenTheReExecFromASteadyStateOnly() {
        let h = makeCore(workers: 2)
        h.perform(h.core.upgrade(requester: 1))
        #expect(h.upgradeChecks.isEmpty && h.replies.last?.1["ok"] == false, "not while starting")
        h.readyAll()
        h.perform(h.core.upgrade(requester: 2))
        #expect(h.upgradeChecks == [2] && h.core.upgrading)
        h.perform(h.core.upgrade(requester: 3))
        #expect(h.replies.last?.0 == 3 && h.replies.last?.1["ok"] == false, "one at a time")
        h.perform(h.core.upgradeChecked(requester: 2, build: "ab12"))
        #expect(h.answeredOK(2) && h.upgradeExecs == 1)
        #expect(h.notifications.last?.hasPrefix("RELOADING=1") == true)
        // The kernel refused the file: the old image carries on and says so.
        h.perform(h.core.upgradeExecFailed(reason: "execve: Exec format error"))
        #expect(!h.core.upgrading && h.core.lastUpgradeError == "execve: Exec format error")
        #expect(h.notifications.last?.hasPrefix("READY=1") == true)
        // A failed check answers the requester with the reason; the daemon is unchanged.
        h.perform(h.core.upgrade(requester: 4))
        h.perform(h.core.upgradeCheckFailed(requester: 4, reason: "exited with code 78"))
        #expect(h.replies.last?.0 == 4 && h.replies.last?.1["error"]?.stringValue?.contains("exited with code 78") == true)
        #expect(h.core.phase == .running && h.core.generation == 1 && h.spawned.count == 2)
        // Nothing to do: the binary on disk is the running build.
        h.perform(h.core.upgrade(requester: 5))
        h.perform(h.core.upgradeNotNeeded(requester: 5, build: "ab12"))
        #expect(h.answeredOK(5) && !h.core.upgrading)
    }

    @Test func noReloadOrScaleWhileTheCheckRuns() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.perform(h.core.upgrade(requester: 1))
        h.perform(h.core.reload(requester: 2, wait: false))
        h.scale(.absolute(4), requester: 3)
        #expect(h.replies.suffix(2).allSatisfy { $0.1["ok"] == false && $0.1["error"]?.stringValue?.contains("upgrade") == true })
        #expect(h.readsAsked == 0 && h.spawned.count == 2)
        // A worker that crashes meanwhile: its replacement is starting, so the re-exec is called off.
        h.workerExited(pid: h.spawned[0].pid, status: .signaled(9))
        h.perform(h.core.upgradeChecked(requester: 1, build: "ab"))
        #expect(h.upgradeExecs == 0 && !h.core.upgrading && h.replies.last?.0 == 1 && h.replies.last?.1["ok"] == false)
    }

    @Test func notDuringAReloadOrWhileWorkersDrain() {
        let h = makeCore(workers: 2)
        h.readyAll()
        h.perform(h.core.reload(requester: nil, wait: false))
        h.perform(h.core.upgrade(requester: 7))
        #expect(h.upgradeChecks.isEmpty && h.replies.last?.1["error"]?.stringValue?.contains("reload") == true)
    }

    @Test func theNewImageAdoptsTheOldWorkersAndDrainsThemWhenItsOwnAreReady() {
        let h = Harness(workers: 2, start: false)
        h.core.adopt([.init(pid: 50, slot: 0, generation: 3, statsSlot: 0), .init(pid: 51, slot: 1, generation: 3, statsSlot: 1),
                      .init(pid: 52, slot: 1, generation: 3, statsSlot: 999)], reloads: 2, restarts: 1)
        #expect(h.core.generation == 4 && h.core.reloads == 2 && h.core.restarts == 1)
        #expect(Set(h.core.workers.keys) == [50, 51], "a stats slot out of range is not taken over")
        h.perform(h.core.start(cpus: 2, now: 0))
        #expect(h.spawned.map(\.generation) == [4, 4])
        #expect(!h.spawned.map(\.0).contains(50) && h.sent.isEmpty, "the old workers serve until the new ones are ready")
        h.readyAll()
        #expect(h.core.phase == .running)
        #expect(h.sent.map(\.1).sorted() == [50, 51] && h.sent.allSatisfy { $0.0 == .replace }, "then hand their connections over")
        h.workerExited(pid: 50, status: .exited(0))
        h.workerExited(pid: 51, status: .exited(0))
        #expect(h.spawned.count == 2 && h.core.workers.count == 2, "nothing respawned for them")
    }

    @Test func theStateRoundTripsAndRefusesGarbage() throws {
        let state = UpgradeState(from: "ab", configFD: 7, statsFD: 8, statsSlots: 26, controlFD: 9,
                                 listeners: [("listen.0.127.0.0.1_80", 10), ("listen.1.127.0.0.1_80", 11)],
                                 workers: [.init(adopted: .init(pid: 100, slot: 0, generation: 2, statsSlot: 3), channel: 12)],
                                 reloads: 1, restarts: 0, startedAt: 123)
        let back = try #require(UpgradeState(json: try JSONParser.parse(Array(state.json.serialized.utf8))))
        #expect(back.descriptors == state.descriptors && back.workers == state.workers && back.from == "ab" && back.startedAt == 123)
        for bad in [#"{}"#, #"{"v":2}"#, #"[1]"#] {
            #expect(UpgradeState(json: try JSONParser.parse(Array(bad.utf8))) == nil)
        }
        var o = try #require(state.json.objectValue)
        o["control"] = .integer(-1)
        #expect(UpgradeState(json: .object(o)) == nil, "a descriptor out of range")
    }
}
