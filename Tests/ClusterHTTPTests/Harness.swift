import ClusterHTTP
import Foundation

/// Echoes what it parsed, so tests can see method, path, query, a header and the body.
struct EchoHandler: HTTPHandler {
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        if request.path == "/close" { response.closeConnection() }
        if request.path == "/silent" { return }
        var text = "\(request.method) \(request.path.string)"
        if !request.query.isEmpty { text += "?\(request.query.string)" }
        if let host = request.header("host") { text += " host=\(host.string)" }
        text += " body=\(request.body.string)"
        response.respond(status: 200, body: text)
    }
}

struct Exchange {
    var output: String
    var outcome: HTTPConnectionState.Outcome
    var counters: HTTPCounters
    var state: HTTPConnectionState
}

let testDateLine = HTTPFuzzDriver.dateLine

/// Feeds `bytes` to one connection in pieces of `pieceSize` (0 = all at once) and collects what it
/// writes, as the worker would.
/// `closing`: the worker is stopping (`ResponseContext.closeConnections`); `overCap`: a connection
/// adopted beyond the cap (`closeConnections` and `answerOnlyWhatHasArrived`).
func exchange(_ text: String, pieceSize: Int = 0, limits: HTTPLimits = HTTPLimits(), closing: Bool = false, overCap: Bool = false) -> Exchange {
    exchange(Array(text.utf8), pieceSize: pieceSize, limits: limits, closing: closing, overCap: overCap)
}

func exchange(_ bytes: [UInt8], pieceSize: Int = 0, limits: HTTPLimits = HTTPLimits(), closing: Bool = false, overCap: Bool = false) -> Exchange {
    let fed = bytes.withUnsafeBytes { b in
        HTTPFuzzDriver.feed(b, piece: pieceSize == 0 ? max(bytes.count, 1) : pieceSize, limits: limits, handler: EchoHandler(),
                            closing: closing, overCap: overCap)
    }
    return Exchange(output: String(decoding: fed.output, as: UTF8.self), outcome: fed.outcome, counters: fed.counters, state: fed.state)
}

/// The status codes of every response in `output`, in order.
func statuses(_ output: String) -> [Int] {
    var result: [Int] = []
    var rest = Substring(output)
    while let r = rest.range(of: "HTTP/1.1 ") {
        let code = rest[r.upperBound...].prefix(3)
        if let n = Int(code) { result.append(n) }
        rest = rest[r.upperBound...]
    }
    return result
}
