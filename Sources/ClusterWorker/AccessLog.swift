import ClusterConfig
import ClusterControl
import ClusterHTTP
import ClusterSystem
import Logging

/// A per-worker access log: lines are formatted into a buffer and written to the file (O_APPEND,
/// under the file's flock, so the workers' lines interleave whole) once per turn of the loop or
/// when 64 KiB are waiting.
/// Reopened on USR1 / `clusterctl reopen-logs` for logrotate.
///
/// When the file cannot take them (a full disk, a quota, EIO), whole lines are dropped, never part
/// of one: a write that stops inside a line is completed, and if the rest cannot be written the
/// part already written is cut off again (ftruncate), so the file never ends with a torn line.
/// Dropped lines are counted (`accessLogDroppedLines` in the stats slot,
/// `clusterd_access_log_dropped_lines_total` in /metrics) and the error is logged at most once per
/// `reportInterval`, with the count since the last report, and once when writing works again.
public final class AccessLog {
    public let path: String
    public let format: ClusterConfiguration.AccessLog.Format
    /// The open file, owned: closed when replaced (a reopen) or with the log; nil when it cannot
    /// be opened.
    var file: Descriptor? = nil
    /// Its number (-1 when there is none), borrowed for the call it is passed to.
    var fd: Int32 { file?.rawValue ?? -1 }
    let buffer = IOBuffer(capacity: 64 * 1024)
    var logger: Logger
    var second: Int64 = -1
    var combinedTime: [UInt8] = []
    var isoTime: [UInt8] = []
    /// Where dropped lines are counted (the worker's slot).
    let stats: StatsSlot?
    /// Lines dropped by this log since it was made.
    public private(set) var droppedLines: UInt64 = 0
    /// Lines dropped since the error was last reported, and when that was (monotonic ms).
    var droppedSinceReport: UInt64 = 0
    var lastReportMilliseconds: Int64? = nil
    /// A write failed and no working write has been reported since.
    var failing = false
    /// A torn line could not be cut off (not yet reported).
    var tornLineLeft = false
    /// The shortest time between two error reports.
    public static let reportIntervalMilliseconds: Int64 = 10_000

    public init(path: String, format: ClusterConfiguration.AccessLog.Format, logger: Logger, stats: StatsSlot? = nil) {
        self.path = path
        self.format = format
        self.logger = logger
        self.stats = stats
        open()
    }

    deinit { flush() }

    func open() {
        do {
            file = Descriptor(taking: try FileIO.openAppending(path))
        } catch {
            logger.error("access log \(path): \(error); requests are not logged until the next reopen")
            file = nil
        }
    }

    /// After logrotate moved the file: write what is buffered, open the path again.
    public func reopen() {
        flush()
        file = nil
        open()
        logger.info("access log reopened")
    }

    /// Writes the buffered lines (all whole: `append` adds whole lines only).
    ///
    /// The workers append to one file, each through its own open of it. Each flush holds the file's
    /// exclusive advisory lock (flock) from its first write to its last, and through the cut-back
    /// of a torn line, so no other worker's bytes can land between the part of a line already
    /// written and its rest, or after it before it is cut off: a torn line is always completed in
    /// place or cut back, and the cut takes exactly this worker's bytes. (Only lock holders are
    /// excluded: if the file system refuses flock, the writes go ahead unlocked and the cut is made
    /// only while the file still ends where this worker's write ended, as before.) One flush per
    /// loop turn that produced lines: two more syscalls per turn (an EX+UN pair ~1.7 µs on the
    /// test machine, about one small write), never per line.
    public func flush() {
        guard buffer.readableBytes > 0 else { return }
        defer { buffer.clear() }
        guard fd >= 0 else {
            // Not open (the open failed and was logged): the lines are dropped, and counted.
            count(dropped: Self.lines(in: buffer.readableView))
            return
        }
        var locked = true
        do throws(SystemError) { try FileIO.lockExclusive(fd: fd) } catch { locked = false }
        var view = buffer.readableView
        // Bytes of the line being written that are already in the file.
        var torn = 0
        var failure: SystemError? = nil
        while view.count > 0 {
            let written: Int
            do throws(SystemError) {
                switch try Sys.write(fd, view.baseAddress!, view.count) {
                case .processed(let n): written = n
                case .wouldBlock: written = 0
                }
                // A regular file never takes nothing without an error; if one does, stop rather than spin.
                if written == 0 { throw SystemError(call: "write", .noSpace) }
            } catch {
                failure = error
                break
            }
            let chunk = UnsafeRawBufferPointer(rebasing: view[..<written])
            if let newline = Self.lastNewline(in: chunk) {
                torn = written - newline - 1
            } else {
                torn += written
            }
            view = UnsafeRawBufferPointer(rebasing: view[written...])
        }
        if failure != nil && torn > 0 && !cutTornLine(torn) { tornLineLeft = true }
        // Released before anything is logged: the lock covers the file's bytes only.
        if locked { FileIO.unlock(fd: fd) }
        if let failure {
            failed(failure, unwritten: view)
            return
        }
        // Working again: said once, within the same limit as the errors (a disk on the edge of full
        // that takes one write and refuses the next must not make a line per turn either).
        if failing, let now = mayReport() {
            failing = false
            logger.notice("access log \(path): writing again; \(droppedSinceReport) line(s) dropped since the last report")
            droppedSinceReport = 0
            lastReportMilliseconds = now
        }
    }

