import ClusterConfig
import ClusterControl
import ClusterSystem
import ClusterSystemd

/// Restarts through systemd's file descriptor store (`Docs/zero-downtime.md`, "Restarts"): every
/// listener is stored as it opens and removed as it closes (`Listener`), so the listening sockets
/// outlive the master — through `systemctl restart` and through a crash (`kill -9`, with
/// `Restart=on-failure`) — and what arrives while no master runs waits in their queues. On
/// `systemctl restart` the master also hands its workers' keep-alive connections to the store, and
/// the next master adopts everything by name. A plain stop still refuses at once.
extension Master {
    /// Names of connections held for the next master, and of the bytes that came with them.
    static let connectionPrefix = "conn."
    static let bytesPrefix = "bytes."
    /// The control socket's name in the store.
    static let controlStoreName = "control"
    /// The session-ticket keys' memfd (`TicketKeyRing.serialized`) in the store.
    static let ticketKeysStoreName = "ticket-keys"

    /// At start: whether systemd keeps a store for this unit, and what it holds. Listeners of the
    /// config's addresses are adopted (slot by slot: `ListenerTable.adopt`); the rest, and anything
    /// unknown, is closed and removed from the store. Connections wait with the pending relays
    /// until a worker is ready.
    func adoptFromStore() {
        let passed = FDStore.takePassed()
        if notifier.isActive {
            do {
                let unit = try UnitState.query()
                fdStore = FDStore(capacity: unit.fileDescriptorStoreMax)
                listenerTable.fdStore = fdStore
            } catch {
                logger.info("systemd's fd store is not used (\(error)): a restart or a crash of the master closes the listeners")
            }
        }
        guard !passed.isEmpty else { return }
        var bytes: [String: [UInt8]] = [:]
        for entry in passed where entry.name.hasPrefix(Self.bytesPrefix) {
            let memfd = Descriptor(taking: entry.fd)
            bytes[String(entry.name.dropFirst(Self.bytesPrefix.count))] =
                try? FileIO.readAll(fd: memfd.rawValue, limit: ConnectionHandoff.maxMessageBytes, name: entry.name)
            fdStore.remove(name: entry.name)
        }
        var adopted = 0
        var stored: [ListenAddress: [(slot: Int, fd: Int32, name: String)]] = [:]
        var unknown: [(name: String, fd: Int32)] = []
        for entry in passed where !entry.name.hasPrefix(Self.bytesPrefix) {
            if entry.name == Self.controlStoreName {
                // Taken over only where this config puts the control socket (`openControlSocket`).
                // ... and only while its file is still there (systemd removes RuntimeDirectory= on
                // a stop unless RuntimeDirectoryPreserve= says otherwise).
                if Socket.unixPath(entry.fd) == control.path && adoptedControl == nil && (try? FileIO.fileType(atPath: control.path)) == .socket {
                    adoptedControl = ControlSocket.Owned(Descriptor(taking: entry.fd))
                } else {
                    if let old = Socket.unixPath(entry.fd), old != control.path { try? Sys.unlink(old) }
                    _ = Descriptor(taking: entry.fd)
                    fdStore.remove(name: entry.name)
                }
            } else if entry.name == Self.ticketKeysStoreName {
                // The previous master's keys: tickets it issued still resume on the new workers.
                let memfd = Descriptor(taking: entry.fd)
                if let bytes = try? FileIO.readAll(fd: memfd.rawValue, limit: 4096, name: entry.name),
                   let ring = TicketKeyRing(serialized: bytes, now: Clock.monotonicMilliseconds())
                {
                    ticketKeys = ring
                    logger.info("session-ticket keys kept through the restart")
                } else {
                    logger.warning("the session-ticket keys in systemd's fd store are malformed: new ones are made")
                }
                fdStore.remove(name: entry.name)
            } else if entry.name.hasPrefix(Self.connectionPrefix) {
                var message = bytes[String(entry.name.dropFirst(Self.connectionPrefix.count))] ?? ConnectionHandoff.prefix
                if !ConnectionHandoff.isHandoff(message) { message = ConnectionHandoff.prefix }
                adopted += 1
                pendingRelays.append(PendingRelay(Descriptor(taking: entry.fd), message: message, since: Clock.monotonicMilliseconds()))
                fdStore.remove(name: entry.name)
            } else if let (address, slot) = ListenerTable.parseStoreName(entry.name, among: config.listen) {
                stored[address, default: []].append((slot, entry.fd, entry.name))
            } else {
                unknown.append((entry.name, entry.fd))
            }
        }
        var listeners = 0
        var queued = DescriptorList()
        var closed: [String] = []
        for (address, list) in stored.sorted(by: { $0.key.description < $1.key.description }) {
            let rest = listenerTable.adopt(list, address: address, queued: &queued)
            listeners += list.count - rest.count
            closed += rest
        }
        for entry in unknown {
            // A listener the config no longer has: what is queued on it still gets served.
            let listener = Descriptor(taking: entry.fd)
            ListenerTable.removeFileOfForgotten(listener.rawValue)
            queued.append(contentsOf: ListenerTable.acceptAll(listener.rawValue))
            closed.append(entry.name)
        }
        for name in closed {
            logger.info("closing \(name) from systemd's fd store: the config has no such listener")
            fdStore.remove(name: name)
        }
        while let conn = queued.next() { pendingRelays.append(PendingRelay(conn, message: ConnectionHandoff.prefix, since: Clock.monotonicMilliseconds())) }
        adoptedAtStart = (listeners, adopted, adoptedControl != nil)
        logger.notice("adopted from systemd's fd store: \(listeners) listener(s), \(adopted) connection(s) kept through the restart")
    }

