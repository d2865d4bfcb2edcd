import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem
import ClusterSystemd

/// What a master hands to its next image across `execve` (`clusterctl upgrade`): descriptors it
/// keeps open (CLOEXEC cleared for the exec), and the facts the new image needs to take them over.
/// Written as JSON into a memfd whose number is in `CLUSTERD_UPGRADE_STATE`.
public struct UpgradeState: Sendable {
    public static let variable = "CLUSTERD_UPGRADE_STATE"
    static let version = 1

    public struct Worker: Equatable, Sendable {
        var adopted: MasterCore.AdoptedWorker
        var channel: Int32
    }

    /// The build that wrote this.
    var from: String
    /// A memfd with the exact config bytes the previous image ran (the new image runs them too).
    public var configFD: Int32
    var statsFD: Int32
    var statsSlots: Int
    var controlFD: Int32
    var listeners: [(name: String, fd: Int32)]
    var workers: [Worker]
    var reloads: Int
    var restarts: Int
    var startedAt: Int64
    /// `TicketKeyRing.serialized`: the session-ticket keys go on with the new image (empty: an image
    /// that did not hand them over; the new one keeps its own).
    var ticketKeys: [UInt8] = []

    var json: JSON {
        .object([
            "v": .integer(Int64(Self.version)), "from": .string(from), "config": .integer(Int64(configFD)),
            "stats": .integer(Int64(statsFD)), "statsSlots": .integer(Int64(statsSlots)), "control": .integer(Int64(controlFD)),
            "listeners": .array(listeners.map { .object(["name": .string($0.name), "fd": .integer(Int64($0.fd))]) }),
            "workers": .array(workers.map { w in
                .object(["pid": .integer(Int64(w.adopted.pid)), "slot": .integer(Int64(w.adopted.slot)),
                         "generation": .integer(Int64(w.adopted.generation)), "statsSlot": .integer(Int64(w.adopted.statsSlot)),
                         "channel": .integer(Int64(w.channel))])
            }),
            "reloads": .integer(Int64(reloads)), "restarts": .integer(Int64(restarts)), "startedAt": .integer(startedAt),
            "ticketKeys": .string(Hex.encode(ticketKeys)),
        ])
    }

    init(from: String, configFD: Int32, statsFD: Int32, statsSlots: Int, controlFD: Int32, listeners: [(name: String, fd: Int32)],
         workers: [Worker], reloads: Int, restarts: Int, startedAt: Int64) {
        (self.from, self.configFD, self.statsFD, self.statsSlots, self.controlFD) = (from, configFD, statsFD, statsSlots, controlFD)
        (self.listeners, self.workers, self.reloads, self.restarts, self.startedAt) = (listeners, workers, reloads, restarts, startedAt)
    }

    /// Reads it back; nil for anything malformed (a descriptor out of range included).
    init?(json: JSON) {
        func fd(_ v: JSON?) -> Int32? { v?.intValue.flatMap { $0 >= 0 && $0 < 1 << 20 ? Int32($0) : nil } }
        func count(_ v: JSON?) -> Int? { v?.intValue.flatMap { $0 >= 0 ? $0 : nil } }
        guard json["v"]?.intValue == Self.version, let from = json["from"]?.stringValue,
              let config = fd(json["config"]), let stats = fd(json["stats"]), let control = fd(json["control"]),
              let statsSlots = count(json["statsSlots"]), let reloads = count(json["reloads"]), let restarts = count(json["restarts"]),
              let startedAt = json["startedAt"]?.intValue, let listenerList = json["listeners"]?.arrayValue,
              let workerList = json["workers"]?.arrayValue else { return nil }
        var listeners: [(name: String, fd: Int32)] = []
        for entry in listenerList {
            guard let name = entry["name"]?.stringValue, let n = fd(entry["fd"]) else { return nil }
            listeners.append((name, n))
        }
        var workers: [Worker] = []
        for entry in workerList {
            guard let pid = entry["pid"]?.intValue, pid > 0, pid <= Int(Int32.max), let slot = count(entry["slot"]),
                  let generation = count(entry["generation"]), let statsSlot = count(entry["statsSlot"]),
                  let channel = fd(entry["channel"]) else { return nil }
            workers.append(Worker(adopted: MasterCore.AdoptedWorker(pid: ProcessID(pid), slot: slot, generation: generation, statsSlot: statsSlot),
                                  channel: channel))
        }
        self.init(from: from, configFD: config, statsFD: stats, statsSlots: statsSlots, controlFD: control, listeners: listeners,
                  workers: workers, reloads: reloads, restarts: restarts, startedAt: Int64(startedAt))
        if let text = json["ticketKeys"]?.stringValue {
            guard let keys = Hex.decode(text) else { return nil }
            ticketKeys = keys
        }
    }

    /// Every descriptor it names.
    var descriptors: [Int32] { [configFD, statsFD, controlFD] + listeners.map(\.fd) + workers.map(\.channel) }

