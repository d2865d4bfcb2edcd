import ClusterControl
import ClusterHTTP
import ClusterSystem
import Logging
import Synchronization
import Testing
@testable import ClusterWorker

/// Lets deferred answers (`/gate`) finish when the test says so.
final class Gate: @unchecked Sendable {
    private let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])

    func wait() async {
        await withCheckedContinuation { c in waiting.withLock { $0.append(c) } }
    }

    var count: Int { waiting.withLock { $0.count } }

    /// Resumes everything waiting now (their tasks continue on their worker's loop).
    func open() {
        for c in waiting.withLock({ w -> [CheckedContinuation<Void, Never>] in defer { w = [] }; return w }) { c.resume() }
    }
}

/// Lines a test handler's tasks append to.
final class Log: @unchecked Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    func withLock<R>(_ body: ([String]) -> R) -> R { lines.withLock { body($0) } }
}

/// Answers `/big` with 200,000 bytes, `/client` with what it was told about the client (the PROXY
/// header's address, then `X-Forwarded-For`'s, "-" for none), `/later` with "later" from a
/// deferred answer, `/gate` with "opened" once `gate` opens, anything else with "hello".
struct TestHandler: HTTPHandler {
    static let big = [UInt8](repeating: UInt8(ascii: "a"), count: 200_000)
    let gate = Gate()
    /// What `/stream` and `/bigstream` closures did: pieces written, and how they ended.
    let streamLog = Log()

    /// `/upload*` bodies come as streams.
    func streamsBody(_ request: HTTPRequest) -> Bool { request.path.string.hasPrefix("/upload") }

    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        if request.path == "/upload-refused" {
            // Answered before the body is read.
            response.respond(status: 413, body: "no thanks")
        } else if let body = request.bodyStream {
            // `/upload`: counts the body; `/upload-gated`: first waits for the gate.
            let gated = request.path == "/upload-gated"
            let gate = gate
            response.respondLater {
                if gated { await gate.wait() }
                var total = 0
                do {
                    for try await piece in body { total += piece.count }
                } catch {
                    return HTTPResponse(status: 500, body: "\(error)")
                }
                return HTTPResponse(status: 200, body: "got \(total)")
            }
        } else if request.path == "/stream" || request.path == "/bigstream" || request.path == "/yieldstream" {
            // Three small pieces, or 20 of 100 kB (more than the stream's high-water mark), or 20
            // of 100 kB with a yield before each (a producer that awaits between writes).
            let (count, size) = request.path == "/stream" ? (3, 0) : (20, 100_000)
            let yields = request.path == "/yieldstream"
            let log = streamLog
            response.respondLater {
                HTTPResponse(status: 200, stream: { writer in
                    do {
                        for i in 0..<count {
                            if yields { await Task.yield() }
                            try await writer.write(size == 0 ? Array("piece\(i)".utf8) : [UInt8](repeating: UInt8(ascii: "b"), count: size))
                            log.append("wrote \(i)")
                        }
                        log.append("done")
                    } catch {
                        log.append("\(error)")
                        throw error
                    }
                })
            }
        } else if request.path == "/later" {
            response.respondLater { HTTPResponse(body: "later") }
        } else if request.path == "/gate" {
            let gate = gate
            response.respondLater {
                await gate.wait()
                return HTTPResponse(status: 201, body: "opened")
            }
        } else if request.path == "/client" {
            let text = "\(request.proxiedClient.map { "\($0.address):\($0.port)" } ?? "-") \(request.forwardedClient?.description ?? "-")"
            response.respond(status: 200, body: Array(text.utf8))
        } else if request.path == "/big" {
            response.respond(status: 200, body: Self.big)
        } else {
            response.respond(status: 200, body: "hello")
        }
    }
}

/// One worker over a `FakeKernel`, with one listener and (optionally) a channel to a master.
final class LoopHarness {
    let kernel = FakeKernel()
    let listener: Int32
    let worker: HTTPWorker<TestHandler, FakeKernel>
    let statsMemory = UnsafeMutableRawPointer.allocate(byteCount: StatsSlot.size, alignment: 64)

    static var testSettings: WorkerSettings {
        var settings = WorkerSettings()
        settings.releaseMemoryAfterIdle = 0
        settings.busyPollMicroseconds = 0
        return settings
    }

    init(settings: WorkerSettings = LoopHarness.testSettings, withChannel: Bool = false, listenerPath: String? = nil) throws {
        statsMemory.initializeMemory(as: UInt8.self, repeating: 0, count: StatsSlot.size)
        listener = kernel.makeListener()
        if let listenerPath { kernel.paths[listener] = listenerPath }
        worker = HTTPWorker(handler: TestHandler(), settings: settings, listeners: [listener],
                            channel: withChannel ? kernel.channelFD : nil, stats: StatsSlot(base: statsMemory),
                            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), kernel: kernel)
        try worker.start()
    }

    /// A harness whose settings are `testSettings` changed by `configure`.
    convenience init(withChannel: Bool = false, listenerPath: String? = nil, _ configure: (inout WorkerSettings) -> Void) throws {
        var settings = LoopHarness.testSettings
        configure(&settings)
        try self.init(settings: settings, withChannel: withChannel, listenerPath: listenerPath)
    }

    deinit { statsMemory.deallocate() }

    var stats: StatsSlot { StatsSlot(base: statsMemory) }

    /// Runs turns of the loop; false once the worker is done.
    @discardableResult
    func turn(_ count: Int = 1) throws -> Bool {
        for _ in 0..<count { guard try worker.turn() else { return false } }
        return true
    }

    /// Moves the clock, then runs a turn (which expires what is due).
    @discardableResult
    func after(milliseconds: Int64) throws -> Bool {
        kernel.advance(milliseconds: milliseconds)
        return try turn()
    }

    /// A client that connects and sends `request`; the worker accepts and answers it.
    func client(sending request: String = get("/")) throws -> Int32 {
        let fd = kernel.connect(listener, sending: request)
        try turn()
        return fd
    }

    var listenerRegistered: Bool { kernel.interest[listener] != nil }

    /// Expects nothing sent to `connection` `silentFor` ms from now, then a response that starts
    /// with `prefix` `answeredWithin` ms later: a timeout that answers neither early nor late.
    func expectAnswer(_ prefix: String, to connection: Int32, silentFor: Int64, answeredWithin: Int64,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        try after(milliseconds: silentFor)
        #expect(kernel.received(connection).isEmpty, sourceLocation: sourceLocation)
        try after(milliseconds: answeredWithin)
        #expect(kernel.received(connection).hasPrefix(prefix), sourceLocation: sourceLocation)
    }

    /// Expects `connection` still open `openFor` ms from now, then closed (and no longer counted)
    /// `closedWithin` ms later: a timeout that fires neither early nor late.
    func expectCloses(_ connection: Int32, openFor: Int64, closedWithin: Int64,
                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        try after(milliseconds: openFor)
        #expect(!kernel.isClosed(connection), sourceLocation: sourceLocation)
        try after(milliseconds: closedWithin)
        #expect(kernel.isClosed(connection), sourceLocation: sourceLocation)
        #expect(stats[.openConnections] == 0, sourceLocation: sourceLocation)
    }
}

func get(_ path: String, close: Bool = false) -> String {
    "GET \(path) HTTP/1.1\r\nHost: test\r\n\(close ? "Connection: close\r\n" : "")\r\n"
}

extension String {
    /// How many responses (status lines) this output holds.
    var responses: Int { components(separatedBy: "HTTP/1.1 ").count - 1 }
}
