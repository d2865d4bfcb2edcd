#if canImport(Glibc)
import Glibc
#endif
import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem
import ClusterSystemd
import Logging

/// The master process: supervision only, no HTTP. One single-threaded epoll loop over a signalfd,
/// the control socket, one channel per worker, and a clock; `MasterCore` decides, this executes.
public final class Master: MasterEffects {
    /// Everything the master needs from its host program.
    public struct Options {
        public var configPath: String
        /// The binary workers are started from (re-executed, not forked).
        public var executable: String
        public var arguments: [String]
        /// Extra validation of a config (the app builds its handler once to see that it can).
        public var validate: (ClusterConfiguration) throws -> Void

        public init(configPath: String, executable: String, arguments: [String], validate: @escaping (ClusterConfiguration) throws -> Void) {
            self.configPath = configPath
            self.executable = executable
            self.arguments = arguments
            self.validate = validate
        }
    }

    struct GenerationData {
        var config: ClusterConfiguration
        var configBytes: [UInt8]
        var listenerSet: Int
    }

    struct WorkerProcess {
        var channel: Int32
        var slot: Int
        var statsSlot: Int
        /// Connections passed to it through its channel.
        var relayed: UInt64 = 0
    }

    struct ControlClient {
        var fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var closeAfterWrite = false
        var openedAt: Int64
        /// When its replies last moved (sent bytes, or started to wait): see `replyStallTimeout`.
        var lastProgressAt: Int64 = 0
        /// The epoll events it is registered for (reading stops while its replies pile up).
        var interest: UInt32 = Epoll.readable
    }

    enum Kind: UInt64 {
        case signal = 1, control, client, channel, configRead
    }

