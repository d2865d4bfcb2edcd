@testable import Cluster
import ClusterConfig
import ClusterControl
import Testing

@Suite struct StaticPaths {
    func normalised(_ path: String) -> String? {
        let files = StaticFiles(.init(prefix: "/s/", root: "/nonexistent"), types: MimeTypes(overrides: [:]))
        let error = Array(path.utf8).withUnsafeBytes { files.normalise($0) }
        return error == nil ? files.normalisedPath : nil
    }

    @Test(arguments: [
        ("a/b.txt", "a/b.txt"), ("", "."), ("./a//b/", "a/b"), ("a/../b", "b"), ("a%20b", "a b"),
        ("%2e%2e/x", nil), ("a/../../x", nil), ("..", nil), ("a%2fb", nil), ("a%00b", nil), ("%zz", nil), ("a%2", nil),
    ] as [(String, String?)])
    func normalise(_ input: String, _ expected: String?) {
        #expect(normalised(input) == expected, "\(input)")
    }

    @Test func ranges() {
        #expect(StaticFiles.parseRange("bytes=0-9", size: 100) == .range(0, 9))
        #expect(StaticFiles.parseRange("bytes=90-200", size: 100) == .range(90, 99))
        #expect(StaticFiles.parseRange("bytes=-10", size: 100) == .range(90, 99))
        #expect(StaticFiles.parseRange("bytes=-500", size: 100) == .range(0, 99))
        #expect(StaticFiles.parseRange("bytes=50-", size: 100) == .range(50, 99))
        #expect(StaticFiles.parseRange("bytes=100-", size: 100) == .unsatisfiable)
        #expect(StaticFiles.parseRange("bytes=-0", size: 100) == .unsatisfiable)
        #expect(StaticFiles.parseRange("bytes=5-1", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=0-1,5-6", size: 100) == .none)
        #expect(StaticFiles.parseRange("items=0-1", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=a-b", size: 100) == .none)
    }

    @Test func types() {
        let t = MimeTypes(overrides: ["weird": "application/x-weird"])
        #expect(t.type(forPath: Array("a/b.HTML".utf8CString)) == "text/html; charset=utf-8")
        #expect(t.type(forPath: Array("x.weird".utf8CString)) == "application/x-weird")
        #expect(t.type(forPath: Array("noext".utf8CString)) == "application/octet-stream")
        #expect(t.type(forPath: Array("dir.d/noext".utf8CString)) == "application/octet-stream")
    }

    @Test func etags() {
        #expect(StaticFiles.matches(etag: "\"a-1\"", list: "\"x\", \"a-1\""))
        #expect(StaticFiles.matches(etag: "\"a-1\"", list: "*"))
        #expect(StaticFiles.matches(etag: "\"a-1\"", list: "W/\"a-1\""))
        #expect(!StaticFiles.matches(etag: "\"a-1\"", list: "\"a-2\""))
    }
}

@Suite struct MetricsText {
    @Test func rendersTotalsAndWorkers() {
        let slots = 4
        let base = UnsafeMutableRawPointer.allocate(byteCount: StatsSegment.byteCount(workerSlots: slots), alignment: 64)
        defer { base.deallocate() }
        base.initializeMemory(as: UInt8.self, repeating: 0, count: StatsSegment.byteCount(workerSlots: slots))
        let segment = StatsSegment(base: base, workerSlots: slots)
        segment.master[.slotsHighWater] = 2
        segment.master[.workers] = 2
        let w = segment.worker(1)
        w[.pid] = 42
        w[.slot] = 1
        w[.requests] = 10
        w[.latency0] = 10
        segment.retired[.requests] = 5
        let text = MetricsRenderer.render(segment)
        #expect(text.contains("clusterd_requests_total 15\n"))
        #expect(text.contains("clusterd_worker_requests_total{slot=\"1\",pid=\"42\",generation=\"0\"} 10\n"))
        #expect(text.contains("clusterd_request_duration_seconds_bucket{le=\"0.0001\"} 10\n"))
        #expect(text.contains("clusterd_request_duration_seconds_bucket{le=\"+Inf\"} 10\n"))
        #expect(text.contains("clusterd_workers 2\n"))
        #expect(MetricsRenderer.seconds(1_500_000) == "1.5")
        #expect(MetricsRenderer.seconds(100) == "0.0001")
    }
}
