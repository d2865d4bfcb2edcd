import ClusterConfig
import ClusterJSON
import ClusterTestSupport
import Foundation
import Testing

/// Every input the config fuzzer (Fuzz/config) ever failed on, replayed with its invariants: no
/// trap; a failure names the file and a key path or a line and column; strict JSON and the config
/// reading (comments allowed) decode the same document alike; an accepted config keeps the
/// decoder's promises.
@Suite struct ConfigFuzzRegressions {
    static let crashers = FuzzCrashers("config")
    static var files: [String] { crashers.names }

    @Test func crashersDirectoryIsNotEmpty() {
        #expect(!Self.files.isEmpty)
    }

    @Test(arguments: files)
    func replay(_ name: String) throws {
        let bytes = try Self.crashers.bytes(name)
        do {
            let config = try ClusterConfiguration.decode(bytes, file: "fuzz.json")
            #expect(!config.listen.isEmpty && config.listen.count <= 16)
            for (i, a) in config.listen.enumerated() {
                #expect(a.ip != nil || a.isUnix)
                for b in config.listen[..<i] { #expect(!a.overlaps(b), "\(b), \(a)") }
            }
            for r in config.routes {
                #expect(r.path != ClusterConfiguration.healthPath && r.path != config.metrics?.path)
                for h in r.headers { #expect(!ClusterConfiguration.serverHeaders.contains(h.name.lowercased())) }
            }
            if let strict = try? JSONParser.parse(bytes, options: .strict) {
                #expect(try ClusterConfiguration.decode(strict, file: "fuzz.json") == config)
            }
        } catch {
            #expect(error.description.hasPrefix("fuzz.json: "))
            #expect(!error.message.isEmpty)
            #expect(!error.keyPath.isEmpty || error.message.hasPrefix("not valid JSON: line ") || error.message.hasPrefix("the top level "), "\(error)")
        }
    }
}
