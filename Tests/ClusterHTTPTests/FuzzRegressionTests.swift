import ClusterHTTP
import ClusterTestSupport
import Foundation
import Testing

/// Every input the fuzzer ever failed on (Fuzz/http/crashers/) is replayed through the fuzzer's own
/// driver (HTTPFuzzDriver.swift, a link to Fuzz/http/) with its invariants: no trap, the same final
/// responses for one read and for the fuzzer's read size (and one and seven bytes at a time), a
/// refused request that says it closes, and the memory bound while waiting for input.
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
        // The fuzzer's own run, in its read size and also one byte and seven bytes at a time.
        HTTPFuzzDriver.run(data, morePieces: [1, 7])
    }
}
