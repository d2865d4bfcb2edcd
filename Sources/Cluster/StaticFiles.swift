import ClusterConfig
import ClusterHTTP
import ClusterSystem

/// Serves files under a root directory for a URL prefix, as an nginx user expects: sendfile bodies,
/// Content-Type by extension, index files, ETag/Last-Modified with 304, single Range with 206/416,
/// 301 to add a directory's slash, 405 with Allow. Paths are percent-decoded and normalised, and
/// the kernel resolves them with openat2(RESOLVE_BENEATH): `..`, encoded dots, absolute symlinks
/// and symlinks pointing outside never leave the root (unless `allowSymlinksOutside`). Hidden
/// names (a segment starting with `.`, but `/.well-known/`) are not served unless `allowHidden`.
/// The root path is checked on every request, so a deploy that swaps a symlink is followed at once.
///
/// Open-file cache (nginx's `open_file_cache`, but never stale): a file served once stays open,
/// with its response head rendered and, when small and settled, its bytes in memory. A request for
/// it costs one stat(2) of the whole path (root symlinks followed, so a symlink-swap deploy misses
/// at once); when the inode, size, mtime, ctime or mode differ, the entry is dropped and the file
/// opened again beneath the root as on a first request.
final class StaticFiles {
    let prefix: [UInt8]
    let root: String
    /// `root` as a C string, made once (stat'ed per request).
    let rootPath: [CChar]
    let index: String
    /// `index` as a C string, made once.
    let indexPath: [CChar]
    let beneath: Bool
    let allowHidden: Bool
    let types: MimeTypes
    // The mutable state below belongs to one worker's thread and is touched in short accesses
    // that never overlap: no run-time exclusivity checks (see IOBuffer, HTTPWorker).

    /// The root directory (O_PATH), opened on first use (in a worker; the master only validates)
    /// and again whenever `root` names another directory (see `currentRoot`).
    @exclusivity(unchecked) private var rootFD: Int32 = -1
    /// Which directory `rootFD` is.
    @exclusivity(unchecked) private var rootIdentity = FileIO.FileIdentity(device: 0, inode: 0)
    /// Reused for the decoded path (no allocation per request once warm).
    @exclusivity(unchecked) private var pathBuffer: [CChar] = []
    /// Set by `normalise`: the URL's last segment was empty, `.` or `..`, so it names a directory
    /// (a regular file is not served at `/file/` or `/file/.`).
    @exclusivity(unchecked) private(set) var namesDirectory = false
    /// The open-file cache, by normalised path (NUL included).
    @exclusivity(unchecked) private(set) var cache: [PathKey: CachedFile] = [:]
    let cacheLimits: CacheLimits
    /// Bytes of file bodies the cache holds in memory.
    @exclusivity(unchecked) private(set) var cachedBodyBytes = 0

    struct CacheLimits {
        /// Open files kept (each holds a descriptor); 0 turns the cache off (`openFileCache`).
        var entries = 1000
        /// Files up to this size are kept in memory once settled, and sent with the head in one write.
        var bodyBytes = 32 * 1024
        /// All bodies kept in memory together, per root and worker.
        var totalBodyBytes = 8 * 1024 * 1024
        /// A file modified less than this many seconds ago is sent from its descriptor, never from
        /// a copy: a write in the same clock tick as the copy would leave mtime unchanged.
        var settleSeconds: Int64 = 2
    }

    init(_ config: ClusterConfiguration.StaticRoot, types: MimeTypes) {
        var limits = CacheLimits()
        limits.entries = config.openFileCache
        cacheLimits = limits
        prefix = Array(config.prefix.utf8)
        root = config.root
        rootPath = Array(config.root.utf8CString)
        index = config.index
        indexPath = Array(config.index.utf8CString)
        beneath = !config.allowSymlinksOutside
        allowHidden = config.allowHidden
        self.types = types
        pathBuffer.reserveCapacity(512)
    }

    deinit {
        if rootFD >= 0 { Sys.close(rootFD) }
    }

