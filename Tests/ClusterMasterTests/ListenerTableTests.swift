import ClusterConfig
import ClusterSystem
import ClusterSystemd
import Glibc
import Testing

@testable import ClusterMaster

/// Opening listeners is all or nothing: a failure closes what the call opened and leaves the table
/// as it was (issue 12, item 24: a refused scale-up kept hundreds of listeners open).
@Suite struct ListenerTableTransactions {
    /// A port free on 127.0.0.1 now.
    func freePort() throws -> UInt16 {
        let fd = try Socket.tcpListener(host: "127.0.0.1", port: 0, reusePort: false)
        defer { Sys.close(fd) }
        return try Socket.localPort(fd)
    }

    @Test func aFailedEnsureClosesWhatItOpened() throws {
        let table = ListenerTable()
        defer { table.closeAll() }
        let port = try freePort()
        let a = ListenAddress(host: "127.0.0.1", port: port)
        // TEST-NET-1 is on no interface: bind fails with EADDRNOTAVAIL after a's listeners opened.
        let unbindable = ListenAddress(host: "192.0.2.1", port: port)
        let held = table.set(for: [a])
        try table.ensure(set: held, count: 1)
        let wider = table.set(for: [a, unbindable])
        #expect(table.missing(set: wider, count: 3) == 2 + 3)
        #expect(throws: MasterFailure.self) { try table.ensure(set: wider, count: 3) }
        #expect(table.listeners[a]?.count == 1, "the two listeners opened for a are closed again")
        #expect(table.listeners[unbindable] == nil)
        #expect(table.totalOpen == 1)
        // Nothing of the failed call is kept for later: trimming the wider set closes nothing more.
        #expect(table.release(set: wider, now: 0).count == 0)
        #expect(table.totalOpen == 1)
        try table.ensure(set: held, count: 2)
        #expect(table.totalOpen == 2)
    }

    @Test func anAddressHeldByAnotherSocketIsRefusedNamingThePort() throws {
        let table = ListenerTable()
        defer { table.closeAll() }
        let foreign = try Socket.tcpListener(host: "127.0.0.1", port: 0)  // reuseport, like another clusterd
        defer { Sys.close(foreign) }
        let port = try Socket.localPort(foreign)
        let address = ListenAddress(host: "127.0.0.1", port: port)
        let set = table.set(for: [address])
        do {
            try table.ensure(set: set, count: 2)
            Issue.record("must refuse")
        } catch {
            #expect(error.message.contains("cannot listen on \(address): address already in use"))
            #expect(error.message.contains("port \(port)"))
        }
        #expect(table.totalOpen == 0)
    }

