import CSystemd  // libsystemd, the one C library this module is the door to
import ClusterSystem

/// systemd's file descriptor store (sd_notify(3) `FDSTORE=1`, `FDNAME=`, `FDSTOREREMOVE=1`): what
/// the master puts there — its listeners, the connections it holds while the service restarts —
/// systemd keeps open across `systemctl restart` and across a crash of the master
/// (`Restart=on-failure`), and passes back to the next master at its start (`LISTEN_FDS`,
/// `LISTEN_FDNAMES`, sd_listen_fds(3)). A plain stop empties it. The unit must allow it
/// (`FileDescriptorStoreMax=`); `capacity` is that number, 0 when there is no store.
public struct FDStore: Sendable {
    /// `FileDescriptorStoreMax=` of the unit (0: no store: every call is a no-op).
    public let capacity: Int

    public init(capacity: Int) { self.capacity = capacity }

    public var isEnabled: Bool { capacity > 0 }

    /// A descriptor systemd passed to this process at its start, with the name it was stored under.
    public struct Passed: Equatable, Sendable {
        public var name: String
        public var fd: Int32
    }

    /// The descriptors passed at start (each CLOEXEC), in systemd's order, taking LISTEN_PID,
    /// LISTEN_FDS and LISTEN_FDNAMES out of the environment so that no child sees them. Empty when
    /// nothing was passed to this process. Call once.
    public static func takePassed() -> [Passed] {
        var names = [CChar](repeating: 0, count: 1 << 20)
        let n = names.withUnsafeMutableBufferPointer { csystemd_listen_fds($0.baseAddress, $0.count) }
        guard n > 0 else { return [] }
        let list = String(cString: names).split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        return (0..<Int(n)).map { i in
            Passed(name: i < list.count && !list[i].isEmpty ? list[i] : "unknown", fd: SD_LISTEN_FDS_START + Int32(i))
        }
    }

    /// Whether systemd accepts `name` as an FDNAME: 1 to 255 printable ASCII characters, no ':'.
    public static func isValidName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return !bytes.isEmpty && bytes.count <= 255 && bytes.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }
    }

    /// Stores `fds` under `name` (several calls with one name add to it). systemd keeps its own
    /// copy: the caller still owns and closes its descriptors. False when not delivered (no store,
    /// no systemd, a bad name); systemd drops what exceeds `capacity` (and logs it).
    @discardableResult
    public func store(_ fds: [Int32], name: String) -> Bool {
        guard isEnabled, !fds.isEmpty, Self.isValidName(name) else { return false }
        let state = "FDSTORE=1\nFDNAME=\(name)"
        return fds.withUnsafeBufferPointer { csystemd_notify_with_fds(state, $0.baseAddress, UInt32($0.count)) } > 0
    }

    /// Closes systemd's copies of everything stored under `name`.
    public func remove(name: String) {
        guard isEnabled, Self.isValidName(name) else { return }
        _ = sd_notify(0, "FDSTOREREMOVE=1\nFDNAME=\(name)")
    }
}

/// What systemd says of the unit this process runs in.
public struct UnitState: Equatable, Sendable {
    /// The type of the job queued on the unit ("stop", "restart", "start", ...), "" when none.
    public var jobType: String
    /// `FileDescriptorStoreMax=`.
    public var fileDescriptorStoreMax: Int

    /// A stop that systemd follows with a start (`systemctl restart`, `try-restart`, or
    /// `reload-or-restart` of a unit that cannot reload): what is in the fd store survives it.
    public var isRestart: Bool { jobType == "restart" || jobType == "try-restart" }

    /// Asks systemd (over its private socket when this process may use it, else over the system
    /// bus), waiting at most `timeoutMilliseconds` for each answer. Throws when there is no systemd
    /// to ask, it does not know this process, or it did not answer in time.
    public static func query(pid: ProcessID = Sys.pid, timeoutMilliseconds: Int = 1000) throws(SystemError) -> UnitState {
        var job = [CChar](repeating: 0, count: 64)
        var max: UInt32 = 0
        let r = job.withUnsafeMutableBufferPointer {
            csystemd_unit_query(UInt32(bitPattern: pid), UInt64(timeoutMilliseconds) * 1000, $0.baseAddress, $0.count, &max)
        }
        if r < 0 { throw SystemError(call: "systemd D-Bus query (GetUnitByPID, Unit.Job)", errno: -r) }
        return UnitState(jobType: String(cString: job), fileDescriptorStoreMax: Int(max))
    }
}
