import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem
import ClusterSystemd
import Logging

/// The master process: supervision only, no HTTP. One single-threaded epoll loop over a signalfd,
/// the control socket, one channel per worker, and a clock; `MasterCore` decides, this executes
/// what it returns (`perform`, in `Master+Actions.swift`).
public final class Master {
    /// Everything the master needs from its host program.
    public struct Options {
        public var configPath: String
        /// The binary workers are started from (re-executed, not forked).
        public var executable: String
        public var arguments: [String]
        /// Extra validation of a config (the app builds its handler once to see that it can). For a
        /// reload it runs on a background thread (`ConfigLoad`): it must only build values.
        public var validate: (ClusterConfiguration) throws -> Void

        public init(configPath: String, executable: String, arguments: [String], validate: @escaping (ClusterConfiguration) throws -> Void) {
            self.configPath = configPath
            self.executable = executable
            self.arguments = arguments
            self.validate = validate
        }
    }

    /// A worker process and the master's end of its channel, which it owns: the channel is closed
    /// when the master lets go of the worker (`processes[pid] = nil` once it is reaped, or at exit).
    final class WorkerProcess {
        let channel: Descriptor
        let slot: Int
        let statsSlot: Int
        /// Connections passed to it through its channel.
        var relayed: UInt64 = 0

        init(channel: consuming Descriptor, slot: Int, statsSlot: Int) {
            self.channel = channel
            self.slot = slot
            self.statsSlot = statsSlot
        }

        /// The channel's number, borrowed: valid while the worker is in `processes`.
        var channelFD: Int32 { channel.rawValue }
    }

    /// A connection in transit that no live worker could take yet (`relay`), owned until one does:
    /// closed when dropped, whether passed on, given up after 30 s, or left at exit.
    final class PendingRelay {
        let connection: Descriptor
        let message: [UInt8]
        let since: Int64

        init(_ connection: consuming Descriptor, message: [UInt8], since: Int64) {
            self.connection = connection
            self.message = message
            self.since = since
        }
    }

    /// The kinds of the master's epoll registrations (`Epoll.Token.kind`).
    enum Kind: UInt8 {
        case signal = 1, control, client, channel, configRead

        func data(_ fd: Int32 = 0) -> UInt64 { Epoll.Token(kind: rawValue, fd: fd).data }
    }

