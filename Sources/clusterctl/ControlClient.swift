import ClusterControl
import ClusterJSON
import ClusterSystem

/// clusterctl's blocking client for the control socket: one connection, one request line, one
/// response line. (It lives here, not in ClusterControl: that module is the contract both sides
/// share, and the daemon never blocks on a socket.)
struct ControlClient {
    let path: String
    /// Seconds to wait for an answer.
    var timeout: Int

    init(path: String, timeout: Int = 30) {
        self.path = path
        self.timeout = timeout
    }

    enum Failure: Error, CustomStringConvertible {
        case connect(SystemError)
        case io(String)
        case badResponse(String)

        var description: String {
            switch self {
            case .connect(let e): return "cannot reach the daemon at its control socket: \(e)"
            case .io(let s): return s
            case .badResponse(let s): return "bad response from daemon: \(s)"
            }
        }
    }

    /// Sends one request and returns the one-line JSON response.
    func send(_ request: ControlRequest) throws(Failure) -> JSON {
        let socket: Descriptor
        do { socket = Descriptor(taking: try Socket.unixConnect(path: path)) } catch { throw .connect(error) }
        let fd = socket.rawValue
        do { try Socket.setReceiveTimeout(fd, seconds: timeout) } catch { throw .io("setting the answer's deadline: \(error)") }
        let line = Array((request.json.serialized + "\n").utf8)
        do { try FileIO.writeAll(fd: fd, line) } catch { throw .io("sending request: \(error)") }
        var response: [UInt8] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 1)
        defer { chunk.deallocate() }
        while true {
            let result: IOResult<Int>
            do { result = try Sys.read(fd, chunk.baseAddress!, chunk.count) } catch {
                throw .io("reading response: \(error.reason)")
            }
            // SO_RCVTIMEO ran out (the kernel's EAGAIN on a blocking socket).
            guard case .processed(let n) = result else { throw .io("no answer from the daemon within \(timeout) s") }
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
