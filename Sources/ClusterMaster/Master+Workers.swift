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
        let (masterEnd, workerEnd): (Int32, Int32)
        let configFD: Int32
        do {
            (masterEnd, workerEnd) = try Sys.socketpair()
            configFD = try FileIO.memfd(name: "clusterd-config", bytes: launch.configBytes)
        } catch {
            throw MasterFailure("\(error)")
        }
        defer {
            Sys.close(workerEnd)
            Sys.close(configFD)
        }
        let inherit = WorkerStartup.inherited(listeners: listeners, channel: workerEnd, stats: statsFD, config: configFD)
        let startup = WorkerStartup(slot: slot, generation: generation, listenerCount: listeners.count, statsSlots: statsSlots,
                                    statsSlot: statsSlot, masterPID: Sys.pid, configPath: options.configPath,
                                    build: BuildID.current?.description ?? "")
        var env = ProcessControl.currentEnvironment().filter { entry in
            !entry.hasPrefix("CLUSTERD_") && !entry.hasPrefix("LISTEN_") && !entry.hasPrefix("NOTIFY_SOCKET=")
                && !entry.hasPrefix("WATCHDOG_")
        }
        env += startup.environment
        if let level = Sys.environment("CLUSTERD_LOG_LEVEL") { env.append("CLUSTERD_LOG_LEVEL=\(level)") }
        let pid: ProcessID
        do {
            // From this process's own image, not the file at `executable` (argv[0] only): a binary
            // installed over it since this master started is run only by `clusterctl upgrade`.
            pid = try ProcessControl.spawn(executable: options.executable, arguments: options.arguments, environment: env,
                                           inherit: inherit, image: ProcessControl.currentImage)
        } catch {
            Sys.close(masterEnd)
            throw MasterFailure("\(error)")
        }
        processes[pid] = WorkerProcess(channel: masterEnd, slot: slot, statsSlot: statsSlot)
        channelOwners[masterEnd] = pid
        do {
            try epoll.add(masterEnd, events: Epoll.readable, data: Kind.channel.data(masterEnd))
        } catch {
            logger.error("watching worker \(pid): \(error)")
        }
        return pid
    }

    func send(_ message: MasterToWorker, to pid: ProcessID) {
        guard let p = processes[pid] else { return }
        let bytes = message.encoded
        let sent = bytes.withUnsafeBytes { b -> Bool in
            guard case .processed? = try? Sys.send(p.channel, b.baseAddress!, b.count) else { return false }
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
                if ConnectionHandoff.isHandoff(message) {
                    relay(passed, message: Array(message))
                } else {
                    Sys.close(passed)
                }
                continue
            }
            if let decoded = WorkerToMaster.decode(message) {
                perform(core.workerSaid(decoded, pid: pid))
            }
        }
    }

    // MARK: - Connections in transit

    /// Passes a connection from a retiring worker (or a closing listener's backlog) to a live worker.
    /// The master only holds the descriptor in transit; it never reads from it.
    func relay(_ connection: Int32, message: [UInt8]) {
        if relay(connection, message: message, to: core.liveWorkers) { return }
        // No live worker can take it now (all channels full, or none ready yet): keep it and retry
        // on the next tick.
        pendingRelays.append((connection, message, Clock.monotonicMilliseconds()))
    }

    /// Sends `connection` to one of `live` (round robin), then closes the master's copy. A worker
    /// whose last published connection count is at `http.maxConnections` is passed over while
    /// another has room (one at the cap closes a hand-over gracefully instead of holding it).
    /// False when none took it.
    @discardableResult
    func relay(_ connection: Int32, message: [UInt8], to live: [ProcessID]) -> Bool {
        guard !live.isEmpty else { return false }
        let cap = config.http.maxConnections
        let roomy = live.filter { pid in
            guard let p = processes[pid] else { return false }
            return Int(clamping: segment.worker(p.statsSlot)[.openConnections]) < cap
        }
        let candidates = roomy.isEmpty ? live : roomy
        for attempt in 0..<candidates.count {
            let pid = candidates[(nextRelay + attempt) % candidates.count]
            guard let channel = processes[pid]?.channel else { continue }
            let result = message.withUnsafeBytes { try? Socket.sendDescriptor(channel, connection, $0) }
            if case .processed = result {
                nextRelay = (nextRelay + attempt + 1) % candidates.count
                Sys.close(connection)
                relayed += 1
                processes[pid]?.relayed += 1
                return true
            }
        }
        return false
    }

    func retryRelays(_ now: Int64) {
        guard !pendingRelays.isEmpty else { return }
        let pending = pendingRelays
        pendingRelays = []
        for (fd, message, since) in pending {
            if now - since > 30_000 {
                logger.error("no live worker took a handed-off connection for 30 s; closing it")
                Sys.close(fd)
                droppedRelays += 1
                continue
            }
            let before = pendingRelays.count
            relay(fd, message: message)
            if pendingRelays.count > before { pendingRelays[pendingRelays.count - 1].since = since }
        }
    }
}
