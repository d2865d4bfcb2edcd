#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

public enum FileIO {
    /// Reads a whole (small) file, refusing anything over `limit` bytes.
    public static func readAll(path: String, limit: Int = 16 * 1024 * 1024) throws(SystemError) -> [UInt8] {
        let fd = try syscall(named: "open(\(path))") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { Sys.close(fd) }
        return try readAll(fd: fd, limit: limit, name: path)
    }

    /// Reads a whole (small) regular file, refusing anything else before reading a byte: the open
    /// is O_NONBLOCK, so a FIFO with no writer opens at once instead of blocking the caller until
    /// one comes, and fstat then refuses it (and sockets, devices, directories) as "not a regular
    /// file". For a regular file O_NONBLOCK changes nothing. (A hung network filesystem can still
    /// block open or read: no flag helps there.)
    public static func readRegularFile(path: String, limit: Int) throws(SystemError) -> [UInt8] {
        let fd = try syscall(named: "open(\(path))") { Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }
        defer { Sys.close(fd) }
        var st = stat()
        _ = try syscall(named: "fstat(\(path))") { fstat(fd, &st) }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw SystemError(call: "open(\(path))", errno: EINVAL, detail: "not a regular file (\(FileType(mode: st.st_mode)))")
        }
        return try readAll(fd: fd, limit: limit, name: path)
    }

    /// Opens a log file for appending (O_WRONLY | O_APPEND | O_CREAT, created with `mode`). With
    /// `nonBlocking` (O_NONBLOCK | O_NOCTTY), a FIFO without a reader fails at once (ENXIO) instead
    /// of blocking the caller: for a check that opens what a worker will open.
    public static func openAppending(_ path: String, mode: UInt32 = 0o644, nonBlocking: Bool = false) throws(SystemError) -> Int32 {
        try Sys.open(path, O_WRONLY | O_APPEND | O_CREAT | (nonBlocking ? O_NONBLOCK | O_NOCTTY : 0), mode: mode_t(mode))
    }

    /// Reads a descriptor to its end.
    public static func readAll(fd: Int32, limit: Int = 16 * 1024 * 1024, name: String = "fd") throws(SystemError) -> [UInt8] {
        var result: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try syscall(named: "read(\(name))") { Glibc.read(fd, chunk.baseAddress, chunk.count) }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
            if result.count > limit { throw SystemError(call: "read(\(name)): larger than \(limit) bytes", errno: EFBIG) }
        }
        return result
    }

    /// pread(2) of at most `count` bytes at `offset` (fewer at the end of the file).
    public static func read(fd: Int32, offset: Int, count: Int, name: String = "fd") throws(SystemError) -> [UInt8] {
        guard count > 0, offset >= 0 else { return [] }
        var result = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = try syscall(named: "pread(\(name))") {
                result.withUnsafeMutableBytes { p in Glibc.pread(fd, p.baseAddress! + filled, count - filled, off_t(offset + filled)) }
            }
            if n == 0 { break }
            filled += n
        }
        result.removeLast(count - filled)
        return result
    }

    /// Writes all bytes to a blocking descriptor.
    public static func writeAll(fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = try syscall("write") { bytes.withUnsafeBytes { p in Glibc.write(fd, p.baseAddress! + offset, p.count - offset) } }
            offset += n
        }
    }

    /// A sealed-size anonymous file holding `bytes` (memfd_create), positioned at 0.
    public static func memfd(name: String, bytes: [UInt8]) throws(SystemError) -> Int32 {
        let fd = try syscall(named: "memfd_create(\(name))") { ccluster_memfd_create(name, 1 /* MFD_CLOEXEC */) }
        do throws(SystemError) {
            try writeAll(fd: fd, bytes)
            _ = try syscall("lseek") { lseek(fd, 0, SEEK_SET) }
        } catch {
            Sys.close(fd)
            throw error
        }
        return fd
    }

    /// A zeroed shared memory segment of `size` bytes (memfd + mmap MAP_SHARED).
    public static func sharedMemory(name: String, size: Int) throws(SystemError) -> (fd: Int32, base: UnsafeMutableRawPointer) {
        let fd = try syscall(named: "memfd_create(\(name))") { ccluster_memfd_create(name, 1 /* MFD_CLOEXEC */) }
        do throws(SystemError) {
            _ = try syscall("ftruncate") { ftruncate(fd, off_t(size)) }
            let base = try map(fd: fd, size: size)
            return (fd, base)
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// mmap(MAP_SHARED, read/write) of a memfd.
    public static func map(fd: Int32, size: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw SystemError(call: "mmap", errno: ccluster_errno())
        }
        return p
    }

    /// Size of an open file (fstat).
    public static func size(fd: Int32) throws(SystemError) -> Int {
        var st = stat()
        _ = try syscall("fstat") { fstat(fd, &st) }
        return Int(st.st_size)
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Which file an inode is (device and inode number): two opens of the same path name the same
    /// file exactly when their identities are equal.
    public struct FileIdentity: Equatable, Sendable {
        public var device: UInt64
        public var inode: UInt64

        public init(device: UInt64, inode: UInt64) {
            self.device = device
            self.inode = inode
        }
    }

    /// What kind of file sits at a path, as `lstat` sees it (a symlink is itself, not its target).
    public enum FileType: Equatable, Sendable, CustomStringConvertible {
        case socket, regular, directory, symlink, fifo, characterDevice, blockDevice, unknown

        public var description: String {
            switch self {
            case .socket: return "a socket"
            case .regular: return "a regular file"
            case .directory: return "a directory"
            case .symlink: return "a symbolic link"
            case .fifo: return "a FIFO"
            case .characterDevice: return "a character device"
            case .blockDevice: return "a block device"
            case .unknown: return "of an unknown type"
            }
        }

        /// The type in `st_mode`'s S_IFMT bits.
        init(mode: mode_t) {
            switch mode & S_IFMT {
            case S_IFSOCK: self = .socket
            case S_IFREG: self = .regular
            case S_IFDIR: self = .directory
            case S_IFLNK: self = .symlink
            case S_IFIFO: self = .fifo
            case S_IFCHR: self = .characterDevice
            case S_IFBLK: self = .blockDevice
            default: self = .unknown
            }
        }
    }

    /// lstat(2): who owns `path` and its permission bits (for messages about access).
    public static func ownership(atPath path: String) throws(SystemError) -> (uid: uid_t, gid: gid_t, mode: mode_t) {
        var st = stat()
        _ = try syscall(named: "lstat(\(path))") { lstat(path, &st) }
        return (st.st_uid, st.st_gid, st.st_mode & 0o7777)
    }

    /// lstat(2): the type of what is at `path`, nil when nothing is (ENOENT, ENOTDIR).
    public static func fileType(atPath path: String) throws(SystemError) -> FileType? {
        var st = stat()
        do {
            _ = try syscall(named: "lstat(\(path))") { lstat(path, &st) }
        } catch {
            if error.errno == ENOENT || error.errno == ENOTDIR { return nil }
            throw error
        }
        return FileType(mode: st.st_mode)
    }

    /// Metadata of an open file (fstat).
    public struct FileInfo: Sendable {
        public var size: Int
        /// Last modification, whole seconds (what Last-Modified says).
        public var modified: Int64
        public var isDirectory: Bool
        public var isRegular: Bool
        public var identity: FileIdentity
        /// Which version of the file this is: the inode, size, mtime and ctime to the nanosecond
        /// (a write, truncate, chmod or rename over the path changes one of them).
        public var version: FileVersion
    }

    /// Equal for two looks at a file exactly when nothing visible in stat(2) changed between them.
    public struct FileVersion: Equatable, Sendable {
        public var identity: FileIdentity
        public var size: Int
        public var modifiedSeconds: Int64
        public var modifiedNanoseconds: Int
        public var changedSeconds: Int64
        public var changedNanoseconds: Int
        public var mode: UInt32

        public init(identity: FileIdentity, size: Int, modifiedSeconds: Int64, modifiedNanoseconds: Int, changedSeconds: Int64, changedNanoseconds: Int, mode: UInt32) {
            self.identity = identity
            self.size = size
            self.modifiedSeconds = modifiedSeconds
            self.modifiedNanoseconds = modifiedNanoseconds
            self.changedSeconds = changedSeconds
            self.changedNanoseconds = changedNanoseconds
            self.mode = mode
        }
    }

    static func info(_ st: stat) -> FileInfo {
        let type = st.st_mode & S_IFMT
        let identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        let version = FileVersion(identity: identity, size: Int(st.st_size), modifiedSeconds: Int64(st.st_mtim.tv_sec), modifiedNanoseconds: Int(st.st_mtim.tv_nsec),
                                  changedSeconds: Int64(st.st_ctim.tv_sec), changedNanoseconds: Int(st.st_ctim.tv_nsec), mode: UInt32(st.st_mode))
        return FileInfo(size: Int(st.st_size), modified: Int64(st.st_mtim.tv_sec), isDirectory: type == S_IFDIR, isRegular: type == S_IFREG,
                        identity: identity, version: version)
    }

    public static func info(fd: Int32) throws(SystemError) -> FileInfo {
        var st = stat()
        _ = try syscall("fstat") { fstat(fd, &st) }
        return info(st)
    }

    /// What `path` names now, every symlink on the way followed (stat(2)); no allocation, for a
    /// per-request check.
    public static func version(path: UnsafePointer<CChar>) throws(SystemError) -> FileVersion {
        var st = stat()
        _ = try syscall("stat") { stat(path, &st) }
        return info(st).version
    }

    /// The identity of what `path` names now, every symlink on the way followed (stat(2)); no
    /// allocation, for a per-request check.
    public static func identity(path: UnsafePointer<CChar>) throws(SystemError) -> FileIdentity {
        var st = stat()
        _ = try syscall("stat") { stat(path, &st) }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The file offset of `fd` (lseek(fd, 0, SEEK_CUR)); after a write on an O_APPEND descriptor,
    /// the end of what that write appended.
    public static func offset(fd: Int32) throws(SystemError) -> Int {
        Int(try syscall("lseek") { lseek(fd, 0, SEEK_CUR) })
    }

    /// Takes the exclusive advisory lock of the open file (flock(2) LOCK_EX), waiting while another
    /// open of the file (another process) holds it. Released by `unlock`, or when the last
    /// descriptor of this open file is closed (a process that dies holding it releases it).
    public static func lockExclusive(fd: Int32) throws(SystemError) {
        _ = try syscall("flock(LOCK_EX)") { flock(fd, LOCK_EX) }
    }

    /// Releases the lock `lockExclusive` took (flock(2) LOCK_UN). It cannot fail on a descriptor
    /// that holds the lock; closing the descriptor releases it in any case.
    public static func unlock(fd: Int32) {
        _ = flock(fd, LOCK_UN)
    }

    /// Cuts the file to `size` bytes (ftruncate(2)).
    public static func truncate(fd: Int32, size: Int) throws(SystemError) {
        _ = try syscall("ftruncate") { ftruncate(fd, off_t(size)) }
    }

    /// Opens `path` relative to the directory `dirfd` for reading; with `beneath`, the kernel refuses
    /// any resolution that leaves the directory (openat2 RESOLVE_BENEATH).
    public static func openBeneath(_ dirfd: Int32, _ path: UnsafePointer<CChar>, beneath: Bool) throws(SystemError) -> Int32 {
        try syscall("openat2") { ccluster_openat2(dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, beneath ? 1 : 0) }
    }

    /// Opens a directory to resolve paths under (O_PATH).
    public static func openDirectory(_ path: String) throws(SystemError) -> Int32 {
        try syscall(named: "open(\(path))") { Glibc.open(path, 0o10000000 /* O_PATH */ | O_DIRECTORY | O_CLOEXEC) }
    }

    /// A directory this process may list and read from.
    public static func isReadableDirectory(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access(path, R_OK | X_OK) == 0
    }
}
