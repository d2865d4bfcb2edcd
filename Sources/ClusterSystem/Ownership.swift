#if canImport(Glibc)
import Glibc
#endif

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
