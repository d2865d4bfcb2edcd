import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem

/// The executor: performs what `MasterCore` returns. The outcome of an action that can fail
/// (`openListeners`, `spawn`) goes back to the core at once, and what it answers is performed in
/// the failed or succeeded action's place, before the rest of the list (`MasterAction`'s contract).
/// The core is never being changed while an action runs, so an action may read it (`relay` asks
/// for its live workers).
extension Master {
    func perform(_ actions: [MasterAction]) {
        for action in actions { perform(action) }
    }

    func perform(_ action: MasterAction) {
        switch action {
        case .openListeners(let set, let slots, let newWorkers, let request):
            do throws(ListenerFailure) {
                try checkDescriptors(set: set, slots: slots, newWorkers: newWorkers)
                do { try listenerTable.ensure(set: set, count: slots) } catch { throw .listeners(error.message) }
            } catch {
                return perform(core.listenersFailed(for: request, error))
            }
            // At start, listeners adopted from systemd's store beyond the config's slots close.
            if request == .start { relayQueued(listenerTable.trim(set: set, keep: slots, now: Clock.monotonicMilliseconds())) }
            perform(core.listenersOpened(for: request))
        case .trimListeners(let set, let keep):
            relayQueued(listenerTable.trim(set: set, keep: keep, now: Clock.monotonicMilliseconds()))
        case .releaseListenerSet(let set):
            relayQueued(listenerTable.release(set: set, now: Clock.monotonicMilliseconds()))
        case .steer(let set, let active, let skipping):
            do { try listenerTable.steer(set: set, active: active, skipping: skipping) } catch {
                logger.error("steering connections to \(active - skipping.count) listeners: \(error)")
            }
        case .spawn(let launch):
            let pid: ProcessID
            do { pid = try spawnWorker(launch) } catch {
                return perform(core.spawnFailed(launch, reason: error.message))
            }
            // First on its channel: the ticket keys, before it can accept a TLS connection.
            send(ticketKeys.message, to: pid)
            perform(core.workerSpawned(launch, pid: pid))
        case .send(let message, let pid):
            send(message, to: pid)
        case .signal(let signal, let pid):
            guard processes[pid] != nil else { return }
            try? Sys.kill(pid, signal)
        case .notify(let state):
            notifier.notify(state)
        case .notifyReloading(let status):
            notifier.reloading(status: status)
        case .feedWatchdog:
            notifier.watchdog()
        case .reply(let id, let response):
            reply(id, response)
        case .log(let level, let message):
            log(level, message)
        case .retireStats(let statsSlot):
            let slot = segment.worker(statsSlot)
            let retired = segment.retired
            for field in StatsSegment.summable { retired[field] = retired[field] &+ slot[field] }
            slot.reset()
        case .countLostConnections(let count, let closedOnDrainTimeout):
            if closedOnDrainTimeout {
                let retired = segment.retired
                retired[.connectionsClosedOnDrain] = retired[.connectionsClosedOnDrain] &+ UInt64(count)
            } else {
                lostConnections += count
            }
        case .readConfig:
            startConfigRead()
        case .abandonConfigRead:
            abandonConfigRead()
        case .refuseNewConnections:
            for failure in listenerTable.refuseNewConnections() {
                logger.error("refusing new connections on \(failure.address): \(failure.error)")
            }
        case .closeListeners(let relayTo):
            closeListeners(relayingQueuedTo: relayTo)
        case .reopenLogs:
            for pid in processes.keys { send(.reopenLogs, to: pid) }
        case .checkUpgrade(let requester):
            checkUpgrade(requester: requester)
        case .execUpgrade:
            execUpgrade()
        case .exit(let code):
            exitCode = code
        }
    }

    func log(_ level: LogLevel, _ message: String) {
        switch level {
        case .debug: logger.debug("\(message)")
        case .info: logger.info("\(message)")
        case .notice: logger.notice("\(message)")
        case .warning: logger.warning("\(message)")
        case .error: logger.error("\(message)")
        case .critical: logger.critical("\(message)")
        }
    }

    /// Descriptors kept free for what a change cannot foresee: control clients, connections in
    /// transit between workers, a log reopened.
    static let descriptorReserve = 32

    /// Refuses (before anything is opened) a change the master's descriptor limit cannot hold.
    func checkDescriptors(set: Int, slots: Int, newWorkers: Int) throws(ListenerFailure) {
        let listeners = listenerTable.missing(set: set, count: slots)
        // Starting a worker holds, for a moment, its end of the channel, the config memfd and a
        // copy of each descriptor it inherits (listeners, channel, stats, config); then one channel.
        let perSpawn = listenerTable.addresses(of: set).count + 5
        let needed = listeners + newWorkers + perSpawn + Self.descriptorReserve
        let limit: Int, open: Int
        do {
            limit = try Sys.descriptorLimit()
            open = try Sys.openDescriptorCount()
        } catch {
            throw .descriptors("cannot count open file descriptors: \(error)")
        }
        guard limit - open >= needed else {
            throw .descriptors("not enough file descriptors: \(listeners) new listener(s) and \(newWorkers) new worker(s) need \(needed) with the reserve, \(max(0, limit - open)) are free (limit \(limit), \(open) open); raise LimitNOFILE= (ulimit -n) or use fewer workers or listen addresses")
        }
    }

    func closeListeners(relayingQueuedTo relayTo: [ProcessID]) {
        var queued = listenerTable.shutDownAll(takingQueued: !relayTo.isEmpty)
        let total = queued.count
        var dropped = 0
        while let connection = queued.next() {
            // Passed on or not, the master's copy closes at the end of this turn.
            if !relay(connection, message: ConnectionHandoff.prefix, to: relayTo) { dropped += 1 }
        }
        droppedRelays += dropped
        if relayTo.isEmpty {
            logger.notice("listeners closed: connection attempts are refused from now on; queued connections are reset")
        } else {
            logger.notice("listeners closed: connection attempts are refused from now on (\(total - dropped) queued connection(s) passed to workers\(dropped > 0 ? ", \(dropped) closed: no worker could take them" : ""))")
        }
    }
}
