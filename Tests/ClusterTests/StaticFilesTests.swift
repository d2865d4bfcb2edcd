@testable import Cluster
import ClusterConfig
import ClusterControl
import ClusterHTTP
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

    /// The files of a normalised path: its relative path, whether the URL named a directory, and
    /// whether a segment is hidden.
    func parsed(_ path: String, root: ClusterConfiguration.StaticRoot = .init(prefix: "/", root: "/nonexistent")) -> (path: String, directory: Bool, hidden: Bool)? {
        let files = StaticFiles(root, types: MimeTypes(overrides: [:]))
        let error = Array(path.utf8).withUnsafeBytes { files.normalise($0) }
        return error == nil ? (files.normalisedPath, files.namesDirectory, files.isHiddenPath) : nil
    }

    /// Issue 12 item 18: `/file/` and `/file/.` name a directory (a regular file there is 404).
    @Test(arguments: [
        ("a.txt", false), ("a.txt/", true), ("a.txt/.", true), ("a.txt/%2e", true), ("a/..", true), ("a.txt//", true),
        ("", true), ("a/b", false), ("./a", false), ("a/./b", false),
    ] as [(String, Bool)])
    func namesDirectory(_ input: String, _ expected: Bool) {
        #expect(parsed(input)?.directory == expected, "\(input)")
    }

    /// Issue 12 item 18: hidden segments are found after decoding; `.well-known` leading is public.
    @Test(arguments: [
        (".env", true), ("a/.git/config", true), ("a/.hidden/x", true), ("%2eenv", true), ("a/b.c", false), ("", false),
        (".well-known/acme-challenge/t", false), (".well-known", false), (".well-known/.x", true), (".well-knownx", true),
        ("a/.well-known/x", true), ("a/.x/../b", false), ("..a", true),
    ] as [(String, Bool)])
    func hiddenSegments(_ input: String, _ hidden: Bool) {
        #expect(parsed(input)?.hidden == hidden, "\(input)")
    }

    /// Issue 12 item 3: a directory redirect is built from the prefix and the normalised path,
    /// never from the raw target: no `//host` or `/\host` Location (an open redirect).
    @Test(arguments: [
        ("/", "/evil.example/..", "", "/"), ("/", "\\evil.example/..", "", "/"), ("/", "/evil.example/sub", "", "/evil.example/sub/"),
        ("/", "a//b", "x=1", "/a/b/?x=1"), ("/s/", "sub", "", "/s/sub/"), ("/s/", "", "", "/s/"),
        ("/", "a%20b/c%3Fd", "", "/a%20b/c%3Fd/"), ("/", "%5Cevil", "", "/%5Cevil/"), ("/", "x%0d%0aSet-Cookie:a", "", "/x%0D%0ASet-Cookie:a/"),
    ] as [(String, String, String, String)])
    func directoryRedirect(_ prefix: String, _ relative: String, _ query: String, _ location: String) {
        let files = StaticFiles(.init(prefix: prefix, root: "/nonexistent"), types: MimeTypes(overrides: [:]))
        #expect(Array(relative.utf8).withUnsafeBytes { files.normalise($0) } == nil)
        let got = Array(query.utf8).withUnsafeBytes { files.directoryLocation(query: HTTPBytes($0)) }
        #expect(got == location, "\(relative)")
        #expect(!got.hasPrefix("//") && !got.hasPrefix("/\\"))
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
        #expect(StaticFiles.parseRange("bytes= 0-9\t", size: 100) == .range(0, 9))
        #expect(StaticFiles.parseRange("bytes=0 -9", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=-", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=5-x", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=-5", size: 0) == .unsatisfiable)
        // 18 digits are a number; 19 are not (no overflow on hostile input).
        #expect(StaticFiles.parseRange("bytes=0-999999999999999999", size: 100) == .range(0, 99))
        #expect(StaticFiles.parseRange("bytes=0-9999999999999999999", size: 100) == .none)
        #expect(StaticFiles.parseRange("bytes=9999999999999999999-", size: 100) == .none)
    }

    /// The plain-path shortcut gives what the full normalisation gives.
    @Test(arguments: ["a", "a/b.txt", "css/site.min.css", "a.b/c..d/.e", "x/..y", "...", "a/b/", "a//b", "./a", "a/.", "a/..", "%41", "a b"])
    func plainPathShortcut(_ input: String) {
        var viaShortcut: [CChar] = [], viaFull: [CChar] = [], d1 = false, d2 = false
        let bytes = Array(input.utf8)
        let e1 = bytes.withUnsafeBytes { StaticFiles.normalise($0, into: &viaShortcut, namesDirectory: &d1) }
        // The full path alone: a leading "./" makes any input take it and changes nothing.
        let e2 = Array(("./" + input).utf8).withUnsafeBytes { StaticFiles.normalise($0, into: &viaFull, namesDirectory: &d2) }
        #expect(e1 == e2 && viaShortcut == viaFull && d1 == d2, "\(input)")
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

/// A stats segment in zeroed memory of its own, as the master maps it.
struct ZeroedSegment {
    let base: UnsafeMutableRawPointer
    let segment: StatsSegment

    init(slots: Int) {
        let bytes = StatsSegment.byteCount(workerSlots: slots)
        base = .allocate(byteCount: bytes, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        segment = StatsSegment(base: base, workerSlots: slots)
    }

    func free() { base.deallocate() }
}

@Suite struct MetricsText {
    @Test func rendersTotalsAndWorkers() {
        let memory = ZeroedSegment(slots: 4)
        defer { memory.free() }
        let segment = memory.segment
        segment.master[.slotsHighWater] = 2
        segment.master[.workers] = 2
        let w = segment.worker(1)
        w[.pid] = 42
        w[.slot] = 1
        w[.requests] = 10
        w[.latency0] = 10
        segment.retired[.requests] = 5
        w[.accessLogDroppedLines] = 3
        segment.retired[.accessLogDroppedLines] = 4
        let text = MetricsRenderer.render(segment)
        #expect(text.contains("clusterd_requests_total 15\n"))
        #expect(text.contains("clusterd_worker_requests_total{slot=\"1\"} 10\n"))
        #expect(text.contains("clusterd_worker_info{slot=\"1\",pid=\"42\",generation=\"0\"} 1\n"))
        #expect(text.contains("clusterd_request_duration_seconds_bucket{le=\"0.0001\"} 10\n"))
        #expect(text.contains("clusterd_request_duration_seconds_bucket{le=\"+Inf\"} 10\n"))
        #expect(text.contains("clusterd_workers 2\n"))
        #expect(text.contains("clusterd_access_log_dropped_lines_total 7\n"))
        #expect(MetricsRenderer.seconds(1_500_000) == "1.5")
        #expect(MetricsRenderer.seconds(100) == "0.0001")
    }

    /// Issue 12 item 20: per-worker series are per slot, so a reload does not make new ones; while
    /// a slot has an old and a new worker (a reload draining), their numbers are summed, the state
    /// is the newest's, and only clusterd_worker_info tells the processes apart.
    @Test func perWorkerSeriesAreKeyedBySlot() {
        let memory = ZeroedSegment(slots: 4)
        defer { memory.free() }
        let segment = memory.segment
        segment.master[.slotsHighWater] = 3
        for (i, (pid, slot, generation, requests, state)) in [(100, 0, 1, 7, 2), (200, 0, 2, 3, 1), (300, 1, 2, 5, 1)].enumerated() {
            let w = segment.worker(i)
            w[.pid] = UInt64(pid)
            w[.slot] = UInt64(slot)
            w[.generation] = UInt64(generation)
            w[.requests] = UInt64(requests)
            w[.state] = UInt64(state)
        }
        let text = MetricsRenderer.render(segment)
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("clusterd_worker_") }
        #expect(lines.filter { $0.hasPrefix("clusterd_worker_requests_total") } == ["clusterd_worker_requests_total{slot=\"0\"} 10", "clusterd_worker_requests_total{slot=\"1\"} 5"])
        #expect(lines.filter { $0.hasPrefix("clusterd_worker_state") } == ["clusterd_worker_state{slot=\"0\"} 1", "clusterd_worker_state{slot=\"1\"} 1"])
        #expect(lines.filter { $0.hasPrefix("clusterd_worker_info") } == [
            "clusterd_worker_info{slot=\"0\",pid=\"100\",generation=\"1\"} 1", "clusterd_worker_info{slot=\"0\",pid=\"200\",generation=\"2\"} 1",
            "clusterd_worker_info{slot=\"1\",pid=\"300\",generation=\"2\"} 1",
        ])
        #expect(!lines.contains { !$0.hasPrefix("clusterd_worker_info") && $0.contains("pid=") })
    }
}