    /// Two daemons starting at once: while one holds the port's lock (between its probe and its
    /// first listen), the other waits, then sees its listener and refuses, instead of both passing
    /// the probe and sharing one reuseport group.
    @Test func theProbeWaitsForADaemonOpeningThePort() throws {
        let port = try freePort()
        let lock = try #require(try Socket.lockPort(port))
        #expect(try Socket.lockPort(port) == nil, "one holder at a time")
        // The first daemon, on a thread of its own: it opens its listener 50 ms from now, then lets
        // go of the lock. Its result is the listener's descriptor.
        let first = try BackgroundCall.start { () throws(SystemError) -> [UInt8] in
            Sys.sleep(milliseconds: 50)
            let fd = try Socket.tcpListener(host: "127.0.0.1", port: port)
            Sys.close(lock)
            return withUnsafeBytes(of: fd) { Array($0) }
        }
        let table = ListenerTable()
        defer { table.closeAll() }
        do {
            try table.ensure(set: table.set(for: [ListenAddress(host: "127.0.0.1", port: port)]), count: 2)
            Issue.record("both daemons passed the probe")
        } catch {
            #expect(error.message.contains("address already in use"))
        }
        var ready = pollfd(fd: first.readyFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 5000) == 1)
        let bytes = try #require(try first.result?.get())
        Sys.close(bytes.withUnsafeBytes { $0.load(as: Int32.self) })
    }

    /// A lock nobody releases (another user's process bound the name) delays the check, no more.
    @Test func aSquattedPortLockOnlyDelays() throws {
        let port = try freePort()
        let squatter = try #require(try Socket.lockPort(port))
        defer { Sys.close(squatter) }
        let table = ListenerTable()
        defer { table.closeAll() }
        let started = Clock.monotonicMilliseconds()
        try table.ensure(set: table.set(for: [ListenAddress(host: "127.0.0.1", port: port)]), count: 1)
        #expect(table.totalOpen == 1)
        #expect(Clock.monotonicMilliseconds() - started < 2000)
    }

    /// Whether `fd` still names the socket `id` (fstat(2) directly: another suite may reuse a closed
    /// number at once, and the door traps on EBADF).
    static func isOpen(_ fd: Int32, _ id: FileIO.FileIdentity) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && FileIO.FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) == id
    }

    /// The table owns its listeners: one it lets go of is closed, at once or, with deferAccept,
    /// when its deferred close is due; one taken back from the deferred list stays open.
    @Test(arguments: [false, true]) func listenersTheTableDropsAreClosed(deferAccept: Bool) throws {
        let table = ListenerTable()
        table.deferAccept = deferAccept
        defer { table.closeAll() }
        let set = table.set(for: [ListenAddress(host: "127.0.0.1", port: try freePort())])
        try table.ensure(set: set, count: 3)
        let (fd1, fd2) = (table.fds(set: set, slot: 1)[0], table.fds(set: set, slot: 2)[0])
        let (id1, id2) = (try FileIO.info(fd: fd1).identity, try FileIO.info(fd: fd2).identity)
        #expect(table.trim(set: set, keep: 1, now: 0).count == 0)
        #expect(table.totalOpen == 1)
        #expect(Self.isOpen(fd1, id1) == deferAccept && Self.isOpen(fd2, id2) == deferAccept)
        if deferAccept {
            try table.ensure(set: set, count: 2)  // takes slot 1's listener back
            #expect(table.fds(set: set, slot: 1) == [fd1])
            #expect(table.closeDue(now: ListenerTable.deferredCloseMilliseconds - 1).count == 0)
            #expect(Self.isOpen(fd2, id2))
            #expect(table.closeDue(now: ListenerTable.deferredCloseMilliseconds).count == 0)
            #expect(!Self.isOpen(fd2, id2) && Self.isOpen(fd1, id1))
        }
        table.closeAll()
        #expect(!Self.isOpen(fd1, id1) && table.totalOpen == 0)
    }

    @Test func overlapIsPerFamilyAndPortWithWildcards() {
        let v4 = ListenAddress(host: "127.0.0.1", port: 80)
        #expect(ListenerTable.overlap(v4, ListenAddress(host: "0.0.0.0", port: 80)))
        #expect(!ListenerTable.overlap(v4, ListenAddress(host: "0.0.0.0", port: 81)))
        #expect(!ListenerTable.overlap(v4, ListenAddress(host: "127.0.0.2", port: 80)))
        #expect(!ListenerTable.overlap(v4, ListenAddress(host: "::", port: 80)), "IPv6 listeners are V6ONLY")
        #expect(ListenerTable.overlap(ListenAddress(host: "::1", port: 80), ListenAddress(host: "::", port: 80)))
    }
}