    /// A write failed with `unwritten` still to go (a torn line already cut back, or noted).
    func failed(_ error: SystemError, unwritten: UnsafeRawBufferPointer) {
        failing = true
        count(dropped: Self.lines(in: unwritten))
        guard let now = mayReport() else { return }
        logger.error("access log \(path): \(error.reason); \(droppedSinceReport) line(s) dropped\(lastReportMilliseconds == nil ? "" : " since the last report")\(tornLineLeft ? "; a line in the file may be incomplete" : "") (reported at most every \(Self.reportIntervalMilliseconds / 1000) s)")
        droppedSinceReport = 0
        tornLineLeft = false
        lastReportMilliseconds = now
    }

    /// Now (monotonic ms) if a report may be logged now, else nil.
    func mayReport() -> Int64? {
        let now = Clock.monotonicMilliseconds()
        if let last = lastReportMilliseconds, now - last < Self.reportIntervalMilliseconds { return nil }
        return now
    }

    /// Takes the first `torn` bytes of a line back out of the file: the file ends where this
    /// worker's last write ended (under the lock nobody appended since; checked again all the
    /// same, for a file system without flock), so it is cut there minus those bytes.
    /// Returns false when that could not be done safely.
    func cutTornLine(_ torn: Int) -> Bool {
        do throws(SystemError) {
            let end = try FileIO.offset(fd: fd)
            guard try FileIO.size(fd: fd) == end, end >= torn else { return false }
            try FileIO.truncate(fd: fd, size: end - torn)
            return true
        } catch {
            return false
        }
    }

    func count(dropped lines: UInt64) {
        droppedLines &+= lines
        droppedSinceReport &+= lines
        stats?.add(.accessLogDroppedLines, lines)
    }

    static func lines(in bytes: UnsafeRawBufferPointer) -> UInt64 {
        var n: UInt64 = 0
        for b in bytes where b == 0x0A { n &+= 1 }
        return n
    }

    static func lastNewline(in bytes: UnsafeRawBufferPointer) -> Int? {
        var i = bytes.count - 1
        while i >= 0 {
            if bytes[i] == 0x0A { return i }
            i -= 1
        }
        return nil
    }

    func updateTime(_ wall: Int64) {
        guard wall != second else { return }
        second = wall
        let c = HTTPDate.civil(epochSeconds: wall)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        combinedTime = Array("\(two(c.day))/\(HTTPDate.monthNames[c.month - 1])/\(c.year):\(two(c.hour)):\(two(c.minute)):\(two(c.second)) +0000".utf8)
        isoTime = Array("\(c.year)-\(two(c.month))-\(two(c.day))T\(two(c.hour)):\(two(c.minute)):\(two(c.second))Z".utf8)
    }

