import ClusterControl
import ClusterJSON
import ClusterSystem

/// Worker messages, exits, spawn outcomes and the clock.
extension MasterCore {
    // MARK: - Worker messages

    public mutating func workerSaid(_ message: WorkerToMaster, pid: ProcessID) -> [MasterAction] {
        guard var worker = workers[pid] else { return [] }
        switch message {
        case .ready:
            guard worker.state == .starting else { return [] }
            worker.state = .ready
            workers[pid] = worker
            log(.info, "worker \(pid) (slot \(worker.slot), generation \(worker.generation)) ready")
            if case .starting = phase, allSlotsReady(generation: generation, count: target) {
                phase = .running
                steer()
                log(.notice, "ready: \(target) workers, generation \(generation)")
                emit(.notify("READY=1\nSTATUS=\(statusLine)"))
                drainOlderGenerations()
            } else if let r = reload, worker.generation == r.generation, allSlotsReady(generation: r.generation, count: r.target) {
                completeReload()
            } else if worker.generation == generation {
                steer()
                emit(.notify("STATUS=\(statusLine)"))
            }
            answerScaleWaiters()
        case .draining:
            if worker.state != .draining {
                worker.state = .draining
                worker.drainSince = worker.drainSince ?? now
            }
            worker.drainAcknowledged = true
            workers[pid] = worker
            answerReloadWhenOldGenerationStopped()
        case .error(let text):
            log(.error, "worker \(pid) (slot \(worker.slot)): \(text)")
        }
        return flush()
    }

    // MARK: - Exits

    /// A worker was reaped. `openConnections`: the count it last published in its stats slot (read
    /// before the slot is retired).
    public mutating func workerExited(pid: ProcessID, status: ExitStatus, openConnections: Int) -> [MasterAction] {
        guard let worker = workers.removeValue(forKey: pid) else { return [] }
        countConnectionsLost(worker, status, open: openConnections)
        emit(.retireStats(statsSlot: worker.statsSlot))
        freeStats.append(worker.statsSlot)
        handleExit(worker, status)
        releaseUnusedGenerations()
        answerReloadWhenOldGenerationStopped()
        answerScaleWaiters(exited: (worker, status))
        return flush()
    }

    mutating func handleExit(_ worker: WorkerRecord, _ status: ExitStatus) {
        let pid = worker.pid
        if case .stopping = phase {
            log(.info, "worker \(pid) (slot \(worker.slot)) \(status)")
            if workers.isEmpty {
                log(.notice, "all workers stopped; exiting")
                emit(.exit(code: stopExitCode))
            }
            return
        }
        if worker.state == .draining {
            let level: LogLevel = status == .exited(0) ? .info : .warning
            log(level, "worker \(pid) (slot \(worker.slot), generation \(worker.generation)) finished draining: \(status)")
            trimListeners()
            return
        }
        if let r = reload, worker.generation == r.generation {
            abortReload("new worker for slot \(worker.slot) \(status) before the reload completed")
            return
        }
        guard worker.generation == generation, worker.slot < target else {
            trimListeners()
            return
        }
        if status == .exited(FatalConfigExit.code) { return fatalConfigExit(worker) }
        // A crash: respawn the slot on the same listeners (its backlog waits in the master's socket).
        restarts += 1
        var slot = slots[worker.slot]
        if now - worker.startedAt >= settings.stableAfter { slot.crashes = 0 }
        slot.crashes += 1
        let delay = min(settings.backoffMax, settings.backoffBase << min(Int64(slot.crashes - 1), 20))
        let respawnAt = now + (slot.crashes == 1 ? 0 : delay)
        slot.respawnAt = respawnAt
        slots[worker.slot] = slot
        // Its listener stops getting new connections until a worker for it is ready again.
        steer()
        if slot.crashes >= settings.crashLoopThreshold {
            log(.critical, "slot \(worker.slot) is crash-looping: \(slot.crashes) crashes in a row, last \(status); next start in \(delay) ms")
            emit(.notify("STATUS=\(statusLine); slot \(worker.slot) crash-looping (\(status))"))
        } else {
            log(.error, "worker \(pid) (slot \(worker.slot)) \(status); restarting\(slot.crashes == 1 ? "" : " in \(delay) ms")")
        }
        if respawnAt <= now { respawnDue() }
    }

