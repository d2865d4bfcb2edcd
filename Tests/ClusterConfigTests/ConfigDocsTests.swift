@testable import ClusterConfig
import Foundation
import Testing

/// Docs/configuration.md documents every key the decoder accepts, no key it refuses, and the
/// defaults `ClusterConfiguration` declares (the one source the decoder takes them from).
@Suite struct ConfigDocs {
    static let reference: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Docs/configuration.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// The table rows (`| \`key\` | cell | ...`) under `## heading`, by key.
    static func rows(under heading: String) -> [String: [String]] {
        var rows: [String: [String]] = [:]
        var inside = false
        for line in reference.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") {
                inside = line.dropFirst(3) == heading
                continue
            }
            guard inside, line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            rows[cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = Array(cells.dropFirst())
        }
        return rows
    }

    @Test func everyAcceptedKeyIsDocumentedAndNoOther() {
        #expect(!Self.reference.isEmpty, "Docs/configuration.md not found")
        for (heading, keys) in ClusterConfiguration.keysByDocumentedSection {
            let documented = Set(Self.rows(under: heading).keys)
            #expect(documented == Set(keys), "## \(heading): undocumented \(Set(keys).subtracting(documented).sorted()), documented but refused \(documented.subtracting(keys).sorted())")
        }
    }

    @Test func httpDefaultsInTheDocsAreTheDeclaredOnes() {
        let rows = Self.rows(under: "`http`")
        let d = ClusterConfiguration().http
        let declared: [String: Double] = [
            "keepAliveTimeout": d.keepAliveTimeout, "headerTimeout": d.headerTimeout, "bodyTimeout": d.bodyTimeout,
            "maxHeaderBytes": Double(d.maxHeaderBytes), "maxHeaderCount": Double(d.maxHeaderCount), "maxBodyBytes": Double(d.maxBodyBytes),
            "maxConnections": Double(d.maxConnections), "maxKeepAliveRequests": Double(d.maxKeepAliveRequests),
        ]
        #expect(Set(declared.keys) == Set(ClusterConfiguration.httpKeys))
        for (key, value) in declared {
            #expect(rows[key].flatMap { Double($0[0]) } == value, "http.\(key): the docs say \(rows[key]?[0] ?? "nothing"), the code \(value)")
        }
    }

    @Test func topLevelNumericDefaultsInTheDocsAreTheDeclaredOnes() {
        let rows = Self.rows(under: "Top level")
        let c = ClusterConfiguration()
        let declared: [String: Double] = [
            "maxWorkers": Double(c.maxWorkers), "drainTimeout": c.drainTimeout, "shutdownDelay": c.shutdownDelay,
            "heartbeatTimeout": c.heartbeatTimeout,
            "releaseMemoryAfterIdle": c.releaseMemoryAfterIdle, "busyPoll": Double(c.busyPoll),
        ]
        for (key, value) in declared {
            // key | type | default | range | meaning
            #expect(rows[key].flatMap { Double($0[1]) } == value, "\(key): the docs say \(rows[key]?[1] ?? "nothing"), the code \(value)")
        }
    }

    @Test func decodedDefaultsAreTheDeclaredOnes() throws {
        let decoded = try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:8080"], "http": {}}"#, file: "t.json")
        #expect(decoded.http == ClusterConfiguration().http)
        #expect(decoded.drainTimeout == ClusterConfiguration().drainTimeout)
        #expect(decoded.maxWorkers == ClusterConfiguration().maxWorkers)
    }

    @Test func sendTimeoutIsDocumented() {
        #expect(Self.reference.contains("**send timeout**") && Self.reference.contains("max(bodyTimeout, 10 s)"))
    }
}
