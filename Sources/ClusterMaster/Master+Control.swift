import ClusterControl
import ClusterJSON
import ClusterSystem

/// Whether the control listener is being polled: out of descriptors (EMFILE and the like), accept
/// fails for as long as the queue holds a client, and a level-triggered epoll would report it
/// again at once, so the listener leaves epoll for `ControlServer.acceptBackoff`.
struct ControlSocket {
    /// The listening socket, owned: closed (and its path unlinked) by `closeControlSocket`.
    var listener: Owned? = nil
    var resumeAt: Int64? = nil
    /// Each client connection, owned: closed when its entry goes (`closeClient`).
    var clients: [Int32: Owned] = [:]

    /// A descriptor and the epoll events it is registered for (a client's reading stops while its
    /// replies pile up); closed with the object.
    final class Owned {
        let descriptor: Descriptor
        var interest: UInt32

        init(_ descriptor: consuming Descriptor, interest: UInt32 = 0) {
            self.descriptor = descriptor
            self.interest = interest
        }

        var fd: Int32 { descriptor.rawValue }
    }

    /// The listener's number, borrowed; -1 when there is none.
    var fd: Int32 { listener?.fd ?? -1 }
}

/// The control socket's descriptors: accept, read, send, epoll. What the bytes mean is
/// `ControlServer`'s business; what a request does is the core's (or `statusJSON`'s).
extension Master {
    func openControlSocket() throws(SystemError) {
        let path = control.path
        if let adopted = adoptedControl {
            // The last master's socket, from systemd's store: clients that connected during the
            // restart are in its queue. The file is already there.
            adoptedControl = nil
            controlSocket.listener = adopted
            try watchControlSocket()
            return
        }
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty && !FileIO.exists(directory) {
            try? FileIO.makeDirectory(directory, mode: 0o755)
        }
        let mode: FileMode = control.group == nil ? 0o600 : 0o660
        controlSocket.listener = ControlSocket.Owned(Descriptor(taking: try Socket.unixListener(path: path, mode: mode)))
        fdStore.store([controlSocket.fd], name: Self.controlStoreName)
        if let gid = control.group {
            do { try FileIO.changeGroup(path, to: GroupID(gid)) } catch {
                logger.warning("cannot give group \(gid) the control socket: \(error.reason)")
            }
        }
        try watchControlSocket()
    }

    func watchControlSocket() throws(SystemError) {
        try epoll.add(controlSocket.fd, events: Epoll.readable, data: Kind.control.data(controlSocket.fd))
    }

    func closeControlSocket() {
        controlSocket.clients = [:]
        if controlSocket.listener != nil {
            controlSocket.listener = nil
            // A restart leaves it to the next master (in systemd's store, its file in place).
            if !core.restarting {
                fdStore.remove(name: Self.controlStoreName)
                try? Sys.unlink(control.path)
            }
        }
    }

    func acceptClients() {
        while true {
            let client: Descriptor
            do {
                guard case .processed(let newFD) = try Sys.accept(controlSocket.fd) else { return }
                client = Descriptor(taking: newFD)
            } catch {
                let now = Clock.monotonicMilliseconds()
                var message = "control socket: \(error)"
                if error.isResourceExhaustion {
                    epoll.remove(controlSocket.fd)
                    controlSocket.resumeAt = now + ControlServer.acceptBackoff
                    message += "; pausing accept for \(ControlServer.acceptBackoff) ms"
                }
                if let line = control.acceptFailed(message, now: now) { logger.warning("\(line)") }
                return
            }
            // Refused before it is registered: the error, then `client` closes at the loop's turn.
            let fd = client.rawValue
            guard !control.isFull else {
                writeOnce(fd, ControlResponse.error("too many control connections (\(ControlServer.maxClients)); try again"))
                continue
            }
            // Only the daemon's own user, root, or the configured group may command it; a client
            // whose credentials cannot be read is refused.
            if case .refused(let log, let reply) = ControlAccess(daemonUID: Sys.uid, controlGroup: control.group).check(fd) {
                logger.warning("\(log)")
                writeOnce(fd, ControlResponse.error(reply))
                continue
            }
            do { try epoll.add(fd, events: Epoll.readable, data: Kind.client.data(fd)) } catch { continue }
            control.opened(fd, now: Clock.monotonicMilliseconds())
            controlSocket.clients[fd] = ControlSocket.Owned(client, interest: Epoll.readable)
        }
    }

