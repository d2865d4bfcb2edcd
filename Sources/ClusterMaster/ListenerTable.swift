import ClusterConfig
import ClusterSystem
import ClusterSystemd

/// One listening socket of the master, which owns it: it is closed when the table lets go of it
/// (its `Descriptor` goes with the last reference, and the table hands none out), never by hand.
/// Where systemd keeps a file descriptor store, a copy lives there too (`storeName`), so that the
/// socket outlives a restart or a crash of the master; it leaves the store with the table's copy,
/// except at the exit of a restart (`keepStored`). A Unix socket's file goes with it too (nginx
/// unlinks its `listen unix:` files at exit), again except at a restart.
final class Listener {
    let address: ListenAddress
    private let descriptor: Descriptor
    /// A Unix socket's file as this listener made or found it: removed with the listener only
    /// while the path still names that file (not one a later server put there).
    private var socketFile: FileIO.FileIdentity? = nil
    /// The mode and group its file was last given (a reload may change them).
    var fileSettings: (mode: FileMode, group: GroupID?)? = nil
    /// The name of its copy in systemd's store; nil when it has none.
    private(set) var storeName: String? = nil
    private var store = FDStore(capacity: 0)
    /// Leave the store's copy for the next master when this one is closed.
    var keepStored = false

    /// Opens a listener on `address` (`Socket.tcpListener`, `Socket.unixListener` with the file's
    /// `mode` and `group`); the one place the table creates one.
    init(opening address: ListenAddress, deferAccept: Bool, file: (mode: FileMode, group: GroupID?)) throws(SystemError) {
        self.address = address
        switch address {
        case .inet(let host, let port):
            descriptor = Descriptor(taking: try Socket.tcpListener(host: host, port: port, deferAccept: deferAccept))
        case .unix(let path):
            descriptor = Descriptor(taking: try Socket.unixListener(path: path, mode: file.mode, group: file.group, backlog: Socket.listenBacklog))
            socketFile = try? FileIO.identity(path: path)
            fileSettings = file
        }
    }

    /// Takes over a listener the last master left in systemd's store under `name` (a Unix socket's
    /// file is the one at its path now: `ListenerTable.adopt` checked that one is there).
    init(adopting fd: consuming Descriptor, address: ListenAddress, store: FDStore, name: String) {
        self.address = address
        descriptor = fd
        self.store = store
        storeName = name
        if let path = address.unixPath { socketFile = try? FileIO.identity(path: path) }
    }

    /// Unlinks a Unix socket's file (once), if the path still names it: no client can connect from
    /// now on, while whatever is queued can still be accepted. Nothing for TCP.
    func removeSocketFile() {
        guard let file = socketFile, let path = address.unixPath else { return }
        socketFile = nil
        if (try? FileIO.identity(path: path)) == file { try? Sys.unlink(path) }
    }

    /// Puts a copy in `store` under `name` (a no-op without a store).
    func keep(in store: FDStore, name: String) {
        guard store.store([fd], name: name) else { return }
        self.store = store
        storeName = name
    }

    deinit {
        if let storeName, !keepStored { store.remove(name: storeName) }
        if !keepStored { removeSocketFile() }
    }

    /// The number, borrowed for a call: valid while the table holds this listener.
    var fd: Int32 { descriptor.rawValue }
}

/// The master's listening sockets: per TCP address, one SO_REUSEPORT listener per worker slot,
/// created in slot order so that a slot's index in the kernel's reuseport group is its slot number;
/// per Unix socket, one listener that every slot shares (a Unix stream socket has no reuseport
/// group: the workers all accept from its one queue). Sets are the address lists of generations;
/// an address in several sets keeps one list of listeners.
///
/// The table owns its listeners (`Listener`): one is closed when the table drops it (trimmed,
/// released, its deferred close due, or all at a stop), never by hand. The numbers it hands out
/// (`fds(set:slot:)`, `inventory`) are borrowed, for the call they are passed to.
final class ListenerTable {
    private(set) var listeners: [ListenAddress: [Listener]] = [:]
    private(set) var sets: [Int: [ListenAddress]] = [:]
    /// How many slots each set needs per address.
    private var keep: [Int: Int] = [:]
    private var nextSet = 0

