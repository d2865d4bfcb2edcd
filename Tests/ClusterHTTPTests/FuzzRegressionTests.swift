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

/// The PROXY protocol target's inputs (Fuzz/proxy/): every seed of its corpus and every input it
/// ever failed on, replayed through its own driver (ProxyFuzzDriver.swift, a link to Fuzz/proxy/)
/// with its invariants: no trap, `consumed` within the input, prefixes that agree with the whole,
/// the consumed bytes parsing alone to the same header, and the header surviving being written back.
@Suite struct ProxyFuzzRegressions {
    static let crashers = FuzzCrashers("proxy")
    static let corpus = FuzzCrashers("proxy", folder: "corpus")
    static var crasherFiles: [String] { crashers.names }
    static var corpusFiles: [String] { corpus.names }

    @Test func corpusIsNotEmpty() {
        #expect(Self.corpusFiles.count >= 10)
    }

    @Test(arguments: crasherFiles)
    func replayCrasher(_ name: String) throws {
        ProxyFuzzDriver.run(try Self.crashers.bytes(name))
    }

    @Test(arguments: corpusFiles)
    func replaySeed(_ name: String) throws {
        ProxyFuzzDriver.run(try Self.corpus.bytes(name))
    }
}