    let options: Options
    var logger: Logger
    let notifier = SystemdNotifier()
    let epoll: Epoll
    var signals: SignalFd!
    var core: MasterCore<Master>!
    var config: ClusterConfiguration
    /// The config file's bytes as clusterd started (generation 1's; later ones keep their own in
    /// `GenerationData`).
    let startConfigBytes: [UInt8]
    /// Like a worker, the master gives back the clean file pages and free heap pages it does not
    /// need after `releaseMemoryAfterIdle` without an event (start-up, a reload, a burst of control
    /// commands map plenty).
    var idleRelease: MemoryRelease.IdleSchedule
    let listenerTable = ListenerTable()
    var generations: [Int: GenerationData] = [:]
    var pendingGeneration: GenerationData? = nil
    var processes: [ProcessID: WorkerProcess] = [:]
    var channelOwners: [Int32: ProcessID] = [:]
    var controlFD: Int32 = -1
    var controlPath: String
    var clients: [Int32: ControlClient] = [:]
    var controlAccept = ControlAcceptState()
    var requests: [RequestID: Int32] = [:]
    var nextRequest: RequestID = 1
    let statsFD: Int32
    let statsBase: UnsafeMutableRawPointer
    let statsSlots: Int
    var exitCode: Int32? = nil
    let startedAt: Int64
    var lastRateSample: (time: Int64, requests: UInt64) = (0, 0)
    var requestRate: Double = 0
    var lastStatusAt: Int64 = 0
    var watchdogInterval: Int64? = nil
    let channelBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ConnectionHandoff.maxMessageBytes, alignment: 8)
    var pendingRelays: [(fd: Int32, message: [UInt8], since: Int64)] = []
    var nextRelay = 0
    var relayed = 0
    var droppedRelays = 0
    var lostConnections = 0
    var lastWatchdog: Int64 = 0
    /// A reload's read of the config file, on a thread of its own (a hung filesystem must not
    /// freeze the loop), with whoever asked for the reload.
    var configRead: (call: BackgroundCall, requester: RequestID?, wait: Bool, startedAt: Int64)? = nil
    /// A read given up on at its deadline that has not returned yet: no other starts until it has.
    var abandonedRead: BackgroundCall? = nil
    static let configReadTimeout: Int64 = 10_000

    public init(options: Options, config: ClusterConfiguration, configBytes: [UInt8], logger: Logger) throws(SystemError) {
        self.options = options
        self.config = config
        startConfigBytes = configBytes
        idleRelease = MemoryRelease.IdleSchedule(after: Int64(config.releaseMemoryAfterIdle * 1000))
        self.logger = logger
        self.controlPath = config.controlSocket
        epoll = try Epoll(capacity: 256)
        statsSlots = MasterCore<Master>.statsCapacity(maxWorkers: config.maxWorkers)
        (statsFD, statsBase) = try FileIO.sharedMemory(name: "clusterd-stats", size: StatsSegment.byteCount(workerSlots: statsSlots))
        startedAt = Clock.monotonicMilliseconds()
    }

    /// Runs until stopped; returns the exit code.
    public func run() -> Int32 {
        do {
            signals = try SignalFd(signals: [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGCHLD])
            try epoll.add(signals.fd, events: Epoll.readable, data: Kind.signal.rawValue << 56)
            try openControlSocket()
        } catch {
            logger.critical("\(error)")
            notifier.failed(errno: error.errno, status: "failed: \(error)")
            return 1
        }
        var settings = MasterCore<Master>.Settings()
        applySettings(&settings, config)
        core = MasterCore(effects: self, settings: settings)
        if let usec = notifier.watchdogIntervalMicroseconds() { watchdogInterval = Int64(usec / 2000) }

        let workers = config.workers.resolved(cpus: Sys.allowedCPUs.count)
        listenerTable.steerByCPU = config.reusePortSteering == .cpu
        listenerTable.deferAccept = config.deferAccept
        let set = listenerTable.set(for: config.listen)
        generations[1] = GenerationData(config: config, configBytes: startConfigBytes, listenerSet: set)
        logger.notice("clusterd \(config.listen.map(\.description).joined(separator: ", ")): starting \(workers) workers (pid \(Sys.pid), control socket \(controlPath))")
        core.start(workers: workers, listenerSet: set, now: Clock.monotonicMilliseconds())

        while exitCode == nil {
            let events: Int
            do {
                events = try epoll.wait(timeoutMilliseconds: 100) { events, data in self.dispatch(events, data) }
            } catch {
                logger.critical("\(error)")
                exitCode = 1
                break
            }
            let now = Clock.monotonicMilliseconds()
            core.tick(now: now)
            periodic(now)
            do { try idleRelease.turn(now: now, busy: events > 0) } catch {
                logger.warning("cannot release idle memory (\(error)); not trying again")
            }
        }
        shutdown()
        return exitCode ?? 0
    }

    func applySettings(_ settings: inout MasterCore<Master>.Settings, _ config: ClusterConfiguration) {
        settings.maxWorkers = config.maxWorkers
        settings.drainTimeout = Int64(config.drainTimeout * 1000)
        settings.heartbeatTimeout = Int64(config.heartbeatTimeout * 1000)
        settings.stopAcceptGrace = config.deferAccept ? ListenerTable.deferredCloseMilliseconds : 500
    }

    /// The master's own use of a config (a reload's, or the old one back after a reload failed
    /// before any worker started): the core's timeouts and the idle release period with it.
    func adopt(_ newConfig: ClusterConfiguration) {
        config = newConfig
        applySettings(&core.settings, newConfig)
        idleRelease.after = Int64(newConfig.releaseMemoryAfterIdle * 1000)
    }

    func shutdown() {
        if !pendingRelays.isEmpty {
            logger.warning("exiting with \(pendingRelays.count) handed-over connection(s) no worker took; they are closed")
            for entry in pendingRelays { Sys.close(entry.fd) }
            pendingRelays = []
        }
        for client in clients.values { Sys.close(client.fd) }
        clients = [:]
        if controlFD >= 0 {
            Sys.close(controlFD)
            try? Sys.unlink(controlPath)
        }
        for p in processes.values { Sys.close(p.channel) }
        listenerTable.closeAll()
    }

    // MARK: - Loop

    func dispatch(_ events: UInt32, _ data: UInt64) {
        let fd = Int32(truncatingIfNeeded: data & 0xFFFF_FFFF)
        switch Kind(rawValue: data >> 56) {
        case .signal: readSignals()
        case .configRead: configReadFinished()
        case .control: acceptClients()
        case .client: clientEvent(fd, events)
        case .channel: channelReadable(fd)
        case nil: break
        }
    }

    func periodic(_ now: Int64) {
        for fd in listenerTable.closeDue(now: now) { relay(fd, message: ConnectionHandoff.prefix) }
        // Connections queued on the listener of a slot whose worker died (and whose replacement is
        // not ready: it waits out its restart backoff, or starts) go to a live worker rather than wait.
        for slot in core.unservedSlots {
            for fd in listenerTable.takeQueued(set: core.currentListenerSet, slot: slot) { relay(fd, message: ConnectionHandoff.prefix) }
        }
        retryRelays(now)
        checkConfigReadDeadline(now)
        publishGauges()
        if now - lastRateSample.time >= 1000 {
            let total = totals()[StatsSlot.Field.requests.rawValue]
            if lastRateSample.time > 0 {
                let dt = Double(now - lastRateSample.time) / 1000
                requestRate = Double(total &- lastRateSample.requests) / dt
            }
            lastRateSample = (now, total)
        }
        if case .running = core.phase, now - lastStatusAt >= 5000 {
            lastStatusAt = now
            notifier.status(statusText)
        }
        if let interval = watchdogInterval, now - lastWatchdog >= interval, isHealthy(now) {
            lastWatchdog = now
            notifier.watchdog()
        }
        // Control clients that never finish their line are dropped (they cannot hold the loop).
        for (fd, client) in clients where now - client.openedAt > 60_000 && !requests.values.contains(fd) {
            closeClient(fd)
        }
        controlPeriodic(now)
    }

    var statusText: String {
        "\(core.statusLine), \(formatRate(requestRate)) req/s"
    }

    func formatRate(_ r: Double) -> String {
        // A rate from counters in shared memory: anything not a sane number shows as 0.
        let n = r.isFinite && r >= 0 && r < 1e15 ? Int(r.rounded()) : 0
        var digits = String(n)
        var out = ""
        while digits.count > 3 {
            out = "," + digits.suffix(3) + out
            digits.removeLast(3)
        }
        return digits + out
    }

    /// The watchdog is fed only while the master's own checks pass: its loop turns, and the serving
    /// generation has at least one ready worker whose loop turned in the last 2 s (a worker's loop
    /// turns at least every 500 ms).
    func isHealthy(_ now: Int64) -> Bool {
        let fresh = min(core.settings.heartbeatTimeout, 2000)
        return core.workers.values.contains { w in
            w.generation == core.generation && w.state == .ready && now - heartbeat(statsSlot: w.statsSlot) < fresh
        }
    }

    // MARK: - Signals

    func readSignals() {
        while let signal = try? signals.next() {
            switch signal {
            case SIGCHLD: reapChildren()
            case SIGTERM: core.stop(graceful: true, requester: nil)
            case SIGINT, SIGQUIT: core.stop(graceful: false, requester: nil)
            case SIGHUP: reload(requester: nil, wait: false)
            case SIGTTIN: core.scale(.relative(1), requester: nil)
            case SIGTTOU: core.scale(.relative(-1), requester: nil)
            case SIGUSR1: reopenLogs()
            default: break
            }
        }
    }

    func reapChildren() {
        while let (pid, status) = try? ProcessControl.reap() {
            if let p = processes[pid] {
                // Connections passed to it that it never took from its channel died with it.
                let unread = p.relayed &- segment.worker(p.statsSlot)[.connectionsAdopted]
                if unread > 0 && unread <= p.relayed {
                    lostConnections += Int(unread)
                    logger.warning("worker \(pid) \(status) with \(unread) handed-over connection(s) still in its channel; they are lost")
                }
                // Connections it handed off may still sit in its channel: take them first.
                channelReadable(p.channel)
                processes[pid] = nil
                epoll.remove(p.channel)
                channelOwners[p.channel] = nil
                Sys.close(p.channel)
            }
            core.workerExited(pid: pid, status: status)
        }
    }

    func reopenLogs() {
        logger.info("reopening logs")
        for pid in processes.keys { send(.reopenLogs, to: pid) }
    }

    // MARK: - Reload

    func reload(requester: RequestID?, wait: Bool) {
        if let refusal = core.reloadRefusal() ?? readRefusal() {
            logger.warning("reload refused: \(refusal)")
            if let requester { reply(requester, ControlResponse.error(refusal)) }
            return
        }
        notifier.reloading(status: "reloading \(options.configPath)")
        logger.notice("reload: reading \(options.configPath)")
        let path = options.configPath
        do {
            let call = try BackgroundCall.start { () throws(SystemError) -> [UInt8] in
                try FileIO.readRegularFile(path: path, limit: 4 * 1024 * 1024)
            }
            try epoll.add(call.readyFD, events: Epoll.readable, data: Kind.configRead.rawValue << 56)
            configRead = (call, requester, wait, Clock.monotonicMilliseconds())
        } catch {
            core.reloadFailed("\(ConfigError(file: path, keyPath: "", message: "cannot read: \(error.reason)"))", requester: requester)
        }
    }

    /// Why a reload cannot start its read now, if it cannot.
    func readRefusal() -> String? {
        if configRead != nil { return "a reload is already in progress (reading \(options.configPath))" }
        if let stuck = abandonedRead {
            if stuck.result == nil {
                return "the last read of \(options.configPath) has not returned yet (a hung filesystem?); try again when it has"
            }
            abandonedRead = nil
        }
        return nil
    }

    /// A read that has not returned by its deadline fails the reload; the old generation serves on.
    func checkConfigReadDeadline(_ now: Int64) {
        guard let read = configRead, read.call.result == nil, now - read.startedAt > Self.configReadTimeout else { return }
        epoll.remove(read.call.readyFD)
        configRead = nil
        abandonedRead = read.call
        let error = ConfigError(file: options.configPath, keyPath: "", message: "cannot read: no answer in \(Self.configReadTimeout / 1000) s (a hung filesystem?)")
        core.reloadFailed("\(error)", requester: read.requester)
    }

    /// The reload's read returned: decode, validate and start the new generation.
    func configReadFinished() {
        guard let read = configRead, let result = read.call.result else { return }
        epoll.remove(read.call.readyFD)
        configRead = nil
        let requester = read.requester
        let bytes: [UInt8]
        let newConfig: ClusterConfiguration
        do {
            switch result {
            case .success(let b): bytes = b
            case .failure(let error): throw ConfigError(file: options.configPath, keyPath: "", message: "cannot read: \(error.reason)")
            }
            newConfig = try ClusterConfiguration.decode(bytes, file: options.configPath)
            try options.validate(newConfig)
            if newConfig.controlSocket != config.controlSocket {
                throw ConfigError(file: options.configPath, keyPath: "controlSocket", message: "cannot change on reload (restart instead)")
            }
            if newConfig.reusePortSteering != config.reusePortSteering {
                throw ConfigError(file: options.configPath, keyPath: "reusePortSteering", message: "cannot change on reload (restart instead)")
            }
            if newConfig.deferAccept != config.deferAccept {
                throw ConfigError(file: options.configPath, keyPath: "deferAccept", message: "cannot change on reload (restart instead)")
            }
            if newConfig.maxWorkers != config.maxWorkers {
                throw ConfigError(file: options.configPath, keyPath: "maxWorkers", message: "cannot change on reload (restart instead)")
            }
        } catch {
            core.reloadFailed("\(error)", requester: requester)
            return
        }
        // The config's `workers` wins only when it changed; otherwise a runtime scale is kept.
        let count = newConfig.workers != config.workers ? newConfig.workers.resolved(cpus: Sys.allowedCPUs.count) : core.target
        let set = listenerTable.set(for: newConfig.listen)
        pendingGeneration = GenerationData(config: newConfig, configBytes: bytes, listenerSet: set)
        let previous = config
        adopt(newConfig)
        core.beginReload(workers: count, listenerSet: set, requester: requester, wait: read.wait)
        if !core.isReloading && pendingGeneration != nil {
            // Failed before any worker started: keep the old config, and close whatever listeners
            // were opened for a new address list no generation uses.
            adopt(previous)
            pendingGeneration = nil
            releaseListenerSetIfUnused(set)
        }
    }

    // MARK: - MasterEffects

    public func ensureListeners(set: Int, count: Int) throws(MasterFailure) {
        try listenerTable.ensure(set: set, count: count)
    }

    public func trimListeners(set: Int, keep: Int) {
        let now = Clock.monotonicMilliseconds()
        for fd in listenerTable.trim(set: set, keep: keep, now: now) { relayLater(fd, message: ConnectionHandoff.prefix, now: now) }
    }

    public func steer(set: Int, active: Int, skipping: [Int]) {
        do { try listenerTable.steer(set: set, active: active, skipping: skipping) } catch {
            logger.error("steering connections to \(active - skipping.count) listeners: \(error)")
        }
    }

    /// Descriptors kept free for what a change cannot foresee: control clients, connections in
    /// transit between workers, a log reopened.
    static let descriptorReserve = 32

    public func checkDescriptors(set: Int, slots: Int, newWorkers: Int) throws(MasterFailure) {
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
            throw MasterFailure("cannot count open file descriptors: \(error)")
        }
        guard limit - open >= needed else {
            throw MasterFailure("not enough file descriptors: \(listeners) new listener(s) and \(newWorkers) new worker(s) need \(needed) with the reserve, \(max(0, limit - open)) are free (limit \(limit), \(open) open); raise LimitNOFILE= (ulimit -n) or use fewer workers or listen addresses")
        }
    }

    public func spawnWorker(slot: Int, generation: Int, statsSlot: Int) throws(MasterFailure) -> ProcessID {
        if generations[generation] == nil, let pending = pendingGeneration {
            generations[generation] = pending
            pendingGeneration = nil
        }
        guard let data = generations[generation] else { throw MasterFailure("no config for generation \(generation)") }
        let slotStats = StatsSlot(base: statsBase + statsSlot * StatsSlot.size)
        slotStats.reset()
        let gauges = segment.master
        gauges[.slotsHighWater] = max(gauges[.slotsHighWater], UInt64(statsSlot + 1))
        let listeners = listenerTable.fds(set: data.listenerSet, slot: slot)
        let (masterEnd, workerEnd): (Int32, Int32)
        let configFD: Int32
        do {
            (masterEnd, workerEnd) = try Sys.socketpair()
            configFD = try FileIO.memfd(name: "clusterd-config", bytes: data.configBytes)
        } catch {
            throw MasterFailure("\(error)")
        }
        defer {
            Sys.close(workerEnd)
            Sys.close(configFD)
        }
        let inherit = listeners + [workerEnd, statsFD, configFD]
        let base = 3 + listeners.count
        var env = ProcessControl.currentEnvironment().filter { entry in
            !entry.hasPrefix("CLUSTERD_") && !entry.hasPrefix("LISTEN_") && !entry.hasPrefix("NOTIFY_SOCKET=")
                && !entry.hasPrefix("WATCHDOG_")
        }
        env += [
            "\(WorkerEnvironment.slot)=\(slot)",
            "\(WorkerEnvironment.generation)=\(generation)",
            "\(WorkerEnvironment.listenFDs)=\(listeners.count)",
            "\(WorkerEnvironment.channelFD)=\(base)",
            "\(WorkerEnvironment.statsFD)=\(base + 1)",
            "\(WorkerEnvironment.configFD)=\(base + 2)",
            "\(WorkerEnvironment.statsSlots)=\(statsSlots)",
            "\(WorkerEnvironment.statsSlot)=\(statsSlot)",
            "\(WorkerEnvironment.masterPID)=\(Sys.pid)",
            "\(WorkerEnvironment.configPath)=\(options.configPath)",
        ]
        if let level = Sys.environment("CLUSTERD_LOG_LEVEL") { env.append("CLUSTERD_LOG_LEVEL=\(level)") }
        let pid: ProcessID
        do {
            pid = try ProcessControl.spawn(executable: options.executable, arguments: options.arguments, environment: env, inherit: inherit)
        } catch {
            Sys.close(masterEnd)
            throw MasterFailure("\(error)")
        }
        processes[pid] = WorkerProcess(channel: masterEnd, slot: slot, statsSlot: statsSlot)
        channelOwners[masterEnd] = pid
        do {
            try epoll.add(masterEnd, events: Epoll.readable, data: Kind.channel.rawValue << 56 | UInt64(UInt32(bitPattern: masterEnd)))
        } catch {
            logger.error("watching worker \(pid): \(error)")
        }
        return pid
    }

    public func send(_ message: MasterToWorker, to pid: ProcessID) {
        guard let p = processes[pid] else { return }
        let bytes = message.encoded
        let n = bytes.withUnsafeBytes { Glibc.send(p.channel, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        if n < 0 {
            // The channel is full or gone: a signal says the same thing.
            if message == .drain { try? Sys.kill(pid, SIGTERM) }
            if message == .reopenLogs { try? Sys.kill(pid, SIGUSR1) }
        }
    }

    public func signal(_ signal: Int32, to pid: ProcessID) {
        guard processes[pid] != nil else { return }
        try? Sys.kill(pid, signal)
    }

    public func notify(_ state: String) {
        notifier.notify(state)
    }

    public func reply(_ id: RequestID, _ response: JSON) {
        guard let fd = requests.removeValue(forKey: id), clients[fd] != nil else { return }
        write(to: fd, response)
    }

    public func log(_ level: LogLevel, _ message: String) {
        switch level {
        case .debug: logger.debug("\(message)")
        case .info: logger.info("\(message)")
        case .notice: logger.notice("\(message)")
        case .warning: logger.warning("\(message)")
        case .error: logger.error("\(message)")
        case .critical: logger.critical("\(message)")
        }
    }

    public func heartbeat(statsSlot: Int) -> Int64 {
        Int64(clamping: StatsSlot(base: statsBase + statsSlot * StatsSlot.size)[.heartbeatMilliseconds])
    }

    var segment: StatsSegment { StatsSegment(base: statsBase, workerSlots: statsSlots) }

    public func retireStats(statsSlot: Int) {
        let slot = segment.worker(statsSlot)
        let retired = segment.retired
        for field in StatsSegment.summable { retired[field] = retired[field] &+ slot[field] }
        slot.reset()
    }

    /// The master's gauges in the shared segment, for `/metrics`.
    func publishGauges() {
        let g = segment.master
        g[.pid] = UInt64(Sys.pid)
        g[.workers] = UInt64(core.target)
        g[.generation] = UInt64(core.generation)
        g[.reloads] = UInt64(core.reloads)
        g[.failedReloads] = UInt64(core.failedReloads)
        g[.restarts] = UInt64(core.restarts)
        g[.handedOff] = UInt64(relayed)
        g[.lostWithCrashedWorkers] = UInt64(lostConnections)
        g[.startedAtMilliseconds] = UInt64(startedAt)
    }

    public func releaseGeneration(_ generation: Int) {
        guard let data = generations.removeValue(forKey: generation) else { return }
        releaseListenerSetIfUnused(data.listenerSet)
    }

    func releaseListenerSetIfUnused(_ set: Int) {
        guard !generations.values.contains(where: { $0.listenerSet == set }), pendingGeneration?.listenerSet != set else { return }
        let now = Clock.monotonicMilliseconds()
        for fd in listenerTable.release(set: set, now: now) { relayLater(fd, message: ConnectionHandoff.prefix, now: now) }
    }

    public func exit(code: Int32) {
        exitCode = code
    }

    public func refuseNewConnections() {
        for fd in listenerTable.allFDs {
            do { try Socket.dropNewConnections(fd) } catch {
                logger.error("refusing new connections: \(error)")
            }
        }
    }

    public func closeListeners(relayingQueuedTo relayTo: [ProcessID]) {
        let queued = listenerTable.shutDownAll(takingQueued: !relayTo.isEmpty)
        var dropped = 0
        for fd in queued where !relay(fd, message: ConnectionHandoff.prefix, to: relayTo) {
            Sys.close(fd)
            dropped += 1
        }
        droppedRelays += dropped
        if relayTo.isEmpty {
            logger.notice("listeners closed: connection attempts are refused from now on; queued connections are reset")
        } else {
            logger.notice("listeners closed: connection attempts are refused from now on (\(queued.count - dropped) queued connection(s) passed to workers\(dropped > 0 ? ", \(dropped) closed: no worker could take them" : ""))")
        }
    }

    public func openConnections(statsSlot: Int) -> Int {
        Int(clamping: segment.worker(statsSlot)[.openConnections])
    }

    public func countLostConnections(_ count: Int, closedOnDrainTimeout: Bool) {
        if closedOnDrainTimeout {
            let retired = segment.retired
            retired[.connectionsClosedOnDrain] = retired[.connectionsClosedOnDrain] &+ UInt64(count)
        } else {
            lostConnections += count
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
                core.workerSaid(decoded, pid: pid)
            }
        }
    }

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
    func relay(_ connection: Int32, message: [UInt8], to live: [ProcessID]) -> Bool {
        guard !live.isEmpty else { return false }
        let cap = config.http.maxConnections
        // (Not `core`: this runs inside the core's own changes, e.g. `closeListeners`.)
        let roomy = live.filter { pid in
            guard let p = processes[pid] else { return false }
            return openConnections(statsSlot: p.statsSlot) < cap
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

    /// For effects the core calls while it is changing (trimming listeners, releasing a
    /// generation): `relay` asks the core for its live workers, which would be a second access to
    /// it mid-change (a fatal exclusivity violation). The next turn of the loop relays these.
    func relayLater(_ connection: Int32, message: [UInt8], now: Int64) {
        pendingRelays.append((connection, message, now))
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

    // MARK: - Totals

    func totals() -> [UInt64] { segment.totals() }
}