    /// The set for `addresses`: an existing one with the same list, or a new one.
    func set(for addresses: [ListenAddress]) -> Int {
        if let existing = sets.first(where: { $0.value == addresses }) { return existing.key }
        let id = nextSet
        nextSet += 1
        sets[id] = addresses
        return id
    }

    func addresses(of set: Int) -> [ListenAddress] { sets[set] ?? [] }

    /// Listener fds of `slot` for each address of `set`, in the set's order; borrowed: valid until
    /// the table next trims, releases, closes or stops.
    func fds(set: Int, slot: Int) -> [Int32] {
        addresses(of: set).map { listeners[$0]![$0.isUnix ? 0 : slot].fd }
    }

    /// How many listeners `address` needs for `slots` worker slots: one each for TCP, one shared
    /// by all of them for a Unix socket.
    static func listenerCount(_ address: ListenAddress, slots: Int) -> Int {
        address.isUnix ? min(slots, 1) : slots
    }

    /// Opens what `set` lacks for slots 0..<count, all or nothing: if one listener cannot be opened,
    /// the table is as it was, and every listener this call opened is closed again with it.
    ///
    /// An address this daemon holds no listener on yet is probed first (`Socket.addressInUse`): if
    /// anything else listens there (another clusterd, whose SO_REUSEPORT group ours would silently
    /// join, or any other process), this refuses like nginx's "Address already in use". The probe is
    /// skipped for an address that overlaps one we already hold (`127.0.0.1:P` while we have
    /// `0.0.0.0:P`): our own listeners would answer it. From the probe until the address's first
    /// listener listens, the port's lock (`Socket.lockPort`) is held, so that two daemons starting
    /// at once cannot both pass the probe: the second waits, then sees the first one's listener.
    /// A Unix socket is probed by `Socket.unixListener` itself (a server answering on the path
    /// refuses; a stale file is replaced); one already held gets the mode and group `unixFiles`
    /// now gives it (a reload that changes them).
    func ensure(set: Int, count slots: Int) throws(MasterFailure) {
        let saved = (listeners: listeners, closing: closing)
        // The port lock of the address being opened, if it needed one: closed at the next address
        // (whose first listener then listens) or when this returns.
        var lock: Descriptor? = nil
        do throws(MasterFailure) {
            for address in addresses(of: set) {
                _ = lock.take()
                var list = listeners[address] ?? []
                let count = Self.listenerCount(address, slots: slots)
                let file = try unixFile(address)
                // (One adopted from the last master: what it was given is not known, so given again.)
                if let path = address.unixPath, let held = list.first, held.fileSettings.map({ $0 != file }) ?? true {
                    do {
                        try Sys.chmod(path, file.mode)
                        if let group = file.group { try FileIO.changeGroup(path, to: group) }
                    } catch {
                        throw MasterFailure("cannot give \(address) mode \(String(file.mode, radix: 8)) and group \(file.group.map(String.init) ?? "(unchanged)"): \(error.reason)")
                    }
                    held.fileSettings = file
                }
                if !address.isUnix, let port = address.port, list.count < count && list.isEmpty && !closing.contains(where: { $0.listener.address == address }) {
                    lock = Self.lockPort(port)
                    try refuseIfTaken(address)
                }
                while list.count < count {
                    // A listener waiting to close (deferAccept) is still in the reuseport group at the
                    // next index: take it back rather than join a new one behind it. The last one set
                    // aside is the lowest of them.
                    if let i = closing.lastIndex(where: { $0.listener.address == address }) {
                        list.append(closing.remove(at: i).listener)
                        continue
                    }
                    do {
                        let listener = try Listener(opening: address, deferAccept: deferAccept, file: file)
                        listener.keep(in: fdStore, name: Self.storeName(address, slot: list.count))
                        list.append(listener)
                    } catch {
                        throw MasterFailure("cannot listen on \(address): \(error.reason)")
                    }
                }
                listeners[address] = list
            }
        } catch {
            // Whatever this call opened is in no list any more: it is closed.
            (listeners, closing) = saved
            throw error
        }
        keep[set] = max(keep[set] ?? 0, slots)
    }

    /// The mode and group of the Unix-socket listeners, by address (the config's `unixSocketFiles`;
    /// a reload's are merged in when it is read). One not listed gets `UnixSocketFile()`'s.
    var unixFiles: [ListenAddress: UnixSocketFile] = [:]

