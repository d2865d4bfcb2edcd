#if canImport(Glibc)
import Glibc
#endif
import ClusterControl
import ClusterJSON
import ClusterSystem

/// Whether the control listener is being polled: out of descriptors (EMFILE and the like), accept
/// fails for as long as the queue holds a client, and a level-triggered epoll would report it
/// again at once, so the listener leaves epoll for `controlAcceptBackoff` and the failure is
/// logged at most once per `controlAcceptLogInterval` (with how many it stands for).
struct ControlAcceptState {
    var resumeAt: Int64? = nil
    var failuresSinceLog = 0
    var lastLogAt: Int64? = nil
}

/// The control socket: a Unix stream socket, newline-delimited JSON. Clients are non-blocking and
/// bounded (count, line length, unsent replies, time) so no client can stall or grow the master.
extension Master {
    static let maxClients = 32
    /// A client with this many reply bytes unsent is not read from until they drain below it
    /// (back-pressure, as the workers do for HTTP): one client holds at most this plus one reply
    /// plus two request lines.
    static let maxPendingReplyBytes = 64 * 1024
    /// A client whose unsent replies make no progress for this long is dropped.
    static let replyStallTimeout: Int64 = 10_000
    static let controlAcceptBackoff: Int64 = 100
    static let controlAcceptLogInterval: Int64 = 5_000

    func openControlSocket() throws(SystemError) {
        let directory = String(controlPath[..<(controlPath.lastIndex(of: "/") ?? controlPath.startIndex)])
        if !directory.isEmpty && !FileIO.exists(directory) {
            _ = mkdir(directory, 0o755)
        }
        let mode: mode_t = config.controlGroup == nil ? 0o600 : 0o660
        controlFD = try Socket.unixListener(path: controlPath, mode: mode)
        if let gid = config.controlGroup {
            if chown(controlPath, uid_t.max, gid_t(gid)) != 0 {
                logger.warning("cannot give group \(gid) the control socket: \(String(cString: strerror(errno)))")
            }
        }
        try epoll.add(controlFD, events: Epoll.readable, data: Kind.control.rawValue << 56 | UInt64(UInt32(bitPattern: controlFD)))
    }

    func acceptClients() {
        while true {
            let fd: Int32
            do {
                guard case .processed(let newFD) = try Sys.accept(controlFD) else { return }
                fd = newFD
            } catch {
                let now = Clock.monotonicMilliseconds()
                switch error.errno {
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    epoll.remove(controlFD)
                    controlAccept.resumeAt = now + Self.controlAcceptBackoff
                    noteAcceptFailure("control socket: \(error); pausing accept for \(Self.controlAcceptBackoff) ms", now: now)
                default:
                    noteAcceptFailure("control socket: \(error)", now: now)
                }
                return
            }
            guard clients.count < Self.maxClients else {
                writeOnce(fd, ControlResponse.error("too many control connections (\(Self.maxClients)); try again"))
                Sys.close(fd)
                continue
            }
            // Only the daemon's own user, root, or the configured group may command it; a client
            // whose credentials cannot be read is refused.
            if case .refused(let log, let reply) = ControlAccess(daemonUID: Sys.uid, controlGroup: config.controlGroup).check(fd) {
                logger.warning("\(log)")
                writeOnce(fd, ControlResponse.error(reply))
                Sys.close(fd)
                continue
            }
            let now = Clock.monotonicMilliseconds()
            clients[fd] = ControlClient(fd: fd, openedAt: now, lastProgressAt: now)
            do {
                try epoll.add(fd, events: Epoll.readable, data: clientData(fd))
            } catch {
                clients[fd] = nil
                Sys.close(fd)
            }
        }
    }

    /// Logs an accept failure at most once per `controlAcceptLogInterval`, saying how many it stands for.
    func noteAcceptFailure(_ message: String, now: Int64) {
        controlAccept.failuresSinceLog += 1
        if let last = controlAccept.lastLogAt, now - last < Self.controlAcceptLogInterval { return }
        let more = controlAccept.failuresSinceLog - 1
        logger.warning("\(message)\(more > 0 ? " (\(more) more since the last report)" : "")")
        controlAccept.failuresSinceLog = 0
        controlAccept.lastLogAt = now
    }

