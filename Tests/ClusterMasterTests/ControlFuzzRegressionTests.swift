import ClusterTestSupport
import Foundation
import Testing

/// Every input the control fuzzer ever failed on (Fuzz/control/crashers/) is replayed through the
/// fuzzer's own driver (ControlFuzzDriver.swift, a link to Fuzz/control/), with its invariants: no
/// trap, a decoded request survives encoding, the worker count stays within maxWorkers, every
/// request answered exactly once by the time the daemon stopped.
@Suite struct ControlFuzzRegressions {
    static let crashers = FuzzCrashers("control")
    static var files: [String] { crashers.names }

    @Test func crashersDirectoryIsNotEmpty() {
        #expect(Self.files.contains("scale-delta-int-max"))
    }

    @Test(arguments: files)
    func replay(_ name: String) throws {
        let data = try Self.crashers.bytes(name)
        ControlFuzzDriver.run(data)
    }
}