    let options: Options
    var logger: Logger
    let notifier = SystemdNotifier()
    let epoll: Epoll
    var signals: SignalFd!
    var core: MasterCore
    /// The config the master runs under (the core's: the serving generation's, or a reload's).
    var config: ClusterConfiguration { core.config }
    /// Like a worker, the master gives back the clean file pages and free heap pages it does not
    /// need after `releaseMemoryAfterIdle` without an event (start-up, a reload, a burst of control
    /// commands map plenty).
    var idleRelease: MemoryRelease.IdleSchedule
    let listenerTable: ListenerTable
    var processes: [ProcessID: WorkerProcess] = [:]
    /// The worker whose channel a number is (for its epoll events); the channel is `processes`'s.
    var channelOwners: [Int32: ProcessID] = [:]
    var control: ControlServer
    var controlSocket = ControlSocket()
    let statsFD: Int32
    /// This process's own binary, open: workers are started from it (`ProcessControl.spawn(image:)`).
    let image: Descriptor
    let statsBase: UnsafeMutableRawPointer
    let statsSlots: Int
    var exitCode: Int32? = nil
    let startedAt: Int64
    var lastRateSample: (time: Int64, requests: UInt64) = (0, 0)
    var requestRate: Double = 0
    var lastStatusAt: Int64 = 0
    /// Session-ticket keys for the workers' TLS listeners, kept across reloads, rotated in `periodic`.
    var ticketKeys: TicketKeyRing
    let channelBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ConnectionHandoff.maxMessageBytes, alignment: 8)
    var pendingRelays: [PendingRelay] = []
    /// systemd's file descriptor store for this unit (`Master+Restart.swift`); none until `run` finds one.
    var fdStore = FDStore(capacity: 0)
    /// Connections put in the store for the next master during a restart.
    var storedConnections = 0
    /// What the previous image handed over at `clusterctl upgrade` (nil: a fresh start).
    let upgrade: UpgradeState?
    /// The new binary's check, while it runs.
    var upgradeCheck: UpgradeCheck? = nil
    /// What this master took over from the store at its start (`clusterctl status`).
    var adoptedAtStart = (listeners: 0, connections: 0, control: false)
    /// The control socket the last master left in systemd's store, until `openControlSocket`.
    var adoptedControl: ControlSocket.Owned? = nil
    var nextRelay = 0
    var relayed = 0
    var droppedRelays = 0
    var lostConnections = 0
    /// A reload's read of the config file, on a thread of its own (a hung filesystem must not
    /// freeze the loop).
    var configRead: ConfigLoad? = nil
    /// A read the core gave up on at its deadline that has not returned yet.
    var abandonedRead: ConfigLoad? = nil

    /// `upgrade`: what the previous image of this process handed over (`UpgradeState.take`).
    public init(options: Options, config: ClusterConfiguration, configBytes: [UInt8], logger: Logger, upgrade: UpgradeState? = nil) throws(SystemError) {
        self.options = options
        idleRelease = MemoryRelease.IdleSchedule(after: Int64(config.releaseMemoryAfterIdle * 1000))
        self.logger = logger
        epoll = try Epoll(capacity: 256)
        statsSlots = MasterCore.statsCapacity(maxWorkers: config.maxWorkers)
        image = Descriptor(taking: try ProcessControl.openCurrentImage())
        if let upgrade, upgrade.statsSlots == statsSlots {
            // The same segment: the adopted workers keep writing their slots, the totals go on.
            statsFD = upgrade.statsFD
            statsBase = try FileIO.map(fd: statsFD, size: StatsSegment.byteCount(workerSlots: statsSlots))
            startedAt = upgrade.startedAt
            self.upgrade = upgrade
        } else {
            (statsFD, statsBase) = try FileIO.sharedMemory(name: "clusterd-stats", size: StatsSegment.byteCount(workerSlots: statsSlots))
            startedAt = Clock.monotonicMilliseconds()
            self.upgrade = nil
        }
        ticketKeys = try TicketKeyRing(now: Clock.monotonicMilliseconds(), random: { (n) throws(SystemError) in try Sys.randomBytes(n) })
        listenerTable = ListenerTable()
        listenerTable.steerByCPU = config.reusePortSteering == .cpu
        listenerTable.deferAccept = config.deferAccept
        listenerTable.unixFiles = config.unixSocketFiles
        var settings = MasterCore.Settings()
        settings.maxWorkers = config.maxWorkers
        settings.stopAcceptGrace = config.deferAccept ? ListenerTable.deferredCloseMilliseconds : 500
        let set = listenerTable.set(for: config.listen)
        core = MasterCore(settings: settings, config: config, configBytes: configBytes, listenerSet: set)
        control = ControlServer(path: config.controlSocket, group: config.controlGroup)
    }

    /// Runs until stopped; returns the exit code.
    public func run() -> Int32 {
        // First: what systemd kept for this unit (the control socket among it) and whether it keeps any.
        adoptFromStore()
        do {
            signals = try SignalFd(signals: [
                SignalNumber.terminate, SignalNumber.interrupt, SignalNumber.quit, SignalNumber.hangup, SignalNumber.ttin,
                SignalNumber.ttou, SignalNumber.user1, SignalNumber.child,
            ])
            try epoll.add(signals.fd, events: Epoll.readable, data: Kind.signal.data())
            if let upgrade {
                // The previous image's control socket, still bound and listening.
                controlSocket.listener = ControlSocket.Owned(Descriptor(taking: upgrade.controlFD))
                try watchControlSocket()
            } else {
                try openControlSocket()
            }
        } catch {
            logger.critical("\(error)")
            notifier.failed(errno: error.errno, status: "failed: \(error)")
            return 1
        }
        if let usec = notifier.watchdogIntervalMicroseconds() { core.settings.watchdogInterval = Int64(usec / 2000) }

        let cpus = Sys.usableCPUCount
        logger.notice("clusterd \(config.listen.map(\.description).joined(separator: ", ")): starting \(config.workers.resolved(cpus: cpus)) workers (pid \(Sys.pid), control socket \(control.path))")
        if let upgrade {
            adoptUpgrade(upgrade)
            // The previous image's keys when it handed them over (it always does since they are in
            // the upgrade state); the adopted workers get them again either way.
            for pid in processes.keys { send(ticketKeys.message, to: pid) }
        }
        storeTicketKeys()
        perform(core.start(cpus: cpus, now: Clock.monotonicMilliseconds()))

        while exitCode == nil {
            let events: Int
            do {
                events = try epoll.wait(timeoutMilliseconds: Self.waitTimeout(now: Clock.monotonicMilliseconds(), deadline: core.nextDeadline())) { events, data in self.dispatch(events, data) }
            } catch {
                logger.critical("\(error)")
                exitCode = 1
                break
            }
            let now = Clock.monotonicMilliseconds()
            perform(core.tick(now: now, heartbeats: heartbeats()))
            periodic(now)
            do { try idleRelease.turn(now: now, busy: events > 0) } catch {
                logger.warning("cannot release idle memory (\(error)); not trying again")
            }
        }
        shutdown()
        return exitCode ?? 0
    }

    /// The loop's regular tick (relays to retry, status, gauges, heartbeats, the watchdog).
    public static let tickMilliseconds: Int64 = 100

    /// How long the loop waits for an event: the regular tick, or less when the core has a deadline
    /// (`MasterCore.nextDeadline`) before it, so that e.g. a graceful stop closes its listeners
    /// when its accept grace ends, not up to a tick later. At least 1 ms: a deadline that has passed
    /// is met by the tick after this wait, and a deadline left in the past (a bug) cannot spin the loop.
    public static func waitTimeout(now: Int64, deadline: Int64?) -> Int32 {
        guard let deadline else { return Int32(tickMilliseconds) }
        let (left, overflow) = deadline.subtractingReportingOverflow(now)
        if overflow { return Int32(tickMilliseconds) }
        return Int32(min(tickMilliseconds, max(1, left)))
    }

    func shutdown() {
        if core.restarting {
            for entry in pendingRelays { storeForNextStart(entry.connection, message: entry.message) }
            pendingRelays = []
            logger.notice("restart: \(listenerTable.totalOpen) listener(s) and \(storedConnections) keep-alive connection(s) left in systemd's fd store for the next start")
        }
        if !pendingRelays.isEmpty {
            logger.warning("exiting with \(pendingRelays.count) handed-over connection(s) no worker took; they are closed")
            pendingRelays = []
        }
        closeControlSocket()
        channelOwners = [:]
        processes = [:]  // closes the channels
        listenerTable.closeAll(keepingStored: core.restarting)
    }

    // MARK: - Loop

    func dispatch(_ events: UInt32, _ data: UInt64) {
        core.clock(Clock.monotonicMilliseconds())
        let token = Epoll.Token(data: data)
        let fd = token.fd
        switch Kind(rawValue: token.kind) {
        case .signal: readSignals()
        case .configRead: configReadFinished()
        case .control: acceptClients()
        case .client: clientEvent(fd, events)
        case .channel: channelReadable(fd)
        case nil: break
        }
    }

    func periodic(_ now: Int64) {
        relayQueued(listenerTable.closeDue(now: now))
        // Connections queued on the listener of a slot whose worker died (and whose replacement is
        // not ready: it waits out its restart backoff, or starts) go to a live worker rather than wait.
        for slot in core.unservedSlots {
            relayQueued(listenerTable.takeQueued(set: core.currentListenerSet, slot: slot))
        }
        retryRelays(now)
        rotateTicketKeys(now)
        upgradeCheckPeriodic(now)
        if let stuck = abandonedRead, stuck.call.result != nil {
            abandonedRead = nil
            perform(core.abandonedReadReturned())
        }
        idleRelease.after = Int64(config.releaseMemoryAfterIdle * 1000)
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
        controlPeriodic(now)
    }

    /// Each worker's heartbeat (CLOCK_MONOTONIC ms) as its stats slot says now.
    func heartbeats() -> [ProcessID: Int64] {
        var beats: [ProcessID: Int64] = [:]
        beats.reserveCapacity(core.workers.count)
        for (pid, worker) in core.workers {
            beats[pid] = Int64(clamping: segment.worker(worker.statsSlot)[.heartbeatMilliseconds])
        }
        return beats
    }

    var statusText: String {
        "\(core.statusLine), \(formatRate(requestRate)) req/s"
    }

    func formatRate(_ r: Double) -> String {
        // A rate from counters in shared memory: anything not a sane number shows as 0.
        groupedDigits(r.isFinite && r >= 0 && r < 1e15 ? Int64(r.rounded()) : 0)
    }

    // MARK: - Signals

    func readSignals() {
        while let signal = try? signals.next() {
            switch signal {
            case SignalNumber.child: reapChildren()
            case SignalNumber.terminate: perform(core.stop(graceful: true, requester: nil, keepListeners: isRestart()))
            case SignalNumber.interrupt, SignalNumber.quit: perform(core.stop(graceful: false, requester: nil))
            case SignalNumber.hangup: perform(core.reload(requester: nil, wait: false))
            case SignalNumber.ttin: perform(core.scale(.relative(1), requester: nil))
            case SignalNumber.ttou: perform(core.scale(.relative(-1), requester: nil))
            case SignalNumber.user1: perform(core.reopenLogs(requester: nil))
            default: break
            }
        }
    }

    func reapChildren() {
        while let (pid, status) = try? ProcessControl.reap() {
            if let check = upgradeCheck, check.pid == pid {
                upgradeCheckExited(check, status)
                continue
            }
            var open = 0
            if let p = processes[pid] {
                // Connections passed to it that it never took from its channel died with it.
                let unread = p.relayed &- segment.worker(p.statsSlot)[.connectionsAdopted]
                if unread > 0 && unread <= p.relayed {
                    lostConnections += Int(unread)
                    logger.warning("worker \(pid) \(status) with \(unread) handed-over connection(s) still in its channel; they are lost")
                }
                // Connections it handed off may still sit in its channel: take them first.
                channelReadable(p.channelFD)
                epoll.remove(p.channelFD)
                channelOwners[p.channelFD] = nil
                processes[pid] = nil  // the last reference but `p`: the channel closes with it
            }
            // What it last published, read before the core retires its stats slot.
            if let worker = core.workers[pid] { open = Int(clamping: segment.worker(worker.statsSlot)[.openConnections]) }
            perform(core.workerExited(pid: pid, status: status, openConnections: open))
        }
    }

    // MARK: - Reload

    /// Starts the load the core asked for (`readConfig`) on a thread of its own: the read, the
    /// decode and the validation, the app's own check included (`ConfigLoad`).
    func startConfigRead() {
        let path = options.configPath
        do {
            let load = try ConfigLoad.start(path: path, validate: ConfigLoad.Validation(check: options.validate))
            try epoll.add(load.call.readyFD, events: Epoll.readable, data: Kind.configRead.data())
            configRead = load
        } catch {
            configReadFailed("cannot read: \(error.reason)")
        }
    }

    /// The reload's load ended without a config: the core fails the reload, naming the file.
    func configReadFailed(_ message: String) {
        perform(core.configLoadFailed("\(ConfigError(file: options.configPath, keyPath: "", message: message))"))
    }

    /// The core gave up on the load at its deadline; it may still return (and is then dropped).
    func abandonConfigRead() {
        guard let load = configRead else { return }
        epoll.remove(load.call.readyFD)
        configRead = nil
        abandonedRead = load
    }

    /// The reload's load returned: hand the config (decoded and validated off the loop) to the
    /// core, which decides what it may change.
    func configReadFinished() {
        guard let load = configRead, let result = load.call.result else { return }
        epoll.remove(load.call.readyFD)
        configRead = nil
        switch (result, load.outcome) {
        case (.failure(let error), _):
            configReadFailed("cannot read: \(error.reason)")
        case (.success(let bytes), .loaded(let newConfig)?):
            // A listener that the reload keeps or opens takes its file's mode and group from here.
            listenerTable.unixFiles.merge(newConfig.unixSocketFiles) { $1 }
            let set = listenerTable.set(for: newConfig.listen)
            perform(core.configLoaded(newConfig, bytes: bytes, listenerSet: set, cpus: Sys.usableCPUCount))
        case (.success, .failed(let message)?):
            perform(core.configLoadFailed(message))
        case (.success, nil):
            configReadFailed("cannot check: no outcome")
        }
    }

    // MARK: - Totals

    var segment: StatsSegment { StatsSegment(base: statsBase, workerSlots: statsSlots) }

    func totals() -> [UInt64] { segment.totals() }

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
        g[.ready] = core.isReady ? 1 : 0
    }
}
