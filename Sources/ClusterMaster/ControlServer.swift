#if canImport(Glibc)
import Glibc
#endif
import ClusterControl
import ClusterJSON
import ClusterSystem

/// The control socket: a Unix stream socket, newline-delimited JSON. Clients are non-blocking and
/// bounded (count, line length, time) so no client can stall the master loop.
extension Master {
    static let maxClients = 32

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
                logger.warning("control socket: \(error)")
                return
            }
            guard clients.count < Self.maxClients else {
                writeOnce(fd, ControlResponse.error("too many control connections; try again"))
                Sys.close(fd)
                continue
            }
            // Only the daemon's own user, root, or the configured group may command it.
            if let peer = try? Socket.peerCredentials(fd) {
                let allowed = peer.uid == 0 || peer.uid == Sys.uid || (config.controlGroup.map { Int(peer.gid) == $0 } ?? false)
                if !allowed {
                    logger.warning("control socket: refused uid \(peer.uid) (pid \(peer.pid))")
                    writeOnce(fd, ControlResponse.error("permission denied: uid \(peer.uid) may not control this daemon"))
                    Sys.close(fd)
                    continue
                }
            }
            clients[fd] = ControlClient(fd: fd, openedAt: Clock.monotonicMilliseconds())
            do {
                try epoll.add(fd, events: Epoll.readable, data: Kind.client.rawValue << 56 | UInt64(UInt32(bitPattern: fd)))
            } catch {
                clients[fd] = nil
                Sys.close(fd)
            }
        }
    }

    func clientEvent(_ fd: Int32, _ events: UInt32) {
        guard clients[fd] != nil else { return }
        if events & Epoll.writable != 0 {
            flushClient(fd)
            guard clients[fd] != nil else { return }
        }
        if events & (Epoll.readable | Epoll.hangup | Epoll.error) != 0 {
            readClient(fd)
        }
    }

    func readClient(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) {
            closeClient(fd)
            return
        }
        if n < 0 { return }
        clients[fd]!.input += buffer[0..<n]
        while let newline = clients[fd]?.input.firstIndex(of: 0x0A) {
            var line = Array(clients[fd]!.input[..<newline])
            clients[fd]!.input.removeSubrange(...newline)
            if line.last == 0x0D { line.removeLast() }
            if line.isEmpty { continue }
            if line.count > ControlRequest.maxLineBytes {
                return refuseClient(fd, "request too long (limit \(ControlRequest.maxLineBytes) bytes)")
            }
            handle(line, from: fd)
            if clients[fd] == nil { return }
        }
        if let pending = clients[fd]?.input.count, pending > ControlRequest.maxLineBytes {
            refuseClient(fd, "request too long (limit \(ControlRequest.maxLineBytes) bytes)")
        }
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
        clients[fd]!.output += Array((response.serialized + "\n").utf8)
        flushClient(fd)
    }

    func flushClient(_ fd: Int32) {
        guard var client = clients[fd] else { return }
        while !client.output.isEmpty {
            let n = client.output.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EAGAIN {
                    clients[fd] = client
                    try? epoll.modify(fd, events: Epoll.readable | Epoll.writable, data: Kind.client.rawValue << 56 | UInt64(UInt32(bitPattern: fd)))
                    return
                }
                if errno == EINTR { continue }
                return closeClient(fd)
            }
            client.output.removeFirst(n)
        }
        clients[fd] = client
        try? epoll.modify(fd, events: Epoll.readable, data: Kind.client.rawValue << 56 | UInt64(UInt32(bitPattern: fd)))
        if client.closeAfterWrite { closeClient(fd) }
    }

    /// For refusals before a client is registered: one best-effort write.
    func writeOnce(_ fd: Int32, _ response: JSON) {
        let bytes = Array((response.serialized + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
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