/// A Unix-socket listener: one socket that every slot shares, its file made with the configured
/// mode and group, replaced when stale, refused when a server answers on it, and removed with the
/// listener, except when the listener is kept in systemd's store for the next master.
@Suite struct UnixSocketListeners {
    /// A fresh directory for socket files, removed by the caller (`removeDirectory`).
    static func directory() throws -> String {
        var template = Array("/tmp/clusterd-unix-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        try #require(made != nil)
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeDirectory(_ path: String) {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(dir)
        }
        rmdir(path)
    }

    @Test func oneSharedListenerWithTheFilesModeRemovedWhenDropped() throws {
        let dir = try Self.directory()
        defer { Self.removeDirectory(dir) }
        let address = ListenAddress.unix(path: dir + "/http.sock")
        let table = ListenerTable()
        defer { table.closeAll() }
        table.unixFiles = [address: UnixSocketFile(mode: 0o660, group: .id(Int(getgid())))]
        let set = table.set(for: [address])
        #expect(table.missing(set: set, count: 4) == 1)
        try table.ensure(set: set, count: 4)
        #expect(table.totalOpen == 1)
        let fds = (0..<4).map { table.fds(set: set, slot: $0)[0] }
        #expect(Set(fds).count == 1, "every slot gets the same listener")
        let owner = try FileIO.ownership(atPath: dir + "/http.sock")
        #expect(owner.mode == 0o660 && owner.gid == getgid())
        // A client connects; the listener is Unix, so no SYN filter: the file's removal refuses.
        let client = try Socket.unixConnect(path: dir + "/http.sock")
        defer { Sys.close(client) }
        #expect(table.refuseNewConnections().isEmpty)
        #expect(!FileIO.exists(dir + "/http.sock"))
        #expect(throws: SystemError.self) { Sys.close(try Socket.unixConnect(path: dir + "/http.sock")) }
        // What was queued is still there to take.
        #expect(table.takeQueued(set: set, slot: 0).count == 0, "a shared queue is the live workers' to take")
        var taken = table.shutDownAll(takingQueued: true)
        #expect(taken.count == 1)
        while taken.next() != nil {}
        #expect(table.totalOpen == 0)
    }

    @Test func aReloadChangesTheModeAndTrimmingRemovesTheFile() throws {
        let dir = try Self.directory()
        defer { Self.removeDirectory(dir) }
        let address = ListenAddress.unix(path: dir + "/a.sock")
        let table = ListenerTable()
        defer { table.closeAll() }
        let set = table.set(for: [address])
        try table.ensure(set: set, count: 2)
        #expect(try FileIO.ownership(atPath: dir + "/a.sock").mode == 0o666, "nginx's default")
        table.unixFiles[address] = UnixSocketFile(mode: 0o600)
        try table.ensure(set: set, count: 3)
        #expect(try FileIO.ownership(atPath: dir + "/a.sock").mode == 0o600)
        #expect(table.totalOpen == 1)
        #expect(table.trim(set: set, keep: 1, now: 0).count == 0)
        #expect(FileIO.exists(dir + "/a.sock"), "still needed by slot 0")
        #expect(table.release(set: set, now: 0).count == 0)
        #expect(!FileIO.exists(dir + "/a.sock"))
    }

    @Test func aStaleFileIsReplacedALiveServerRefusedOtherFilesKept() throws {
        let dir = try Self.directory()
        defer { Self.removeDirectory(dir) }
        let path = dir + "/s.sock"
        // Stale: bound, then closed without unlinking (a crash).
        Sys.close(try Socket.unixListener(path: path, mode: 0o600))
        #expect(FileIO.exists(path))
        let table = ListenerTable()
        defer { table.closeAll() }
        try table.ensure(set: table.set(for: [.unix(path: path)]), count: 1)
        #expect(table.totalOpen == 1)
        table.closeAll(keepingStored: true)
        #expect(FileIO.exists(path), "a restart keeps the file for the next master")
        // Live: another server accepts there.
        let other = ListenerTable()
        defer { other.closeAll() }
        try other.ensure(set: other.set(for: [.unix(path: path)]), count: 1)
        let second = ListenerTable()
        do {
            try second.ensure(set: second.set(for: [.unix(path: path)]), count: 1)
            Issue.record("must refuse")
        } catch {
            #expect(error.message.contains("cannot listen on unix:\(path)"), "\(error)")
            #expect(error.message.contains("another server is listening there"), "\(error)")
        }
        #expect(FileIO.exists(path), "the live server's file stays")
        // Not a socket: someone's data, never replaced.
        let regular = dir + "/data"
        Sys.close(try FileIO.openAppending(regular, nonBlocking: false))
        do {
            try second.ensure(set: second.set(for: [.unix(path: regular)]), count: 1)
            Issue.record("must refuse")
        } catch {
            #expect(error.message.contains("is a regular file, not a socket"), "\(error)")
        }
        // The listener that went with `other` does not remove a file another server put there.
        let replaced = ListenerTable()
        try replaced.ensure(set: replaced.set(for: [.unix(path: dir + "/r.sock")]), count: 1)
        unlink(dir + "/r.sock")
        let newcomer = try Socket.unixListener(path: dir + "/r.sock", mode: 0o600)
        defer { Sys.close(newcomer) }
        replaced.closeAll()
        #expect(FileIO.exists(dir + "/r.sock"))
    }

    @Test func anUnknownGroupIsRefused() throws {
        let table = ListenerTable()
        let address = ListenAddress.unix(path: "/tmp/never-made.sock")
        table.unixFiles = [address: UnixSocketFile(group: .name("no-such-group-here"))]
        #expect(throws: MasterFailure("cannot listen on unix:/tmp/never-made.sock: no group named \"no-such-group-here\" in the group database")) {
            try table.ensure(set: table.set(for: [address]), count: 1)
        }
    }

