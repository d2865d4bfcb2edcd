import Foundation
import Testing

/// Every input the control fuzzer ever failed on (Fuzz/control/crashers/) is replayed through the
/// fuzzer's own driver (ControlFuzzDriver.swift, a link to Fuzz/control/), with its invariants: no
/// trap, a decoded request survives encoding, the worker count stays within maxWorkers, every
/// request answered exactly once by the time the daemon stopped.
@Suite struct ControlFuzzRegressions {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/control/crashers").standardized

    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    @Test func crashersDirectoryIsNotEmpty() {
        #expect(Self.files.contains("scale-delta-int-max"))
    }

    @Test(arguments: files)
    func replay(_ name: String) throws {
        let data = try [UInt8](Data(contentsOf: Self.directory.appendingPathComponent(name)))
        ControlFuzzDriver.run(data)
    }
}
