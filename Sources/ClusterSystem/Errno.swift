#if canImport(Glibc)
import Glibc
#endif

/// An errno value with a name, so that modules outside the kernel door can tell failures apart
/// without importing Glibc (the shape of swift-system's `Errno`). Only the values some caller acts
/// on are named; `SystemError.errno` still carries the raw number for anything else.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// strerror(3).
    public var description: String { String(cString: strerror(rawValue)) }

    /// EPERM
    public static let notPermitted = Errno(rawValue: EPERM)
    /// ENOENT
    public static let noSuchFileOrDirectory = Errno(rawValue: ENOENT)
    /// ENXIO: among others, a FIFO opened non-blocking for writing that nobody reads.
    public static let noSuchAddressOrDevice = Errno(rawValue: ENXIO)
    /// ENOMEM
    public static let noMemory = Errno(rawValue: ENOMEM)
    /// EACCES
    public static let permissionDenied = Errno(rawValue: EACCES)
    /// EXDEV: openat2(RESOLVE_BENEATH) refused a path that leaves the directory.
    public static let improperLink = Errno(rawValue: EXDEV)
    /// ENOTDIR
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    /// EINVAL
    public static let invalidArgument = Errno(rawValue: EINVAL)
    /// ENFILE: the system-wide descriptor table is full.
    public static let tooManyOpenFilesInSystem = Errno(rawValue: ENFILE)
    /// EMFILE: this process's descriptor limit is reached.
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    /// ENOSPC
    public static let noSpace = Errno(rawValue: ENOSPC)
    /// EROFS
    public static let readOnlyFileSystem = Errno(rawValue: EROFS)
    /// ENAMETOOLONG
    public static let fileNameTooLong = Errno(rawValue: ENAMETOOLONG)
    /// ELOOP: a symlink where openat2 forbids one, or too many levels of them.
    public static let tooManySymbolicLinkLevels = Errno(rawValue: ELOOP)
    /// ENOBUFS
    public static let noBufferSpace = Errno(rawValue: ENOBUFS)
    /// EADDRINUSE
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    /// ECONNREFUSED: nothing listens on the socket (a Unix socket left over from a dead process).
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    /// ECONNRESET: the peer reset the connection (also how a failed TLS connection is reported).
    public static let connectionReset = Errno(rawValue: ECONNRESET)
}

extension SystemError {
    /// The errno as a named value: `error.code == .noSuchFileOrDirectory`.
    public var code: Errno { Errno(rawValue: errno) }

    /// A failure the caller detected itself, reported as `code` (e.g. a short write as `.noSpace`).
    public init(call: String, _ code: Errno, detail: String? = nil) {
        self.init(call: call, errno: code.rawValue, detail: detail)
    }
}
