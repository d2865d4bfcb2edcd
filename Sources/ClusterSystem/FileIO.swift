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

    /// A directory this process may list and read from.
    public static func isReadableDirectory(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access(path, R_OK | X_OK) == 0
    }
}
