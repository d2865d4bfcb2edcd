import ClusterHTTP
import ClusterTestSupport
import Foundation
import Testing

/// Every input the fuzzer ever failed on (Fuzz/http/crashers/) is replayed with the fuzzer's invariants:
/// no trap, the same final responses for one read and for the fuzzer's piece size and for one byte
/// at a time, and a refused request that says it closes.
@Suite struct FuzzRegressions {
    static let crashers = FuzzCrashers("http")
    static var files: [String] { crashers.names }

    @Test func crashersDirectoryIsNotEmpty() {
        #expect(!Self.files.isEmpty)
    }

    @Test(arguments: files)
    func replay(_ name: String) throws {
        let data = try Self.crashers.bytes(name)
        // The first byte picks the limits: a shorter file is a broken crasher, not a pass.
        try #require(data.count > 1, "\(name): a crasher has at least 2 bytes (the first picks the limits)")
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 1024 + Int(data[0] & 0x3F) * 16
        limits.maxHeaderCount = 8
        limits.maxBodyBytes = 2048
        limits.maxRequestLine = 512
        limits.maxPendingOutput = 4096
        limits.maxKeepAliveRequests = Int(data[0] >> 6)
        limits.maxChunkExtensionBytes = 256
        let stream = Array(data[2...])
        let whole = exchange(stream, limits: limits)
        for piece in [Int(data[1] % 23) + 1, 1, 7] {
            let split = exchange(stream, pieceSize: piece, limits: limits)
            #expect(split.output.replacingOccurrences(of: "HTTP/1.1 100 Continue\r\n\r\n", with: "")
                == whole.output.replacingOccurrences(of: "HTTP/1.1 100 Continue\r\n\r\n", with: ""), "\(name), pieces of \(piece)")
            #expect(split.outcome == whole.outcome)
        }
        if whole.outcome == .close && !whole.output.isEmpty {
            #expect(whole.output.contains("Connection: close\r\n"))
        }
    }
}