    /// The last normalised path (tests).
    var normalisedPath: String {
        String(decoding: pathBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func matches(_ path: HTTPBytes) -> Bool {
        prefix.withUnsafeBytes { path.hasPrefix($0) } || (path.count == prefix.count - 1 && prefix.withUnsafeBytes { path.equals(UnsafeRawBufferPointer(rebasing: $0.dropLast())) })
    }

    enum PathError { case badRequest, forbidden }

    /// Decodes `%XX`, drops `.` and empty segments, resolves `..` (never above the root) into
    /// `pathBuffer` as a relative, NUL-terminated path ("." for the root itself).
    func normalise(_ raw: UnsafeRawBufferPointer) -> PathError? {
        // Worked on as a local: a stored property of a class is checked for exclusive access at
        // run time on every use, which per byte costs more than the work itself.
        var buffer: [CChar] = []
        swap(&buffer, &pathBuffer)
        var directory = false
        let error = Self.normalise(raw, into: &buffer, namesDirectory: &directory)
        swap(&buffer, &pathBuffer)
        namesDirectory = directory
        return error
    }

    static func normalise(_ raw: UnsafeRawBufferPointer, into pathBuffer: inout [CChar], namesDirectory: inout Bool) -> PathError? {
        pathBuffer.removeAll(keepingCapacity: true)
        if isPlain(raw) {
            // The common path (`css/site.css`): nothing to decode or drop, copied as it is.
            raw.withMemoryRebound(to: CChar.self) { pathBuffer.append(contentsOf: $0) }
            pathBuffer.append(0)
            namesDirectory = false
            return nil
        }
        var segmentStart = 0
        var i = 0
        func endSegment() -> PathError? {
            let length = pathBuffer.count - segmentStart
            namesDirectory = true
            if length == 0 { return nil }
            if length == 1 && pathBuffer[segmentStart] == 0x2E {
                pathBuffer.removeLast()
            } else if length == 2 && pathBuffer[segmentStart] == 0x2E && pathBuffer[segmentStart + 1] == 0x2E {
                pathBuffer.removeLast(2)
                // Pop the previous segment; above the root is refused.
                guard !pathBuffer.isEmpty else { return .forbidden }
                pathBuffer.removeLast()  // its slash
                while let last = pathBuffer.last, last != 0x2F { pathBuffer.removeLast() }
            } else {
                pathBuffer.append(0x2F)
                namesDirectory = false
            }
            segmentStart = pathBuffer.count
            return nil
        }
        while i < raw.count {
            var c = raw[i]
            if c == UInt8(ascii: "%") {
                guard i + 2 < raw.count, let h = hexDigitValue(raw[i + 1]), let l = hexDigitValue(raw[i + 2]) else { return .badRequest }
                c = h << 4 | l
                i += 2
                // An encoded slash or NUL is never part of a file name here.
                if c == 0 || c == 0x2F { return .badRequest }
                pathBuffer.append(CChar(bitPattern: c))
            } else if c == 0x2F {
                if let e = endSegment() { return e }
            } else {
                pathBuffer.append(CChar(bitPattern: c))
            }
            i += 1
        }
        if let e = endSegment() { return e }
        if pathBuffer.last == 0x2F { pathBuffer.removeLast() }
        if pathBuffer.isEmpty { pathBuffer.append(0x2E) }
        pathBuffer.append(0)
        return nil
    }

    /// A path that normalises to itself: not empty, no `%`, no empty, `.` or `..` segment, no
    /// trailing slash.
    static func isPlain(_ raw: UnsafeRawBufferPointer) -> Bool {
        guard let last = raw.last, last != 0x2F else { return false }
        var segmentStart = 0
        for i in 0...raw.count {
            let c: UInt8 = i < raw.count ? raw[i] : 0x2F
            if c == UInt8(ascii: "%") || c == 0 { return false }
            if c == 0x2F {
                let length = i - segmentStart
                if length == 0 { return false }
                if raw[segmentStart] == 0x2E && (length == 1 || (length == 2 && raw[segmentStart + 1] == 0x2E)) { return false }
                segmentStart = i + 1
            }
        }
        return true
    }

    /// Whether the normalised path has a hidden segment (one starting with `.`). `.well-known` as
    /// the first segment is not hidden: RFC 8615's public directory (ACME challenges, security.txt).
    var isHiddenPath: Bool {
        let pathBuffer = self.pathBuffer
        let count = pathBuffer.count - 1  // the NUL
        if count == 1 && pathBuffer[0] == 0x2E { return false }  // "." is the root itself
        var start = 0
        if Self.startsWithWellKnown(pathBuffer, count) { start = Self.wellKnown.count + 1 }
        var i = start
        while i < count {
            if pathBuffer[i] == 0x2E && (i == 0 || pathBuffer[i - 1] == 0x2F) { return true }
            i += 1
        }
        return false
    }

    static let wellKnown: [CChar] = Array(".well-known".utf8).map { CChar(bitPattern: $0) }

    static func startsWithWellKnown(_ path: [CChar], _ count: Int) -> Bool {
        guard count >= wellKnown.count, count == wellKnown.count || path[wellKnown.count] == 0x2F else { return false }
        for i in 0..<wellKnown.count where path[i] != wellKnown[i] { return false }
        return true
    }

    /// The root directory as `root` names it now. A deploy that swaps a symlink on the way
    /// (`current -> releases/N`, renamed into place) is followed on the next request, as nginx
    /// (which opens the whole path per request) follows it: one stat(2) of the configured path per
    /// request, and the directory is opened again only when that names another inode than the one
    /// held. Files are still opened beneath the directory just opened, so the containment of
    /// `openat2(RESOLVE_BENEATH)` holds relative to the new target.
    func currentRoot() throws(SystemError) -> Int32 {
        do throws(SystemError) {
            let now = try rootPath.withUnsafeBufferPointer { (p) throws(SystemError) -> FileIO.FileIdentity in try FileIO.identity(path: p.baseAddress!) }
            if rootFD >= 0 && now == rootIdentity { return rootFD }
            let fd = try FileIO.openDirectory(root)
            let info: FileIO.FileInfo
            do throws(SystemError) { info = try FileIO.info(fd: fd) } catch {
                Sys.close(fd)
                throw error
            }
            if rootFD >= 0 { Sys.close(rootFD) }
            rootFD = fd
            rootIdentity = info.identity
            // Files of the previous release: let them go (a hit would have been checked anyway).
            dropCache()
            return fd
        } catch {
            // Gone or unreadable: never keep serving a directory the path no longer names.
            if rootFD >= 0 { Sys.close(rootFD) }
            rootFD = -1
            dropCache()
            throw error
        }
    }

    /// Where a directory URL without its slash is sent: the prefix and the normalised path, so the
    /// Location is always a single-slash, same-origin path (`//evil.example/..` and
    /// `/\evil.example/..` collapse to the prefix), with everything outside RFC 3986's `pchar`
    /// percent-encoded again.
    func directoryLocation(query: HTTPBytes) -> String {
        var bytes = prefix
        let count = pathBuffer.count - 1
        if !(count == 1 && pathBuffer[0] == 0x2E) {
            for c in pathBuffer[0..<count] {
                let b = UInt8(bitPattern: c)
                if Self.isPathByte(b) {
                    bytes.append(b)
                } else {
                    bytes.append(UInt8(ascii: "%"))
                    bytes.append(Self.hexDigits[Int(b >> 4)])
                    bytes.append(Self.hexDigits[Int(b & 15)])
                }
            }
            bytes.append(UInt8(ascii: "/"))
        }
        if !query.isEmpty {
            bytes.append(UInt8(ascii: "?"))
            bytes.append(contentsOf: query.buffer)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    /// RFC 3986 `pchar` (unreserved, sub-delims, `:` and `@`) and `/`.
    static func isPathByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "/"),
             UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "@"):
            return true
        default: return false
        }
    }

    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        guard request.method == .GET || request.method == .HEAD else {
            return response.respond(status: 405, headers: [HTTPField("Allow", "GET, HEAD")], body: "method not allowed\n" as StaticString)
        }
        let path = request.path.buffer
        let relative = UnsafeRawBufferPointer(rebasing: path[min(path.count, prefix.count)...])
        if let error = normalise(relative) {
            return error == .forbidden
                ? response.respond(status: 403, body: "forbidden\n" as StaticString)
                : response.respond(status: 400, body: "bad path\n" as StaticString)
        }
        // Hidden names (.env, .git/, .htpasswd) answer as if absent, unless the root allows them.
        if !allowHidden && isHiddenPath {
            return response.respond(status: 404, body: "not found\n" as StaticString)
        }
        if let entry = cache[PathKey(pathBuffer)] {
            if fresh(entry, urlEndsWithSlash: path.last == UInt8(ascii: "/")) {
                return serve(entry, request, &response)
            }
            forget(entry)
        }
        let rootFD: Int32
        do { rootFD = try currentRoot() } catch {
            return error.code == .noSuchFileOrDirectory || error.code == .notDirectory
                ? response.respond(status: 404, body: "not found\n" as StaticString)
                : response.respond(status: 500, body: "static root unavailable\n" as StaticString)
        }
        var fd: Int32
        do {
            fd = try pathBuffer.withUnsafeBufferPointer { (p) throws(SystemError) -> Int32 in try FileIO.openBeneath(rootFD, p.baseAddress!, beneath: beneath) }
        } catch {
            return respondOpenError(error, &response)
        }
        var info: FileIO.FileInfo
        do { info = try FileIO.info(fd: fd) } catch {
            Sys.close(fd)
            return response.respond(status: 500, body: "stat failed\n" as StaticString)
        }
        let servesIndex = info.isDirectory
        if servesIndex {
            // A directory: its index, after making sure the URL ends with a slash (as nginx does).
            if path.last != UInt8(ascii: "/") {
                Sys.close(fd)
                return response.respond(status: 301, headers: [HTTPField("Location", directoryLocation(query: request.query))], body: "moved\n")
            }
            let dir = fd
            defer { Sys.close(dir) }
            do {
                fd = try indexPath.withUnsafeBufferPointer { (p) throws(SystemError) -> Int32 in try FileIO.openBeneath(dir, p.baseAddress!, beneath: beneath) }
            } catch {
                return response.respond(status: 403, body: "directory has no index\n" as StaticString)
            }
            do { info = try FileIO.info(fd: fd) } catch {
                Sys.close(fd)
                return response.respond(status: 500, body: "stat failed\n" as StaticString)
            }
        } else if namesDirectory {
            // `/file.txt/` or `/file.txt/.`: the kernel would say ENOTDIR (nginx answers 404).
            Sys.close(fd)
            return response.respond(status: 404, body: "not found\n" as StaticString)
        }
        guard info.isRegular else {
            Sys.close(fd)
            return response.respond(status: 403, body: "forbidden\n" as StaticString)
        }
        let entry = CachedFile(file: OpenFile(fd: fd), version: info.version, contentType: types.type(forPath: servesIndex ? indexPath : pathBuffer),
                               statPath: statPath(index: servesIndex), isIndex: servesIndex, body: nil)
        if cacheLimits.entries > 0 { remember(settle(entry)) }
        serve(entry, request, &response)
    }

    // MARK: the open-file cache

    /// Whether `entry` still is what its path names (one stat of the whole path), and may answer
    /// this URL (an index only for a URL ending in `/`, a file never for a directory URL).
    func fresh(_ entry: CachedFile, urlEndsWithSlash: Bool) -> Bool {
        guard entry.isIndex ? urlEndsWithSlash : !namesDirectory else { return false }
        let now: FileIO.FileVersion
        do {
            now = try entry.statPath.withUnsafeBufferPointer { (p) throws(SystemError) -> FileIO.FileVersion in try FileIO.version(path: p.baseAddress!) }
        } catch {
            return false
        }
        return now == entry.version
    }

    /// The absolute path a cached entry is checked by: the configured root (symlinks and all),
    /// the normalised path, and the index for a directory.
    func statPath(index: Bool) -> [CChar] {
        let pathBuffer = self.pathBuffer
        var p = rootPath
        p.removeLast()  // NUL
        let count = pathBuffer.count - 1
        if !(count == 1 && pathBuffer[0] == 0x2E) {
            if p.last != 0x2F { p.append(0x2F) }
            p.append(contentsOf: pathBuffer[0..<count])
        }
        if index {
            if p.last != 0x2F { p.append(0x2F) }
            p.append(contentsOf: indexPath.dropLast())
        }
        p.append(0)
        return p
    }

    /// The entry with its bytes in memory when it is small, settled and the budget allows; else
    /// itself.
    func settle(_ entry: CachedFile) -> CachedFile {
        guard entry.body == nil, mayKeepInMemory(entry),
              let bytes = try? FileIO.read(fd: entry.fd, offset: 0, count: entry.size), bytes.count == entry.size
        else { return entry }
        return entry.withBody(bytes)
    }

    /// Small enough, within the budget, and settled (its mtime `settleSeconds` old).
    func mayKeepInMemory(_ entry: CachedFile) -> Bool {
        entry.size <= cacheLimits.bodyBytes && cachedBodyBytes + entry.size <= cacheLimits.totalBodyBytes
            && Clock.wallSeconds() - entry.modified >= cacheLimits.settleSeconds
    }

    func remember(_ entry: CachedFile) {
        let key = PathKey(pathBuffer)
        if let old = cache[key] { forget(old, key: key) }
        while cache.count >= cacheLimits.entries, let victim = cache.first { forget(victim.value, key: victim.key) }
        cache[key] = entry
        cachedBodyBytes += entry.body?.count ?? 0
    }

    func forget(_ entry: CachedFile, key: PathKey? = nil) {
        cache[key ?? PathKey(pathBuffer)] = nil
        cachedBodyBytes -= entry.body?.count ?? 0
    }

    func dropCache() {
        cache.removeAll()
        cachedBodyBytes = 0
    }

    /// Entries the cache holds (tests).
    var cachedCount: Int { cache.count }

    func respondOpenError(_ error: SystemError, _ response: inout HTTPResponseWriter) {
        switch error.code {
        case .noSuchFileOrDirectory, .notDirectory, .fileNameTooLong: response.respond(status: 404, body: "not found\n" as StaticString)
        case .permissionDenied, .notPermitted, .improperLink, .tooManySymbolicLinkLevels: response.respond(status: 403, body: "forbidden\n" as StaticString)
        default: response.respond(status: 500, body: "cannot open file\n" as StaticString)
        }
    }

    func serve(_ entry: CachedFile, _ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        // The common request (no conditions, no range): the head made once, the body from memory
        // or from the shared descriptor.
        if !request.hasConditionalOrRangeHeader {
            if entry.body != nil { return response.respond(entry.ok) }
            if let settled = settledInMemory(entry) { return response.respond(settled.ok) }
            return response.respond(entry.ok, file: FileBody(shared: entry.file, offset: 0, count: entry.size))
        }
        let modified = entry.modified, size = entry.size
        var headers = entry.validators

        // RFC 9110 §13.2.2: If-Unmodified-Since first (If-Match, which would take its place, is not
        // evaluated), then If-None-Match, which wins over If-Modified-Since.
        if request.header("if-match") == nil, let ius = request.header("if-unmodified-since"),
            let since = HTTPDate.parse(ius.buffer, now: Clock.wallSeconds()), modified > since
        {
            return response.respond(status: 412, headers: headers, body: "precondition failed\n" as StaticString)
        }
        if let inm = request.header("if-none-match") {
            if Self.matches(etag: entry.etag, list: inm.string) { return response.respond(status: 304, headers: headers) }
        } else if let ims = request.header("if-modified-since"), let since = HTTPDate.parse(ims.buffer, now: Clock.wallSeconds()), modified <= since {
            return response.respond(status: 304, headers: headers)
        }

        if request.method == .GET, let range = request.header("range") {
            let ifRangeOK: Bool
            if let ifRange = request.header("if-range") {
                ifRangeOK = HTTPDate.ifRangeAllows(ifRange.buffer, etag: entry.etag, lastModified: modified, now: Clock.wallSeconds())
            } else {
                ifRangeOK = true
            }
            if ifRangeOK {
                switch Self.parseRange(range.buffer, size: size) {
                case .none:
                    break  // not a single byte range we understand: the whole file (RFC 9110 allows it)
                case .unsatisfiable:
                    headers.append(HTTPField("Content-Range", "bytes */\(size)"))
                    return response.respond(status: 416, headers: headers, body: "range not satisfiable\n" as StaticString)
                case .range(let start, let end):
                    if let body = entry.body {
                        return body.withUnsafeBytes { all in
                            response.respondPartial(entry.partial, first: start, last: end, of: size, file: nil, body: UnsafeRawBufferPointer(rebasing: all[start...end]))
                        }
                    }
                    return response.respondPartial(entry.partial, first: start, last: end, of: size, file: FileBody(shared: entry.file, offset: start, count: end - start + 1))
                }
            }
        }
        if entry.body != nil { return response.respond(entry.ok) }
        response.respond(entry.ok, file: FileBody(shared: entry.file, offset: 0, count: size))
    }

    /// A cached small file sent from its descriptor because it was too new to copy: once it has
    /// settled, the entry is replaced by one that holds its bytes. Nil while that cannot be.
    func settledInMemory(_ entry: CachedFile) -> CachedFile? {
        guard mayKeepInMemory(entry), cache[PathKey(pathBuffer)] === entry else { return nil }
        let settled = settle(entry)
        guard settled.body != nil else { return nil }
        remember(settled)
        return settled
    }

    static func matches(etag: String, list: String) -> Bool {
        list.split(separator: ",").contains { item in
            let t = item.trimmingCharacters(in: " \t")
            return t == "*" || t == etag || t == "W/" + etag
        }
    }

    enum RangeResult: Equatable {
        case none
        case unsatisfiable
        case range(Int, Int)
    }

    /// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` (RFC 9110 §14.1.2).
    static func parseRange(_ text: String, size: Int) -> RangeResult {
        Array(text.utf8).withUnsafeBytes { parseRange($0, size: size) }
    }

    /// The same over the header's bytes (no allocation): blanks around the spec are allowed,
    /// numbers have at most 18 digits (no overflow), anything else is not a range we serve.
    static func parseRange(_ text: UnsafeRawBufferPointer, size: Int) -> RangeResult {
        let unit: StaticString = "bytes="
        guard text.count > unit.utf8CodeUnitCount else { return .none }
        for i in 0..<unit.utf8CodeUnitCount where text[i] != unit.utf8Start[i] { return .none }
        var lo = unit.utf8CodeUnitCount, hi = text.count
        while lo < hi && (text[lo] == 0x20 || text[lo] == 0x09) { lo += 1 }
        while hi > lo && (text[hi - 1] == 0x20 || text[hi - 1] == 0x09) { hi -= 1 }
        var dash = lo
        while dash < hi && text[dash] != UInt8(ascii: "-") { dash += 1 }
        guard dash < hi else { return .none }
        func number(_ from: Int, _ to: Int) -> Int?? {  // nil: empty; .some(nil): not a number
            if from == to { return nil }
            guard to - from <= 18 else { return .some(nil) }
            var v = 0
            for i in from..<to {
                let d = text[i] &- UInt8(ascii: "0")
                guard d < 10 else { return .some(nil) }
                v = v * 10 + Int(d)
            }
            return .some(v)
        }
        let first = number(lo, dash), last = number(dash + 1, hi)
        guard first != .some(nil), last != .some(nil) else { return .none }
        guard let start = first.flatMap({ $0 }) else {
            guard let suffix = last.flatMap({ $0 }) else { return .none }
            if suffix == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - suffix), size - 1)
        }
        if start >= size { return .unsatisfiable }
        let end = last.flatMap({ $0 }).map { min($0, size - 1) } ?? size - 1
        if end < start { return .none }
        return .range(start, end)
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