    /// A worker of the serving generation exited with `FatalConfigExit.code`: it cannot run with
    /// this config (its handler could not be built, the config memfd did not decode), and another
    /// start would fail the same way, so the slot is not respawned (nginx does the same with a
    /// worker's fatal exit). The slot is steered away from and stays empty until a reload or a scale
    /// gives it a new start. Before the daemon was ever ready, or when no worker of the serving
    /// generation is left and none is due to restart, the master stops as gunicorn does on a worker
    /// boot failure, exiting 78 itself so that systemd (`RestartPreventExitStatus=78`) does not loop.
    mutating func fatalConfigExit(_ worker: WorkerRecord) {
        slots[worker.slot] = SlotRecord(stopped: true)
        let why = "worker \(worker.pid) (slot \(worker.slot)) exited with code \(FatalConfigExit.code): it cannot run with this config"
        let servingLeft = workers.values.contains { $0.generation == generation && $0.state != .draining }
        let restartDue = slots[..<target].contains { $0.respawnAt != nil }
        if case .starting = phase {
            log(.critical, "\(why); the start failed")
        } else if !servingLeft && !restartDue {
            log(.critical, "\(why); no worker is left to serve: stopping")
        } else {
            steer()
            log(.critical, "\(why); the slot is not restarted (fix the config and reload)")
            emit(.notify("STATUS=\(statusLine); slot \(worker.slot) stopped: fatal config error (exit \(FatalConfigExit.code))"))
            return
        }
        stopExitCode = FatalConfigExit.code
        emit(.notify("STATUS=failed: \(why)"))
        beginStop(graceful: false, requester: nil)
    }

    /// A worker that did not exit cleanly took its open connections down with it: counted and
    /// logged, whatever its state. Killed or fast-stopped at its drain deadline: closed on the
    /// drain timeout; otherwise (a crash, a kill -9, a heartbeat kill): lost with a crashed worker.
    /// A worker that exits 0 closed (and counted) its connections itself.
    mutating func countConnectionsLost(_ worker: WorkerRecord, _ status: ExitStatus, open: Int) {
        guard status != .exited(0), open > 0 else { return }
        let atDeadline = worker.state == .draining && worker.escalation != .none
        emit(.countLostConnections(open, closedOnDrainTimeout: atDeadline))
        let who = "worker \(worker.pid) (slot \(worker.slot), generation \(worker.generation)\(worker.state == .draining ? ", draining" : ""))"
        if atDeadline {
            log(.warning, "\(who) \(status) at its drain deadline: \(open) open connection(s) closed")
        } else {
            log(.warning, "\(who) died with \(open) open connection(s) (\(status)); they are lost")
        }
    }

    // MARK: - Spawning

    mutating func spawn(slot: Int, generation gen: Int) {
        guard let statsSlot = freeStats.popLast() else {
            log(.critical, "no free stats slot for slot \(slot)")
            return
        }
        guard let data = generations[gen] else {
            freeStats.append(statsSlot)
            log(.critical, "no config for generation \(gen)")
            return
        }
        emit(.spawn(WorkerLaunch(slot: slot, generation: gen, statsSlot: statsSlot, listenerSet: data.listenerSet, configBytes: data.bytes)))
    }

    /// The outcome of `spawn`: the worker runs as `pid`.
    public mutating func workerSpawned(_ launch: WorkerLaunch, pid: ProcessID) -> [MasterAction] {
        var record = WorkerRecord(pid: pid, slot: launch.slot, generation: launch.generation, statsSlot: launch.statsSlot, state: .starting, startedAt: now)
        let wanted: Bool
        if case .stopping = phase { wanted = false } else { wanted = launch.generation == generation || launch.generation == reload?.generation }
        if !wanted {
            // Its batch was called off in the same turn (a reload aborted by an earlier spawn's failure).
            record.state = .draining
            record.drainSince = now
            record.escalation = .killed
            emit(.signal(SignalNumber.kill, to: pid))
        }
        workers[pid] = record
        return flush()
    }

    /// The outcome of `spawn`: no process started.
    public mutating func spawnFailed(_ launch: WorkerLaunch, reason: String) -> [MasterAction] {
        let (slot, gen) = (launch.slot, launch.generation)
        freeStats.append(launch.statsSlot)
        log(.error, "cannot start a worker for slot \(slot): \(reason)")
        if let r = reload, r.generation == gen {
            abortReload("cannot start a worker for slot \(slot): \(reason)")
        } else if gen == generation, slot < slots.count {
            var s = slots[slot]
            s.crashes += 1
            s.respawnAt = now + min(settings.backoffMax, settings.backoffBase << min(Int64(s.crashes), 20))
            slots[slot] = s
        }
        return flush()
    }

    // MARK: - Clock