    /// One line for an answered request.
    func append(_ request: HTTPRequest, status: Int, bodyBytes: Int, peer: String?, wall: Int64) {
        updateTime(wall)
        let referer = request.header("referer")
        let agent = request.header("user-agent")
        switch format {
        case .combined:
            // $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
            buffer.write(string: peer ?? "-")
            buffer.write(" - - [")
            buffer.write(combinedTime)
            buffer.write("] \"")
            escapeCombined(request.methodBytes.buffer)
            buffer.writeByte(0x20)
            escapeCombined(request.target.buffer)
            buffer.write(request.versionMinor == 0 ? " HTTP/1.0\" " : " HTTP/1.1\" ")
            buffer.writeDecimal(status)
            buffer.writeByte(0x20)
            buffer.writeDecimal(bodyBytes)
            buffer.write(" \"")
            if let referer { escapeCombined(referer.buffer) } else { buffer.writeByte(UInt8(ascii: "-")) }
            buffer.write("\" \"")
            if let agent { escapeCombined(agent.buffer) } else { buffer.writeByte(UInt8(ascii: "-")) }
            buffer.write("\"\n")
        case .json:
            buffer.write("{\"time\":\"")
            buffer.write(isoTime)
            buffer.write("\",\"remote\":\"")
            buffer.write(string: peer ?? "")
            buffer.write("\",\"method\":\"")
            escapeJSON(request.methodBytes.buffer)
            buffer.write("\",\"target\":\"")
            escapeJSON(request.target.buffer)
            buffer.write(request.versionMinor == 0 ? "\",\"version\":\"1.0\",\"status\":" : "\",\"version\":\"1.1\",\"status\":")
            buffer.writeDecimal(status)
            buffer.write(",\"bytes\":")
            buffer.writeDecimal(bodyBytes)
            buffer.write(",\"referer\":\"")
            if let referer { escapeJSON(referer.buffer) }
            buffer.write("\",\"userAgent\":\"")
            if let agent { escapeJSON(agent.buffer) }
            buffer.write("\"}\n")
        }
        if buffer.readableBytes > 60 * 1024 { flush() }
    }

    /// A line for a request refused before it was parsed: the request is "-".
    func appendRejected(_ error: HTTPError, peer: String?, wall: Int64) {
        updateTime(wall)
        let bytes = error.reason.utf8.count + 1
        switch format {
        case .combined:
            buffer.write(string: peer ?? "-")
            buffer.write(" - - [")
            buffer.write(combinedTime)
            buffer.write("] \"-\" ")
            buffer.writeDecimal(error.status)
            buffer.writeByte(0x20)
            buffer.writeDecimal(bytes)
            buffer.write(" \"-\" \"-\"\n")
        case .json:
            buffer.write("{\"time\":\"")
            buffer.write(isoTime)
            buffer.write("\",\"remote\":\"")
            buffer.write(string: peer ?? "")
            buffer.write("\",\"method\":\"-\",\"target\":\"-\",\"status\":")
            buffer.writeDecimal(error.status)
            buffer.write(",\"bytes\":")
            buffer.writeDecimal(bytes)
            buffer.write(",\"error\":\"")
            buffer.write(string: error.reason)
            buffer.write("\"}\n")
        }
    }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// nginx's escaping: `"`, `\`, controls and non-ASCII as \xHH.
    func escapeCombined(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes {
            if b < 0x20 || b >= 0x7F || b == 0x22 || b == 0x5C {
                buffer.write("\\x")
                buffer.writeByte(Self.hex[Int(b >> 4)])
                buffer.writeByte(Self.hex[Int(b & 15)])
            } else {
                buffer.writeByte(b)
            }
        }
    }

    /// JSON string content; bytes outside printable ASCII as \u00HH.
    func escapeJSON(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes {
            if b < 0x20 || b >= 0x7F || b == 0x22 || b == 0x5C {
                buffer.write("\\u00")
                buffer.writeByte(Self.hex[Int(b >> 4)])
                buffer.writeByte(Self.hex[Int(b & 15)])
            } else {
                buffer.writeByte(b)
            }
        }
    }
}

/// Hands each answered request to the access log (if any).
struct AccessLogObserver: HTTPObserver {
    let log: AccessLog?
    let peer: String?
    let wall: Int64
    /// The nearest hop is a trusted proxy: a request's `X-Forwarded-For` names the client.
    let forwarded: Bool

    @inline(__always)
    mutating func completed(_ request: HTTPRequest, status: Int, bodyBytes: Int) {
        guard let log else { return }
        if forwarded, let client = request.forwardedClient {
            log.append(request, status: status, bodyBytes: bodyBytes, peer: client.description, wall: wall)
        } else {
            log.append(request, status: status, bodyBytes: bodyBytes, peer: peer, wall: wall)
        }
    }

    @inline(__always)
    mutating func rejected(_ error: HTTPError) {
        log?.appendRejected(error, peer: peer, wall: wall)
    }
}
