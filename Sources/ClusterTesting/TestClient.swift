import ClusterHTTP
import ClusterSystem
import FoundationEssentials

/// Sends requests through any `HTTPHandler` in memory, with no socket: the request's bytes go
/// through the real HTTP engine (`HTTPConnectionState.process`, as a worker drives it), an answer
/// deferred with `respondLater` is awaited and written (`complete`) as the worker would, and the
/// bytes that come out are read back into a `TestResponse`.
///
///     let client = TestClient(handler: router.handler(fallback: NotFound()))
///     let response = await client.get("/todos/1")
///     #expect(response.status == 200)
///     let todo = try response.json(as: Todo.self)
public struct TestClient<Handler: HTTPHandler> {
    public let handler: Handler
    public var limits: HTTPLimits
    /// The client's address as the handler sees it (`clientAddress`): given as if a PROXY protocol
    /// header had named it. Nil: none (a request with no socket).
    public var clientAddress: ProxyAddress?

    /// `clientAddress`: an IPv4 or IPv6 address in text, or nil.
    public init(handler: Handler, limits: HTTPLimits = HTTPLimits(), clientAddress: String? = nil) {
        self.handler = handler
        self.limits = limits
        self.clientAddress = clientAddress.flatMap(ProxyAddress.parse)
    }

    public func get(_ target: String, headers: [(String, String)] = []) async -> TestResponse {
        await execute("GET", target, headers: headers)
    }

    public func head(_ target: String, headers: [(String, String)] = []) async -> TestResponse {
        await execute("HEAD", target, headers: headers)
    }

    public func delete(_ target: String, headers: [(String, String)] = []) async -> TestResponse {
        await execute("DELETE", target, headers: headers)
    }

    public func post(_ target: String, headers: [(String, String)] = [], body: String) async -> TestResponse {
        await execute("POST", target, headers: headers, body: Array(body.utf8))
    }

    /// `value` as a JSON body (`Content-Type: application/json`).
    public func execute<T: Encodable>(_ method: String, _ target: String, headers: [(String, String)] = [], json value: T) async throws -> TestResponse {
        let body = try JSONEncoder().encode(value)
        return await execute(method, target, headers: [("Content-Type", "application/json")] + headers, body: Array(body))
    }

    /// One request, `method target HTTP/1.1`, with a `Host` (unless `headers` has one) and a
    /// `Content-Length` when there is a body.
    public func execute(_ method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8]? = nil) async -> TestResponse {
        var text = "\(method) \(target) HTTP/1.1\r\n"
        if !headers.contains(where: { $0.0.lowercased() == "host" }) { text += "Host: test\r\n" }
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let body { text += "Content-Length: \(body.count)\r\n" }
        text += "\r\n"
        return await send(Array(text.utf8) + (body ?? []), isHead: method == "HEAD")
    }

    /// Sends `bytes` as they are (one request, or a malformed one) and reads back the first
    /// response.
    public func send(_ bytes: [UInt8], isHead: Bool = false) async -> TestResponse {
        let parser = HTTPParser(limits: limits)
        var state = HTTPConnectionState()
        let input = IOBuffer(), output = IOBuffer()
        var counters = HTTPCounters()
        var observer = NoObserver()
        var written: [UInt8] = []
        let dateLine = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
        // The context points at the date line across the awaits below: a buffer of our own.
        let date = UnsafeMutableRawBufferPointer.allocate(byteCount: dateLine.count, alignment: 1)
        defer { date.deallocate() }
        date.copyBytes(from: dateLine)
        var context = ResponseContext(dateLine: UnsafeRawBufferPointer(date))
        if let clientAddress { context.proxiedClient = ProxyEndpoint(address: clientAddress, port: 0) }
        input.write(bytes)
        var outcome = state.process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
        while true {
            written += output.readableArray
            output.clear()
            if let file = state.pendingFile {
                // A file body (static files): what the worker would sendfile.
                if file.count > 0, let contents = try? FileIO.read(fd: file.fd, offset: file.offset, count: file.count) { written += contents }
                if file.ownsDescriptor { Sys.close(file.fd) }
                state.pendingFile = nil
            }
            switch outcome {
            case .suspended:
                if state.requestBodyStream != nil {
                    // A body streamed to the handler: everything sent is in `input`; hand it over
                    // before the handler's task runs (which reads it).
                    outcome = state.process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
                    // Still streaming: the request sent less body than it announced.
                    if state.requestBodyStream != nil { return TestResponse(parsing: written + output.readableArray, isHead: isHead) }
                    continue
                }
                guard let work = state.deferredWork else { return TestResponse(parsing: written, isHead: isHead) }
                state.deferredWork = nil
                let answer = await work()
                if let stream = answer.stream {
                    // A streamed answer: its pieces, framed as the worker frames them.
                    var failed = false
                    if state.beginStream(with: answer, input: input, output: output, context: context) {
                        let sink = CollectingSink()
                        do { try await stream(ResponseBodyWriter(sink: sink)) } catch { failed = true }
                        for chunk in sink.chunks { state.writeChunk(chunk, output: output) }
                    }
                    outcome = state.finishStream(failed: failed, input, output: output, parser: parser, context: context, handler: handler,
                                                 counters: &counters, observer: &observer)
                } else {
                    outcome = state.complete(with: answer, input, output: output, parser: parser, context: context, handler: handler,
                                             counters: &counters, observer: &observer)
                }
            case .flushFirst:
                outcome = state.process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
            case .needInput, .close, .bodyFull:
                return TestResponse(parsing: written, isHead: isHead)
            }
        }
    }
}