/// A normalised path as the cache's key: hashed as one run of bytes (an array of `CChar` would be
/// fed to the hasher a byte at a time).
struct PathKey: Hashable {
    let bytes: [CChar]
    init(_ bytes: [CChar]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: PathKey, b: PathKey) -> Bool {
        a.bytes == b.bytes
    }
}

/// An open file lent to responses by the open-file cache: closed when the cache has let go of it
/// and the last response sending from it is done.
final class OpenFile: SharedFile {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { Sys.close(fd) }
}

/// A file the open-file cache holds: the open file, what stat said when it was opened, the 200
/// head made once, and for a small settled file its bytes.
final class CachedFile {
    let file: OpenFile
    var fd: Int32 { file.fd }
    let version: FileIO.FileVersion
    /// Absolute path (NUL-terminated) whose stat must still equal `version`.
    let statPath: [CChar]
    /// A directory's index: answers only a URL that ends with `/`.
    let isIndex: Bool
    let contentType: String
    let size: Int
    /// Last-Modified, in whole seconds.
    let modified: Int64
    let etag: String
    /// ETag, Last-Modified, Accept-Ranges: sent with every answer about this file.
    let validators: [HTTPField]
    /// The 200 answer: its head, and the body when `body` is set.
    let ok: PreparedResponse
    /// The 206 head without Content-Range and Content-Length (`respondPartial` adds them).
    let partial: PreparedResponse
    /// The file's bytes (a small settled file), or nil: sent from `fd`.
    let body: [UInt8]?

