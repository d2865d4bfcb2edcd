import ClusterControl
import ClusterJSON
import ClusterSystem

/// An identifier for a control client waiting for an answer.
public typealias RequestID = Int

/// What the master's decisions do to the world. The daemon's executor makes the syscalls; tests use
/// a recording fake and a manual clock.
public protocol MasterEffects: AnyObject {
    /// Listener set `set` gets listeners for slots 0..<count, created in slot order.
    func ensureListeners(set: Int, count: Int) throws(MasterFailure)
    /// Closes the listeners of slots >= `keep` in `set`, highest slot first (so reuseport indexes of
    /// the slots that stay never move).
    func trimListeners(set: Int, keep: Int)
    /// Refuses (before anything is opened) a change the master's descriptor limit cannot hold:
    /// listeners for slots 0..<slots of `set` plus a channel for each of `newWorkers`, with room left
    /// to restart a crashed worker and answer the control socket.
    func checkDescriptors(set: Int, slots: Int, newWorkers: Int) throws(MasterFailure)
    /// Steers new connections of `set` to its listeners 0..<active other than `skipping` (reuseport
    /// BPF; `skipping` ascending).
    func steer(set: Int, active: Int, skipping: [Int])
    func spawnWorker(slot: Int, generation: Int, statsSlot: Int) throws(MasterFailure) -> ProcessID
    func send(_ message: MasterToWorker, to pid: ProcessID)
    func signal(_ signal: Int32, to pid: ProcessID)
    /// sd_notify.
    func notify(_ state: String)
    func reply(_ id: RequestID, _ response: JSON)
    func log(_ level: LogLevel, _ message: String)
    /// The worker's heartbeat (CLOCK_MONOTONIC ms) from its stats slot.
    func heartbeat(statsSlot: Int) -> Int64
    /// A stats slot is free again: fold its counters into the totals and zero it.
    func retireStats(statsSlot: Int)
    /// No worker runs `generation` any more and it will not be used again.
    func releaseGeneration(_ generation: Int)
    /// A stop began: from now on no new connection may enter any listener's accept queue (the
    /// kernel drops new SYNs; handshakes already under way still complete and are queued).
    func refuseNewConnections()
    /// Takes what is still queued on every listener, passes it to `relayTo` (workers that will
    /// serve it before they drain), then shuts every listener down and closes it: from here on a
    /// connection attempt is refused (RST). An empty `relayTo` closes what was queued.
    func closeListeners(relayingQueuedTo relayTo: [ProcessID])
    /// The open-connection count a worker last published in its stats slot.
    func openConnections(statsSlot: Int) -> Int
    /// Connections a dead worker took down with it: lost with a crashed worker, or closed because its
    /// drain timed out (it was fast-stopped or killed at the deadline).
    func countLostConnections(_ count: Int, closedOnDrainTimeout: Bool)
    func exit(code: Int32)
}

public enum LogLevel: Sendable { case debug, info, notice, warning, error, critical }

public struct MasterFailure: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The master's decisions as a state machine: child exits, worker messages, control commands,
/// signals and clock ticks go in; effects come out. No syscalls here.
public struct MasterCore<Effects: MasterEffects> {
    public struct Settings: Sendable {
        public var maxWorkers = 256
        public var drainTimeout: Int64 = 30_000
        /// A ready worker whose heartbeat is older than this is killed and replaced.
        public var heartbeatTimeout: Int64 = 10_000
        /// New workers must report ready within this.
        public var startTimeout: Int64 = 30_000
        /// After a fast stop (INT) a worker has this long before KILL.
        public var fastStopGrace: Int64 = 3_000
        /// After a graceful stop began, how long the listeners stay open (new SYNs already dropped)
        /// so that handshakes under way complete and are served, before they are shut and every
        /// connection attempt is refused. Covers a client round trip (and, with `deferAccept`, the
        /// kernel's deferred handshakes).
        public var stopAcceptGrace: Int64 = 500
        public var backoffBase: Int64 = 100
        public var backoffMax: Int64 = 30_000
        /// A worker that lived this long resets its slot's crash count.
        public var stableAfter: Int64 = 10_000
        /// Consecutive crashes from which a slot is reported as crash-looping.
        public var crashLoopThreshold = 5
        public init() {}
    }

