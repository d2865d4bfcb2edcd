import ClusterControl
import ClusterSystem

/// Worker processes: starting them, their channels, and connections in transit between them.
extension Master {
    // MARK: - Spawning

    /// Starts a worker: its listeners from fd 3 (LISTEN_FDS), then its channel, the stats memfd and
    /// a memfd with the exact config bytes of its generation.
    func spawnWorker(_ launch: WorkerLaunch) throws(MasterFailure) -> ProcessID {
        let (slot, generation, statsSlot) = (launch.slot, launch.generation, launch.statsSlot)
        let slotStats = segment.worker(statsSlot)
        slotStats.reset()
        let gauges = segment.master
        gauges[.slotsHighWater] = max(gauges[.slotsHighWater], UInt64(statsSlot + 1))
        let listeners = listenerTable.fds(set: launch.listenerSet, slot: slot)
        // The worker's end and the config memfd are closed when this returns (the worker has its
        // copies); the master's end goes to the `WorkerProcess`, or is closed here if none starts.
        let ends: (Int32, Int32)
        do { ends = try Sys.socketpair() } catch { throw MasterFailure("\(error)") }
        let masterEnd = Descriptor(taking: ends.0), workerEnd = Descriptor(taking: ends.1)
        let config: Descriptor
        do { config = Descriptor(taking: try FileIO.memfd(name: "clusterd-config", bytes: launch.configBytes)) } catch {
            throw MasterFailure("\(error)")
        }
        let inherit = WorkerStartup.inherited(listeners: listeners, channel: workerEnd.rawValue, stats: statsFD, config: config.rawValue)
        let startup = WorkerStartup(slot: slot, generation: generation, listenerCount: listeners.count, statsSlots: statsSlots,
                                    statsSlot: statsSlot, masterPID: Sys.pid, configPath: options.configPath,
                                    build: BuildID.current?.description ?? "")
        let env = Self.childEnvironment(notifying: false) + startup.environment
        let pid: ProcessID
        do {
            // From this process's own image, not the file at `executable` (argv[0] only): a binary
            // installed over it since this master started is run only by `clusterctl upgrade`.
            pid = try ProcessControl.spawn(executable: options.executable, arguments: options.arguments, environment: env,
                                           inherit: inherit, image: image.rawValue)
        } catch {
            throw MasterFailure("\(error)")
        }
        let channel = masterEnd.rawValue
        processes[pid] = WorkerProcess(channel: masterEnd, slot: slot, statsSlot: statsSlot)
        channelOwners[channel] = pid
        do {
            try epoll.add(channel, events: Epoll.readable, data: Kind.channel.data(channel))
        } catch {
            logger.error("watching worker \(pid): \(error)")
        }
        return pid
    }

    /// A new ticket key every `TicketKeyRing.rotation`, sent to every worker.
    func rotateTicketKeys(_ now: Int64) {
        do {
            guard try ticketKeys.rotateIfDue(now: now, random: { (n) throws(SystemError) in try Sys.randomBytes(n) }) else { return }
        } catch {
            logger.error("cannot make a new session-ticket key (\(error)); keeping the current one")
            return
        }
        logger.info("session-ticket key rotated")
        for pid in processes.keys { send(ticketKeys.message, to: pid) }
        storeTicketKeys()
    }

    func send(_ message: MasterToWorker, to pid: ProcessID) {
        guard let p = processes[pid] else { return }
        let bytes = message.encoded
        let sent = bytes.withUnsafeBytes { b -> Bool in
            guard case .processed? = try? Sys.send(p.channelFD, b.baseAddress!, b.count) else { return false }
            return true
        }
        if !sent {
            // The channel is full or gone: a signal says the same thing.
            if message == .drain { try? Sys.kill(pid, SignalNumber.terminate) }
            if message == .reopenLogs { try? Sys.kill(pid, SignalNumber.user1) }
        }
    }

