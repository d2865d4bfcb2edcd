#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// Gives back memory an idle worker holds but does not need: file pages it mapped while starting
/// or serving (code and read-only data of the binary and its libraries) and free heap pages.
///
/// A re-executed worker maps several megabytes of its static binary while it starts (argument and
/// config parsing, logging set-up, the Swift runtime's start-up) and more under load; the kernel
/// maps whole large folios at a time, so a few touches map hundreds of kilobytes. Those pages stay
/// in the page cache (shared with the master and every other process) and fault back in on the
/// next touch, but while mapped they count in this process's RSS and PSS.
///
/// Only pages that are provably identical to their file are released: pages of private mappings
/// that are not writable (so nothing can write them while this runs) and that the kernel reports
/// as file pages in `/proc/self/pagemap` (bit 61). Pages made private by relocation (`.data.rel.ro`
/// after RELRO), by a debugger's breakpoint, or any other copy-on-write are anonymous and are
/// kept; `MADV_DONTNEED` on them would bring back the file's bytes.
public enum MemoryRelease {
    public struct Mapping: Equatable, Sendable {
        public var start: UInt
        public var end: UInt
        public var readable: Bool
        public var writable: Bool
        public var executable: Bool
        public var isPrivate: Bool
        public var path: String

        /// A mapping whose clean file pages may be released: private, not writable, backed by a file.
        public var isCandidate: Bool { isPrivate && !writable && readable && path.hasPrefix("/") }
    }

    /// Parses `/proc/<pid>/maps`. Lines that do not parse are skipped (the format is the kernel's).
    public static func parseMaps(_ text: [UInt8]) -> [Mapping] {
        var result: [Mapping] = []
        var lineStart = 0
        while lineStart < text.count {
            var lineEnd = lineStart
            while lineEnd < text.count && text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            if let m = parseLine(text[lineStart..<lineEnd]) { result.append(m) }
            lineStart = lineEnd + 1
        }
        return result
    }

    /// `start-end perms offset dev inode [path]`
    static func parseLine(_ line: ArraySlice<UInt8>) -> Mapping? {
        var i = line.startIndex
        func hex() -> UInt? {
            var value: UInt = 0
            var digits = 0
            while i < line.endIndex, let d = hexDigit(line[i]) {
                guard digits < 16 else { return nil }
                value = value << 4 | UInt(d)
                digits += 1
                i += 1
            }
            return digits > 0 ? value : nil
        }
        func skip(_ byte: UInt8) -> Bool {
            guard i < line.endIndex, line[i] == byte else { return false }
            i += 1
            return true
        }
        func field() -> ArraySlice<UInt8> {
            while i < line.endIndex && line[i] == UInt8(ascii: " ") { i += 1 }
            let s = i
            while i < line.endIndex && line[i] != UInt8(ascii: " ") { i += 1 }
            return line[s..<i]
        }
        guard let start = hex(), skip(UInt8(ascii: "-")), let end = hex(), end > start, skip(UInt8(ascii: " ")) else { return nil }
        let perms = field()
        guard perms.count == 4 else { return nil }
        let p = Array(perms)
        _ = field()  // offset
        _ = field()  // device
        _ = field()  // inode
        while i < line.endIndex && line[i] == UInt8(ascii: " ") { i += 1 }
        let path = String(decoding: line[i..<line.endIndex], as: UTF8.self)
        return Mapping(
            start: start, end: end, readable: p[0] == UInt8(ascii: "r"), writable: p[1] == UInt8(ascii: "w"),
            executable: p[2] == UInt8(ascii: "x"), isPrivate: p[3] == UInt8(ascii: "p"), path: path)
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    static let pageSize = UInt(sysconf(Int32(_SC_PAGESIZE)))
    static let present: UInt64 = 1 << 63
    static let swapped: UInt64 = 1 << 62
    static let filePage: UInt64 = 1 << 61

    /// The runs of this process's clean file pages (see the type's comment), found through
    /// `/proc/self/maps` and `/proc/self/pagemap`.
    public struct Plan: Sendable {
        public var ranges: [(start: UInt, length: UInt)] = []
        /// Mappings examined (candidates only).
        public var mappings = 0
        public var pages: Int { ranges.reduce(0) { $0 + Int($1.length / MemoryRelease.pageSize) } }
    }

    public static func plan() throws(SystemError) -> Plan {
        var plan = Plan()
        let maps = parseMaps(try FileIO.readAll(path: "/proc/self/maps", limit: 4 * 1024 * 1024))
        let pagemap = try syscall(named: "open(/proc/self/pagemap)") { Glibc.open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC) }
        defer { Sys.close(pagemap) }
        let chunkPages = 512
        let entries = UnsafeMutablePointer<UInt64>.allocate(capacity: chunkPages)
        defer { entries.deallocate() }
        for mapping in maps where mapping.isCandidate {
            plan.mappings += 1
            var page = mapping.start
            while page < mapping.end {
                let count = Int(min(UInt(chunkPages), (mapping.end - page) / pageSize))
                let offset = off_t(page / pageSize) * 8
                let bytes = try syscall(named: "pread(/proc/self/pagemap)") { pread(pagemap, entries, count * 8, offset) }
                let got = bytes / 8
                guard got > 0 else { break }
                var runStart = -1
                for k in 0...got {
                    let releasable = k < got && entries[k] & (present | swapped | filePage) == (present | filePage)
                    if releasable {
                        if runStart < 0 { runStart = k }
                    } else if runStart >= 0 {
                        plan.ranges.append((page + UInt(runStart) * pageSize, UInt(k - runStart) * pageSize))
                        runStart = -1
                    }
                }
                page += UInt(got) * pageSize
            }
        }
        return plan
    }