    /// Per loop turn: the listener back after an accept back-off; clients whose replies stalled dropped.
    func controlPeriodic(_ now: Int64) {
        if let at = controlAccept.resumeAt, now >= at, controlFD >= 0 {
            controlAccept.resumeAt = nil
            do {
                try epoll.add(controlFD, events: Epoll.readable, data: Kind.control.rawValue << 56 | UInt64(UInt32(bitPattern: controlFD)))
            } catch {
                controlAccept.resumeAt = now + Self.controlAcceptBackoff
            }
        }
        for (fd, client) in clients where !client.output.isEmpty && now - client.lastProgressAt > Self.replyStallTimeout {
            logger.warning("control client made no progress reading \(client.output.count) reply bytes for \(Self.replyStallTimeout / 1000) s; closing it")
            closeClient(fd)
        }
    }

    func clientData(_ fd: Int32) -> UInt64 { Kind.client.rawValue << 56 | UInt64(UInt32(bitPattern: fd)) }

    func clientEvent(_ fd: Int32, _ events: UInt32) {
        guard clients[fd] != nil else { return }
        if events & (Epoll.writable | Epoll.hangup | Epoll.error) != 0 {
            flushClient(fd)
            guard clients[fd] != nil else { return }
        }
        // Lines held back while replies piled up go before anything new is read.
        processInput(fd)
        guard let client = clients[fd] else { return }
        if client.output.count < Self.maxPendingReplyBytes {
            if events & (Epoll.readable | Epoll.hangup | Epoll.error) != 0 { readClient(fd) }
        } else if events & (Epoll.hangup | Epoll.error) != 0 {
            // Gone while we were not reading: its replies have nowhere to go.
            return closeClient(fd)
        }
        updateInterest(fd)
    }

    func readClient(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let result: IOResult<Int>
        do { result = try buffer.withUnsafeMutableBytes { (b) throws(SystemError) in try Sys.read(fd, b.baseAddress!, b.count) } } catch {
            return closeClient(fd)
        }
        guard case .processed(let n) = result else { return }
        if n == 0 { return closeClient(fd) }
        clients[fd]!.input += buffer[0..<n]
        processInput(fd)
    }

    /// Answers the complete request lines in the client's input while its unsent replies stay under
    /// `maxPendingReplyBytes`; the rest waits (and reading stops) until they drain.
    func processInput(_ fd: Int32) {
        while let client = clients[fd], !client.closeAfterWrite, client.output.count < Self.maxPendingReplyBytes,
            let newline = client.input.firstIndex(of: 0x0A)
        {
            var line = Array(client.input[..<newline])
            clients[fd]!.input.removeSubrange(...newline)
            if line.last == 0x0D { line.removeLast() }
            if line.isEmpty { continue }
            if line.count > ControlRequest.maxLineBytes {
                return refuseClient(fd, "request too long (limit \(ControlRequest.maxLineBytes) bytes)")
            }
            handle(line, from: fd)
        }
        if let client = clients[fd], !client.closeAfterWrite, client.input.count > ControlRequest.maxLineBytes, !client.input.contains(0x0A) {
            refuseClient(fd, "request too long (limit \(ControlRequest.maxLineBytes) bytes)")
        }
    }

    /// Readable while its replies are under the cap, writable while any are unsent.
    func updateInterest(_ fd: Int32) {
        guard let client = clients[fd] else { return }
        // A client being closed after its last reply is not read from again.
        var wanted: UInt32 = client.output.count < Self.maxPendingReplyBytes && !client.closeAfterWrite ? Epoll.readable : 0
        if !client.output.isEmpty { wanted |= Epoll.writable }
        guard wanted != client.interest else { return }
        clients[fd]!.interest = wanted
        try? epoll.modify(fd, events: wanted, data: clientData(fd))
    }

    func refuseClient(_ fd: Int32, _ message: String) {
        write(to: fd, ControlResponse.error(message))
        clients[fd]?.closeAfterWrite = true
        if clients[fd]?.output.isEmpty == true { closeClient(fd) }
    }

    func handle(_ line: [UInt8], from fd: Int32) {
        let request: ControlRequest
        switch ControlRequest.decode(line) {
        case .failure(let e):
            write(to: fd, ControlResponse.error(e.message))
            return
        case .success(let r): request = r
        }
        let id = nextRequest
        nextRequest += 1
        requests[id] = fd
        switch request {
        case .status: reply(id, statusJSON())
        case .workers: reply(id, workersJSON())
        case .scale(let target, let wait): core.scale(target, requester: id, wait: wait)
        case .reload(let wait): reload(requester: id, wait: wait)
        case .stop(let graceful): core.stop(graceful: graceful, requester: id)
        case .reopenLogs:
            reopenLogs()
            reply(id, ControlResponse.ok())
        }
    }