    // MARK: - Worker channels

    func channelReadable(_ fd: Int32) {
        guard let pid = channelOwners[fd] else { return }
        while true {
            let received: IOResult<(count: Int, fd: Int32)>
            do { received = try Socket.receiveDescriptor(fd, channelBuffer) } catch {
                return
            }
            guard case .processed(let (n, passed)) = received else { return }
            if n == 0 && passed < 0 {
                epoll.remove(fd)  // the worker is exiting; SIGCHLD follows
                return
            }
            let message = UnsafeRawBufferPointer(rebasing: channelBuffer[0..<n])
            if passed >= 0 {
                let connection = Descriptor(taking: passed)
                // Anything but a hand-off is closed, as it goes out of scope.
                if ConnectionHandoff.isHandoff(message) { relay(connection, message: Array(message)) }
                continue
            }
            if let decoded = WorkerToMaster.decode(message) {
                perform(core.workerSaid(decoded, pid: pid))
            }
        }
    }

    // MARK: - Connections in transit

    /// Passes a connection from a retiring worker (or a closing listener's backlog) to a live worker.
    /// The master only holds the descriptor in transit; it never reads from it. Its copy is closed
    /// once a worker has the connection.
    func relay(_ connection: consuming Descriptor, message: [UInt8]) {
        // A restart: the next master's workers take it (`Master+Restart.swift`).
        if core.restarting { return storeForNextStart(connection, message: message) }
        if relay(connection, message: message, to: core.liveWorkers) { return }
        // No live worker can take it now (all channels full, or none ready yet): keep it and retry
        // on the next tick.
        pendingRelays.append(PendingRelay(connection, message: message, since: Clock.monotonicMilliseconds()))
    }

    /// Relays connections taken from listeners' queues, each with the plain hand-off message.
    func relayQueued(_ connections: consuming DescriptorList) {
        while let connection = connections.next() { relay(connection, message: ConnectionHandoff.prefix) }
    }

    /// Sends `connection` to one of `live` (round robin); the caller's copy is then to be closed
    /// (it is, when the caller lets go of it). A worker whose last published connection count is
    /// at `http.maxConnections` is passed over while another has room (one at the cap closes a
    /// hand-over gracefully instead of holding it). False when none took it.
    func relay(_ connection: borrowing Descriptor, message: [UInt8], to live: [ProcessID]) -> Bool {
        guard !live.isEmpty else { return false }
        let cap = config.http.maxConnections
        let roomy = live.filter { pid in
            guard let p = processes[pid] else { return false }
            return Int(clamping: segment.worker(p.statsSlot)[.openConnections]) < cap
        }
        let candidates = roomy.isEmpty ? live : roomy
        for attempt in 0..<candidates.count {
            let pid = candidates[(nextRelay + attempt) % candidates.count]
            guard let channel = processes[pid]?.channelFD else { continue }
            let fd = connection.rawValue
            let result = message.withUnsafeBytes { try? Socket.sendDescriptor(channel, fd, $0) }
            if case .processed = result {
                nextRelay = (nextRelay + attempt + 1) % candidates.count
                relayed += 1
                processes[pid]?.relayed += 1
                return true
            }
        }
        return false
    }

    func retryRelays(_ now: Int64) {
        guard !pendingRelays.isEmpty else { return }
        if core.restarting {
            for entry in pendingRelays { storeForNextStart(entry.connection, message: entry.message) }
            pendingRelays = []
            return
        }
        // An entry dropped here (passed on, or given up) closes the master's copy.
        let pending = pendingRelays
        pendingRelays = []
        for entry in pending {
            if now - entry.since > 30_000 {
                logger.error("no live worker took a handed-off connection for 30 s; closing it")
                droppedRelays += 1
                continue
            }
            if !relay(entry.connection, message: entry.message, to: core.liveWorkers) { pendingRelays.append(entry) }
        }
    }
}