    public struct WorkerRecord: Equatable, Sendable {
        public var pid: ProcessID
        public var slot: Int
        public var generation: Int
        public var statsSlot: Int
        public var state: WorkerState
        public var startedAt: Int64
        public var drainSince: Int64? = nil
        /// The worker said `draining`: it has stopped accepting.
        public var drainAcknowledged = false
        /// 0: none, 1: INT sent (fast stop), 2: KILL sent.
        public var escalation = 0
    }

    struct SlotRecord {
        var crashes = 0
        var respawnAt: Int64? = nil
    }

    struct Reload {
        var generation: Int
        var target: Int
        var listenerSet: Int
        var requesters: [RequestID]
        var startedAt: Int64
    }

    /// `reload --wait` requesters of a completed reload, answered once every worker of the older
    /// generations has said it stopped accepting (or exited): from then on every new connection
    /// meets the new config. Answered anyway after `drainAckTimeout` (a stuck worker is the drain
    /// escalation's business, not the requester's).
    var awaitingDrainAcks: (generation: Int, target: Int, requesters: [RequestID], since: Int64)? = nil
    static var drainAckTimeout: Int64 { 2000 }

    /// `scale --wait` requesters of a scale-up: answered when every slot below `target` of
    /// `generation` has a ready worker, or with an error when a new worker exits before it said
    /// ready, `startTimeout` passes, a reload replaces the generation, a later scale goes below
    /// `target`, or the daemon stops.
    struct ScaleWaiter {
        var requester: RequestID
        var generation: Int
        var target: Int
        /// The slots this scale-up started.
        var newSlots: Range<Int>
        var since: Int64
    }
    var scaleWaiters: [ScaleWaiter] = []

    public enum Phase: Equatable, Sendable {
        case starting
        case running
        case stopping(graceful: Bool)
    }

    public let effects: Effects
    public var settings: Settings
    public private(set) var phase = Phase.starting
    public private(set) var workers: [ProcessID: WorkerRecord] = [:]
    var slots: [SlotRecord]
    /// The generation serving now.
    public private(set) var generation = 1
    /// The worker count the serving generation should have.
    public private(set) var target = 0
    /// Listener set of each live generation.
    var generationSets: [Int: Int] = [:]
    var reload: Reload? = nil
    /// What the current set's steering program selects (nil before the first).
    var steered: (set: Int, active: Int, skipping: [Int])? = nil
    var freeStats: [Int]
    public private(set) var now: Int64 = 0
    public private(set) var reloads = 0
    public private(set) var failedReloads = 0
    public private(set) var restarts = 0
    public private(set) var lastReloadError: String? = nil
    /// A graceful stop: when the listeners close and the workers are told to drain.
    var closeListenersAt: Int64? = nil
    var stopBeganAt: Int64 = 0
    /// The listeners were shut for a stop (connection attempts are refused).
    public private(set) var listenersClosed = false

    public init(effects: Effects, settings: Settings) {
        self.effects = effects
        self.settings = settings
        slots = Array(repeating: SlotRecord(), count: settings.maxWorkers)
        freeStats = Array((0..<Self.statsCapacity(maxWorkers: settings.maxWorkers)).reversed())
    }

    /// Stats slots needed: two generations at once plus draining stragglers.
    public static func statsCapacity(maxWorkers: Int) -> Int { maxWorkers * 3 + 2 }

    public var isReloading: Bool { reload != nil }