    /// `unixFiles[address]` with its group looked up (getgrnam_r for a name).
    func unixFile(_ address: ListenAddress) throws(MasterFailure) -> (mode: FileMode, group: GroupID?) {
        let file = unixFiles[address] ?? UnixSocketFile()
        switch file.group {
        case nil: return (FileMode(file.mode), nil)
        case .id(let gid)?: return (FileMode(file.mode), GroupID(gid))
        case .name(let name)?:
            guard let gid = Identity.group(named: name) else {
                throw MasterFailure("cannot listen on \(address): no group named \"\(name)\" in the group database")
            }
            return (FileMode(file.mode), gid)
        }
    }

    /// How long `lockPort` waits for another daemon to finish opening the port. A daemon holds the
    /// lock for well under a millisecond; one held longer is not a daemon opening a port (another
    /// user's process may bind the name): the check then goes ahead without it.
    static let portLockWaitMilliseconds = 250

    /// The port's lock, waiting a moment if another daemon holds it; nil if it stays taken.
    static func lockPort(_ port: UInt16) -> Descriptor? {
        for _ in 0..<portLockWaitMilliseconds {
            let fd: Int32?
            do { fd = try Socket.lockPort(port) } catch { return nil }
            if let fd { return Descriptor(taking: fd) }
            Sys.sleep(milliseconds: 1)
        }
        return nil
    }

    /// Listeners `ensure(set:count:)` would open (those set aside to close are taken back instead).
    func missing(set: Int, count slots: Int) -> Int {
        addresses(of: set).reduce(0) { total, address in
            let have = (listeners[address]?.count ?? 0) + closing.count { $0.listener.address == address }
            return total + max(0, Self.listenerCount(address, slots: slots) - have)
        }
    }

    private func refuseIfTaken(_ address: ListenAddress) throws(MasterFailure) {
        let held = listeners.keys.map { $0 } + closing.map(\.listener.address)
        if held.contains(where: { Self.overlap($0, address) }) { return }
        let taken: Bool
        guard case .inet(let host, let port) = address else { return }
        do { taken = try Socket.addressInUse(host: host, port: port) } catch {
            throw MasterFailure("cannot listen on \(address): \(error.reason)")
        }
        if taken {
            throw MasterFailure("cannot listen on \(address): address already in use (another process, perhaps another clusterd, listens on port \(port))")
        }
    }

    /// Two addresses whose listeners would take each other's connections (`ListenAddress.overlaps`).
    static func overlap(_ a: ListenAddress, _ b: ListenAddress) -> Bool { a.overlaps(b) }

    /// Keep `count` slots for `set`; close, highest slot first, what no set needs any more.
    /// Returns connections that were still queued on closed listeners (for a live worker).
    func trim(set: Int, keep count: Int, now: Int64) -> DescriptorList {
        keep[set] = count
        return closeUnneeded(now: now)
    }

    func release(set: Int, now: Int64) -> DescriptorList {
        keep[set] = nil
        sets[set] = nil
        return closeUnneeded(now: now)
    }

    /// With `deferAccept`, how long a listener out of use stays open. A client that completed its
    /// handshake but has sent nothing is a request socket, in no accept queue, and closing the
    /// listener would reset it; the kernel makes it a connection at its SYN-ACK retransmit (1 s
    /// after the SYN, with TCP_DEFER_ACCEPT at 1 s) once the client acknowledges again. New
    /// connections were steered away before the listener was trimmed.
    static let deferredCloseMilliseconds: Int64 = 2500
    /// Listeners out of use, closed at `at` (deferAccept only), in the order they were set aside.
    private var closing: [(listener: Listener, at: Int64)] = []

    private func closeUnneeded(now: Int64) -> DescriptorList {
        var orphans = DescriptorList()
        for (address, var list) in listeners {
            let slots = sets.filter { $0.value.contains(address) }.map { keep[$0.key] ?? 0 }.max() ?? 0
            let needed = Self.listenerCount(address, slots: slots)
            while list.count > needed {
                let listener = list.removeLast()
                // No new client reaches a Unix socket whose file is gone; the workers of an old
                // generation still hold it, and may accept what is queued first.
                listener.removeSocketFile()
                // A connection that completed its handshake on this listener after its worker left
                // must not be reset by the close: take it, and let the master pass it on.
                orphans.append(contentsOf: Self.acceptAll(listener.fd))
                // Without deferAccept (a TCP option), dropping it here closes it.
                if deferAccept && !address.isUnix { closing.append((listener, now + Self.deferredCloseMilliseconds)) }
            }
            listeners[address] = list.isEmpty ? nil : list
        }
        return orphans
    }

