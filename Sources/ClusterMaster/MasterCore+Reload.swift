import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem

/// Reload, as nginx and HAProxy do it: build the new config first and keep the old one if it
/// fails; start the new generation; drain the old one only once every new worker is ready.
///
/// `reload` asks for the file (`readConfig`); the executor reads it off the loop, decodes and
/// validates it and hands it back (`configLoaded`, or `configLoadFailed`); the core checks what
/// cannot change without a restart, decides the worker count, asks for listeners
/// (`openListeners(… .reload)`), and once they are open (`listenersOpened` → `beginReload`)
/// adopts the config and spawns generation+1.
extension MasterCore {
    /// HUP / `reload [--wait]`.
    public mutating func reload(requester: RequestID?, wait: Bool) -> [MasterAction] {
        if let refusal = reloadRefusal() ?? readRefusal {
            log(.warning, "reload refused: \(refusal)")
            if let requester { emit(.reply(requester, ControlResponse.error(refusal))) }
            return flush()
        }
        configRead = ConfigRead(requester: requester, wait: wait, startedAt: now)
        emit(.notifyReloading(status: "reloading \(config.source)"))
        log(.notice, "reload: reading \(config.source)")
        emit(.readConfig)
        return flush()
    }

    /// Whether a reload may start now.
    public func reloadRefusal() -> String? {
        if reload != nil { return "a reload is already in progress" }
        if upgrading { return "an upgrade is in progress (clusterctl upgrade); try again when it completes" }
        switch phase {
        case .running: return nil
        default: return "cannot reload while \(phaseName)"
        }
    }

    /// Why a reload cannot start its read now, if it cannot.
    var readRefusal: String? {
        if configRead != nil { return "a reload is already in progress (reading \(config.source))" }
        if abandonedRead {
            return "the last read of \(config.source) has not returned yet (a hung filesystem?); try again when it has"
        }
        return nil
    }

    /// A read that has not returned by its deadline fails the reload; the old generation serves on.
    mutating func checkConfigReadDeadline() {
        guard let read = configRead, now - read.startedAt > settings.configReadTimeout else { return }
        configRead = nil
        abandonedRead = true
        emit(.abandonConfigRead)
        let error = ConfigError(file: config.source, keyPath: "", message: "cannot read or check: no answer in \(settings.configReadTimeout / 1000) s (a hung filesystem?)")
        reloadFailed("\(error)", requester: read.requester)
    }

    /// The read given up on at its deadline returned at last: reloads may start again.
    public mutating func abandonedReadReturned() -> [MasterAction] {
        abandonedRead = false
        return []
    }

    /// The outcome of `readConfig`: the file could not be read, decoded or validated.
    public mutating func configLoadFailed(_ reason: String) -> [MasterAction] {
        guard let read = configRead else { return [] }
        configRead = nil
        reloadFailed(reason, requester: read.requester)
        return flush()
    }

    /// The outcome of `readConfig`: a decoded, validated config, the bytes it came from, and the
    /// executor's listener set for its addresses. `cpus`: for `"workers": "auto"`.
    public mutating func configLoaded(_ newConfig: ClusterConfiguration, bytes: [UInt8], listenerSet: Int, cpus: Int) -> [MasterAction] {
        guard let read = configRead else { return [] }
        configRead = nil
        func unchangeable(_ keyPath: String) -> String {
            "\(ConfigError(file: config.source, keyPath: keyPath, message: "cannot change on reload (restart instead)"))"
        }
        let refusal: String? =
            if newConfig.controlSocket != config.controlSocket { unchangeable("controlSocket") }
            else if newConfig.reusePortSteering != config.reusePortSteering { unchangeable("reusePortSteering") }
            else if newConfig.deferAccept != config.deferAccept { unchangeable("deferAccept") }
            else if newConfig.maxWorkers != config.maxWorkers { unchangeable("maxWorkers") }
            else { nil }
        if let refusal {
            reloadFailed(refusal, requester: read.requester)
            releaseUnusedListenerSet(listenerSet)
            return flush()
        }
        if let refusal = reloadRefusal() {
            if let requester = read.requester { emit(.reply(requester, ControlResponse.error(refusal))) }
            releaseUnusedListenerSet(listenerSet)
            return flush()
        }
        // The config's `workers` wins only when it changed; otherwise a runtime scale is kept.
        let count = clampedWorkerCount(newConfig.workers != config.workers ? newConfig.workers.resolved(cpus: cpus) : target)
        let plan = ReloadPlan(
            generation: (generations.keys.max() ?? generation) + 1, workers: count, config: newConfig, configBytes: bytes,
            listenerSet: listenerSet, requester: read.requester, wait: read.wait)
        emit(.openListeners(set: listenerSet, slots: count, newWorkers: count, for: .reload(plan)))
        return flush()
    }