    init(file: OpenFile, version: FileIO.FileVersion, contentType: String, statPath: [CChar], isIndex: Bool, body: [UInt8]?) {
        self.file = file
        self.version = version
        self.statPath = statPath
        self.isIndex = isIndex
        self.contentType = contentType
        size = version.size
        modified = version.modifiedSeconds
        etag = "\"" + String(UInt64(max(0, modified)), radix: 16) + "-" + String(size, radix: 16) + "\""
        let lastModified = String(decoding: HTTPDate.format(epochSeconds: modified), as: UTF8.self)
        validators = [HTTPField("ETag", etag), HTTPField("Last-Modified", lastModified), HTTPField("Accept-Ranges", "bytes")]
        if let body {
            ok = PreparedResponse(status: 200, contentType: contentType, headers: validators, body: body)
        } else {
            ok = PreparedResponse(status: 200, contentType: contentType, headers: validators, fileLength: size)
        }
        partial = PreparedResponse(status: 206, contentType: contentType, headers: validators, fileLength: nil)
        self.body = body
    }

    /// The same file with its bytes in memory.
    func withBody(_ bytes: [UInt8]) -> CachedFile {
        CachedFile(file: file, version: version, contentType: contentType, statPath: statPath, isIndex: isIndex, body: bytes)
    }
}

