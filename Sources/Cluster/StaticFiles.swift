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
    /// The root directory (O_PATH), opened on first use (in a worker; the master only validates)
    /// and again whenever `root` names another directory (see `currentRoot`).
    private var rootFD: Int32 = -1
    /// Which directory `rootFD` is.
    private var rootIdentity = FileIO.FileIdentity(device: 0, inode: 0)
    /// Reused for the decoded path (no allocation per request once warm).
    private var pathBuffer: [CChar] = []
    /// Set by `normalise`: the URL's last segment was empty, `.` or `..`, so it names a directory
    /// (a regular file is not served at `/file/` or `/file/.`).
    private(set) var namesDirectory = false

    init(_ config: ClusterConfiguration.StaticRoot, types: MimeTypes) {
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
        pathBuffer.removeAll(keepingCapacity: true)
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

    /// Whether the normalised path has a hidden segment (one starting with `.`). `.well-known` as
    /// the first segment is not hidden: RFC 8615's public directory (ACME challenges, security.txt).
    var isHiddenPath: Bool {
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
            return fd
        } catch {
            // Gone or unreadable: never keep serving a directory the path no longer names.
            if rootFD >= 0 { Sys.close(rootFD) }
            rootFD = -1
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
        serve(fd, info, contentType: types.type(forPath: servesIndex ? indexPath : pathBuffer), request, &response)
    }

    func respondOpenError(_ error: SystemError, _ response: inout HTTPResponseWriter) {
        switch error.code {
        case .noSuchFileOrDirectory, .notDirectory, .fileNameTooLong: response.respond(status: 404, body: "not found\n" as StaticString)
        case .permissionDenied, .notPermitted, .improperLink, .tooManySymbolicLinkLevels: response.respond(status: 403, body: "forbidden\n" as StaticString)
        default: response.respond(status: 500, body: "cannot open file\n" as StaticString)
        }
    }

    func serve(_ fd: Int32, _ info: FileIO.FileInfo, contentType: String, _ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        let etag = "\"" + String(UInt64(max(0, info.modified)), radix: 16) + "-" + String(info.size, radix: 16) + "\""
        let lastModified = String(decoding: HTTPDate.format(epochSeconds: info.modified), as: UTF8.self)
        var headers = [HTTPField("ETag", etag), HTTPField("Last-Modified", lastModified), HTTPField("Accept-Ranges", "bytes")]

        // RFC 9110 §13.2.2: If-Unmodified-Since first (If-Match, which would take its place, is not
        // evaluated), then If-None-Match, which wins over If-Modified-Since.
        if request.header("if-match") == nil, let ius = request.header("if-unmodified-since"),
            let since = HTTPDate.parse(ius.buffer, now: Clock.wallSeconds()), info.modified > since
        {
            Sys.close(fd)
            return response.respond(status: 412, headers: headers, body: "precondition failed\n" as StaticString)
        }
        if let inm = request.header("if-none-match") {
            if Self.matches(etag: etag, list: inm.string) {
                Sys.close(fd)
                return response.respond(status: 304, headers: headers)
            }
        } else if let ims = request.header("if-modified-since"), let since = HTTPDate.parse(ims.buffer, now: Clock.wallSeconds()), info.modified <= since {
            Sys.close(fd)
            return response.respond(status: 304, headers: headers)
        }

        if request.method == .GET, let range = request.header("range") {
            let ifRangeOK: Bool
            if let ifRange = request.header("if-range") {
                ifRangeOK = HTTPDate.ifRangeAllows(ifRange.buffer, etag: etag, lastModified: info.modified, now: Clock.wallSeconds())
            } else {
                ifRangeOK = true
            }
            if ifRangeOK {
                switch Self.parseRange(range.string, size: info.size) {
                case .none:
                    break  // not a single byte range we understand: the whole file (RFC 9110 allows it)
                case .unsatisfiable:
                    Sys.close(fd)
                    headers.append(HTTPField("Content-Range", "bytes */\(info.size)"))
                    return response.respond(status: 416, headers: headers, body: "range not satisfiable\n" as StaticString)
                case .range(let start, let end):
                    headers.append(HTTPField("Content-Range", "bytes \(start)-\(end)/\(info.size)"))
                    return response.respond(status: 206, contentType: contentType, headers: headers, file: FileBody(fd: fd, offset: start, count: end - start + 1))
                }
            }
        }
        response.respond(status: 200, contentType: contentType, headers: headers, file: FileBody(fd: fd, offset: 0, count: info.size))
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
        guard text.hasPrefix("bytes=") else { return .none }
        let spec = text.dropFirst(6).trimmingCharacters(in: " \t")
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .none }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func number(_ s: Substring) -> Int? { s.count <= 18 && !s.isEmpty && s.allSatisfy { $0.isASCII && $0.isNumber } ? Int(s) : nil }
        if first.isEmpty {
            guard let suffix = number(last) else { return .none }
            if suffix == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - suffix), size - 1)
        }
        guard let start = number(first) else { return .none }
        if !last.isEmpty && number(last) == nil { return .none }
        if start >= size { return .unsatisfiable }
        let end = number(last).map { min($0, size - 1) } ?? size - 1
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
