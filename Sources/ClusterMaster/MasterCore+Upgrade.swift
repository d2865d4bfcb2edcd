import ClusterControl
import ClusterJSON
import ClusterSystem

/// `clusterctl upgrade`: the master re-executes itself from the binary now at its path (same PID,
/// so systemd sees one process throughout), keeping its listeners, control socket and stats, and
/// the new image replaces the workers as a reload does (`adopt`, then the old generation drains
/// with `.replace` once the new one is ready, keep-alive connections handed over). The executor
/// checks the new binary first (`checkUpgrade`: it must start and accept the running config) and
/// performs the re-exec (`execUpgrade`); if either fails the old master carries on.
extension MasterCore {
    /// A worker the previous image of this master started, taken over by the new image.
    public struct AdoptedWorker: Equatable, Sendable {
        public var pid: ProcessID
        public var slot: Int
        public var generation: Int
        public var statsSlot: Int

        public init(pid: ProcessID, slot: Int, generation: Int, statsSlot: Int) {
            (self.pid, self.slot, self.generation, self.statsSlot) = (pid, slot, generation, statsSlot)
        }
    }

    /// The exact config bytes of the serving generation (what a new image runs with).
    public var generationConfigBytes: [UInt8] { generations[generation]?.bytes ?? [] }

    /// `clusterctl upgrade`. Only from a steady state: running, no reload, no scale waiting, every
    /// worker ready (an upgrade hands the new image exactly one generation to replace).
    public mutating func upgrade(requester: RequestID?) -> [MasterAction] {
        if upgrading {
            refuse(requester, "cannot upgrade: an upgrade is already under way")
        } else if let why = upgradeRefusal {
            refuse(requester, "cannot upgrade: \(why)")
        } else {
            upgrading = true
            log(.notice, "upgrade: checking the binary on disk")
            emit(.checkUpgrade(requester: requester))
        }
        return flush()
    }

    var upgradeRefusal: String? {
        guard case .running = phase else { return "the daemon is \(phaseName)" }
        if reload != nil || configRead != nil || abandonedRead { return "a reload is under way" }
        if !scaleWaiters.isEmpty { return "a scale is under way" }
        if let busy = workers.values.first(where: { $0.state != .ready || $0.generation != generation }) {
            return "worker \(busy.pid) (slot \(busy.slot), generation \(busy.generation)) is \(busy.state == .starting ? "starting" : "draining"); try again when every worker is ready"
        }
        return nil
    }

    /// The check failed: the new binary does not start, or refuses the running config.
    public mutating func upgradeCheckFailed(requester: RequestID?, reason: String) -> [MasterAction] {
        upgrading = false
        lastUpgradeError = reason
        refuse(requester, "upgrade failed: \(reason); still running the old binary")
        return flush()
    }

    /// The new binary passed its check (`build`: its build ID): tell systemd a reload begins,
    /// answer, and re-execute.
    public mutating func upgradeChecked(requester: RequestID?, build: String) -> [MasterAction] {
        guard upgrading, upgradeRefusal == nil else {
            upgrading = false
            refuse(requester, "cannot upgrade: \(upgradeRefusal ?? "the daemon changed state")")
            return flush()
        }
        lastUpgradeError = nil
        log(.notice, "upgrade: re-executing as build \(build.isEmpty ? "(none)" : build)")
        emit(.notifyReloading(status: "upgrading to build \(build.isEmpty ? "(none)" : build)"))
        if let requester { emit(.reply(requester, ControlResponse.ok(["upgrading": true, "build": .string(build)]))) }
        emit(.execUpgrade)
        return flush()
    }

    /// The binary on disk is the build this master runs: nothing to do (a package upgrade's script
    /// may call `upgrade` whatever it installed).
    public mutating func upgradeNotNeeded(requester: RequestID?, build: String) -> [MasterAction] {
        upgrading = false
        log(.info, "upgrade: the binary on disk is the running build; nothing to do")
        if let requester { emit(.reply(requester, ControlResponse.ok(["upgrading": false, "build": .string(build)]))) }
        return flush()
    }

    /// The re-exec itself failed (the kernel refused the file): this image carries on.
    public mutating func upgradeExecFailed(reason: String) -> [MasterAction] {
        upgrading = false
        lastUpgradeError = reason
        log(.error, "upgrade failed: \(reason); still running the old binary")
        emit(.notify("READY=1\nSTATUS=upgrade failed: \(reason); \(statusLine)"))
        return flush()
    }

    /// In the new image, before `start`: the previous image's workers, serving generation `from`
    /// of the same config and listeners. This image serves generation `from + 1`; when its workers
    /// are all ready, the adopted ones drain with `.replace` (their keep-alive connections handed
    /// over), supervised like any draining worker. Entries with a stats slot out of range or
    /// already taken are ignored (the executor kills nothing it does not know).
    public mutating func adopt(_ adopted: [AdoptedWorker], reloads: Int, restarts: Int) {
        self.reloads = reloads
        self.restarts = restarts
        guard let from = adopted.map(\.generation).max(), from >= generation, let first = generations[generation] else { return }
        generations[generation] = nil
        generation = from + 1
        generations[generation] = first
        for worker in adopted where worker.slot >= 0 && worker.slot < slots.count {
            guard let i = freeStats.firstIndex(of: worker.statsSlot), workers[worker.pid] == nil else { continue }
            freeStats.remove(at: i)
            generations[worker.generation] = first
            workers[worker.pid] = WorkerRecord(pid: worker.pid, slot: worker.slot, generation: worker.generation,
                                               statsSlot: worker.statsSlot, state: .ready, startedAt: now)
        }
    }

    /// The new generation is ready: workers of older generations (adopted at an upgrade) leave.
    mutating func drainOlderGenerations() {
        for pid in workers.keys.sorted() {
            guard let worker = workers[pid], worker.generation < generation, worker.state == .ready else { continue }
            drain(pid, replacement(for: worker.generation))
        }
    }
}