    /// A turn of the clock. `heartbeats`: each worker's last heartbeat (CLOCK_MONOTONIC ms) as its
    /// stats slot says now (a worker missing from it counts as 0, never written).
    public mutating func tick(now: Int64, heartbeats: [ProcessID: Int64]) -> [MasterAction] {
        self.now = now
        if let at = refuseAt, now >= at { refuseAndCloseLater() }
        if let at = closeListenersAt, now >= at { closeListenersAndDrain() }
        respawnDue()
        for pid in workers.keys.sorted() {
            guard let worker = workers[pid] else { continue }
            switch worker.state {
            case .ready:
                let beat = heartbeats[pid] ?? 0
                // Once: the KILL is sent, and the worker stays `.ready` until it is reaped.
                if worker.escalation == .none && beat > 0 && now &- beat > settings.heartbeatTimeout {
                    log(.error, "worker \(pid) (slot \(worker.slot)) missed its heartbeat for \(now &- beat) ms; killing it")
                    emit(.signal(SignalNumber.kill, to: pid))
                    workers[pid]!.escalation = .killed
                }
            case .draining:
                escalateDrain(pid, worker)
            case .starting:
                if now - worker.startedAt > settings.startTimeout && worker.escalation == .none {
                    log(.error, "worker \(pid) (slot \(worker.slot)) did not report ready in \(settings.startTimeout) ms; killing it")
                    emit(.signal(SignalNumber.kill, to: pid))
                    workers[pid]!.escalation = .killed
                }
            case .exited:
                break
            }
        }
        if let r = reload, now - r.startedAt > settings.startTimeout {
            abortReload("new workers did not report ready within \(settings.startTimeout / 1000) s")
        }
        if let waiting = awaitingDrainAcks, now - waiting.since > Self.drainAckTimeout {
            answerReloadWhenOldGenerationStopped(force: true)
        }
        answerScaleWaiters()
        checkConfigReadDeadline()
        if let interval = settings.watchdogInterval, lastWatchdog.map({ now - $0 >= interval }) ?? true, isHealthy(now: now, heartbeats: heartbeats) {
            lastWatchdog = now
            emit(.feedWatchdog)
        }
        return flush()
    }

    /// The earliest time (CLOCK_MONOTONIC ms) at which `tick` has something to do that no other
    /// input brings: a graceful stop's listener close, a drain escalation, a respawn after its
    /// backoff, a start timeout, a reload's or a `--wait`'s deadline, the config read's deadline.
    /// nil: nothing is due. (Heartbeats and the watchdog, seconds apart, are left to the
    /// executor's regular tick.) Each of these is cleared or moved on by the `tick` that meets it.
    /// The executor's loop waits no longer than this, so a deadline is met on time rather than at
    /// the next fixed tick.
    public func nextDeadline() -> Int64? {
        var earliest: Int64? = nil
        func consider(_ t: Int64?) {
            guard let t else { return }
            earliest = min(earliest ?? t, t)
        }
        consider(closeListenersAt)
        consider(refuseAt)
        let graceful: Bool
        if case .stopping(let g) = phase { graceful = g } else { graceful = true }
        for worker in workers.values {
            switch worker.state {
            case .draining:
                let since = worker.drainSince ?? now
                if worker.escalation == .none { consider(since &+ (graceful ? settings.drainTimeout : 0)) }
                if worker.escalation == .fastStop { consider(since &+ settings.fastStopGrace) }
            case .starting where worker.escalation == .none:
                consider(worker.startedAt &+ settings.startTimeout &+ 1)
            default: break
            }
        }
        if case .stopping = phase {} else {
            for slot in slots[..<min(target, slots.count)] { consider(slot.respawnAt) }
        }
        if let r = reload { consider(r.startedAt &+ settings.startTimeout &+ 1) }
        if let waiting = awaitingDrainAcks { consider(waiting.since &+ Self.drainAckTimeout &+ 1) }
        for w in scaleWaiters { consider(w.since &+ settings.startTimeout &+ 1) }
        if let read = configRead { consider(read.startedAt &+ settings.configReadTimeout &+ 1) }
        return earliest
    }

    /// Graceful → INT (fast stop) → KILL, on the clock.
    mutating func escalateDrain(_ pid: ProcessID, _ worker: WorkerRecord) {
        let since = worker.drainSince ?? now
        let graceful: Bool
        if case .stopping(let g) = phase { graceful = g } else { graceful = true }
        let firstDeadline = graceful ? settings.drainTimeout : 0
        if worker.escalation == .none && now - since >= firstDeadline {
            if graceful { log(.warning, "worker \(pid) (slot \(worker.slot)) still draining after \(settings.drainTimeout) ms; fast-stopping it") }
            emit(.signal(SignalNumber.interrupt, to: pid))
            workers[pid]!.escalation = .fastStop
            workers[pid]!.drainSince = now
        } else if worker.escalation == .fastStop && now - since >= settings.fastStopGrace {
            log(.warning, "worker \(pid) (slot \(worker.slot)) ignored the fast stop; killing it")
            emit(.signal(SignalNumber.kill, to: pid))
            workers[pid]!.escalation = .killed
        }
    }

    /// Starts the workers of slots whose backoff ran out (never while stopping).
    mutating func respawnDue() {
        if case .stopping = phase { return }
        for slotIndex in 0..<target {
            guard let at = slots[slotIndex].respawnAt, at <= now else { continue }
            slots[slotIndex].respawnAt = nil
            let occupied = workers.values.contains { $0.slot == slotIndex && $0.generation == generation && $0.state != .draining }
            if !occupied { spawn(slot: slotIndex, generation: generation) }
        }
    }
}