    func write(to fd: Int32, _ response: JSON) {
        guard clients[fd] != nil else { return }
        if clients[fd]!.output.isEmpty { clients[fd]!.lastProgressAt = Clock.monotonicMilliseconds() }
        clients[fd]!.output += Array((response.serialized + "\n").utf8)
        flushClient(fd)
    }

    /// Sends what the socket takes now; the rest waits for EPOLLOUT.
    func flushClient(_ fd: Int32) {
        guard var client = clients[fd] else { return }
        while !client.output.isEmpty {
            let result: IOResult<Int>
            do { result = try client.output.withUnsafeBytes { (b) throws(SystemError) in try Sys.send(fd, b.baseAddress!, b.count) } } catch {
                return closeClient(fd)
            }
            guard case .processed(let n) = result else { break }
            client.output.removeFirst(n)
            client.lastProgressAt = Clock.monotonicMilliseconds()
        }
        clients[fd] = client
        if client.output.isEmpty && client.closeAfterWrite { return closeClient(fd) }
        updateInterest(fd)
    }

    /// For refusals before a client is registered: one best-effort write.
    func writeOnce(_ fd: Int32, _ response: JSON) {
        let bytes = Array((response.serialized + "\n").utf8)
        _ = bytes.withUnsafeBytes { try? Sys.send(fd, $0.baseAddress!, $0.count) }
    }

    func closeClient(_ fd: Int32) {
        guard clients.removeValue(forKey: fd) != nil else { return }
        for (id, owner) in requests where owner == fd { requests[id] = nil }
        epoll.remove(fd)
        Sys.close(fd)
    }

    // MARK: - Answers

    func statusJSON() -> JSON {
        let now = Clock.monotonicMilliseconds()
        let sums = totals()
        let live = core.workers.values
        // Counters come from the workers' shared memory: clamped, never trapping on a wild value.
        func n(_ v: some BinaryInteger) -> JSON { .integer(Int64(clamping: v)) }
        var o: JSONObject = [
            "pid": n(Sys.pid),
            "state": .string(core.phaseName),
            "generation": n(core.generation),
            "workers": n(core.target),
            "ready": n(live.filter { $0.generation == core.generation && $0.state == .ready }.count),
            "draining": n(live.filter { $0.state == .draining }.count),
            "uptime": n((now - startedAt) / 1000),
            "requests": n(sums[StatsSlot.Field.requests.rawValue]),
            "requestsPerSecond": .number((requestRate * 10).rounded() / 10),
            "connections": n(sums[StatsSlot.Field.openConnections.rawValue]),
            "accepted": n(sums[StatsSlot.Field.accepted.rawValue]),
            "reloads": n(core.reloads),
            "failedReloads": n(core.failedReloads),
            "restarts": n(core.restarts),
            "handedOff": n(relayed),
            "handoffsDropped": n(droppedRelays),
            "closedOnDrainTimeout": n(sums[StatsSlot.Field.connectionsClosedOnDrain.rawValue]),
            "handoffsClosedAtCap": n(sums[StatsSlot.Field.handoffsClosedAtCap.rawValue]),
            "lostWithCrashedWorkers": n(lostConnections),
            "listeners": n(listenerTable.totalOpen),
            "listen": .array(config.listen.map { .string($0.description) }),
            "config": .string(options.configPath),
        ]
        if let e = core.lastReloadError { o["lastReloadError"] = .string(e) }
        return ControlResponse.ok(o)
    }

    func workersJSON() -> JSON {
        let now = Clock.monotonicMilliseconds()
        let list = core.workers.values.sorted { ($0.slot, $0.generation) < ($1.slot, $1.generation) }.map { w -> JSON in
            let s = StatsSlot(base: statsBase + w.statsSlot * StatsSlot.size)
            return .object([
                "slot": .integer(Int64(w.slot)),
                "pid": .integer(Int64(w.pid)),
                "generation": .integer(Int64(w.generation)),
                "state": .string(w.state.description),
                "uptime": .integer((now - w.startedAt) / 1000),
                "requests": .integer(Int64(clamping: s[.requests])),
                "connections": .integer(Int64(clamping: s[.openConnections])),
                "accepted": .integer(Int64(clamping: s[.accepted])),
            ])
        }
        return ControlResponse.ok(["workers": .array(list)])
    }
}
