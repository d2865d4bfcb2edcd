#if canImport(Glibc)
import Glibc
#endif
// libFuzzer target over ClusterHTTP: the request parser, the chunked decoder and the connection
// state machine, fed whatever bytes the fuzzer makes. Built by `make fuzz` (scripts/fuzz.sh) as one
// module with ClusterHTTP's sources: swiftc -sanitize=fuzzer,address.
//
// Invariants checked on every input:
//  - nothing traps (bounds, overflow, preconditions) and ASan sees no memory error;
//  - feeding the input in one read or in pieces of any size gives the same bytes out;
//  - every response starts with a status line, and a refused request closes the connection;
//  - memory: whenever the connection waits for input, what it keeps buffered is a partial request,
//    at most maxHeaderBytes + maxBodyBytes (a chunked body's framing is dropped as it is decoded,
//    which is what bounds HTTPLimits.maxInputBufferBytes).

struct FuzzHandler: HTTPHandler {
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
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

func runConnection(_ bytes: UnsafeRawBufferPointer, piece: Int, limits: HTTPLimits) -> ([UInt8], HTTPConnectionState.Outcome) {
    let parser = HTTPParser(limits: limits)
    var state = HTTPConnectionState()
    let input = IOBuffer()
    let output = IOBuffer()
    var counters = HTTPCounters()
    var collected: [UInt8] = []
    var outcome = HTTPConnectionState.Outcome.needInput
    let date: [UInt8] = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
    date.withUnsafeBytes { d in
        let context = ResponseContext(dateLine: d)
        var offset = 0
        repeat {
            let end = min(offset + piece, bytes.count)
            input.write(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
            repeat {
                outcome = state.process(input, output: output, parser: parser, context: context, handler: FuzzHandler(), counters: &counters)
                collected += output.readableView
                output.clear()
            } while outcome == .flushFirst
            if outcome == .needInput && input.readableBytes > limits.maxHeaderBytes + limits.maxBodyBytes {
                preconditionFailure("\(input.readableBytes) bytes kept waiting for input, over maxHeaderBytes + maxBodyBytes")
            }
        } while outcome == .needInput && offset < bytes.count
    }
    return (collected, outcome)
}

let interim: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

func withoutInterim(_ bytes: [UInt8]) -> [UInt8] {
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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 1 else { return 0 }
    var limits = HTTPLimits()
    limits.maxHeaderBytes = 1024 + Int(data[0] & 0x3F) * 16
    limits.maxHeaderCount = 8
    limits.maxBodyBytes = 2048
    limits.maxRequestLine = 512
    limits.maxPendingOutput = 4096
    limits.maxKeepAliveRequests = Int(data[0] >> 6)
    limits.maxChunkExtensionBytes = 256
    let piece = Int(data[1] % 23) + 1
    let bytes = UnsafeRawBufferPointer(start: data + 2, count: size - 2)
    let whole = runConnection(bytes, piece: max(bytes.count, 1), limits: limits)
    let split = runConnection(bytes, piece: piece, limits: limits)
    // A 100 Continue depends on whether the body had arrived yet, so it is the one legitimate
    // difference; every final response must be the same.
    if withoutInterim(whole.0) != withoutInterim(split.0) {
        fputs("whole: \(String(decoding: whole.0, as: UTF8.self).debugDescription)\n", stderr)
        fputs("split(\(piece)): \(String(decoding: split.0, as: UTF8.self).debugDescription)\n", stderr)
        preconditionFailure("split reads changed the output")
    }
    precondition(whole.1 == split.1, "split reads changed the outcome")
    if !whole.0.isEmpty {
        precondition(whole.0.starts(with: Array("HTTP/1.1 ".utf8)), "output does not start with a status line")
    }
    if whole.1 == .close {
        // A refused request (4xx/5xx from the engine) always says it closes.
        let text = String(decoding: whole.0, as: UTF8.self)
        precondition(text.isEmpty || text.contains("Connection: close\r\n"), "closing without saying so")
    }
    return 0
}
