#if canImport(Glibc)
import Glibc
#endif
import ClusterConfig
import ClusterHTTP
import ClusterSystem
import Logging

/// A per-worker access log: lines are formatted into a buffer and written to the file (O_APPEND, so
/// the workers' lines interleave whole) once per turn of the loop or when 64 KiB are waiting.
/// Reopened on USR1 / `clusterctl reopen-logs` for logrotate.
public final class AccessLog {
    public let path: String
    public let format: ClusterConfiguration.AccessLog.Format
    var fd: Int32 = -1
    var buffer = ByteBuffer(capacity: 64 * 1024)
    var logger: Logger
    var second: Int64 = -1
    var combinedTime: [UInt8] = []
    var isoTime: [UInt8] = []

    public init(path: String, format: ClusterConfiguration.AccessLog.Format, logger: Logger) {
        self.path = path
        self.format = format
        self.logger = logger
        open()
    }

    deinit {
        flush()
        if fd >= 0 { Sys.close(fd) }
        buffer.release()
    }

    func open() {
        do {
            fd = try Sys.open(path, O_WRONLY | O_APPEND | O_CREAT, mode: 0o644)
        } catch {
            logger.error("access log \(path): \(error); requests are not logged until the next reopen")
            fd = -1
        }
    }

    /// After logrotate moved the file: write what is buffered, open the path again.
    public func reopen() {
        flush()
        if fd >= 0 { Sys.close(fd) }
        open()
        logger.info("access log reopened")
    }

    /// Writes the buffered lines.
    public func flush() {
        guard buffer.readableBytes > 0 else { return }
        defer { buffer.clear() }
        guard fd >= 0 else { return }
        var view = buffer.readableView
        while view.count > 0 {
            let n = Glibc.write(fd, view.baseAddress, view.count)
            if n < 0 {
                if errno == EINTR { continue }
                logger.error("access log \(path): \(String(cString: strerror(errno)))")
                return
            }
            view = UnsafeRawBufferPointer(rebasing: view[n...])
        }
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

    @inline(__always)
    mutating func completed(_ request: HTTPRequest, status: Int, bodyBytes: Int) {
        log?.append(request, status: status, bodyBytes: bodyBytes, peer: peer, wall: wall)
    }

    @inline(__always)
    mutating func rejected(_ error: HTTPError) {
        log?.appendRejected(error, peer: peer, wall: wall)
    }
}