    /// The state the previous image left, if this process was started by `clusterctl upgrade`; the
    /// memfd is read and closed. Throws when the variable is set but the state cannot be read.
    public static func take() throws(MasterFailure) -> UpgradeState? {
        guard let value = Sys.environment(variable) else { return nil }
        guard let n = Int32(value), n >= 0 else { throw MasterFailure("\(variable)=\(value): not a descriptor") }
        let memfd = Descriptor(taking: n)
        let bytes: [UInt8]
        do { bytes = try FileIO.readAll(fd: memfd.rawValue, limit: 1 << 20, name: "upgrade state") } catch {
            throw MasterFailure("cannot read the upgrade state: \(error)")
        }
        guard let json = try? JSONParser.parse(bytes), let state = UpgradeState(json: json) else {
            throw MasterFailure("the upgrade state the previous image left is malformed")
        }
        for fd in state.descriptors { try? Sys.setCloseOnExec(fd, true) }
        return state
    }
}

/// `clusterctl upgrade` in the executor: the check of the new binary (a child process reaped by
/// the loop) and the re-exec; the new image's adoption of what the old one handed over.
extension Master {
    /// The new binary's check: `BINARY --check-config --config /proc/self/fd/3`, with the running
    /// config's bytes at fd 3 and its stderr in a pipe, bounded by `upgradeCheckTimeout`.
    final class UpgradeCheck {
        let pid: ProcessID
        let requester: RequestID?
        let build: String
        let output: Descriptor
        let deadline: Int64
        var killed = false

        init(pid: ProcessID, requester: RequestID?, build: String, output: consuming Descriptor, deadline: Int64) {
            (self.pid, self.requester, self.build, self.deadline) = (pid, requester, build, deadline)
            self.output = output
        }
    }

    static let upgradeCheckTimeout: Int64 = 30_000

    func checkUpgrade(requester: RequestID?) {
        let path = options.executable
        let running = BuildID.current?.description ?? ""
        let onDisk: String
        do { onDisk = try BuildID.ofFile(path: path)?.description ?? "" } catch {
            return perform(core.upgradeCheckFailed(requester: requester, reason: "cannot read \(path): \(error.reason)"))
        }
        if onDisk == running && !running.isEmpty { return perform(core.upgradeNotNeeded(requester: requester, build: running)) }
        let bytes = core.generationConfigBytes
        do throws(SystemError) {
            let config = Descriptor(taking: try FileIO.memfd(name: "clusterd-upgrade-config", bytes: bytes))
            let (read, write) = try Sys.pipe()
            let output = Descriptor(taking: read), writeEnd = Descriptor(taking: write)
            try Sys.setNonBlocking(output.rawValue)
            let pid = try ProcessControl.spawn(executable: path, arguments: ["--check-config", "--config", "/proc/self/fd/3"],
                                               environment: Self.childEnvironment(notifying: false), inherit: [config.rawValue],
                                               standardError: writeEnd.rawValue)
            upgradeCheck = UpgradeCheck(pid: pid, requester: requester, build: onDisk, output: output,
                                        deadline: Clock.monotonicMilliseconds() + Self.upgradeCheckTimeout)
        } catch {
            perform(core.upgradeCheckFailed(requester: requester, reason: "cannot start \(path): \(error.reason)"))
        }
    }

    /// The master's environment for a process it starts: without what is only for it (LISTEN_*, the
    /// upgrade state, a worker's start-up; CLUSTERD_LOG_LEVEL stays), and unless `notifying` (its own
    /// next image) without systemd's NOTIFY_SOCKET and WATCHDOG_*: only the master talks to systemd.
    static func childEnvironment(notifying: Bool) -> [String] {
        ProcessControl.currentEnvironment().filter { entry in
            if entry.hasPrefix("CLUSTERD_LOG_LEVEL=") { return true }
            if entry.hasPrefix("CLUSTERD_") || entry.hasPrefix("LISTEN_") { return false }
            return notifying || !(entry.hasPrefix("NOTIFY_SOCKET=") || entry.hasPrefix("WATCHDOG_"))
        }
    }

