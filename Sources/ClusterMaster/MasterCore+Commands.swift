import ClusterControl
import ClusterJSON
import ClusterSystem

/// Scale, stop and log reopening: control commands and signals.
extension MasterCore {
    // MARK: - Scale

    /// `scale N`, `scale +k/-k`, TTIN/TTOU. A scale-up first asks for the new slots' listeners
    /// (`openListeners`); the workers start when they are open (`scaleListenersOpened`).
    public mutating func scale(_ request: ControlRequest.ScaleTarget, requester: RequestID?, wait: Bool = false) -> [MasterAction] {
        // The count and the delta come from outside (a control request): checked arithmetic, and a
        // refusal that says what was asked instead of a trap.
        let wanted: Int?
        let asked: String
        switch request {
        case .absolute(let n):
            wanted = n
            asked = "\(n)"
        case .relative(let d):
            let (sum, overflow) = target.addingReportingOverflow(d)
            wanted = overflow ? nil : sum
            asked = overflow ? "\(target) \(d < 0 ? "-" : "+") \(d.magnitude)" : "\(sum)"
        }
        guard case .running = phase else {
            refuse(requester, "cannot scale while \(phaseName)")
            return flush()
        }
        guard !upgrading else {
            refuse(requester, "cannot scale while an upgrade is in progress (clusterctl upgrade); try again when it completes")
            return flush()
        }
        guard reload == nil else {
            refuse(requester, "cannot scale while a reload is in progress; try again when it completes")
            return flush()
        }
        guard let wanted, wanted >= 1 && wanted <= workerLimit else {
            refuse(requester, "scale: workers must be 1...\(workerLimit) (maxWorkers), got \(asked)")
            return flush()
        }
        if wanted > target {
            emit(.openListeners(set: currentListenerSet, slots: wanted, newWorkers: wanted - target, for: .scale(to: wanted, requester: requester, wait: wait)))
            return flush()
        }
        if wanted < target {
            target = wanted
            steer()  // first steer new connections away from the slots that retire
            for (pid, worker) in workers.sorted(by: { $0.key < $1.key })
            where worker.generation == generation && worker.slot >= wanted && worker.state != .draining {
                drain(pid, .retire)
            }
            for slot in wanted..<slots.count { slots[slot].respawnAt = nil }
        }
        scaled(requester: requester, wait: wait, started: nil)
        return flush()
    }

    /// A scale-up's listeners are open: start the new slots' workers.
    mutating func scaleListenersOpened(to wanted: Int, requester: RequestID?, wait: Bool) {
        guard case .running = phase, reload == nil, wanted > target, wanted <= workerLimit else {
            return refuse(requester, "cannot scale to \(wanted) workers now (\(phaseName), \(target) workers)")
        }
        let from = target
        target = wanted
        for slot in from..<wanted {
            slots[slot] = SlotRecord()
            spawn(slot: slot, generation: generation)
        }
        scaled(requester: requester, wait: wait, started: from..<wanted)
    }

    mutating func scaled(requester: RequestID?, wait: Bool, started: Range<Int>?) {
        log(.notice, "scaled to \(target) workers")
        emit(.notify("STATUS=\(statusLine)"))
        // Earlier waiters whose workers this scale-down retires will never see them ready.
        answerScaleWaiters()
        guard let requester else { return }
        if wait, let started {
            scaleWaiters.append(ScaleWaiter(requester: requester, generation: generation, target: target, newSlots: started, since: now))
            answerScaleWaiters()
        } else {
            emit(.reply(requester, ControlResponse.ok(["workers": .integer(Int64(target))])))
        }
    }

    /// Settles the `scale --wait` requesters whose wait is over (see `ScaleWaiter`). `exited`: a
    /// worker that just exited, with how.
    mutating func answerScaleWaiters(exited: (worker: WorkerRecord, status: ExitStatus)? = nil) {
        guard !scaleWaiters.isEmpty else { return }
        var still: [ScaleWaiter] = []
        for w in scaleWaiters {
            let failure: String
            if case .stopping = phase {
                failure = "scale abandoned: the daemon is stopping"
            } else if w.generation != generation {
                failure = "scale abandoned: a reload replaced generation \(w.generation) before its new workers were ready"
            } else if target < w.target {
                failure = "scale superseded: now scaled to \(target) workers"
            } else if let (worker, status) = exited, worker.generation == w.generation, worker.state == .starting,
                w.newSlots.contains(worker.slot)
            {
                let next = status == .exited(FatalConfigExit.code) ? "it is not restarted (fatal config error)" : "the slot restarts with back-off"
                failure = "the new worker for slot \(worker.slot) \(status) before it was ready; \(next)"
            } else if allSlotsReady(generation: w.generation, count: w.target) {
                emit(.reply(w.requester, ControlResponse.ok(["workers": .integer(Int64(w.target)), "ready": .integer(Int64(w.target))])))
                continue
            } else if now - w.since > settings.startTimeout {
                failure = "the new workers did not report ready within \(settings.startTimeout / 1000) s"
            } else {
                still.append(w)
                continue
            }
            emit(.reply(w.requester, ControlResponse.error(failure)))
        }
        scaleWaiters = still
    }

    // MARK: - Stop

    /// TERM / `stop` (graceful) or INT / QUIT (fast). `keepListeners`: a graceful stop that systemd
    /// follows with a start (`systemctl restart`), the listeners held in its fd store for the next
    /// master: nothing is refused or closed; every worker stops accepting at once and hands each
    /// keep-alive connection to the master as soon as it is idle (`.replace`), and the master, with
    /// no live worker, passes them to the fd store too (`restarting`). What arrives meanwhile waits
    /// in the listeners' queues for the next master's workers.
    public mutating func stop(graceful: Bool, requester: RequestID?, keepListeners: Bool = false) -> [MasterAction] {
        beginStop(graceful: graceful, requester: requester, keepListeners: keepListeners)
        return flush()
    }