    /// Per loop turn: the listener back after an accept back-off; clients expired.
    func controlPeriodic(_ now: Int64) {
        if let at = controlSocket.resumeAt, now >= at, controlSocket.fd >= 0 {
            controlSocket.resumeAt = nil
            do { try watchControlSocket() } catch {
                controlSocket.resumeAt = now + ControlServer.acceptBackoff
            }
        }
        for (fd, reason) in control.expired(now: now) {
            if let reason { logger.warning("\(reason)") }
            closeClient(fd)
        }
    }

    func clientEvent(_ fd: Int32, _ events: UInt32) {
        guard control.has(fd) else { return }
        if events & (Epoll.writable | Epoll.hangup | Epoll.error) != 0 {
            flushClient(fd)
            guard control.has(fd) else { return }
        }
        // Lines held back while replies piled up go before anything new is read.
        processInput(fd)
        guard control.has(fd) else { return }
        if control.output(of: fd).count < ControlServer.maxPendingReplyBytes {
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
        control.received(buffer[0..<n], from: fd)
        processInput(fd)
    }

    /// Answers the client's complete request lines, one at a time, sending each answer at once
    /// (`ControlServer.nextRequest` holds the rest back while unsent replies pile up).
    func processInput(_ fd: Int32) {
        while control.has(fd), let line = control.nextRequest(from: fd, now: Clock.monotonicMilliseconds()) {
            if case .request(let id, let request) = line { handle(request, id: id) }
            flushClient(fd)
        }
    }

    func handle(_ request: ControlRequest, id: RequestID) {
        switch request {
        case .status: reply(id, statusJSON())
        case .workers: reply(id, workersJSON())
        case .scale(let target, let wait): perform(core.scale(target, requester: id, wait: wait))
        case .reload(let wait): perform(core.reload(requester: id, wait: wait))
        case .stop(let graceful): perform(core.stop(graceful: graceful, requester: id))
        case .reopenLogs: perform(core.reopenLogs(requester: id))
        case .upgrade: perform(core.upgrade(requester: id))
        }
    }

    func reply(_ id: RequestID, _ response: JSON) {
        guard let fd = control.reply(id, response, now: Clock.monotonicMilliseconds()) else { return }
        flushClient(fd)
    }

    /// Readable while its replies are under the cap, writable while any are unsent.
    func updateInterest(_ fd: Int32) {
        guard control.has(fd) else { return }
        let (read, write) = control.interest(of: fd)
        let wanted = (read ? Epoll.readable : 0) | (write ? Epoll.writable : 0)
        guard let client = controlSocket.clients[fd], wanted != client.interest else { return }
        client.interest = wanted
        try? epoll.modify(fd, events: wanted, data: Kind.client.data(fd))
    }

    /// Sends what the socket takes now; the rest waits for EPOLLOUT.
    func flushClient(_ fd: Int32) {
        var output = control.output(of: fd)
        while !output.isEmpty {
            let result: IOResult<Int>
            do { result = try output.withUnsafeBytes { (b) throws(SystemError) in try Sys.send(fd, b.baseAddress!, b.count) } } catch {
                return closeClient(fd)
            }
            guard case .processed(let n) = result else { break }
            control.sent(n, to: fd, now: Clock.monotonicMilliseconds())
            output.removeFirst(n)
        }
        if control.isDone(fd) { return closeClient(fd) }
        updateInterest(fd)
    }

    /// For refusals before a client is registered: one best-effort write.
    func writeOnce(_ fd: Int32, _ response: JSON) {
        let bytes = Array((response.serialized + "\n").utf8)
        _ = bytes.withUnsafeBytes { try? Sys.send(fd, $0.baseAddress!, $0.count) }
    }

    func closeClient(_ fd: Int32) {
        guard control.has(fd) else { return }
        control.closed(fd)
        epoll.remove(fd)
        controlSocket.clients[fd] = nil  // closes it
    }
}