    /// Takes what is queued on listeners set aside, and closes those whose time has come.
    /// Returns the connections taken (for a live worker).
    func closeDue(now: Int64) -> DescriptorList {
        var orphans = DescriptorList()
        for entry in closing { orphans.append(contentsOf: Self.acceptAll(entry.listener.fd)) }
        while let first = closing.first, first.at <= now { closing.removeFirst() }
        return orphans
    }

    /// Takes every connection queued on listener `fd`.
    static func acceptAll(_ fd: Int32) -> DescriptorList {
        var taken = DescriptorList()
        while case .processed(let conn)? = try? Sys.accept(fd) { taken.append(Descriptor(taking: conn)) }
        return taken
    }

    /// Steer by the receiving CPU instead of at random.
    var steerByCPU = false
    /// TCP_DEFER_ACCEPT on new listeners (the config's `deferAccept`, fixed until restart).
    var deferAccept = false

    func steer(set: Int, active: Int, skipping: [Int]) throws(SystemError) {
        for address in addresses(of: set) where !address.isUnix {
            guard let first = listeners[address]?.first else { continue }
            try Socket.steerReusePortGroup(first.fd, active: active, skipping: skipping, byCPU: steerByCPU)
        }
    }

    /// Every listener, in use or set aside.
    private var allListeners: [Listener] { listeners.values.flatMap { $0 } + closing.map(\.listener) }

    /// The first step of a stop: new connection attempts fail, while what is queued or completing
    /// its handshake can still be accepted. TCP listeners drop SYNs (`Socket.dropNewConnections`);
    /// a Unix socket's file is unlinked (a client then gets ENOENT, as from a server that is gone).
    /// Returns the failures, by listener.
    func refuseNewConnections() -> [(address: ListenAddress, error: SystemError)] {
        var failures: [(address: ListenAddress, error: SystemError)] = []
        for listener in allListeners {
            if listener.address.isUnix {
                listener.removeSocketFile()
                continue
            }
            do { try Socket.dropNewConnections(listener.fd) } catch { failures.append((listener.address, error)) }
        }
        return failures
    }

    /// A stop: for each listener, takes what is queued (`takingQueued`), then shuts it down and
    /// closes it. shutdown(SHUT_RD) takes a listening socket out of LISTEN for every process that
    /// holds it (the workers' inherited copies included), so the kernel answers the next SYN with a
    /// reset at once; close() alone would wait for the last copy. Whatever is still queued when it
    /// shuts is reset by the kernel: with new SYNs already dropped (`Socket.dropNewConnections`)
    /// and the queue just emptied, that is only a handshake that completed in between.
    /// Returns the connections taken.
    func shutDownAll(takingQueued: Bool) -> DescriptorList {
        var taken = DescriptorList()
        for listener in allListeners {
            // A Unix socket: its file goes first (no new client can reach it); it is not shut
            // down, which would leave it readable for ever in the workers' epoll sets.
            listener.removeSocketFile()
            if takingQueued { taken.append(contentsOf: Self.acceptAll(listener.fd)) }
            if !listener.address.isUnix { Sys.shutdownListener(listener.fd) }
        }
        closeAll()
        return taken
    }

    /// Takes the connections queued on `slot`'s listeners of `set` (for a live worker).
    func takeQueued(set: Int, slot: Int) -> DescriptorList {
        var taken = DescriptorList()
        // A Unix socket's queue is every worker's: the live ones take it.
        for address in addresses(of: set) where !address.isUnix {
            guard let list = listeners[address], slot < list.count else { continue }
            taken.append(contentsOf: Self.acceptAll(list[slot].fd))
        }
        return taken
    }

    /// Closes every listener (by letting go of it). `keepingStored`: the copies in systemd's store
    /// stay there for the next master (a restart).
    func closeAll(keepingStored: Bool = false) {
        if keepingStored {
            for listener in listeners.values.flatMap({ $0 }) + closing.map(\.listener) { listener.keepStored = true }
        }
        listeners = [:]
        closing = []
    }