    /// Unmaps the planned pages. Nothing may run between `plan()` and this call in another thread;
    /// in this one, what runs after it maps its own pages again, so log before, not after.
    public static func release(_ plan: Plan) throws(SystemError) {
        for range in plan.ranges {
            try Sys.madvise(range.start, length: range.length, advice: MADV_DONTNEED)
        }
    }

    /// Threads in this process (`Threads:` of /proc/self/status); nil if it cannot be read.
    public static func threadCount() -> Int? {
        guard let bytes = try? FileIO.readAll(path: "/proc/self/status", limit: 64 * 1024) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("Threads:") {
            return Int(line.dropFirst("Threads:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" }))
        }
        return nil
    }

    /// malloc_trim(0): free heap pages back to the kernel. True when some were.
    public static func trimHeap() -> Bool { ccluster_malloc_trim() != 0 }

    /// When a single-threaded event loop gives memory back: once per quiet spell, after `after`
    /// milliseconds without an event. The first quiet spell counts from start, so what start-up
    /// mapped (config parsing, logging set-up, the runtime's initialisation, lazy symbol binding)
    /// goes at the first quiet turn.
    public struct IdleSchedule: Sendable {
        /// Milliseconds without an event; 0: never.
        public var after: Int64
        /// A release failed (no /proc, say): it stays off.
        public private(set) var failed = false
        /// Releases done so far.
        public private(set) var releases = 0
        var lastBusy: Int64 = 0
        var released = false

        /// Skip a release while the process has other threads: one of them could unmap a range
        /// between `plan()` and `release(_:)` and map fresh memory there (a library handler that
        /// starts threads and loads or unloads a library, say). clusterd's own processes have one.
        var singleThreadedOnly: Bool

        public init(after: Int64, singleThreadedOnly: Bool = true) {
            self.after = after
            self.singleThreadedOnly = singleThreadedOnly
        }

        /// Call once per turn of the loop. Releases when `after` has passed since the last busy
        /// turn; throws the error of a failed release, after which it is off for good.
        public mutating func turn(now: Int64, busy: Bool) throws(SystemError) {
            if busy {
                lastBusy = now
                released = false
                return
            }
            guard !released, now - lastBusy >= after else { return }
            released = true
            try releaseNow()
        }

        /// Releases now (when enabled), whatever the clock says: a worker does it once it is ready,
        /// so that a server that is never quiet for `after` still drops what start-up mapped.
        public mutating func releaseNow() throws(SystemError) {
            guard !failed, after > 0 else { return }
            if singleThreadedOnly && MemoryRelease.threadCount() != 1 { return }
            do {
                _ = MemoryRelease.trimHeap()
                try MemoryRelease.release(try MemoryRelease.plan())
                releases += 1
            } catch {
                failed = true
                throw error
            }
        }
    }
}

extension Sys {
    /// madvise(2).
    public static func madvise(_ address: UInt, length: UInt, advice: Int32) throws(SystemError) {
        _ = try syscall("madvise") { Glibc.madvise(UnsafeMutableRawPointer(bitPattern: address), Int(length), advice) }
    }
}
