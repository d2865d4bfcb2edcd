import Foundation

/// The inputs a fuzzer ever failed on, kept in `Fuzz/<corpus>/crashers/` and replayed by the unit
/// tests (each test target's `FuzzRegressions` suite).
public struct FuzzCrashers: Sendable {
    public let directory: URL

    /// `corpus`: the fuzzer's folder under Fuzz/ (`http`, `config`, `control`, `proxy`); `folder`:
    /// `crashers`, or `corpus` for a target whose seeds the tests replay too.
    public init(_ corpus: String, folder: String = "crashers", file: StaticString = #filePath) {
        directory = URL(fileURLWithPath: "\(file)").deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/\(corpus)/\(folder)").standardized
    }

    /// The crasher files' names, sorted (hidden files such as .gitkeep left out).
    public var names: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    /// The bytes of crasher `name`.
    public func bytes(_ name: String) throws -> [UInt8] {
        try [UInt8](Data(contentsOf: directory.appendingPathComponent(name)))
    }
}