    mutating func beginStop(graceful: Bool, requester: RequestID?, keepListeners: Bool = false) {
        if case .stopping(let already) = phase, already == false || graceful {
            if let requester { emit(.reply(requester, ControlResponse.ok(["stopping": true]))) }
            return
        }
        phase = .stopping(graceful: graceful)
        if let r = reload {
            reload = nil
            for id in r.requesters { emit(.reply(id, ControlResponse.error("reload abandoned: the daemon is stopping"))) }
        }
        if let read = configRead {
            // Its config would be refused now: answered at once, since the master may exit first.
            configRead = nil
            emit(.abandonConfigRead)
            if let id = read.requester { emit(.reply(id, ControlResponse.error("reload abandoned: the daemon is stopping"))) }
        }
        answerReloadWhenOldGenerationStopped(force: true)
        answerScaleWaiters()
        stopBeganAt = now
        if graceful && keepListeners && !listenersClosed {
            restarting = true
            log(.notice, "restart: the listeners stay open in systemd's fd store; handing \(workers.count) workers' connections over (timeout \(settings.drainTimeout / 1000) s)")
            emit(.notify("STOPPING=1\nSTATUS=restarting: listeners and keep-alive connections kept for the next start"))
            if let requester { emit(.reply(requester, ControlResponse.ok(["stopping": true]))) }
            closeListenersAt = nil
            for pid in workers.keys.sorted() where workers[pid]!.state != .draining {
                drain(pid, .replace)
            }
            if workers.isEmpty { emit(.exit(code: stopExitCode)) }
            return
        }
        log(.notice, graceful ? "graceful stop: draining \(workers.count) workers (timeout \(settings.drainTimeout / 1000) s)" : "fast stop")
        emit(.notify("STOPPING=1\nSTATUS=stopping (\(graceful ? "graceful" : "fast"))"))
        if let requester { emit(.reply(requester, ControlResponse.ok(["stopping": true]))) }
        if graceful && !workers.isEmpty && settings.shutdownDelay > 0 {
            // Balancers and Kubernetes take a while to stop sending here: keep serving (responses
            // with `Connection: close`, `/healthz` 503) until the delay ends (`refuseAndCloseLater`).
            for pid in workers.keys.sorted() where workers[pid]!.state != .draining { emit(.send(.stopping, to: pid)) }
            refuseAt = now + settings.shutdownDelay
            log(.notice, "graceful stop: serving for shutdownDelay (\(settings.shutdownDelay) ms) with /healthz answering 503 before refusing new connections")
            return
        }
        if graceful && !workers.isEmpty {
            // New connections are refused at once (so clients and balancers go elsewhere); what is
            // queued, or still completing its handshake, is served: the workers keep serving until
            // the grace ends, then the master takes what is left in the queues, hands it to them,
            // closes the listeners and only then tells them to drain (`closeListenersAndDrain`).
            // (A restart, listeners kept for the next master, took the branch above.)
            emit(.refuseNewConnections)
            closeListenersAt = now + settings.stopAcceptGrace
            return
        }
        closeListenersAt = nil
        refuseAt = nil
        if !listenersClosed && !restarting {
            listenersClosed = true
            emit(.closeListeners(relayingQueuedTo: []))
        }
        for pid in workers.keys.sorted() where workers[pid]!.escalation == .none {
            emit(.signal(SignalNumber.interrupt, to: pid))
            workers[pid]!.state = .draining
            workers[pid]!.escalation = .fastStop
            workers[pid]!.drainSince = now
        }
        if workers.isEmpty { emit(.exit(code: stopExitCode)) }
    }

    /// The end of a graceful stop's `shutdownDelay`: from now on as a stop without one; the drain
    /// timeout counts from here.
    mutating func refuseAndCloseLater() {
        refuseAt = nil
        stopBeganAt = now
        log(.notice, "shutdownDelay over: refusing new connections")
        emit(.refuseNewConnections)
        closeListenersAt = now + settings.stopAcceptGrace
    }

    /// The end of a graceful stop's accept grace: the listeners' leftovers go to workers that still
    /// accept (through their channels, ahead of the `drain` that follows on the same channel), the
    /// listeners close, and every worker drains, its drain timeout counted from the stop.
    mutating func closeListenersAndDrain() {
        closeListenersAt = nil
        guard !listenersClosed else { return }
        listenersClosed = true
        // Ready workers take them before their `drain` (the channel keeps the order). With none
        // (every worker is already leaving, e.g. a reload's hand-over), draining ones do. (A worker
        // sent TERM with the process group keeps serving until this `drain`.)
        var takers = workers.values.filter { $0.state == .ready }
        if takers.isEmpty { takers = workers.values.filter { $0.state == .draining && $0.escalation == .none } }
        emit(.closeListeners(relayingQueuedTo: takers.map(\.pid).sorted()))
        for pid in workers.keys.sorted() {
            if workers[pid]!.state != .draining {
                drain(pid, .drain)
                workers[pid]!.drainSince = stopBeganAt
            } else {
                // Already leaving (a reload's or scale-down's hand-over): now closing instead.
                emit(.send(.drain, to: pid))
            }
        }
    }

    // MARK: - Logs

    /// USR1 / `reopen-logs`: the master's own log goes to stderr (nothing to reopen); each worker
    /// reopens its access log.
    public mutating func reopenLogs(requester: RequestID?) -> [MasterAction] {
        log(.info, "reopening logs")
        emit(.reopenLogs)
        if let requester { emit(.reply(requester, ControlResponse.ok())) }
        return flush()
    }
}