    @Test func storeNamesOfUnixSockets() throws {
        let a = ListenAddress.unix(path: "/run/clusterd/http.sock")
        #expect(ListenerTable.storeName(a, slot: 0) == "listen.0.unix_/run/clusterd/http.sock")
        let odd = ListenAddress.unix(path: "/run/a:b%c\u{7f}d/é.sock")
        #expect(ListenerTable.storeName(odd, slot: 0) == "listen.0.unix_/run/a_b%25c%7Fd/%C3%A9.sock")
        let long = ListenAddress.unix(path: "/" + String(repeating: "é", count: 53))
        for address in [a, odd, long] {
            let name = ListenerTable.storeName(address, slot: 0)
            #expect(FDStore.isValidName(name), "\(name)")
            #expect(ListenerTable.parseStoreName(name, among: [ListenAddress(host: "127.0.0.1", port: 1), a, odd, long])?.address == address)
        }
        #expect(ListenerTable.storeName(long, slot: 0).hasPrefix("listen.0.unix_fnv1a-"))
    }
}

/// Listeners in systemd's fd store are found again by name: slot and address, without the ':'
/// systemd refuses in a name.
@Suite struct ListenerStoreNames {
    @Test func namesRoundTripForIPv4AndIPv6() throws {
        let v4 = ListenAddress(host: "127.0.0.1", port: 8080), v6 = ListenAddress(host: "::1", port: 8080)
        let any6 = ListenAddress(host: "::", port: 80)
        for address in [v4, v6, any6] {
            for slot in [0, 7, 255] {
                let name = ListenerTable.storeName(address, slot: slot)
                #expect(FDStore.isValidName(name), "\(name)")
                let parsed = try #require(ListenerTable.parseStoreName(name, among: [v4, v6, any6]))
                #expect(parsed.address == address && parsed.slot == slot)
            }
        }
        #expect(ListenerTable.storeName(v6, slot: 3) == "listen.3.[__1]_8080")
        // An address the config no longer has, a connection's name, or garbage: not a listener of ours.
        #expect(ListenerTable.parseStoreName(ListenerTable.storeName(v4, slot: 0), among: [v6]) == nil)
        for name in ["conn.12.3", "listen.x.127.0.0.1_8080", "listen.-1.127.0.0.1_8080", "listen", "", "listen.0."] {
            #expect(ListenerTable.parseStoreName(name, among: [v4, v6]) == nil, "\(name)")
        }
    }

    @Test func adoptionKeepsTheSlotOrderAndReturnsWhatBreaksIt() throws {
        let table = ListenerTable()
        let address = ListenAddress(host: "127.0.0.1", port: 1)
        // Three sockets standing in for stored listeners: slots 1, 0 and 3 (2 was lost).
        let fds = try (0..<3).map { _ in try Sys.socket(2, 1) }
        var queued = DescriptorList()
        let closed = table.adopt([(1, fds[0], "b"), (0, fds[1], "a"), (3, fds[2], "d")], address: address, queued: &queued)
        #expect(closed == ["d"], "slot 3 does not follow slot 1: closed")
        #expect(table.listeners[address]?.map(\.fd) == [fds[1], fds[0]])
        table.closeAll()
    }
}
