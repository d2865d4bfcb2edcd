import ClusterHTTP

// What the HTTP fuzz target runs on one input, and the one way bytes are fed to a connection state
// machine as the worker feeds it. Also compiled into ClusterHTTPTests (a link there): the unit
// tests' `exchange` and `FuzzRegressions` (the replay of Fuzz/http/crashers/) use it, so the
// fuzzer and the tests cannot drift apart.
//
// Invariants checked on every input:
//  - nothing traps (bounds, overflow, preconditions) and ASan sees no memory error;
//  - feeding the input in one read or in pieces of any size gives the same bytes out (pieces of
//    16,384 bytes among them: TLS records' plaintext);
//  - every response starts with a status line, and a refused request closes the connection;
//  - memory: whenever the connection waits for input, what it keeps buffered is a partial request,
//    at most maxHeaderBytes + maxBodyBytes (a chunked body's framing is dropped as it is decoded,
//    which is what bounds HTTPLimits.maxInputBufferBytes).

/// Answers with what it was sent, touching every header (so the parser's offsets are all read).
public struct FuzzHandler: HTTPHandler {
    public init() {}
    public func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        var n = 0
        for i in 0..<request.headerCount {
            let h = request.header(at: i)
            n &+= h.name.count &+ h.value.count
        }
        if request.path == "/close" { response.closeConnection() }
        if request.path == "/none" { return }
        response.respond(status: 200, body: request.body.buffer)
        _ = n
    }
}

/// The result of feeding bytes to one connection.
public struct FedConnection {
    public var output: [UInt8]
    public var outcome: HTTPConnectionState.Outcome
    public var counters: HTTPCounters
    public var state: HTTPConnectionState
}

public enum HTTPFuzzDriver {
    /// The Date line every response carries in these runs.
    public static let dateLine: [UInt8] = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)

    /// Feeds `bytes` to one connection in reads of `piece` bytes and collects what it writes, as
    /// the worker would. `closing`: the worker is stopping; `overCap`: a connection adopted beyond
    /// the cap. `checkMemoryBound`: trap if the connection keeps more than a partial request while
    /// it waits for input.
    public static func feed<H: HTTPHandler>(_ bytes: UnsafeRawBufferPointer, piece: Int, limits: HTTPLimits, handler: H,
                                            closing: Bool = false, overCap: Bool = false, checkMemoryBound: Bool = false) -> FedConnection {
        let parser = HTTPParser(limits: limits)
        var state = HTTPConnectionState()
        let input = IOBuffer()
        let output = IOBuffer()
        var counters = HTTPCounters()
        var collected: [UInt8] = []
        var outcome = HTTPConnectionState.Outcome.needInput
        let size = max(piece, 1)
        var offset = 0
        dateLine.withUnsafeBytes { date in
            let context = ResponseContext(dateLine: date, closeConnections: closing || overCap, answerOnlyWhatHasArrived: overCap)
            repeat {
                let end = min(offset + size, bytes.count)
                input.write(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
                offset = end
                repeat {
                    outcome = state.process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters)
                    collected += output.readableArray
                    output.clear()
                } while outcome == .flushFirst
                if checkMemoryBound && outcome == .needInput && input.readableBytes > limits.maxHeaderBytes + limits.maxBodyBytes {
                    preconditionFailure("\(input.readableBytes) bytes kept waiting for input, over maxHeaderBytes + maxBodyBytes")
                }
            } while outcome == .needInput && offset < bytes.count
        }
        return FedConnection(output: collected, outcome: outcome, counters: counters, state: state)
    }

    /// The limits an input's first byte picks: small, so the fuzzer reaches every limit path.
    public static func limits(_ first: UInt8) -> HTTPLimits {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 1024 + Int(first & 0x3F) * 16
        limits.maxHeaderCount = 8
        limits.maxBodyBytes = 2048
        limits.maxRequestLine = 512
        limits.maxPendingOutput = 4096
        limits.maxKeepAliveRequests = Int(first >> 6)
        limits.maxChunkExtensionBytes = 256
        return limits
    }

    static let interim: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// `bytes` without `100 Continue` interim responses.
    static func withoutInterim(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == interim[0] && i + interim.count <= bytes.count && Array(bytes[i..<i + interim.count]) == interim {
                i += interim.count
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    /// Runs one input (the first byte picks the limits, the second a read size, the rest is the
    /// stream) in one read, in reads of that size and of each of `morePieces`; traps (precondition)
    /// when an invariant breaks. Inputs under 2 bytes are skipped.
    public static func run(_ data: [UInt8], morePieces: [Int] = []) {
        guard data.count > 1 else { return }
        let limits = limits(data[0])
        let stream = Array(data[2...])
        stream.withUnsafeBytes { bytes in
            let whole = feed(bytes, piece: bytes.count, limits: limits, handler: FuzzHandler(), checkMemoryBound: true)
            // Also in reads of 16,384 bytes: how a TLS connection's plaintext arrives (one record's
            // at most per SSL_read; the record layer and the handshake are OpenSSL's, fuzzed upstream).
            for piece in [Int(data[1] % 23) + 1, 16_384] + morePieces {
                let split = feed(bytes, piece: piece, limits: limits, handler: FuzzHandler(), checkMemoryBound: true)
                // A 100 Continue depends on whether the body had arrived yet, so it is the one
                // legitimate difference; every final response must be the same.
                precondition(withoutInterim(whole.output) == withoutInterim(split.output),
                             "reads of \(piece) changed the output: whole \(String(decoding: whole.output, as: UTF8.self).debugDescription), split \(String(decoding: split.output, as: UTF8.self).debugDescription)")
                precondition(whole.outcome == split.outcome, "reads of \(piece) changed the outcome")
            }
            if !whole.output.isEmpty {
                precondition(whole.output.starts(with: Array("HTTP/1.1 ".utf8)), "output does not start with a status line")
            }
            if whole.outcome == .close {
                // A refused request (4xx/5xx from the engine) always says it closes.
                let text = String(decoding: whole.output, as: UTF8.self)
                precondition(text.isEmpty || text.contains("Connection: close\r\n"), "closing without saying so")
            }
        }
    }
}
