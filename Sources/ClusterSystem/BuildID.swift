#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// A binary's GNU build ID: the linker's hash of the code it wrote (`NT_GNU_BUILD_ID`, what
/// `readelf -n` and `file` show). A master and its workers compare theirs in the hand-shake, and
/// `clusterctl status` compares the running one with the file on disk, so that two builds never
/// serve side by side unnoticed.
public struct BuildID: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// From its hex spelling (as `description` writes it); nil for anything else.
    public init?(hex: String) {
        guard !hex.isEmpty, hex.utf8.count <= 2 * Self.maxBytes, let bytes = Hex.decode(hex) else { return nil }
        self.bytes = bytes
    }

    public var description: String { Hex.encode(bytes) }

    /// The running program's, read from its image in memory (not the file, which may have been
    /// replaced since it started); nil when it was linked without one.
    public static let current: BuildID? = {
        var buffer = [UInt8](repeating: 0, count: maxBytes)
        let n = buffer.withUnsafeMutableBufferPointer { ccluster_build_id($0.baseAddress, $0.count) }
        return n > 0 ? BuildID(bytes: Array(buffer[0..<n])) : nil
    }()

    /// The build ID of the ELF file at `path` (from its PT_NOTE segments); nil when it has none.
    /// Throws when the file cannot be read or is not a 64-bit little-endian ELF file.
    public static func ofFile(path: String) throws(SystemError) -> BuildID? {
        let fd = try Sys.open(path, O_RDONLY | O_CLOEXEC)
        defer { Sys.close(fd) }
        let header = try FileIO.read(fd: fd, offset: 0, count: 64, name: path)
        guard header.count == 64, header[0] == 0x7f, header[1] == 0x45, header[2] == 0x4c, header[3] == 0x46,
              header[4] == 2, header[5] == 1 else {
            throw SystemError(call: "read(\(path))", errno: ENOEXEC, detail: "not a 64-bit little-endian ELF file")
        }
        let phoff = Int(clamping: header.loadLE(UInt64.self, at: 0x20))
        let phentsize = Int(header.loadLE(UInt16.self, at: 0x36))
        let phnum = Int(header.loadLE(UInt16.self, at: 0x38))
        guard phentsize >= 56, phnum <= 256 else { return nil }
        let table = try FileIO.read(fd: fd, offset: phoff, count: phentsize * phnum, name: path)
        for i in 0..<phnum {
            let at = i * phentsize
            guard at + 56 <= table.count else { break }
            guard table.loadLE(UInt32.self, at: at) == 4 else { continue }  // PT_NOTE
            let offset = Int(clamping: table.loadLE(UInt64.self, at: at + 8))
            let size = Int(clamping: min(table.loadLE(UInt64.self, at: at + 32), 65536))
            let notes = try FileIO.read(fd: fd, offset: offset, count: size, name: path)
            if let id = parseNotes(notes) { return id }
        }
        return nil
    }

    /// The `NT_GNU_BUILD_ID` note's descriptor among ELF notes (4-byte aligned name and descriptor).
    public static func parseNotes(_ notes: [UInt8]) -> BuildID? {
        var at = 0
        while notes.count - at >= 12 {
            let nameSize = Int(notes.loadLE(UInt32.self, at: at))
            let descSize = Int(notes.loadLE(UInt32.self, at: at + 4))
            let type = notes.loadLE(UInt32.self, at: at + 8)
            let name = (nameSize + 3) & ~3, desc = (descSize + 3) & ~3
            guard name <= notes.count, desc <= notes.count, notes.count - at - 12 >= name + desc else { return nil }
            if type == 3 && nameSize == 4 && Array(notes[(at + 12)..<(at + 16)]) == [0x47, 0x4e, 0x55, 0] {
                let start = at + 12 + name
                guard descSize > 0, descSize <= maxBytes else { return nil }
                return BuildID(bytes: Array(notes[start..<(start + descSize)]))
            }
            at += 12 + name + desc
        }
        return nil
    }

    static let maxBytes = 64

}

extension Array where Element == UInt8 {
    /// A little-endian integer at `offset`; 0 where the array is too short.
    func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= count - size else { return 0 }
        var value: T = 0
        for i in 0..<size { value |= T(self[offset + i]) << (8 * i) }
        return value
    }
}