/// Collects a streamed answer's pieces; written only from the task that `send` awaits.
final class CollectingSink: ResponseBodySink, @unchecked Sendable {
    var chunks: [[UInt8]] = []
    func write(_ bytes: [UInt8]) async throws { chunks.append(bytes) }
}

/// A response as the client got it.
public struct TestResponse: Sendable {
    /// 0 when nothing (or no status line) came back.
    public var status: Int
    public var headers: [HTTPField]
    public var body: [UInt8]
    /// Everything the engine wrote.
    public var raw: [UInt8]

    /// The body as text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The first value of the field `name` (case-insensitive), or nil.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Every value of the field `name`, in order.
    public func headers(named name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    /// The body decoded from JSON.
    public func json<T: Decodable>(as type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body))
    }

    /// Reads the first response in `raw` (after any `100 Continue`): status line, fields, and a
    /// body of `Content-Length` bytes (none for HEAD).
    init(parsing raw: [UInt8], isHead: Bool) {
        self.raw = raw
        status = 0
        headers = []
        body = []
        var start = 0
        while let end = Self.headEnd(raw, from: start) {
            let lines = String(decoding: raw[start..<end], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
            let statusLine = lines.first?.split(separator: " ") ?? []
            status = statusLine.count >= 2 ? Int(statusLine[1]) ?? 0 : 0
            if status == 100 {
                start = end + 4
                continue
            }
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.append(HTTPField(String(line[..<colon]), String(line[line.index(after: colon)...].drop { $0 == " " })))
            }
            let rest = raw[(end + 4)...]
            if isHead || HTTPStatus.forbidsBody(status) {
                body = []
            } else if let length = header("content-length").flatMap({ Int($0) }) {
                body = Array(rest.prefix(length))
            } else if header("transfer-encoding")?.lowercased() == "chunked" {
                body = Self.dechunked(rest)
            } else {
                body = Array(rest)  // until the connection closes
            }
            return
        }
    }

    /// A chunked body's data (chunk extensions and trailers ignored); what a cut-short body had.
    static func dechunked(_ raw: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        var i = raw.startIndex
        while let lineEnd = raw[i...].firstIndex(of: 0x0D), lineEnd + 1 < raw.endIndex, raw[lineEnd + 1] == 0x0A {
            let sizeText = String(decoding: raw[i..<lineEnd].prefix { $0 != UInt8(ascii: ";") }, as: UTF8.self)
            guard let size = Int(sizeText, radix: 16), size > 0 else { break }
            let start = lineEnd + 2
            out += raw[start..<min(start + size, raw.endIndex)]
            i = start + size + 2
            guard i < raw.endIndex else { break }
        }
        return out
    }

    static func headEnd(_ raw: [UInt8], from start: Int) -> Int? {
        guard raw.count >= 4 else { return nil }
        var i = start
        while i + 3 < raw.count {
            if raw[i] == 0x0D && raw[i + 1] == 0x0A && raw[i + 2] == 0x0D && raw[i + 3] == 0x0A { return i }
            i += 1
        }
        return nil
    }
}