    /// Workers that may take a handed-off connection: ready, of the serving generation. Once a
    /// graceful stop closed the listeners, the draining workers that were not fast-stopped (they
    /// serve what they are given, with `Connection: close`).
    public var liveWorkers: [ProcessID] {
        if listenersClosed, case .stopping(true) = phase {
            return workers.values.filter { $0.state == .draining && $0.escalation == 0 }.map(\.pid).sorted()
        }
        return workers.values.filter { $0.generation == generation && $0.state == .ready }.map(\.pid).sorted()
    }
    public var currentListenerSet: Int { generationSets[generation] ?? 0 }

    // MARK: - Start

    /// Starts generation 1 with `workers` workers on listener set `listenerSet`.
    public mutating func start(workers requested: Int, listenerSet: Int, now: Int64) {
        self.now = now
        let count = clampedWorkerCount(requested)
        generationSets[generation] = listenerSet
        target = count
        do {
            try effects.checkDescriptors(set: listenerSet, slots: count, newWorkers: count)
            try effects.ensureListeners(set: listenerSet, count: count)
        } catch {
            effects.log(.critical, "cannot open listeners: \(error)")
            effects.notify("STATUS=failed: \(error)")
            effects.exit(code: 1)
            return
        }
        for slot in 0..<count { spawn(slot: slot, generation: generation) }
    }

    // MARK: - Workers