    /// Puts the current session-ticket keys in systemd's store (replacing what was there), so that a
    /// restarted master resumes the sessions this one's workers began. Only in memory: a memfd.
    func storeTicketKeys() {
        guard fdStore.isEnabled else { return }
        fdStore.remove(name: Self.ticketKeysStoreName)
        do {
            let memfd = Descriptor(taking: try FileIO.memfd(name: "clusterd-ticket-keys", bytes: ticketKeys.serialized))
            if !fdStore.store([memfd.rawValue], name: Self.ticketKeysStoreName) {
                logger.warning("systemd did not take the session-ticket keys: a restart makes new ones")
            }
        } catch {
            logger.warning("cannot keep the session-ticket keys for a restart (\(error))")
        }
    }

    /// TERM: is systemd restarting the unit (the listeners and connections then stay in its store
    /// for the next master), or stopping it? Asked over D-Bus; anything but a restart job is a stop.
    func isRestart() -> Bool {
        guard fdStore.isEnabled else { return false }
        do {
            let unit = try UnitState.query()
            logger.notice("TERM with systemd job \(unit.jobType.isEmpty ? "(none)" : unit.jobType): \(unit.isRestart ? "a restart" : "a stop")")
            return unit.isRestart
        } catch {
            logger.warning("cannot ask systemd whether this is a restart (\(error)); stopping")
            return false
        }
    }

    /// While restarting: a connection handed over (with the bytes read but not parsed) goes to the
    /// store for the next master, not to a worker, under a name unique to this master; a request's
    /// unparsed bytes travel in a memfd beside it. Past the store's room it is closed, and counted
    /// lost. The master's own copy is closed either way.
    func storeForNextStart(_ connection: borrowing Descriptor, message: [UInt8]) {
        let id = "\(Sys.pid).\(storedConnections)"
        let room = fdStore.capacity - listenerTable.totalOpen - Self.storeReserve
        guard storedConnections * 2 < room else {
            lostConnections += 1
            logger.error("systemd's fd store is full (FileDescriptorStoreMax=\(fdStore.capacity)): a keep-alive connection is closed")
            return
        }
        if message.count > ConnectionHandoff.prefix.count {
            let memfd: Descriptor
            do { memfd = Descriptor(taking: try FileIO.memfd(name: "clusterd-handoff", bytes: message)) } catch {
                lostConnections += 1
                logger.error("cannot keep a connection's unread request for the next master (\(error)); it is closed")
                return
            }
            guard fdStore.store([memfd.rawValue], name: Self.bytesPrefix + id) else {
                lostConnections += 1
                logger.error("systemd did not take a connection's unread request into its fd store; it is closed")
                return
            }
        }
        if fdStore.store([connection.rawValue], name: Self.connectionPrefix + id) {
            storedConnections += 1
        } else {
            lostConnections += 1
            logger.error("systemd did not take a keep-alive connection into its fd store; it is closed")
        }
    }

    /// Slack kept in the store for listeners a reload may add while connections are stored.
    static let storeReserve = 64
}
