import ClusterControl
import ClusterJSON
import ClusterSystem

/// The answers to `status` and `workers`: the core's picture with the shared counters.
extension Master {
    func statusJSON() -> JSON {
        let now = Clock.monotonicMilliseconds()
        let sums = totals()
        let live = core.workers.values
        // Counters come from the workers' shared memory: clamped, never trapping on a wild value.
        func n(_ v: some BinaryInteger) -> JSON { .integer(Int64(clamping: v)) }
        var o: JSONObject = [
            "pid": n(Sys.pid),
            "state": .string(core.phaseName),
            "generation": n(core.generation),
            "workers": n(core.target),
            "ready": n(live.filter { $0.generation == core.generation && $0.state == .ready }.count),
            "draining": n(live.filter { $0.state == .draining }.count),
            "uptime": n((now - startedAt) / 1000),
            "requests": n(sums[StatsSlot.Field.requests.rawValue]),
            "requestsPerSecond": .number((requestRate * 10).rounded() / 10),
            "connections": n(sums[StatsSlot.Field.openConnections.rawValue]),
            "accepted": n(sums[StatsSlot.Field.accepted.rawValue]),
            "reloads": n(core.reloads),
            "failedReloads": n(core.failedReloads),
            "restarts": n(core.restarts),
            "handedOff": n(relayed),
            "handoffsDropped": n(droppedRelays),
            "closedOnDrainTimeout": n(sums[StatsSlot.Field.connectionsClosedOnDrain.rawValue]),
            "handoffsClosedAtCap": n(sums[StatsSlot.Field.handoffsClosedAtCap.rawValue]),
            "proxyUntrusted": n(sums[StatsSlot.Field.proxyUntrusted.rawValue]),
            "proxyInvalid": n(sums[StatsSlot.Field.proxyInvalid.rawValue]),
            "lostWithCrashedWorkers": n(lostConnections),
            "listeners": n(listenerTable.totalOpen),
            "listen": .array(config.listen.map { .string($0.description) }),
            "config": .string(options.configPath),
        ]
        if let e = core.lastReloadError { o["lastReloadError"] = .string(e) }
        if let e = core.lastUpgradeError { o["lastUpgradeError"] = .string(e) }
        // The build this master runs, and the one installed at its path now: they differ after a
        // package upgrade until `clusterctl upgrade` (a reload keeps running this one).
        let running = BuildID.current?.description ?? ""
        o["build"] = .string(running)
        o["binary"] = .string(options.executable)
        switch Result(catching: { () throws(SystemError) -> BuildID? in try BuildID.ofFile(path: options.executable) }) {
        case .success(let onDisk):
            o["binaryBuild"] = .string(onDisk?.description ?? "")
            o["binaryDiffers"] = .bool((onDisk?.description ?? "") != running)
        case .failure(let error):
            o["binaryBuild"] = .string("")
            o["binaryError"] = .string(error.reason)
            o["binaryDiffers"] = .bool(true)
        }
        o["fdStore"] = .object([
            "capacity": n(fdStore.capacity),
            "adoptedListeners": n(adoptedAtStart.listeners),
            "adoptedConnections": n(adoptedAtStart.connections),
            "adoptedControlSocket": .bool(adoptedAtStart.control),
        ])
        return ControlResponse.ok(o)
    }

    func workersJSON() -> JSON {
        let now = Clock.monotonicMilliseconds()
        let list = core.workers.values.sorted { ($0.slot, $0.generation) < ($1.slot, $1.generation) }.map { w -> JSON in
            let s = segment.worker(w.statsSlot)
            return .object([
                "slot": .integer(Int64(w.slot)),
                "pid": .integer(Int64(w.pid)),
                "generation": .integer(Int64(w.generation)),
                "state": .string(w.state.description),
                "uptime": .integer((now - w.startedAt) / 1000),
                "requests": .integer(Int64(clamping: s[.requests])),
                "connections": .integer(Int64(clamping: s[.openConnections])),
                "accepted": .integer(Int64(clamping: s[.accepted])),
            ])
        }
        return ControlResponse.ok(["workers": .array(list)])
    }
}
