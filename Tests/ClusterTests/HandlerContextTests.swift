import Cluster
import ClusterConfig
import ClusterControl
import ClusterHTTP
import Testing

/// Issue 13 item 6: `/metrics` renders the stats the handler factory's context gives the stock
/// handler, not a process global.
@Suite struct HandlerContextTests {
    /// The status of the response `handler` gives to `GET path` (on no socket: no peer).
    func status(_ handler: StockHandler, _ path: String) -> String {
        let input = IOBuffer(), output = IOBuffer()
        input.write(Array("GET \(path) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
        var state = HTTPConnectionState()
        var counters = HTTPCounters()
        let dateLine = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
        _ = dateLine.withUnsafeBytes { date in
            state.process(input, output: output, parser: HTTPParser(limits: HTTPLimits()), context: ResponseContext(dateLine: date),
                          handler: handler, counters: &counters)
        }
        return String(String(decoding: output.readableArray, as: UTF8.self).prefix(12))
    }

    @Test func metricsAreServedFromTheContextsStats() throws {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: StatsSegment.byteCount(workerSlots: 1), alignment: 64)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: StatsSegment.byteCount(workerSlots: 1))
        let config = ClusterConfiguration()
        // With stats the path is the metrics endpoint: a client with no address is not in
        // metrics.allow (403). Without (the master's validation) it is not served at all (404).
        let withStats = try StockHandler(context: HandlerContext(config: config, stats: StatsSegment(base: memory, workerSlots: 1)))
        #expect(status(withStats, "/metrics") == "HTTP/1.1 403")
        #expect(status(try StockHandler(context: HandlerContext(config: config)), "/metrics") == "HTTP/1.1 404")
        #expect(status(withStats, "/healthz") == "HTTP/1.1 200")
    }
}
