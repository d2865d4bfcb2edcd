#if canImport(Glibc)
import Glibc
#endif
import ClusterJSON
import ClusterSystem

/// A blocking client for the control socket (clusterctl, tests).
public struct ControlClient {
    public let path: String
    /// Seconds to wait for an answer.
    public var timeout: Int

    public init(path: String, timeout: Int = 30) {
        self.path = path
        self.timeout = timeout
    }

    public enum Failure: Error, CustomStringConvertible {
        case connect(SystemError)
        case io(String)
        case badResponse(String)

        public var description: String {
            switch self {
            case .connect(let e): return "cannot reach the daemon at its control socket: \(e)"
            case .io(let s): return s
            case .badResponse(let s): return "bad response from daemon: \(s)"
            }
        }
    }

    /// Sends one request and returns the one-line JSON response.
    public func send(_ request: ControlRequest) throws(Failure) -> JSON {
        let fd: Int32
        do { fd = try Socket.unixConnect(path: path) } catch { throw .connect(error) }
        defer { Sys.close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((request.json.serialized + "\n").utf8)
        do { try FileIO.writeAll(fd: fd, line) } catch { throw .io("sending request: \(error)") }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                let err = errno
                if err == EINTR { continue }
                if err == EAGAIN { throw .io("no answer from the daemon within \(timeout) s") }
                throw .io("reading response: \(String(cString: strerror(err)))")
            }
            if n == 0 { break }
            response += chunk[0..<n]
            if response.last == 0x0A { break }
            if response.count > 16 * 1024 * 1024 { throw .badResponse("response too large") }
        }
        guard !response.isEmpty else { throw .badResponse("connection closed without an answer") }
        if response.last == 0x0A { response.removeLast() }
        do { return try JSONParser.parse(response) } catch { throw .badResponse("\(error)") }
    }
}