    public mutating func workerSaid(_ message: WorkerToMaster, pid: ProcessID) {
        guard var worker = workers[pid] else { return }
        switch message {
        case .ready:
            guard worker.state == .starting else { return }
            worker.state = .ready
            workers[pid] = worker
            effects.log(.info, "worker \(pid) (slot \(worker.slot), generation \(worker.generation)) ready")
            if case .starting = phase, allSlotsReady(generation: generation, count: target) {
                phase = .running
                steer()
                effects.log(.notice, "ready: \(target) workers, generation \(generation)")
                effects.notify("READY=1\nSTATUS=\(statusLine)")
            } else if let r = reload, worker.generation == r.generation, allSlotsReady(generation: r.generation, count: r.target) {
                completeReload()
            } else if worker.generation == generation {
                steer()
                effects.notify("STATUS=\(statusLine)")
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
            effects.log(.error, "worker \(pid) (slot \(worker.slot)): \(text)")
        }
    }

    public mutating func workerExited(pid: ProcessID, status: ExitStatus) {
        guard let worker = workers.removeValue(forKey: pid) else { return }
        countConnectionsLost(worker, status)
        effects.retireStats(statsSlot: worker.statsSlot)
        freeStats.append(worker.statsSlot)
        defer {
            releaseUnusedGenerations()
            answerReloadWhenOldGenerationStopped()
            answerScaleWaiters(exited: (worker, status))
        }

        if case .stopping = phase {
            effects.log(.info, "worker \(pid) (slot \(worker.slot)) \(status)")
            if workers.isEmpty {
                effects.log(.notice, "all workers stopped; exiting")
                effects.exit(code: 0)
            }
            return
        }
        if worker.state == .draining {
            let level: LogLevel = status == .exited(0) ? .info : .warning
            effects.log(level, "worker \(pid) (slot \(worker.slot), generation \(worker.generation)) finished draining: \(status)")
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
        // A crash: respawn the slot on the same listeners (its backlog waits in the master's socket).
        restarts += 1
        var slot = slots[worker.slot]
        if now - worker.startedAt >= settings.stableAfter { slot.crashes = 0 }
        slot.crashes += 1
        let delay = min(settings.backoffMax, settings.backoffBase << min(Int64(slot.crashes - 1), 20))
        slot.respawnAt = now + (slot.crashes == 1 ? 0 : delay)
        slots[worker.slot] = slot
        // Its listener stops getting new connections until a worker for it is ready again.
        steer()
        if slot.crashes >= settings.crashLoopThreshold {
            effects.log(.critical, "slot \(worker.slot) is crash-looping: \(slot.crashes) crashes in a row, last \(status); next start in \(delay) ms")
            effects.notify("STATUS=\(statusLine); slot \(worker.slot) crash-looping (\(status))")
        } else {
            effects.log(.error, "worker \(pid) (slot \(worker.slot)) \(status); restarting\(slot.crashes == 1 ? "" : " in \(delay) ms")")
        }
        if slot.respawnAt! <= now { respawnDue() }
    }

    // MARK: - Clock

    public mutating func tick(now: Int64) {
        self.now = now
        if let at = closeListenersAt, now >= at { closeListenersAndDrain() }
        respawnDue()
        for (pid, worker) in workers {
            switch worker.state {
            case .ready:
                let beat = effects.heartbeat(statsSlot: worker.statsSlot)
                // Once: the KILL is sent, and the worker stays `.ready` until it is reaped.
                if worker.escalation == 0 && beat > 0 && now - beat > settings.heartbeatTimeout {
                    effects.log(.error, "worker \(pid) (slot \(worker.slot)) missed its heartbeat for \(now - beat) ms; killing it")
                    effects.signal(SignalNumber.kill, to: pid)
                    workers[pid]!.escalation = 2
                }
            case .draining:
                escalateDrain(pid, worker)
            case .starting:
                if now - worker.startedAt > settings.startTimeout && worker.escalation == 0 {
                    effects.log(.error, "worker \(pid) (slot \(worker.slot)) did not report ready in \(settings.startTimeout) ms; killing it")
                    effects.signal(SignalNumber.kill, to: pid)
                    workers[pid]!.escalation = 2
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
    }

    /// Graceful → INT (fast stop) → KILL, on the clock.
    mutating func escalateDrain(_ pid: ProcessID, _ worker: WorkerRecord) {
        let since = worker.drainSince ?? now
        let graceful: Bool
        if case .stopping(let g) = phase { graceful = g } else { graceful = true }
        let firstDeadline = graceful ? settings.drainTimeout : 0
        if worker.escalation == 0 && now - since >= firstDeadline {
            if graceful { effects.log(.warning, "worker \(pid) (slot \(worker.slot)) still draining after \(settings.drainTimeout) ms; fast-stopping it") }
            effects.signal(SignalNumber.interrupt, to: pid)
            workers[pid]!.escalation = 1
            workers[pid]!.drainSince = now
        } else if worker.escalation == 1 && now - since >= settings.fastStopGrace {
            effects.log(.warning, "worker \(pid) (slot \(worker.slot)) ignored the fast stop; killing it")
            effects.signal(SignalNumber.kill, to: pid)
            workers[pid]!.escalation = 2
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

    // MARK: - Commands

    /// `scale N`, `scale +k/-k`, TTIN/TTOU.
    public mutating func scale(_ request: ControlRequest.ScaleTarget, requester: RequestID?, wait: Bool = false) {
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
            return refuse(requester, "cannot scale while \(phaseName)")
        }
        guard reload == nil else { return refuse(requester, "cannot scale while a reload is in progress; try again when it completes") }
        guard let wanted, wanted >= 1 && wanted <= workerLimit else {
            return refuse(requester, "scale: workers must be 1...\(workerLimit) (maxWorkers), got \(asked)")
        }
        let set = currentListenerSet
        var startedSlots: Range<Int>? = nil
        if wanted > target {
            do { try effects.checkDescriptors(set: set, slots: wanted, newWorkers: wanted - target) } catch {
                return refuse(requester, "cannot scale to \(wanted) workers: \(error)")
            }
            do { try effects.ensureListeners(set: set, count: wanted) } catch {
                return refuse(requester, "cannot open listeners for \(wanted) workers: \(error)")
            }
            let from = target
            target = wanted
            startedSlots = from..<wanted
            for slot in from..<wanted {
                slots[slot] = SlotRecord()
                spawn(slot: slot, generation: generation)
            }
        } else if wanted < target {
            target = wanted
            steer()  // first steer new connections away from the slots that retire
            for (pid, worker) in workers where worker.generation == generation && worker.slot >= wanted && worker.state != .draining {
                drain(pid, .retire)
            }
            for slot in wanted..<slots.count { slots[slot].respawnAt = nil }
        }
        effects.log(.notice, "scaled to \(target) workers")
        effects.notify("STATUS=\(statusLine)")
        // Earlier waiters whose workers this scale-down retires will never see them ready.
        answerScaleWaiters()
        guard let requester else { return }
        if wait, let started = startedSlots {
            scaleWaiters.append(ScaleWaiter(requester: requester, generation: generation, target: target, newSlots: started, since: now))
            answerScaleWaiters()
        } else {
            effects.reply(requester, ControlResponse.ok(["workers": .integer(Int64(target))]))
        }
    }

    /// Settles the `scale --wait` requesters whose wait is over (see `ScaleWaiter`). `exited`: a
    /// worker that just exited, with how.
    mutating func answerScaleWaiters(exited: (worker: WorkerRecord, status: ExitStatus)? = nil) {
        guard !scaleWaiters.isEmpty else { return }
        var still: [ScaleWaiter] = []
        for w in scaleWaiters {
            let failure: String?
            if case .stopping = phase {
                failure = "scale abandoned: the daemon is stopping"
            } else if w.generation != generation {
                failure = "scale abandoned: a reload replaced generation \(w.generation) before its new workers were ready"
            } else if target < w.target {
                failure = "scale superseded: now scaled to \(target) workers"
            } else if let (worker, status) = exited, worker.generation == w.generation, worker.state == .starting,
                w.newSlots.contains(worker.slot)
            {
                failure = "the new worker for slot \(worker.slot) \(status) before it was ready; the slot restarts with back-off"
            } else if allSlotsReady(generation: w.generation, count: w.target) {
                effects.reply(w.requester, ControlResponse.ok(["workers": .integer(Int64(w.target)), "ready": .integer(Int64(w.target))]))
                continue
            } else if now - w.since > settings.startTimeout {
                failure = "the new workers did not report ready within \(settings.startTimeout / 1000) s"
            } else {
                still.append(w)
                continue
            }
            if let failure { effects.reply(w.requester, ControlResponse.error(failure)) }
        }
        scaleWaiters = still
    }

    /// A worker count from a config (not a request: those are refused when out of range) kept
    /// within 1...maxWorkers, so every slot index stays inside `slots`.
    func clampedWorkerCount(_ requested: Int) -> Int {
        let count = min(max(1, requested), workerLimit)
        if count != requested {
            effects.log(.warning, "\(requested) workers asked for; running \(count) (1...\(workerLimit), maxWorkers)")
        }
        return count
    }

    /// The most workers a generation may have: `maxWorkers`, and never more slots than were made.
    var workerLimit: Int { min(settings.maxWorkers, slots.count) }

    /// A reload whose new config failed to load or validate: the old generation keeps serving.
    public mutating func reloadFailed(_ reason: String, requester: RequestID?) {
        failedReloads += 1
        lastReloadError = reason
        effects.log(.error, "reload failed: \(reason); generation \(generation) keeps serving")
        effects.notify("READY=1\nSTATUS=reload failed: \(reason); \(statusLine)")
        if let requester { effects.reply(requester, ControlResponse.error("reload failed: \(reason)")) }
    }

    /// Whether a reload may start now (the executor checks before parsing the config).
    public func reloadRefusal() -> String? {
        if reload != nil { return "a reload is already in progress" }
        switch phase {
        case .running: return nil
        default: return "cannot reload while \(phaseName)"
        }
    }

    /// A validated new config: start generation+1 with `workers` workers on `listenerSet`.
    public mutating func beginReload(workers requested: Int, listenerSet: Int, requester: RequestID?, wait: Bool) {
        let count = clampedWorkerCount(requested)
        if let refusal = reloadRefusal() {
            if let requester { effects.reply(requester, ControlResponse.error(refusal)) }
            return
        }
        let newGeneration = generationSets.keys.max().map { $0 + 1 } ?? generation + 1
        do {
            try effects.checkDescriptors(set: listenerSet, slots: count, newWorkers: count)
            try effects.ensureListeners(set: listenerSet, count: count)
        } catch {
            // Nothing started; the executor closes listeners of a set no generation uses.
            return reloadFailed("\(error)", requester: requester)
        }
        generationSets[newGeneration] = listenerSet
        reload = Reload(generation: newGeneration, target: count, listenerSet: listenerSet, requesters: [], startedAt: now)
        if let requester {
            if wait { reload!.requesters.append(requester) } else {
                effects.reply(requester, ControlResponse.ok(["generation": .integer(Int64(newGeneration)), "started": true]))
            }
        }
        effects.log(.notice, "reload: starting generation \(newGeneration) with \(count) workers")
        for slot in 0..<count { spawn(slot: slot, generation: newGeneration) }
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
        for (pid, worker) in workers where worker.generation < generation && worker.state != .draining {
            drain(pid, replacement(for: worker.generation))
        }
        effects.log(.notice, "reload complete: generation \(generation) serving with \(target) workers; generation \(old) draining")
        answerScaleWaiters()
        effects.notify("READY=1\nSTATUS=\(statusLine)")
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
            effects.reply(id, ControlResponse.ok(["generation": .integer(Int64(waiting.generation)), "workers": .integer(Int64(waiting.target))]))
        }
    }

    mutating func abortReload(_ reason: String) {
        guard let r = reload else { return }
        reload = nil
        for (pid, worker) in workers where worker.generation == r.generation {
            if worker.state == .ready { drain(pid, replacement(for: worker.generation)) } else if worker.escalation < 2 {
                effects.signal(SignalNumber.kill, to: pid)
                workers[pid]!.escalation = 2
                workers[pid]!.state = .draining
                workers[pid]!.drainSince = now
            }
        }
        failedReloads += 1
        lastReloadError = reason
        effects.log(.error, "reload failed: \(reason); generation \(generation) keeps serving")
        effects.notify("READY=1\nSTATUS=reload failed: \(reason); \(statusLine)")
        for id in r.requesters { effects.reply(id, ControlResponse.error("reload failed: \(reason)")) }
    }

    /// TERM / `stop` (graceful) or INT / QUIT (fast).
    public mutating func stop(graceful: Bool, requester: RequestID?) {
        if case .stopping(let already) = phase, already == false || graceful {
            if let requester { effects.reply(requester, ControlResponse.ok(["stopping": true])) }
            return
        }
        phase = .stopping(graceful: graceful)
        if let r = reload {
            reload = nil
            for id in r.requesters { effects.reply(id, ControlResponse.error("reload abandoned: the daemon is stopping")) }
        }
        answerReloadWhenOldGenerationStopped(force: true)
        answerScaleWaiters()
        effects.log(.notice, graceful ? "graceful stop: draining \(workers.count) workers (timeout \(settings.drainTimeout / 1000) s)" : "fast stop")
        effects.notify("STOPPING=1\nSTATUS=stopping (\(graceful ? "graceful" : "fast"))")
        if let requester { effects.reply(requester, ControlResponse.ok(["stopping": true])) }
        stopBeganAt = now
        if graceful && !workers.isEmpty {
            // New connections are refused at once (so clients and balancers go elsewhere); what is
            // queued, or still completing its handshake, is served: the workers keep serving until
            // the grace ends, then the master takes what is left in the queues, hands it to them,
            // closes the listeners and only then tells them to drain (`closeListenersAndDrain`).
            // A restart that must not refuse anything (listeners kept for the next master) would
            // skip this and leave the listeners open.
            effects.refuseNewConnections()
            closeListenersAt = now + settings.stopAcceptGrace
            return
        }
        closeListenersAt = nil
        if !listenersClosed {
            listenersClosed = true
            effects.closeListeners(relayingQueuedTo: [])
        }
        for (pid, worker) in workers where worker.escalation == 0 {
            effects.signal(SignalNumber.interrupt, to: pid)
            workers[pid]!.state = .draining
            workers[pid]!.escalation = 1
            workers[pid]!.drainSince = now
        }
        if workers.isEmpty { effects.exit(code: 0) }
    }

    /// The end of a graceful stop's accept grace: the listeners' leftovers go to workers that still
    /// accept (through their channels, ahead of the `drain` that follows on the same channel), the
    /// listeners close, and every worker drains, its drain timeout counted from the stop.
    mutating func closeListenersAndDrain() {
        closeListenersAt = nil
        guard !listenersClosed else { return }
        listenersClosed = true
        // Ready workers take them before their `drain` (the channel keeps the order). With none
        // (every worker was sent TERM itself, e.g. to the process group), draining ones do.
        var takers = workers.values.filter { $0.state == .ready }
        if takers.isEmpty { takers = workers.values.filter { $0.state == .draining && $0.escalation == 0 } }
        effects.closeListeners(relayingQueuedTo: takers.map(\.pid).sorted())
        for (pid, worker) in workers {
            if worker.state != .draining {
                drain(pid, .drain)
                workers[pid]!.drainSince = stopBeganAt
            } else {
                // Already leaving (a reload's or scale-down's hand-over): now closing instead.
                effects.send(.drain, to: pid)
            }
        }
    }

    // MARK: - Helpers

    /// A worker that did not exit cleanly took its open connections down with it: counted and
    /// logged, whatever its state. Killed or fast-stopped at its drain deadline: closed on the
    /// drain timeout; otherwise (a crash, a kill -9, a heartbeat kill): lost with a crashed worker.
    /// A worker that exits 0 closed (and counted) its connections itself.
    func countConnectionsLost(_ worker: WorkerRecord, _ status: ExitStatus) {
        guard status != .exited(0) else { return }
        let open = effects.openConnections(statsSlot: worker.statsSlot)
        guard open > 0 else { return }
        let atDeadline = worker.state == .draining && worker.escalation > 0
        effects.countLostConnections(open, closedOnDrainTimeout: atDeadline)
        let who = "worker \(worker.pid) (slot \(worker.slot), generation \(worker.generation)\(worker.state == .draining ? ", draining" : ""))"
        if atDeadline {
            effects.log(.warning, "\(who) \(status) at its drain deadline: \(open) open connection(s) closed")
        } else {
            effects.log(.warning, "\(who) died with \(open) open connection(s) (\(status)); they are lost")
        }
    }

    mutating func spawn(slot: Int, generation gen: Int) {
        guard let statsSlot = freeStats.popLast() else {
            effects.log(.critical, "no free stats slot for slot \(slot)")
            return
        }
        do {
            let pid = try effects.spawnWorker(slot: slot, generation: gen, statsSlot: statsSlot)
            workers[pid] = WorkerRecord(pid: pid, slot: slot, generation: gen, statsSlot: statsSlot, state: .starting, startedAt: now)
        } catch {
            freeStats.append(statsSlot)
            effects.log(.error, "cannot start a worker for slot \(slot): \(error)")
            if let r = reload, r.generation == gen {
                abortReload("cannot start a worker for slot \(slot): \(error)")
            } else if gen == generation {
                var s = slots[slot]
                s.crashes += 1
                s.respawnAt = now + min(settings.backoffMax, settings.backoffBase << min(Int64(s.crashes), 20))
                slots[slot] = s
            }
        }
    }

    /// Tells a worker to leave: `.retire` when its listeners will close, `.replace` when another
    /// generation takes them over, `.drain` when the daemon stops.
    mutating func drain(_ pid: ProcessID, _ how: MasterToWorker) {
        guard var worker = workers[pid] else { return }
        worker.state = .draining
        worker.drainSince = now
        workers[pid] = worker
        effects.send(how, to: pid)
    }

    /// How a worker of `generation` leaves when `generation` is replaced by the serving one.
    func replacement(for gen: Int) -> MasterToWorker {
        generationSets[gen] == currentListenerSet ? .replace : .retire
    }

    func allSlotsReady(generation gen: Int, count: Int) -> Bool {
        var ready = Array(repeating: false, count: count)
        for w in workers.values where w.generation == gen && w.state == .ready && w.slot < count { ready[w.slot] = true }
        return ready.allSatisfy { $0 }
    }

    /// Steers new connections of the serving generation to the slots below the target that have a
    /// ready worker. A slot whose new worker has not said ready yet (scale-up, respawn) or whose
    /// worker died (a crash, a backoff) is skipped, in the middle as well as at the end, so its share
    /// of new connections goes to live workers instead of waiting in its listener's queue (what was
    /// queued before is taken by the master: `unservedSlots`). If no slot has a ready worker, every
    /// target slot stays steered: the connections wait for whichever worker comes first.
    mutating func steer() {
        let ready = readySlots
        let active = (ready.lastIndex(of: true) ?? -1) + 1
        let skipping = ready[..<active].indices.filter { !ready[$0] }
        let selection = active == 0 ? (active: max(1, target), skipping: [Int]()) : (active: active, skipping: skipping)
        let set = currentListenerSet
        if let s = steered, s.set == set, s.active == selection.active, s.skipping == selection.skipping { return }
        steered = (set, selection.active, selection.skipping)
        effects.steer(set: set, active: selection.active, skipping: selection.skipping)
    }

    /// For each slot below the target: whether it has a ready worker of the serving generation.
    var readySlots: [Bool] {
        var ready = Array(repeating: false, count: target)
        for w in workers.values where w.generation == generation && w.state == .ready && w.slot < target { ready[w.slot] = true }
        return ready
    }

    /// Slots below the target whose worker died and has no ready replacement yet, while another slot
    /// has a ready worker (running only). They are steered away from; connections that were queued
    /// on their listeners before are taken by the master and handed to a live worker instead of
    /// waiting for the respawn. (New slots of a scale-up were never steered to: nothing is queued.)
    public var unservedSlots: [Int] {
        guard case .running = phase else { return [] }
        let ready = readySlots
        guard ready.contains(true) else { return [] }
        return ready.indices.filter { !ready[$0] && slots[$0].crashes > 0 }
    }

    /// Closes listeners no live worker and no slot below the target needs, highest first.
    func trimListeners() {
        let set = currentListenerSet
        var needed = target
        if let r = reload, r.listenerSet == set { needed = max(needed, r.target) }
        for w in workers.values where generationSets[w.generation] == set { needed = max(needed, w.slot + 1) }
        effects.trimListeners(set: set, keep: needed)
    }

    mutating func releaseUnusedGenerations() {
        for gen in generationSets.keys.sorted() where gen != generation && gen != reload?.generation {
            if !workers.values.contains(where: { $0.generation == gen }) {
                effects.releaseGeneration(gen)
                generationSets[gen] = nil
            }
        }
    }

    func refuse(_ requester: RequestID?, _ message: String) {
        effects.log(.warning, message)
        if let requester { effects.reply(requester, ControlResponse.error(message)) }
    }

    public var phaseName: String {
        switch phase {
        case .starting: return "starting"
        case .running: return reload == nil ? "running" : "reloading"
        case .stopping(let g): return g ? "stopping" : "stopping (fast)"
        }
    }

    /// systemd STATUS= text; the executor appends the request rate.
    public var statusLine: String {
        let live = workers.values.filter { $0.generation == generation && $0.state == .ready }.count
        return "\(live) workers, generation \(generation)"
    }
}