    /// The check's child was reaped (`reapChildren`): the outcome goes to the core.
    func upgradeCheckExited(_ check: UpgradeCheck, _ status: ExitStatus) {
        upgradeCheck = nil
        var said = [UInt8](repeating: 0, count: 4096)
        let n = said.withUnsafeMutableBytes { p -> Int in
            guard case .processed(let n)? = try? Sys.read(check.output.rawValue, p.baseAddress!, p.count) else { return 0 }
            return n
        }
        let text = String(decoding: said[..<n], as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        if status == .exited(0) {
            return perform(core.upgradeChecked(requester: check.requester, build: check.build))
        }
        let why = check.killed ? "did not finish within \(Self.upgradeCheckTimeout / 1000) s" : "\(status)\(text.isEmpty ? "" : ": \(text)")"
        perform(core.upgradeCheckFailed(requester: check.requester, reason: "\(options.executable) --check-config on the running config \(why)"))
    }

    /// A check past its deadline is killed (and reaped as a failure).
    func upgradeCheckPeriodic(_ now: Int64) {
        guard let check = upgradeCheck, !check.killed, now >= check.deadline else { return }
        check.killed = true
        try? Sys.kill(check.pid, SignalNumber.kill)
    }

    /// Re-executes this process from the binary at its path with everything it keeps. Returns only
    /// when the kernel refused; then every descriptor is CLOEXEC again and the core is told.
    func execUpgrade() {
        let bytes = core.generationConfigBytes
        var state = UpgradeState(
            from: BuildID.current?.description ?? "", configFD: -1, statsFD: statsFD, statsSlots: statsSlots, controlFD: controlSocket.fd,
            listeners: listenerTable.inventory,
            workers: core.workers.values.compactMap { w in
                processes[w.pid].map { UpgradeState.Worker(adopted: MasterCore.AdoptedWorker(pid: w.pid, slot: w.slot, generation: w.generation, statsSlot: w.statsSlot), channel: $0.channelFD) }
            },
            reloads: core.reloads, restarts: core.restarts, startedAt: startedAt)
        state.ticketKeys = ticketKeys.serialized
        // Descriptors this image keeps (CLOEXEC again if the exec fails); the two memfds close then.
        let kept = [statsFD, controlSocket.fd] + state.listeners.map(\.fd) + state.workers.map(\.channel)
        var environment = Self.childEnvironment(notifying: true)
        do throws(SystemError) {
            let configFD = Descriptor(taking: try FileIO.memfd(name: "clusterd-config", bytes: bytes))
            state.configFD = configFD.rawValue
            let stateFD = Descriptor(taking: try FileIO.memfd(name: "clusterd-upgrade-state", bytes: Array(state.json.serialized.utf8)))
            environment.append("\(UpgradeState.variable)=\(stateFD.rawValue)")
            logger.notice("upgrade: execve \(options.executable) with \(state.listeners.count) listener(s) and \(state.workers.count) worker(s)")
            publishGauges()  // not ready (`upgrading`) until the next image's workers are
            Sys.flushStandardStreams()
            for fd in kept + [configFD.rawValue, stateFD.rawValue] { try Sys.setCloseOnExec(fd, false) }
            try ProcessControl.execute(path: options.executable, arguments: [options.executable] + options.arguments, environment: environment)
        } catch {
            for fd in kept { try? Sys.setCloseOnExec(fd, true) }
            perform(core.upgradeExecFailed(reason: "execve \(options.executable): \(error.reason)"))
        }
    }

    /// In the new image, at `run`: take over the listeners and the workers the previous image handed
    /// over (`init` mapped its stats, `run` took its control socket).
    func adoptUpgrade(_ state: UpgradeState) {
        var stored: [ListenAddress: [(slot: Int, fd: Int32, name: String)]] = [:]
        for entry in state.listeners {
            if let (address, slot) = ListenerTable.parseStoreName(entry.name, among: config.listen) {
                stored[address, default: []].append((slot, entry.fd, entry.name))
            } else {
                ListenerTable.removeFileOfForgotten(entry.fd)
                _ = Descriptor(taking: entry.fd)  // closed: the config has no such address
            }
        }
        var queued = DescriptorList()
        for (address, list) in stored { _ = listenerTable.adopt(list, address: address, queued: &queued) }
        relayQueued(queued)
        var adopted: [MasterCore.AdoptedWorker] = []
        for worker in state.workers {
            let pid = worker.adopted.pid
            processes[pid] = WorkerProcess(channel: Descriptor(taking: worker.channel), slot: worker.adopted.slot, statsSlot: worker.adopted.statsSlot)
            channelOwners[worker.channel] = pid
            do { try epoll.add(worker.channel, events: Epoll.readable, data: Kind.channel.data(worker.channel)) } catch {
                logger.error("watching worker \(pid): \(error)")
            }
            adopted.append(worker.adopted)
        }
        core.adopt(adopted, reloads: state.reloads, restarts: state.restarts)
        if !state.ticketKeys.isEmpty {
            if let ring = TicketKeyRing(serialized: state.ticketKeys, now: Clock.monotonicMilliseconds()) {
                ticketKeys = ring
            } else {
                logger.warning("the session-ticket keys the previous image handed over are malformed: new ones are made")
            }
        }
        logger.notice("upgraded from build \(state.from.isEmpty ? "(none)" : state.from) to \(BuildID.current?.description ?? "(none)"): \(listenerTable.totalOpen) listener(s), \(adopted.count) worker(s) of generation \(adopted.map(\.generation).max() ?? 0) taken over; starting generation \(core.generation)")
    }
}