    // MARK: - systemd's fd store

    /// Where new listeners are stored (`Listener.keep(in:name:)`); no store until the master finds one.
    var fdStore = FDStore(capacity: 0)

    /// The name a listener is stored under: its slot and address. The store takes printable ASCII
    /// but ':' (systemd's separator in $LISTEN_FDNAMES) and space (`FDStore.isValidName`), at most
    /// 255 bytes: ':' becomes '_', and any other byte refused (a Unix socket path may have spaces
    /// and UTF-8), and '%', become `%XX`. A name
    /// that would still be too long (a long path of non-ASCII names) is the path's FNV-1a hash.
    static func storeName(_ address: ListenAddress, slot: Int) -> String {
        var name = "listen.\(slot)."
        for byte in address.description.utf8 {
            switch byte {
            case UInt8(ascii: ":"): name += "_"
            case UInt8(ascii: "%"), ...0x20, 0x7F...: name += "%" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            default: name.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        guard name.utf8.count > maxStoreNameBytes else { return name }
        let hash = address.description.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        return "listen.\(slot).unix_fnv1a-\(String(hash, radix: 16))"
    }

    /// The longest name systemd's fd store takes (FDNAME_MAX).
    static let maxStoreNameBytes = 255

    /// `storeName`'s inverse among the addresses a config listens on: the address and slot, or nil.
    static func parseStoreName(_ name: String, among addresses: [ListenAddress]) -> (address: ListenAddress, slot: Int)? {
        let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "listen", let slot = Int(parts[1]), slot >= 0 else { return nil }
        guard let address = addresses.first(where: { storeName($0, slot: slot) == name }) else { return nil }
        return (address, slot)
    }

    /// Takes over the listeners of `address` the last master stored, in slot order from 0: slot i
    /// is index i of the kernel's reuseport group, as when this table opened them. Those that do
    /// not continue the run from 0 (a gap: one was lost) are closed, after what is queued on them
    /// is moved to `queued` (for a live worker); their names are returned.
    /// A Unix socket is adopted only while its file is still there (a stop of the unit removes
    /// its RuntimeDirectory=, and someone may have deleted it): without it no client could reach
    /// it, and the table opens a new one instead.
    func adopt(_ stored: [(slot: Int, fd: Int32, name: String)], address: ListenAddress, queued: inout DescriptorList) -> [String] {
        var list = listeners[address] ?? []
        var rest: [String] = []
        for entry in stored.sorted(by: { $0.slot < $1.slot }) {
            let descriptor = Descriptor(taking: entry.fd)
            if entry.slot == list.count && (address.unixPath.map { Self.isReachableUnixListener(descriptor.rawValue, path: $0) } ?? true)
                && entry.slot < Self.listenerCount(address, slots: .max) {
                list.append(Listener(adopting: descriptor, address: address, store: fdStore, name: entry.name))
            } else {
                queued.append(contentsOf: Self.acceptAll(descriptor.rawValue))
                rest.append(entry.name)
            }
        }
        listeners[address] = list.isEmpty ? nil : list
        return rest
    }

    /// Whether `fd` is a Unix socket bound to `path` and a socket file is at `path` now.
    static func isReachableUnixListener(_ fd: Int32, path: String) -> Bool {
        Socket.unixPath(fd) == path && (try? FileIO.fileType(atPath: path)) == .socket
    }

    /// A stored or handed-over listener no config address claims: if it is a Unix socket whose
    /// file is still there, the file goes (the config dropped it). The caller closes `fd`.
    static func removeFileOfForgotten(_ fd: Int32) {
        if let path = Socket.unixPath(fd), isReachableUnixListener(fd, path: path) { try? Sys.unlink(path) }
    }

    /// Every listener in use with its store name, for a re-exec (`clusterctl upgrade`); borrowed.
    var inventory: [(name: String, fd: Int32)] {
        listeners.flatMap { address, list in list.enumerated().map { (Self.storeName(address, slot: $0.offset), $0.element.fd) } }
    }

    /// Listeners in use (those set aside to close later are not counted).
    var totalOpen: Int { listeners.values.reduce(0) { $0 + $1.count } }
}