extension HTTPRequest {
    /// Whether a header asks for a conditional or partial answer (`If-*`, `Range`): one pass over
    /// the names, so the common request skips five lookups.
    var hasConditionalOrRangeHeader: Bool {
        for i in 0..<headerCount {
            let name = header(at: i).name.buffer
            if name.count >= 3 && name[2] == UInt8(ascii: "-") && name[0] | 0x20 == UInt8(ascii: "i") && name[1] | 0x20 == UInt8(ascii: "f") { return true }
            if name.count == 5 && name[0] | 0x20 == UInt8(ascii: "r") && name[1] | 0x20 == UInt8(ascii: "a") && name[2] | 0x20 == UInt8(ascii: "n")
                && name[3] | 0x20 == UInt8(ascii: "g") && name[4] | 0x20 == UInt8(ascii: "e") { return true }
        }
        return false
    }
}

/// Content-Type by file extension: common types built in, the config's `mimeTypes` on top.
struct MimeTypes {
    var table: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
        "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8", "json": "application/json",
        "txt": "text/plain; charset=utf-8", "md": "text/markdown; charset=utf-8", "csv": "text/csv; charset=utf-8",
        "xml": "application/xml", "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
        "gif": "image/gif", "webp": "image/webp", "avif": "image/avif", "ico": "image/x-icon", "wasm": "application/wasm",
        "pdf": "application/pdf", "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
        "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav",
        "zip": "application/zip", "gz": "application/gzip", "tar": "application/x-tar", "map": "application/json",
        "webmanifest": "application/manifest+json",
    ]

    init(overrides: [String: String]) {
        for (k, v) in overrides { table[k] = v }
    }

    /// `path` is NUL-terminated bytes.
    func type(forPath path: [CChar]) -> String {
        var end = path.count
        while end > 0 && path[end - 1] == 0 { end -= 1 }
        var dot = end
        while dot > 0 && path[dot - 1] != 0x2E && path[dot - 1] != 0x2F { dot -= 1 }
        guard dot > 0, path[dot - 1] == 0x2E, dot < end else { return "application/octet-stream" }
        let ext = String(decoding: path[dot..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self).lowercased()
        return table[ext] ?? "application/octet-stream"
    }
}