    /// The new generation's listeners are open: adopt its config and start its workers.
    mutating func beginReload(_ plan: ReloadPlan) {
        if let refusal = reloadRefusal() {
            if let requester = plan.requester { emit(.reply(requester, ControlResponse.error(refusal))) }
            return releaseUnusedListenerSet(plan.listenerSet)
        }
        generations[plan.generation] = GenerationConfig(config: plan.config, bytes: plan.configBytes, listenerSet: plan.listenerSet)
        config = plan.config
        settings.adopt(plan.config)
        reload = Reload(generation: plan.generation, target: plan.workers, listenerSet: plan.listenerSet, requesters: [], startedAt: now)
        if let requester = plan.requester {
            if plan.wait { reload!.requesters.append(requester) } else {
                emit(.reply(requester, ControlResponse.ok(["generation": .integer(Int64(plan.generation)), "started": true])))
            }
        }
        log(.notice, "reload: starting generation \(plan.generation) with \(plan.workers) workers")
        for slot in 0..<plan.workers { spawn(slot: slot, generation: plan.generation) }
    }

    /// A reload whose new config failed to load or validate: the old generation keeps serving.
    mutating func reloadFailed(_ reason: String, requester: RequestID?) {
        failedReloads += 1
        lastReloadError = reason
        log(.error, "reload failed: \(reason); generation \(generation) keeps serving")
        emit(.notify("READY=1\nSTATUS=reload failed: \(reason); \(statusLine)"))
        if let requester { emit(.reply(requester, ControlResponse.error("reload failed: \(reason)"))) }
    }

    mutating func completeReload() {
        guard let r = reload else { return }
        reload = nil
        reloads += 1
        lastReloadError = nil
        let old = generation
        generation = r.generation
        target = r.target
        for slot in 0..<slots.count { slots[slot] = SlotRecord() }
        steer()
        for pid in workers.keys.sorted() {
            let worker = workers[pid]!
            if worker.generation < generation && worker.state != .draining { drain(pid, replacement(for: worker.generation)) }
        }
        log(.notice, "reload complete: generation \(generation) serving with \(target) workers; generation \(old) draining")
        answerScaleWaiters()
        emit(.notify("READY=1\nSTATUS=\(statusLine)"))
        if !r.requesters.isEmpty {
            // Requesters of an earlier reload still waiting: their generation has been replaced
            // in turn, so what they waited for is settled.
            answerReloadWhenOldGenerationStopped(force: true)
            awaitingDrainAcks = (generation, target, r.requesters, now)
            answerReloadWhenOldGenerationStopped()
        }
        trimListeners()
    }

    mutating func answerReloadWhenOldGenerationStopped(force: Bool = false) {
        guard let waiting = awaitingDrainAcks else { return }
        let stillAccepting = workers.values.contains { $0.generation < waiting.generation && !$0.drainAcknowledged && $0.state != .exited }
        guard !stillAccepting || force else { return }
        awaitingDrainAcks = nil
        for id in waiting.requesters {
            emit(.reply(id, ControlResponse.ok(["generation": .integer(Int64(waiting.generation)), "workers": .integer(Int64(waiting.target))])))
        }
    }

    mutating func abortReload(_ reason: String) {
        guard let r = reload else { return }
        reload = nil
        for pid in workers.keys.sorted() where workers[pid]!.generation == r.generation {
            let worker = workers[pid]!
            if worker.state == .ready { drain(pid, replacement(for: worker.generation)) } else if worker.escalation != .killed {
                emit(.signal(SignalNumber.kill, to: pid))
                workers[pid]!.escalation = .killed
                workers[pid]!.state = .draining
                workers[pid]!.drainSince = now
            }
        }
        failedReloads += 1
        lastReloadError = reason
        log(.error, "reload failed: \(reason); generation \(generation) keeps serving")
        emit(.notify("READY=1\nSTATUS=reload failed: \(reason); \(statusLine)"))
        for id in r.requesters { emit(.reply(id, ControlResponse.error("reload failed: \(reason)"))) }
    }
}
