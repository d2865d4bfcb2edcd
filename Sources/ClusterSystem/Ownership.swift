#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

// Users, groups and modes, and the few calls on paths and errors the master makes beyond the
// socket and file wrappers: so that no module above this one needs Glibc for a type or a constant.

/// A user id (uid_t).
public typealias UserID = uid_t
/// A group id (gid_t).
public typealias GroupID = gid_t
/// Permission bits (mode_t).
public typealias FileMode = mode_t

extension FileIO {
    /// mkdir(2). An existing directory is not an error.
    public static func makeDirectory(_ path: String, mode: FileMode) throws(SystemError) {
        do throws(SystemError) {
            _ = try syscall("mkdir") { mkdir(path, mode) }
        } catch where error.errno == EEXIST {}
    }

    /// chown(2) of the group only (the owner stays: uid -1).
    public static func changeGroup(_ path: String, to group: GroupID) throws(SystemError) {
        _ = try syscall("chown") { chown(path, uid_t.max, group) }
    }
}

extension SystemError {
    /// The process or the system is out of descriptors or memory for now (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM): retrying at once would fail the same way.
    public var isResourceExhaustion: Bool {
        switch code {
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory: true
        default: false
        }
    }
}

extension Sys {
    /// shutdown(SHUT_RD) of a listening socket: takes it out of LISTEN for every process holding it.
    public static func shutdownListener(_ fd: Int32) { shutdown(fd, Int32(SHUT_RD)) }
}

/// Who the workers run as (`user`, `group` in the config): looked up in the user database, and the
/// switch itself.
public enum Identity {
    /// The uid and primary gid of user `name` (getpwnam_r); nil when there is no such user.
    public static func user(named name: String) -> (uid: UserID, gid: GroupID)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let rc = getpwnam_r(name, &entry, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    /// The primary gid of user `uid` (getpwuid_r); nil when the database has no such user.
    public static func primaryGroup(of uid: UserID) -> GroupID? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let rc = getpwuid_r(uid, &entry, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else { return nil }
        return entry.pw_gid
    }

    /// The gid of group `name` (getgrnam_r); nil when there is no such group.
    public static func group(named name: String) -> GroupID? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>? = nil
        var buffer = [CChar](repeating: 0, count: 64 * 1024)
        let rc = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else { return nil }
        return entry.gr_gid
    }

    /// The effective uid.
    public static var effectiveUser: UserID { geteuid() }
    public static var effectiveGroup: GroupID { getegid() }

    /// Whether this process could switch to another user: root, with CAP_SETUID and CAP_SETGID in
    /// its bounding set (a systemd unit's CapabilityBoundingSet= may have removed them).
    public static var maySwitchUser: Bool {
        geteuid() == 0 && ccluster_capability_in_bounding_set(7) == 1 && ccluster_capability_in_bounding_set(6) == 1  // CAP_SETUID, CAP_SETGID
    }

    /// Becomes `uid`:`gid` for good, with no supplementary groups: setgroups, setgid, setuid, then
    /// proves it cannot come back (setuid(0) must fail).
    public static func switchTo(uid: UserID, gid: GroupID) throws(SystemError) {
        _ = try syscall("setgroups") { setgroups(0, nil) }
        _ = try syscall("setgid") { setgid(gid) }
        _ = try syscall("setuid") { setuid(uid) }
        if uid != 0 && setuid(0) == 0 {
            throw SystemError(call: "setuid", errno: EPERM, detail: "could switch back to root after dropping privileges")
        }
    }
}
